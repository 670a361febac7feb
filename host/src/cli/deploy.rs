//! `cannon-host deploy SERVICE COMPONENT FILE.wasm [--note TEXT]`: validate a component as
//! `run` would load it, store it in the broker content-addressed, make it the active
//! version, and report how many running workers swapped to it.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;

use crate::broker::versions::{
    ComponentStore, MAX_COMPONENT_BYTES, MAX_NOTE, MAX_USER, REPORT_STALE_MS, Version, WorkerReport,
};
use crate::cli::{Cli, connect_versions, one_service, sandboxed};
use crate::deploy::{now_ms, short, targets, validate};
use crate::engine::{Engine, sha256_hex};
use crate::service::engine_options;
use crate::text::for_terminal;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The service to deploy to.
    pub service: String,
    /// The component: the `file:` name of one of its tasks, or of its shell.
    pub component: String,
    /// The new version's `.wasm` file.
    #[arg(value_name = "FILE.wasm")]
    pub wasm: PathBuf,
    /// A note kept with the version (shown by `versions`).
    #[arg(long)]
    pub note: Option<String>,
    /// Seconds to wait for the running workers to swap to it.
    #[arg(long, default_value_t = 10, value_name = "SECONDS")]
    pub wait_s: u64,
}

pub async fn run(cli: &Cli, args: &Args) -> anyhow::Result<ExitCode> {
    let (compose, service) = one_service(cli, &args.service)?;
    targets(&service, &args.component)?;
    let note = checked_note(args.note.as_deref())?;
    let shown = args.wasm.display().to_string();
    let bytes = read_bounded(&args.wasm)?;
    let sha256 = sha256_hex(&bytes);
    let bytes = Arc::new(bytes);
    let engine = Arc::new(Engine::new(&sandboxed(engine_options(&[&service]))?)?);
    validate(&engine, &service, &args.component, bytes.clone(), &shown)
        .await
        .with_context(|| format!("{shown} refused; nothing was deployed"))?;
    let store = connect_versions(cli, &compose).await?;
    let version = Version {
        component: args.component.clone(),
        sha256: sha256.clone(),
        size: bytes.len() as u64,
        at_ms: now_ms(),
        user: deploying_user(),
        note,
    };
    let generation = store
        .deploy(&service.name, &version, &bytes)
        .await
        .with_context(|| format!("cannot store {shown} in {}", store.describe()))?;
    println!(
        "deployed {}/{} version {} (sha256:{sha256}, {} bytes)",
        service.name,
        args.component,
        short(&sha256),
        bytes.len()
    );
    await_workers(&*store, &service.name, &args.component, &sha256, generation, Duration::from_secs(args.wait_s))
        .await?;
    Ok(ExitCode::SUCCESS)
}

/// The file's bytes, refusing one larger than [`MAX_COMPONENT_BYTES`] before reading it all.
fn read_bounded(path: &std::path::Path) -> anyhow::Result<Vec<u8>> {
    use std::io::Read as _;
    let file = std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut bytes = Vec::new();
    file.take(MAX_COMPONENT_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("cannot read {}", path.display()))?;
    if bytes.len() > MAX_COMPONENT_BYTES {
        anyhow::bail!(
            "{} is larger than the {} MiB a deployed component may be",
            path.display(),
            MAX_COMPONENT_BYTES >> 20
        );
    }
    Ok(bytes)
}

/// `--note`, refused when too long or holding control characters (it is one line).
fn checked_note(note: Option<&str>) -> anyhow::Result<String> {
    let note = note.unwrap_or_default();
    if note.len() > MAX_NOTE {
        anyhow::bail!("--note of {} bytes is longer than {MAX_NOTE}", note.len());
    }
    if note.contains(crate::text::is_unsafe) {
        anyhow::bail!("--note holds a control or bidi character: {}", for_terminal(note));
    }
    Ok(note.to_owned())
}

/// `$USER` (else `$LOGNAME`, else `unknown`), made one safe line and cut to [`MAX_USER`].
fn deploying_user() -> String {
    let user = std::env::var("USER").or_else(|_| std::env::var("LOGNAME")).unwrap_or_default();
    let user = for_terminal(user.trim()).into_owned();
    let mut end = user.len().min(MAX_USER);
    while !user.is_char_boundary(end) {
        end -= 1;
    }
    if end == 0 { "unknown".to_owned() } else { user[..end].to_owned() }
}

/// Waits up to `wait` until every running worker of the service has applied `generation`
/// and says whether it runs `sha256` for `component`; prints the tally.
pub(crate) async fn await_workers(
    store: &dyn ComponentStore,
    service: &str,
    component: &str,
    sha256: &str,
    generation: u64,
    wait: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + wait;
    loop {
        let now = now_ms();
        let reports = store.reports(service).await?;
        let live: Vec<&WorkerReport> =
            reports.iter().filter(|r| now.saturating_sub(r.seen_ms) < REPORT_STALE_MS).collect();
        if live.is_empty() {
            println!("no worker of service {service} is running; workers start with this version");
            return Ok(());
        }
        let applied: Vec<&WorkerReport> = live.iter().copied().filter(|r| r.generation >= generation).collect();
        let acked = applied
            .iter()
            .filter(|r| r.components.iter().any(|c| c.component == component && c.sha256 == sha256))
            .count();
        if applied.len() == live.len() || Instant::now() >= deadline {
            println!("{acked} of {} running workers acknowledged it", live.len());
            for report in &applied {
                for c in report.components.iter().filter(|c| c.component == component) {
                    if c.failed.as_deref() == Some(sha256) {
                        println!(
                            "  worker {} could not load it and keeps version {}: {}",
                            for_terminal(&report.worker),
                            for_terminal(short(&c.sha256)),
                            for_terminal(c.error.as_deref().unwrap_or("unknown error"))
                        );
                    }
                }
            }
            for report in live.iter().filter(|r| r.generation < generation) {
                println!("  worker {} did not answer within {}s", for_terminal(&report.worker), wait.as_secs());
            }
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
