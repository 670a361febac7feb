//! `cannon-host info SERVICE [--json]`: stream lengths, groups, consumers, pending and dead
//! counts of one service. Names read from the broker (groups, consumers) are printed
//! through [`crate::text`]: anyone who can write to the broker picks them.

use std::process::ExitCode;

use serde_json::{Value, json};

use crate::broker::{StreamInfo, StreamKind, WORKER_GROUP};
use crate::cli::{Cli, connect, one_service};
use crate::text::{for_json, for_terminal};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The service to describe.
    pub service: String,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

const STREAMS: [StreamKind; 3] = [StreamKind::Data, StreamKind::Taskback, StreamKind::Dead];

fn stream_json(key: &str, info: &StreamInfo) -> Value {
    let groups: Vec<Value> = info
        .groups
        .iter()
        .map(|g| {
            let consumers: Vec<Value> = g
                .consumers
                .iter()
                .map(|c| json!({ "name": c.name, "pending": c.pending, "idle_ms": c.idle_ms }))
                .collect();
            json!({ "name": g.name, "pending": g.pending, "last_delivered": g.last_delivered, "consumers": consumers })
        })
        .collect();
    json!({ "key": key, "length": info.length, "last_id": info.last_id, "groups": groups })
}

/// `1234` ms as `1.2s`, `3m04s`, ...
pub(crate) fn human_ms(ms: u64) -> String {
    match ms {
        0..1_000 => format!("{ms}ms"),
        1_000..60_000 => format!("{:.1}s", ms as f64 / 1000.0),
        60_000..3_600_000 => format!("{}m{:02}s", ms / 60_000, (ms / 1000) % 60),
        _ => format!("{}h{:02}m", ms / 3_600_000, (ms / 60_000) % 60),
    }
}

pub async fn run(cli: &Cli, args: &Args) -> anyhow::Result<ExitCode> {
    let (compose, service) = one_service(cli, &args.service)?;
    let broker = connect(cli, &compose).await?;
    let name = service.name.as_str();
    let mut infos = Vec::with_capacity(STREAMS.len());
    for kind in STREAMS {
        infos.push((kind, broker.stream_name(name, kind), broker.stream_info(name, kind).await?));
    }
    let pending: u64 = infos[0].2.groups.iter().filter(|g| g.name == WORKER_GROUP).map(|g| g.pending).sum();
    let dead = infos[2].2.length;
    // deploy: which version of each component is active and running.
    let (components, components_json) = crate::cli::versions::summary(cli, &compose, &service).await?;
    if args.json {
        let streams: serde_json::Map<String, Value> =
            infos.iter().map(|(kind, key, info)| (kind.as_str().to_owned(), stream_json(key, info))).collect();
        let out = json!({
            "service": name,
            "broker": broker.describe(),
            "pending": pending,
            "dead": dead,
            "streams": streams,
            "components": components_json,
        });
        println!("{}", for_json(out.to_string()));
        return Ok(ExitCode::SUCCESS);
    }
    println!("service {name} on {}", broker.describe());
    for (_, key, info) in &infos {
        println!("  stream {key}: {} entries, newest {}", info.length, for_terminal(&info.last_id));
        for group in &info.groups {
            println!(
                "    group {}: {} pending, last delivered {}, {} consumers",
                for_terminal(&group.name),
                group.pending,
                for_terminal(&group.last_delivered),
                group.consumers.len()
            );
            for consumer in &group.consumers {
                println!(
                    "      consumer {}: {} pending, idle {}",
                    for_terminal(&consumer.name),
                    consumer.pending,
                    human_ms(consumer.idle_ms)
                );
            }
        }
    }
    println!("  pending {pending}, dead {dead}");
    for line in components {
        println!("{line}");
    }
    Ok(ExitCode::SUCCESS)
}
