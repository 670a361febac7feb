//! One wiring for every caller that runs services: prepare their streams, build the engine
//! and each service's pipeline, start workers, collectors and the metrics listener, and
//! wait for them to drain after `shutdown` (like mini-redis's `server::run`).
//!
//! `cannon-host run`, `cannon-host bench` and `benches/pipeline.rs` all go through
//! [`start`] (or [`run`], which also waits).

use std::sync::Arc;

use anyhow::Context as _;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::broker::{Broker, ComponentStore, StreamKind};
use crate::collector::{self, Exit};
use crate::config::{Compose, HttpAuth, Service};
use crate::engine::{Compiler, Engine};
use crate::service::{self, engine_options};
use crate::{deploy, observe, worker};

/// What this process runs of the selected services.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Role {
    /// Collectors and workers.
    #[default]
    All,
    /// Workers only.
    Worker,
    /// Collectors only.
    Collector,
}

/// How [`start`] runs the services.
#[derive(Clone)]
pub struct Options {
    /// Collectors, workers, or both.
    pub role: Role,
    /// Where components are compiled (the binary compiles in a child process).
    pub compiler: Compiler,
    /// Appended to each worker's consumer name (`{host}-{pid}-{suffix}`); empty for none.
    pub consumer_suffix: String,
    /// Streams are prepared for at least this many entries (a benchmark's whole run).
    pub min_maxlen: u64,
    /// Serve `/metrics` and the dashboard on this address (`HOST:PORT` or a port).
    pub metrics: Option<String>,
    /// Deployed component versions: each worker applies the active ones before its first
    /// message and swaps in new ones as they are deployed (`crate::deploy`); `None`: the
    /// app files only.
    pub versions: Option<Arc<dyn ComponentStore>>,
    /// `run --watch`: reload a component when its file changes (needs `versions`).
    pub watch: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            role: Role::All,
            compiler: Compiler::InProcess,
            consumer_suffix: String::new(),
            min_maxlen: 0,
            metrics: None,
            versions: None,
            watch: false,
        }
    }
}

/// The started services: their workers, collectors and listener, until they drain.
pub struct Running {
    tasks: JoinSet<anyhow::Result<()>>,
    shutdown: CancellationToken,
}

impl Running {
    /// Waits until every task has ended. A task that fails is logged and stops the others
    /// (through `shutdown`); returns whether all of them ended cleanly.
    pub async fn wait(mut self) -> bool {
        let mut clean = true;
        while let Some(joined) = self.tasks.join_next().await {
            let result = joined.map_err(anyhow::Error::from).and_then(|r| r);
            if let Err(err) = result {
                tracing::error!("{err:#}");
                clean = false;
                self.shutdown.cancel();
            }
        }
        clean
    }
}

/// [`start`], then [`Running::wait`]: runs `services` until `shutdown` and their drain.
pub async fn run(
    compose: &Compose,
    services: &[&Service],
    broker: Arc<dyn Broker>,
    options: &Options,
    shutdown: CancellationToken,
) -> anyhow::Result<bool> {
    Ok(start(compose, services, broker, options, shutdown).await?.wait().await)
}

/// Prepares the streams of `services` and starts what `options.role` asks for; returns
/// once everything is running. Cancelling `shutdown` stops it all: workers finish the
/// messages in flight, collectors stop reading.
pub async fn start(
    compose: &Compose,
    services: &[&Service],
    broker: Arc<dyn Broker>,
    options: &Options,
    shutdown: CancellationToken,
) -> anyhow::Result<Running> {
    for spec in services {
        broker.prepare(&spec.name, spec.stream.maxlen.max(options.min_maxlen)).await?;
    }
    let mut tasks = JoinSet::new();
    if let Some(addr) = &options.metrics {
        start_metrics(compose, services, &broker, addr, &shutdown, &mut tasks).await?;
    }
    if options.role != Role::Collector {
        let engine_options = engine_options(services);
        let engine = Arc::new(Engine::new(&crate::engine::EngineOptions {
            compiler: options.compiler.clone(),
            ..engine_options
        })?);
        for spec in services {
            let runtime = Arc::new(service::build(compose, spec, &engine, Some(broker.clone())).await?);
            let consumer = worker::consumer_name(&options.consumer_suffix);
            if let Some(versions) = &options.versions {
                // deploy: deployed versions replace the app files before the first message.
                let watcher = deploy::Watcher::new(
                    runtime.clone(),
                    versions.clone(),
                    engine.clone(),
                    consumer.clone(),
                    options.watch,
                );
                tasks.spawn(deploy::start(watcher).await.run(shutdown.clone()));
            }
            tasks.spawn(worker::run(runtime, broker.clone(), consumer, shutdown.clone()));
        }
    }
    if options.role != Role::Worker {
        for service in services {
            start_collectors(service, &broker, &shutdown, &mut tasks).await?;
        }
    }
    Ok(Running { tasks, shutdown })
}

/// The metrics listener and the broker sampler behind it. Off loopback only with
/// `metrics: {auth: ...}`; TLS with `tls:`.
async fn start_metrics(
    compose: &Compose,
    services: &[&Service],
    broker: &Arc<dyn Broker>,
    addr: &str,
    shutdown: &CancellationToken,
    tasks: &mut JoinSet<anyhow::Result<()>>,
) -> anyhow::Result<()> {
    crate::config::metrics_reachable(addr, compose.metrics_auth.as_ref()).map_err(anyhow::Error::msg)?;
    let tls = compose
        .metrics_tls
        .as_ref()
        .map(crate::access::ReloadingAcceptor::load)
        .transpose()
        .context("metrics listener")?;
    let mut router = observe::serve::router();
    if let Some(auth) = compose.metrics_auth.clone().filter(|a| *a != HttpAuth::Open) {
        let gate = crate::access::Gate::new("metrics listener", auth, 0);
        router = router.route_layer(axum::middleware::from_fn_with_state(gate, crate::access::require));
    }
    let listener = observe::serve::bind(addr).await?;
    let names = services.iter().map(|s| s.name.clone()).collect();
    tokio::spawn(observe::serve::sample_loop(broker.clone(), names, shutdown.clone()));
    tasks.spawn(observe::serve::serve(listener, router, tls, shutdown.clone()));
    Ok(())
}

/// Every collector of `service`, each with its own taskback group where it delivers
/// taskbacks. A collector whose input ends (end of standard input) shuts the process down.
async fn start_collectors(
    service: &Service,
    broker: &Arc<dyn Broker>,
    shutdown: &CancellationToken,
    tasks: &mut JoinSet<anyhow::Result<()>>,
) -> anyhow::Result<()> {
    let groups = collector::taskback_groups(&service.collectors);
    for (spec, group) in service.collectors.iter().zip(groups) {
        if let Some(group) = &group {
            broker.create_group(&service.name, StreamKind::Taskback, group, "$").await?;
        }
        let ctx = collector::Context {
            service: service.clone(),
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
    Ok(())
}
