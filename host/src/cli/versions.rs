//! `cannon-host versions SERVICE [--json]`: each component's deployed versions, newest
//! first: hash prefix, size, when, who, note, which is active and how many running workers
//! run it, and the workers that failed to load a version. Everything read from the broker
//! is printed through [`crate::text`].

use std::process::ExitCode;
use std::sync::Arc;

use serde_json::{Value, json};

use crate::broker::versions::{Active, REPORT_STALE_MS, Version, WorkerReport};
use crate::cli::{Cli, connect_versions, one_service};
use crate::deploy::{now_ms, short, targets};
use crate::text::{for_json, for_terminal};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The service whose versions to list.
    pub service: String,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// `ms` since the Unix epoch, to the second, in RFC 3339 (UTC).
pub(crate) fn utc(ms: u64) -> String {
    crate::time::rfc3339(i64::try_from(ms / 1000 * 1000).unwrap_or(0))
}

/// `n` bytes as `512 B`, `61.2 KB`, `18.4 MB`.
fn size(n: u64) -> String {
    match n {
        0..1_000 => format!("{n} B"),
        1_000..1_000_000 => format!("{:.1} KB", n as f64 / 1e3),
        _ => format!("{:.1} MB", n as f64 / 1e6),
    }
}

/// Reports of workers that are still running.
pub(crate) fn live(reports: Vec<WorkerReport>) -> Vec<WorkerReport> {
    let now = now_ms();
    reports.into_iter().filter(|r| now.saturating_sub(r.seen_ms) < REPORT_STALE_MS).collect()
}

/// How many of `workers` run `sha256` as `component`.
pub(crate) fn running(workers: &[WorkerReport], component: &str, sha256: &str) -> usize {
    workers.iter().filter(|r| r.components.iter().any(|c| c.component == component && c.sha256 == sha256)).count()
}

/// The distinct versions of `component`, newest deploy first (a version deployed twice is
/// listed at its last deploy).
fn of_component<'a>(history: &'a [Version], component: &str) -> Vec<&'a Version> {
    let mut out: Vec<&Version> = Vec::new();
    for version in history.iter().rev().filter(|v| v.component == component) {
        if !out.iter().any(|v| v.sha256 == version.sha256) {
            out.push(version);
        }
    }
    out
}

pub async fn run(cli: &Cli, args: &Args) -> anyhow::Result<ExitCode> {
    let (compose, service) = one_service(cli, &args.service)?;
    let store = connect_versions(cli, &compose).await?;
    let history = store.versions(&service.name).await?;
    let active = store.active(&service.name).await?;
    let workers = live(store.reports(&service.name).await?);
    let mut names: Vec<String> = Vec::new();
    for name in service.shell.iter().map(|s| s.name.clone()).chain(service.tasks.iter().filter_map(|t| match t {
        crate::config::TaskSpec::Wasm(c) => Some(c.name.clone()),
        crate::config::TaskSpec::Torch(_) => None,
    })) {
        if !names.contains(&name) {
            names.push(name);
        }
    }
    if args.json {
        let components: Vec<Value> =
            names.iter().map(|name| component_json(name, &history, &active, &workers)).collect();
        let out = json!({
            "service": service.name,
            "broker": store.describe(),
            "generation": active.generation,
            "workers": workers.len(),
            "components": components,
        });
        println!("{}", for_json(out.to_string()));
        return Ok(ExitCode::SUCCESS);
    }
    println!("service {} on {} ({} running workers)", service.name, store.describe(), workers.len());
    for name in &names {
        let world = targets(&service, name).ok().and_then(|t| t.first().map(|(_, w)| w.as_str())).unwrap_or("task");
        println!("  {world} {name}:");
        print_component(name, &history, &active, &workers);
    }
    Ok(ExitCode::SUCCESS)
}

fn print_component(name: &str, history: &[Version], active: &Active, workers: &[WorkerReport]) {
    let versions = of_component(history, name);
    if versions.is_empty() {
        println!("    no deployed version: runs its file in app_dir");
    }
    for version in versions {
        let is_active = active.of(name) == Some(version.sha256.as_str());
        let note =
            if version.note.is_empty() { String::new() } else { format!("  \"{}\"", for_terminal(&version.note)) };
        println!(
            "  {} {}  {:>8}  {}  {}  {} workers{}{note}",
            if is_active { "*" } else { " " },
            for_terminal(short(&version.sha256)),
            size(version.size),
            utc(version.at_ms),
            for_terminal(&version.user),
            running(workers, name, &version.sha256),
            if is_active { "  active" } else { "" },
        );
    }
    for report in workers {
        for c in report.components.iter().filter(|c| c.component == name) {
            if let Some(failed) = &c.failed {
                println!(
                    "    worker {} failed to load {} (runs {}): {}",
                    for_terminal(&report.worker),
                    for_terminal(short(failed)),
                    for_terminal(short(&c.sha256)),
                    for_terminal(c.error.as_deref().unwrap_or("unknown error"))
                );
            }
        }
    }
}

fn component_json(name: &str, history: &[Version], active: &Active, workers: &[WorkerReport]) -> Value {
    let versions: Vec<Value> = of_component(history, name)
        .into_iter()
        .map(|v| {
            json!({
                "sha256": v.sha256,
                "version": short(&v.sha256),
                "size": v.size,
                "deployed_at_ms": v.at_ms,
                "user": v.user,
                "note": v.note,
                "active": active.of(name) == Some(v.sha256.as_str()),
                "workers": running(workers, name, &v.sha256),
            })
        })
        .collect();
    let failures: Vec<Value> = workers
        .iter()
        .flat_map(|r| {
            r.components
                .iter()
                .filter(|c| c.component == name && c.failed.is_some())
                .map(|c| json!({ "worker": r.worker, "failed": c.failed, "error": c.error, "running": c.sha256 }))
        })
        .collect();
    json!({ "component": name, "active": active.of(name), "versions": versions, "failures": failures })
}

/// `info`'s view of a service's components: the active deployed version (or the app file)
/// and which versions its running workers run, as text lines and as JSON.
pub(crate) async fn summary(
    cli: &Cli,
    compose: &crate::config::Compose,
    service: &crate::config::Service,
) -> anyhow::Result<(Vec<String>, Value)> {
    let store = connect_versions(cli, compose).await?;
    let active = store.active(&service.name).await?;
    let workers = live(store.reports(&service.name).await?);
    let mut lines = Vec::new();
    let mut out = Vec::new();
    let names = service.shell.iter().map(|s| &s.name).chain(service.tasks.iter().filter_map(|t| match t {
        crate::config::TaskSpec::Wasm(c) => Some(&c.name),
        crate::config::TaskSpec::Torch(_) => None,
    }));
    let mut seen: Vec<&String> = Vec::new();
    for name in names {
        if seen.contains(&name) {
            continue;
        }
        seen.push(name);
        let mut runs: Vec<(String, usize)> = Vec::new();
        for c in workers.iter().flat_map(|r| r.components.iter().filter(|c| &c.component == name)) {
            match runs.iter_mut().find(|(sha, _)| *sha == c.sha256) {
                Some((_, n)) => *n += 1,
                None => runs.push((c.sha256.clone(), 1)),
            }
        }
        let source = match active.of(name) {
            Some(sha) => format!("deployed version {}", for_terminal(short(sha))),
            None => "its file in app_dir".to_owned(),
        };
        let running: Vec<String> =
            runs.iter().map(|(sha, n)| format!("{}@{} on {n}", name, for_terminal(short(sha)))).collect();
        let running = if running.is_empty() { "no running worker".to_owned() } else { running.join(", ") };
        lines.push(format!("  component {name}: {source}; running {running}"));
        out.push(json!({
            "component": name,
            "deployed": active.of(name),
            "running": runs.iter().map(|(sha, n)| json!({"version": short(sha), "sha256": sha, "workers": n})).collect::<Vec<_>>(),
        }));
    }
    Ok((lines, Value::Array(out)))
}

/// For `check` and `ls`: the active deployed version of each component, per service, when
/// the broker is reachable within a moment (`None` otherwise, or when the embedded broker
/// has no database yet: nothing was deployed to it).
pub(crate) async fn deployed(cli: &Cli, compose: &crate::config::Compose) -> Option<Vec<(String, Active)>> {
    let embedded = !matches!(super::broker_url(cli, compose), Some(url) if url != "embedded");
    let dir = cli.data_dir.clone().unwrap_or_else(|| compose.data_dir.clone());
    if embedded && !dir.join(crate::broker::EMBEDDED_DB_FILE).is_file() {
        return Some(Vec::new());
    }
    let look = async {
        let store = connect_versions(cli, compose).await.ok()?;
        let mut out = Vec::new();
        for name in compose.services.keys() {
            out.push((name.clone(), store.active(name).await.ok()?));
        }
        Some(out)
    };
    tokio::time::timeout(std::time::Duration::from_secs(3), look).await.ok().flatten()
}

/// How `check` and `ls` name where a component runs from: `name@version (deployed)`, or
/// the name alone (its file).
pub(crate) fn source(deployed: Option<&[(String, Active)]>, service: &str, component: &str) -> String {
    let active = deployed.and_then(|all| all.iter().find(|(s, _)| s == service)).and_then(|(_, a)| a.of(component));
    match active {
        Some(sha) => format!("{component}@{} (deployed)", for_terminal(short(sha))),
        None => component.to_owned(),
    }
}

/// The bytes of the deployed version of `component` in `service` that `run` would load
/// instead of its file, with a name for errors; `None` when none is active (or the broker
/// cannot be reached within a moment, as for [`deployed`]).
pub(crate) async fn deployed_bytes(
    cli: &Cli,
    compose: &crate::config::Compose,
    service: &str,
    component: &str,
) -> Option<(Arc<Vec<u8>>, String)> {
    let all = deployed(cli, compose).await?;
    let sha = all.iter().find(|(s, _)| s == service).and_then(|(_, active)| active.of(component))?.to_owned();
    let store = connect_versions(cli, compose).await.ok()?;
    let bytes = store.bytes(service, &sha).await.ok().flatten();
    let origin = format!("deployed version {}", for_terminal(short(&sha)));
    // Bytes that do not match their key fail the load like a wrong pin would: say so.
    let bytes = bytes.filter(|b| crate::engine::sha256_hex(b) == sha).unwrap_or_default();
    Some((Arc::new(bytes), origin))
}

/// `check`: every active deployed version loaded as `run` would load it (grants, world,
/// pin, compile limits, a shell's command table), one problem per version refused.
pub(crate) async fn check_deployed(
    cli: &Cli,
    compose: &crate::config::Compose,
    engine: &Arc<crate::engine::Engine>,
) -> Vec<(usize, String)> {
    let mut problems = Vec::new();
    for service in compose.services.values() {
        let entries = service.shell.iter().chain(service.tasks.iter().filter_map(|t| match t {
            crate::config::TaskSpec::Wasm(c) => Some(c),
            crate::config::TaskSpec::Torch(_) => None,
        }));
        for spec in entries {
            let Some((bytes, origin)) = deployed_bytes(cli, compose, &service.name, &spec.name).await else { continue };
            if let Err(err) = crate::deploy::validate(engine, service, &spec.name, bytes, &origin).await {
                problems.push((spec.line, format!("{origin} of {:?}: {err:#}", spec.name)));
            }
        }
    }
    problems
}
