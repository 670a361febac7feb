//! `cannon-host dead SERVICE [--json] [--replay ID | --all]`: the dead letters of a service
//! (messages that failed `retry.max_attempts` times, with their error), and replaying them
//! onto the data stream. Errors and fields are untrusted text, printed through
//! [`crate::text`].

use std::process::ExitCode;
use std::time::Duration;

use serde_json::json;

use crate::broker::{Entry, ID_FIELD, StreamKind};
use crate::cli::watch::fields_json;
use crate::cli::{Cli, connect, one_service};
use crate::text::{for_json, for_terminal};
use crate::time::rfc3339_millis;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The service whose dead letters to list or replay.
    pub service: String,
    /// Print one JSON array instead of text.
    #[arg(long)]
    pub json: bool,
    /// Re-enqueue one dead letter, named by its dead-stream id or its original message id.
    #[arg(long, value_name = "ID", conflicts_with = "all")]
    pub replay: Option<String>,
    /// Re-enqueue every dead letter.
    #[arg(long)]
    pub all: bool,
}

fn get<'a>(entry: &'a Entry, key: &str) -> &'a str {
    entry.fields.iter().rev().find(|(k, _)| k == key).map_or("", |(_, v)| v.as_str())
}

pub async fn run(cli: &Cli, args: &Args) -> anyhow::Result<ExitCode> {
    let (compose, service) = one_service(cli, &args.service)?;
    let broker = connect(cli, &compose).await?;
    let name = service.name.as_str();
    let mut letters = Vec::new();
    let mut after = "0-0".to_owned();
    loop {
        let page = broker.tail(name, StreamKind::Dead, &after, 1000, Duration::ZERO).await?;
        let Some(last) = page.last() else { break };
        after = last.id.clone();
        letters.extend(page);
    }

    if args.replay.is_some() || args.all {
        let chosen: Vec<String> = match &args.replay {
            Some(id) => {
                letters.iter().filter(|e| e.id == *id || get(e, ID_FIELD) == id).map(|e| e.id.clone()).collect()
            }
            None => letters.iter().map(|e| e.id.clone()).collect(),
        };
        if let (Some(id), true) = (&args.replay, chosen.is_empty()) {
            anyhow::bail!("service {name:?} has no dead letter {id:?} (see `cannon-host dead {name}`)");
        }
        let moved = broker.replay(name, &chosen).await?;
        for (dead_id, new_id) in &moved {
            println!("replayed {} as {}", for_terminal(dead_id), for_terminal(new_id));
        }
        eprintln!(
            "{} dead letter{} of service {name:?} replayed",
            moved.len(),
            if moved.len() == 1 { "" } else { "s" }
        );
        return Ok(ExitCode::SUCCESS);
    }

    if args.json {
        let rows: Vec<_> = letters
            .iter()
            .map(|e| {
                let failed_at_ms: u64 = get(e, "cannon.failed_at").parse().unwrap_or(0);
                let original: Vec<(String, String)> = e
                    .fields
                    .iter()
                    .filter(|(k, _)| !crate::broker::DEAD_FIELDS.contains(&k.as_str()))
                    .cloned()
                    .collect();
                json!({
                    "dead_id": e.id,
                    "id": get(e, ID_FIELD),
                    "error": get(e, "cannon.error"),
                    "attempts": get(e, "cannon.attempts").parse::<u64>().unwrap_or(0),
                    "failed_at_ms": failed_at_ms,
                    "failed_at": rfc3339_millis(failed_at_ms),
                    "fields": fields_json(&original),
                })
            })
            .collect();
        println!("{}", for_json(serde_json::Value::Array(rows).to_string()));
        return Ok(ExitCode::SUCCESS);
    }
    if letters.is_empty() {
        println!("no dead letters for service {name}");
    }
    for e in &letters {
        let failed_at = rfc3339_millis(get(e, "cannon.failed_at").parse().unwrap_or(0));
        let original: Vec<(String, String)> =
            e.fields.iter().filter(|(k, _)| !crate::broker::DEAD_FIELDS.contains(&k.as_str())).cloned().collect();
        println!(
            "{}  message {}  attempts {}  failed {failed_at}\n  error: {}\n  fields: {}",
            for_terminal(&e.id),
            for_terminal(get(e, ID_FIELD)),
            for_terminal(get(e, "cannon.attempts")),
            for_terminal(get(e, "cannon.error")),
            for_json(fields_json(&original).to_string())
        );
    }
    Ok(ExitCode::SUCCESS)
}
