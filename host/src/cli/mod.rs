//! The `cannon-host` commands, one file each.

mod acl;
mod bench;
mod check;
mod dead;
mod deploy;
mod info;
mod ls;
mod migrate;
mod new;
mod pending;
mod rollback;
mod run;
mod send;
mod torch;
mod versions;
mod watch;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use crate::broker::BrokerAdmin;
use crate::config::Compose;
use crate::engine::{Compiler, EngineOptions};

/// Runs message-driven services whose work is done by sandboxed WebAssembly components.
#[derive(Debug, Parser)]
#[command(name = "cannon-host", version, about, propagate_version = true)]
pub struct Cli {
    /// Compose file describing the services.
    #[arg(short = 'f', long = "file", global = true, default_value = "cannon-compose.yml", value_name = "FILE")]
    pub file: PathBuf,
    /// Broker URL, e.g. redis://127.0.0.1:6379, or `embedded` (else $CANNON_BROKER, else the
    /// compose file's `broker:`, else the embedded broker in the data directory).
    /// A password in it (`redis://user:PASSWORD@host`) is never printed.
    #[arg(long, global = true, env = "CANNON_BROKER", hide_env_values = true, value_name = "URL")]
    pub broker: Option<String>,
    /// Directory of the embedded broker (default: the compose file's `data_dir`, which
    /// defaults to `.cannon` beside the compose file).
    #[arg(long, global = true, env = "CANNON_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    #[command(subcommand)]
    /// The command to run.
    pub command: Command,
}

#[derive(Debug, Subcommand)]
/// The `cannon-host` commands.
pub enum Command {
    /// Run services: collectors and workers, until SIGINT/SIGTERM (then drain).
    Run(run::Args),
    /// Add one message to a service's stream; with --wait, print its taskback as JSON.
    Send(send::Args),
    /// Validate the compose file and every component it names.
    Check,
    /// List services with their collector, shell and tasks.
    Ls,
    /// Streams, consumer groups, consumers, pending and dead counts of a service.
    Info(info::Args),
    /// Messages delivered to workers and not yet acknowledged.
    Pending(pending::Args),
    /// Live tail of a service's data, taskback and dead streams.
    Watch(watch::Args),
    /// List dead letters, or replay them onto the data stream.
    Dead(dead::Args),
    /// Run a shell command of a service directly (no workers; kv on the service's broker
    /// when its shell is granted kv); without one, a prompt.
    Torch(torch::Args),
    /// Measure a service: throughput, latency, memory and per-message isolation cost.
    Bench(bench::Args),
    /// Internal: compile one component from stdin to stdout under rlimits (the compile
    /// child of every other command).
    #[command(hide = true)]
    CompileComponent(crate::engine::compile::ChildArgs),
    /// Print the Redis `ACL SETUSER` rule confining a service's processes to its own keys.
    Acl(acl::Args),
    /// Validate a component and make it the active version of a service's task or shell on
    /// every worker sharing the broker (swapped between messages).
    Deploy(deploy::Args),
    /// List the deployed versions of a service's components.
    Versions(versions::Args),
    /// Make an earlier deployed version of a component the active one again.
    Rollback(rollback::Args),
    /// Write a ready project for a new task or shell (Rust, Python or JavaScript).
    New(new::Args),
    /// Move a namespace's Redis keys to the layout with a hash tag per service
    /// (`{ns:service}:...`); stop the services' workers first.
    MigrateKeys(migrate::Args),
}

/// Runs one command; the exit code is the command's verdict.
pub async fn dispatch(cli: Cli, shutdown: CancellationToken) -> anyhow::Result<ExitCode> {
    match &cli.command {
        Command::Run(args) => run::run(&cli, args, shutdown).await,
        Command::Send(args) => send::run(&cli, args).await,
        Command::Check => check::run(&cli).await,
        Command::Ls => ls::run(&cli).await,
        Command::Info(args) => info::run(&cli, args).await,
        Command::Pending(args) => pending::run(&cli, args).await,
        Command::Watch(args) => watch::run(&cli, args, shutdown).await,
        Command::Dead(args) => dead::run(&cli, args).await,
        Command::Torch(args) => torch::run(&cli, args).await,
        Command::Bench(args) => bench::run(&cli, args).await,
        Command::CompileComponent(args) => Ok(crate::engine::compile::child_main(args)),
        Command::Acl(args) => acl::run(&cli, args),
        Command::Deploy(args) => deploy::run(&cli, args).await,
        Command::Versions(args) => versions::run(&cli, args).await,
        Command::Rollback(args) => rollback::run(&cli, args).await,
        Command::New(args) => new::run(args),
        Command::MigrateKeys(args) => migrate::run(&cli, args).await,
    }
}

/// Untrusted components compiled in a child process of this binary, under
/// `limits.compile_s` and `limits.compile_mb`.
pub(crate) fn sandboxed_compiler() -> anyhow::Result<Compiler> {
    Compiler::this_program().context("cannot find this program to compile components with")
}

/// `options` with untrusted components compiled by [`sandboxed_compiler`].
pub(crate) fn sandboxed(options: EngineOptions) -> anyhow::Result<EngineOptions> {
    Ok(EngineOptions { compiler: sandboxed_compiler()?, ..options })
}

/// Loads the compose file, or prints every problem in it and fails.
pub(crate) fn load_compose(path: &Path) -> anyhow::Result<Compose> {
    crate::config::load(path).map_err(|err| {
        let count = err.diagnostics.len();
        anyhow::anyhow!("{err}\n{count} problem{} in {}", if count == 1 { "" } else { "s" }, path.display())
    })
}

/// The broker URL chosen by `--broker`, `$CANNON_BROKER` or the compose file's `broker:`
/// (`None`, or `embedded`: the embedded broker).
pub(crate) fn broker_url(cli: &Cli, compose: &Compose) -> Option<String> {
    cli.broker.clone().or_else(|| compose.broker.as_ref().map(|url| url.expose().to_owned()))
}

/// Connects to the broker chosen by `--broker`, `$CANNON_BROKER` or the compose file's
/// `broker:`; without any of them (or with `embedded`), opens the embedded broker in
/// `--data-dir` (default: the compose file's `data_dir`).
pub(crate) async fn connect(cli: &Cli, compose: &Compose) -> anyhow::Result<Arc<dyn BrokerAdmin>> {
    match broker_url(cli, compose) {
        Some(url) if url != "embedded" => crate::broker::connect(&url, &compose.namespace)
            .await
            .with_context(|| format!("cannot connect to the broker of {}", compose.path.display())),
        _ => {
            let dir = cli.data_dir.clone().unwrap_or_else(|| compose.data_dir.clone());
            crate::broker::open_embedded(&dir, &compose.namespace)
                .await
                .with_context(|| format!("cannot open the embedded broker in {}", dir.display()))
        }
    }
}

/// Opens the deployed component versions ([`crate::broker::ComponentStore`]) of the broker
/// [`connect`] would pick.
pub(crate) async fn connect_versions(
    cli: &Cli,
    compose: &Compose,
) -> anyhow::Result<Arc<dyn crate::broker::ComponentStore>> {
    match broker_url(cli, compose) {
        Some(url) if url != "embedded" => crate::broker::versions::connect(&url, &compose.namespace)
            .await
            .with_context(|| format!("cannot connect to the broker of {}", compose.path.display())),
        _ => {
            let dir = cli.data_dir.clone().unwrap_or_else(|| compose.data_dir.clone());
            crate::broker::versions::open_embedded(&dir, &compose.namespace)
                .await
                .with_context(|| format!("cannot open the embedded broker in {}", dir.display()))
        }
    }
}

/// Loads the compose file and picks one service from it by name.
pub(crate) fn one_service(cli: &Cli, name: &str) -> anyhow::Result<(Compose, crate::config::Service)> {
    let compose = load_compose(&cli.file)?;
    let service = crate::service::select(&compose, std::slice::from_ref(&name.to_owned()))?
        .into_iter()
        .next()
        .cloned()
        .context("no service selected")?;
    Ok((compose, service))
}
