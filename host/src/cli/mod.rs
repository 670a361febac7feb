//! The `cannon-host` commands, one file each.

mod check;
mod ls;
mod run;
mod send;
mod torch;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use crate::broker::Broker;
use crate::config::Compose;

/// Runs message-driven services whose work is done by sandboxed WebAssembly components.
#[derive(Debug, Parser)]
#[command(name = "cannon-host", version, about, propagate_version = true)]
pub struct Cli {
    /// Compose file describing the services.
    #[arg(short = 'f', long = "file", global = true, default_value = "cannon-compose.yml", value_name = "FILE")]
    pub file: PathBuf,
    /// Broker URL, e.g. redis://127.0.0.1:6379 (else $CANNON_BROKER, else the compose file's `broker:`).
    #[arg(long, global = true, env = "CANNON_BROKER", value_name = "URL")]
    pub broker: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run services: collectors and workers, until SIGINT/SIGTERM (then drain).
    Run(run::Args),
    /// Add one message to a service's stream; with --wait, print its taskback as JSON.
    Send(send::Args),
    /// Validate the compose file and every component it names.
    Check,
    /// List services with their collector, shell and tasks.
    Ls,
    /// Run a shell command of a service directly (no broker); without one, a prompt.
    Torch(torch::Args),
}

/// Runs one command; the exit code is the command's verdict.
pub async fn dispatch(cli: Cli, shutdown: CancellationToken) -> anyhow::Result<ExitCode> {
    match &cli.command {
        Command::Run(args) => run::run(&cli, args, shutdown).await,
        Command::Send(args) => send::run(&cli, args).await,
        Command::Check => check::run(&cli).await,
        Command::Ls => ls::run(&cli),
        Command::Torch(args) => torch::run(&cli, args).await,
    }
}

/// Loads the compose file, or prints every problem in it and fails.
pub(crate) fn load_compose(path: &Path) -> anyhow::Result<Compose> {
    crate::config::load(path).map_err(|err| {
        let count = err.diagnostics.len();
        anyhow::anyhow!("{err}\n{count} problem{} in {}", if count == 1 { "" } else { "s" }, path.display())
    })
}

/// Connects to the broker chosen by `--broker`, `$CANNON_BROKER` or the compose file.
pub(crate) async fn connect(cli: &Cli, compose: &Compose) -> anyhow::Result<Arc<dyn Broker>> {
    let url = cli.broker.clone().or_else(|| compose.broker.clone()).with_context(|| {
        format!(
            "no broker configured: add `broker: redis://127.0.0.1:6379` to {}, set CANNON_BROKER or pass --broker",
            compose.path.display()
        )
    })?;
    let broker = crate::broker::connect(&url, &compose.namespace).await?;
    Ok(broker)
}
