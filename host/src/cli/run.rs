//! `cannon-host run [SERVICE...] [--role all|worker|collector]`.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::broker::{KvStore, StreamKind};
use crate::cli::{Cli, connect, connect_versions, load_compose, sandboxed};
use crate::collector::{self, Exit};
use crate::deploy;
use crate::engine::Engine;
use crate::observe;
use crate::service::{self, engine_options};
use crate::worker;

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
    /// Reload a component when its file in `app_dir` changes (local development), through
    /// the same swap as `deploy`; a deployed version, when active, takes precedence.
    #[arg(long)]
    pub watch: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Role {
    All,
    Worker,
    Collector,
}

pub async fn run(cli: &Cli, args: &Args, shutdown: CancellationToken) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    raise_fd_limit();
    let compose = load_compose(&cli.file)?;
    let selected = service::select(&compose, &args.services)?;
    let broker = connect(cli, &compose).await?;
    for spec in &selected {
        broker.prepare(&spec.name, spec.stream.maxlen).await?;
    }

    let mut tasks = JoinSet::new();
    // observe: metrics listener and broker sampler, when asked for.
    if let Some(addr) = args.metrics.as_ref().or(compose.metrics_listen.as_ref()) {
        // Access control: off loopback only with `metrics: {auth: ...}`; TLS with `tls:`.
        crate::config::metrics_reachable(addr, compose.metrics_auth.as_ref()).map_err(anyhow::Error::msg)?;
        let tls = compose
            .metrics_tls
            .as_ref()
            .map(crate::access::ReloadingAcceptor::load)
            .transpose()
            .context("metrics listener")?;
        let mut router = observe::serve::router();
        if let Some(auth) = compose.metrics_auth.clone().filter(|a| *a != crate::config::HttpAuth::Open) {
            let gate = crate::access::Gate::new("metrics listener", auth, 0);
            router = router.route_layer(axum::middleware::from_fn_with_state(gate, crate::access::require));
        }
        let listener = observe::serve::bind(addr).await?;
        let names = selected.iter().map(|s| s.name.clone()).collect();
        tokio::spawn(observe::serve::sample_loop(broker.clone(), names, shutdown.clone()));
        tasks.spawn(observe::serve::serve(listener, router, tls, shutdown.clone()));
    }
    if args.role != Role::Collector {
        let engine = Arc::new(Engine::new(&sandboxed(engine_options(&selected))?)?);
        let versions = connect_versions(cli, &compose).await?;
        for spec in &selected {
            let kv: Arc<dyn KvStore> = broker.clone();
            let runtime = Arc::new(service::build(&compose, spec, &engine, Some(kv)).await?);
            let consumer = worker::consumer_name("");
            // deploy: deployed versions replace the app files before the first message.
            let watcher =
                deploy::Watcher::new(runtime.clone(), versions.clone(), engine.clone(), consumer.clone(), args.watch);
            tasks.spawn(deploy::start(watcher).await.run(shutdown.clone()));
            tasks.spawn(worker::run(runtime, broker.clone(), consumer, shutdown.clone()));
        }
    }
    if args.role != Role::Worker {
        for service in &selected {
            let groups = collector::taskback_groups(&service.collectors);
            for (spec, group) in service.collectors.iter().zip(groups) {
                if let Some(group) = &group {
                    broker.create_group(&service.name, StreamKind::Taskback, group, "$").await?;
                }
                let ctx = collector::Context {
                    service: (*service).clone(),
                    spec: spec.clone(),
                    broker: broker.clone(),
                    taskback_group: group,
                    consumer: format!("{}-collector", worker::host_name()),
                    shutdown: shutdown.clone(),
                };
                let shutdown = shutdown.clone();
                tasks.spawn(async move {
                    let name = ctx.service.name.clone();
                    let exit = collector::run(ctx).await?;
                    if exit == Exit::Finished {
                        tracing::info!(service = %name, "input ended; shutting down");
                        shutdown.cancel();
                    }
                    Ok(())
                });
            }
        }
    }
    let names: Vec<&str> = selected.iter().map(|s| s.name.as_str()).collect();
    tracing::info!(
        services = %names.join(","),
        broker = %broker.describe(),
        ms = started.elapsed().as_millis() as u64,
        "ready"
    );
    let mut failed = false;
    while let Some(joined) = tasks.join_next().await {
        let result = joined.map_err(anyhow::Error::from).and_then(|r| r);
        if let Err(err) = result {
            tracing::error!("{err:#}");
            failed = true;
            shutdown.cancel();
        }
    }
    Ok(if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS })
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
