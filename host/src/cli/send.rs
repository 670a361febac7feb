//! `cannon-host send SERVICE key=value... [--wait] [--timeout-ms N]`.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context as _;

use crate::broker::{Entry, Fields, StreamKind};
use crate::cli::{Cli, connect, load_compose};
use crate::fields::host_id;
use crate::text::{for_json, for_terminal};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The service to send to.
    pub service: String,
    /// Message fields, each `key=value`.
    #[arg(value_name = "KEY=VALUE")]
    pub fields: Vec<String>,
    /// Wait for the message's taskback and print it as one JSON object.
    #[arg(long)]
    pub wait: bool,
    /// How long --wait waits, in milliseconds.
    #[arg(long, default_value_t = 10_000, value_name = "MS")]
    pub timeout_ms: u64,
}

fn parse_fields(raw: &[String]) -> anyhow::Result<Fields> {
    raw.iter()
        .map(|pair| {
            let (k, v) = pair.split_once('=').with_context(|| format!("{pair:?} is not KEY=VALUE"))?;
            anyhow::ensure!(!k.is_empty(), "{pair:?} has an empty key");
            Ok((k.to_owned(), v.to_owned()))
        })
        .collect()
}

/// The entry as one JSON object, C1 and bidi characters escaped too ([`for_json`]).
fn to_json(entry: &Entry) -> String {
    let object: serde_json::Map<String, serde_json::Value> =
        entry.fields.iter().map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone()))).collect();
    for_json(serde_json::Value::Object(object).to_string())
}

/// Whether `entry` (a taskback or dead letter) answers message `id`: only the `cannon.id`
/// the host wrote, the entry's first pair, counts; a task cannot forge it.
fn answers(entry: &Entry, id: &str) -> bool {
    host_id(&entry.fields) == Some(id)
}

pub async fn run(cli: &Cli, args: &Args) -> anyhow::Result<ExitCode> {
    let compose = load_compose(&cli.file)?;
    let service = crate::service::select(&compose, std::slice::from_ref(&args.service))?
        .into_iter()
        .next()
        .context("no service selected")?;
    let fields = parse_fields(&args.fields)?;
    anyhow::ensure!(!fields.is_empty(), "a message needs at least one KEY=VALUE field");
    anyhow::ensure!(
        fields.len() <= service.limits.max_fields,
        "message of {} fields exceeds limits.max_fields = {} of service {:?}",
        fields.len(),
        service.limits.max_fields,
        service.name
    );
    let bytes = crate::fields::size(&fields);
    anyhow::ensure!(
        bytes as u64 <= service.limits.message_kb.saturating_mul(1024),
        "message of {bytes} bytes exceeds limits.message_kb = {} of service {:?}",
        service.limits.message_kb,
        service.name
    );
    let broker = connect(cli, &compose).await?;
    let name = service.name.as_str();
    // Note where the taskback and dead streams end *before* sending, so no answer is missed.
    let (mut after_tb, mut after_dead) = if args.wait {
        (broker.last_id(name, StreamKind::Taskback).await?, broker.last_id(name, StreamKind::Dead).await?)
    } else {
        Default::default()
    };
    let id = broker.add(name, StreamKind::Data, &fields).await?;
    if !args.wait {
        println!("{id}");
        return Ok(ExitCode::SUCCESS);
    }
    let deadline = Instant::now() + Duration::from_millis(args.timeout_ms);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            eprintln!(
                "no taskback for message {id} of service {name:?} within {} ms (is `cannon-host run {name}` running? \
                 a pipeline whose results are empty sends no taskback)",
                args.timeout_ms
            );
            return Ok(ExitCode::from(2));
        }
        let block = left.min(Duration::from_millis(200));
        for entry in broker.tail(name, StreamKind::Taskback, &after_tb, 256, block).await? {
            if answers(&entry, &id) {
                println!("{}", to_json(&entry));
                return Ok(ExitCode::SUCCESS);
            }
            after_tb = entry.id;
        }
        for entry in broker.tail(name, StreamKind::Dead, &after_dead, 256, Duration::ZERO).await? {
            if answers(&entry, &id) {
                let get = |key: &str| entry.fields.iter().find(|(k, _)| k == key).map_or("", |(_, v)| v.as_str());
                eprintln!(
                    "message {id} failed after {} attempts: {}",
                    for_terminal(get("cannon.attempts")),
                    for_terminal(get("cannon.error"))
                );
                println!("{}", to_json(&entry));
                return Ok(ExitCode::FAILURE);
            }
            after_dead = entry.id;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse_fields;

    #[test]
    fn fields_split_at_the_first_equals() {
        let fields = parse_fields(&["text=a=b".into(), "user=".into()]).unwrap();
        assert_eq!(fields, vec![("text".into(), "a=b".into()), ("user".into(), String::new())]);
        assert!(parse_fields(&["novalue".into()]).is_err());
        assert!(parse_fields(&["=x".into()]).is_err());
    }
}
