//! `cannon-host watch SERVICE [--from-start]`: a live tail of the service's data, taskback
//! and dead streams, one line per entry (`STREAM ID {fields as JSON}`), until interrupted.
//! The JSON escapes controls, C1 and bidi characters ([`crate::text::for_json`]).

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::broker::{BrokerAdmin, Fields, StreamKind};
use crate::cli::{Cli, connect, one_service};
use crate::text::{for_json, for_terminal};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The service to watch.
    pub service: String,
    /// Print what the streams already hold first.
    #[arg(long)]
    pub from_start: bool,
}

pub(crate) fn fields_json(fields: &Fields) -> serde_json::Value {
    serde_json::Value::Object(fields.iter().map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone()))).collect())
}

async fn follow(
    broker: Arc<dyn BrokerAdmin>,
    service: String,
    kind: StreamKind,
    from_start: bool,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let mut after = if from_start { "0-0".to_owned() } else { broker.last_id(&service, kind).await? };
    let mut failures = 0u32;
    while !shutdown.is_cancelled() {
        let read = tokio::select! {
            read = broker.tail(&service, kind, &after, 256, Duration::from_millis(500)) => read,
            () = shutdown.cancelled() => break,
        };
        match read {
            Ok(entries) => {
                failures = 0;
                for entry in entries {
                    let fields = for_json(fields_json(&entry.fields).to_string());
                    println!("{:<8} {} {fields}", kind.as_str(), for_terminal(&entry.id));
                    after = entry.id;
                }
            }
            Err(err) => {
                failures += 1;
                tracing::warn!(service, stream = kind.as_str(), error = %err, "cannot read; retrying");
                tokio::time::sleep(Duration::from_millis(200 * u64::from(failures.min(25)))).await;
            }
        }
    }
    Ok(())
}

pub async fn run(cli: &Cli, args: &Args, shutdown: CancellationToken) -> anyhow::Result<ExitCode> {
    let (compose, service) = one_service(cli, &args.service)?;
    let broker = connect(cli, &compose).await?;
    eprintln!("watching service {} on {} (Ctrl-C stops)", service.name, broker.describe());
    let follow = |kind| follow(broker.clone(), service.name.clone(), kind, args.from_start, shutdown.clone());
    let (a, b, c) = tokio::join!(follow(StreamKind::Data), follow(StreamKind::Taskback), follow(StreamKind::Dead));
    a.and(b).and(c)?;
    Ok(ExitCode::SUCCESS)
}
