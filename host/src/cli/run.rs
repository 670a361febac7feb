//! `cannon-host run [SERVICE...] [--role all|worker|collector]`.

use std::process::ExitCode;
use std::time::Instant;

use tokio_util::sync::CancellationToken;

use crate::cli::{Cli, connect, load_compose, sandboxed_compiler};
use crate::{runner, service};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Services to run (default: all in the compose file).
    pub services: Vec<String>,
    /// What this process runs: collectors and workers, or one of them (scale out by
    /// starting more `--role worker` processes against the same broker).
    #[arg(long, value_enum, default_value_t = Role::All)]
    pub role: Role,
    /// Serve Prometheus metrics (`/metrics`) and the dashboard (`/`) on ADDR: `HOST:PORT`,
    /// or a port on 127.0.0.1 (overrides `metrics: {listen: ...}` in the compose file).
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<String>,
}

pub use crate::runner::Role;

/// Loads the compose file, connects to the broker and runs the selected services through
/// [`crate::runner::start`] until `shutdown`.
pub async fn run(cli: &Cli, args: &Args, shutdown: CancellationToken) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    raise_fd_limit();
    let compose = load_compose(&cli.file)?;
    let selected = service::select(&compose, &args.services)?;
    let broker = connect(cli, &compose).await?;
    let options = runner::Options {
        role: args.role,
        compiler: sandboxed_compiler()?,
        metrics: args.metrics.clone().or_else(|| compose.metrics_listen.clone()),
        ..runner::Options::default()
    };
    let running = runner::start(&compose, &selected, broker.clone(), &options, shutdown).await?;
    let names: Vec<&str> = selected.iter().map(|s| s.name.as_str()).collect();
    tracing::info!(
        services = %names.join(","),
        broker = %broker.describe(),
        ms = started.elapsed().as_millis() as u64,
        "ready"
    );
    Ok(if running.wait().await { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// Raises the soft limit on open files to the hard one: every connection, memfd and
/// compiled component map costs a descriptor, and the usual soft default (1024) is far
/// below what the hard limit allows.
fn raise_fd_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => tracing::debug!(limit, "open files limit"),
        Err(err) => tracing::warn!("cannot raise the open files limit: {err}"),
    }
}
