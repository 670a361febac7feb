//! `cannon-host pending SERVICE [--count N] [--json]`: messages delivered to workers and not
//! acknowledged yet, oldest first, with their consumer, idle time and delivery count.

use std::process::ExitCode;

use serde_json::json;

use crate::broker::{StreamKind, WORKER_GROUP};
use crate::cli::info::human_ms;
use crate::cli::{Cli, connect, one_service};
use crate::text::{for_json, for_terminal};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The service whose pending messages to list.
    pub service: String,
    /// Most entries listed.
    #[arg(long, default_value_t = 100, value_name = "N")]
    pub count: usize,
    /// Print one JSON array instead of text.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(cli: &Cli, args: &Args) -> anyhow::Result<ExitCode> {
    let (compose, service) = one_service(cli, &args.service)?;
    let broker = connect(cli, &compose).await?;
    let rows = broker.pending(&service.name, StreamKind::Data, WORKER_GROUP, None, args.count).await?;
    if args.json {
        let rows: Vec<_> = rows
            .iter()
            .map(|p| json!({ "id": p.id, "consumer": p.consumer, "idle_ms": p.idle_ms, "deliveries": p.deliveries }))
            .collect();
        println!("{}", for_json(serde_json::Value::Array(rows).to_string()));
        return Ok(ExitCode::SUCCESS);
    }
    if rows.is_empty() {
        println!("nothing pending for service {}", service.name);
    }
    for p in &rows {
        let (id, consumer) = (for_terminal(&p.id), for_terminal(&p.consumer));
        println!("{id}  consumer {consumer}  idle {}  deliveries {}", human_ms(p.idle_ms), p.deliveries);
    }
    Ok(ExitCode::SUCCESS)
}
