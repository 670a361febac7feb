//! Turning compose entries into runnable services: load every component once, bind torch
//! to its shell, and size the engine from what will run.

use std::sync::Arc;

use anyhow::Context as _;
use arc_swap::ArcSwap;

use crate::broker::{Broker, KvStore, StreamReader};
use crate::config::{ComponentSpec, Compose, Service, TaskSpec};
use crate::deploy::LiveComponent;
use crate::engine::{Component, Engine, EngineOptions, KvScope, World};
use crate::pipeline::{Pipeline, Step};
use crate::torch::Torch;

/// A service ready to process messages.
pub struct ServiceRuntime {
    /// The service as the compose file describes it.
    pub spec: Service,
    /// Its loaded pipeline.
    pub pipeline: Pipeline,
    /// The shell, when the service has one (for `cannon-host torch`).
    pub torch: Option<Arc<Torch>>,
    /// Its metric handles (`/metrics`, the dashboard).
    pub observe: Arc<crate::observe::ServiceMetrics>,
    /// Its components as a deploy replaces them (`crate::deploy`): shell first, then tasks.
    pub live: Vec<LiveComponent>,
}

impl ServiceRuntime {
    /// The service's name.
    pub fn name(&self) -> &str {
        &self.spec.name
    }
}

/// Picks services by name (all when `names` is empty), failing on an unknown name.
pub fn select<'a>(compose: &'a Compose, names: &[String]) -> anyhow::Result<Vec<&'a Service>> {
    if names.is_empty() {
        return Ok(compose.services.values().collect());
    }
    names
        .iter()
        .map(|name| {
            compose.services.get(name).ok_or_else(|| {
                let known: Vec<&str> = compose.services.keys().map(String::as_str).collect();
                anyhow::anyhow!("{}: no service {name:?} (services: {})", compose.path.display(), known.join(", "))
            })
        })
        .collect()
}

fn components(service: &Service) -> impl Iterator<Item = &ComponentSpec> {
    service.shell.iter().chain(service.tasks.iter().filter_map(|t| match t {
        TaskSpec::Wasm(c) => Some(c),
        TaskSpec::Torch(_) => None,
    }))
}

/// Engine settings for running `services`: pool slots for every in-flight message, memory
/// slots as large as the largest cap, fuel when anything asks for it.
pub fn engine_options(services: &[&Service]) -> EngineOptions {
    let concurrency: usize = services.iter().map(|s| s.workers.concurrency).sum();
    let max_memory_mb = services.iter().flat_map(|s| components(s).map(|c| c.limits.memory_mb)).max().unwrap_or(32);
    let fuel = services.iter().any(|s| components(s).any(|c| c.limits.fuel.is_some()));
    EngineOptions {
        // One instance per in-flight message, plus the shells' `commands()` at load.
        instances: u32::try_from(concurrency + services.len() + 8).unwrap_or(u32::MAX),
        max_memory_mb,
        fuel,
        ..EngineOptions::default()
    }
}

/// Loads one component on a blocking thread (compilation is CPU-bound): from its file, or
/// from `bytes` (a deployed version) when given.
pub(crate) async fn load(
    engine: &Arc<Engine>,
    spec: &ComponentSpec,
    world: World,
    service: &str,
    bytes: Option<(Arc<Vec<u8>>, String)>,
) -> anyhow::Result<Arc<Component>> {
    let engine = engine.clone();
    let spec_owned = spec.clone();
    let mut component = tokio::task::spawn_blocking(move || match bytes {
        Some((bytes, origin)) => engine.load_bytes(&spec_owned, world, &bytes, &origin),
        None => engine.load(&spec_owned, world),
    })
    .await
    .context("component loader panicked")?
    .with_context(|| format!("service {service:?}"))?;
    // observe: the component's metric handles, labelled with this service.
    // (none with `CANNON_METRICS=off`: calls are then neither counted nor timed for metrics).
    component.observe =
        crate::observe::counting().then(|| crate::observe::component(service, &component.name, &component.version));
    tracing::debug!(
        service,
        component = %component.name,
        version = %component.version,
        cached = component.from_cache,
        ms = component.load_time.as_millis() as u64,
        "component loaded"
    );
    Ok(Arc::new(component))
}

/// Builds the runtime of one service.
pub async fn build(
    compose: &Compose,
    service: &Service,
    engine: &Arc<Engine>,
    broker: Option<Arc<dyn Broker>>,
) -> anyhow::Result<ServiceRuntime> {
    let name = service.name.as_str();
    let torch_shell = match &service.shell {
        Some(spec) => {
            let shell = load(engine, spec, World::Shell, name, None).await?;
            let commands = shell
                .commands()
                .await
                .with_context(|| format!("service {name:?}: shell {:?} failed to list its commands", spec.name))?;
            Some((shell, Arc::new(commands), spec))
        }
        None => None,
    };
    let mut steps = Vec::with_capacity(service.tasks.len());
    let mut live = Vec::with_capacity(service.tasks.len() + 1);
    let mut torches = Vec::new();
    let mut torch_for_cli = None;
    for task in &service.tasks {
        match task {
            TaskSpec::Wasm(spec) => {
                let slot = Arc::new(ArcSwap::new(load(engine, spec, World::Task, name, None).await?));
                live.push(LiveComponent::task(spec.clone(), slot.clone()));
                steps.push(Step::Task(slot));
            }
            TaskSpec::Torch(torch) => {
                let (shell, commands, spec) =
                    torch_shell.as_ref().with_context(|| format!("service {name:?}: a torch task needs a `shell:`"))?;
                let built = Arc::new(Torch::new(
                    torch.clone(),
                    shell.clone(),
                    commands.clone(),
                    &spec.permissions,
                    &compose.groups,
                ));
                torch_for_cli.get_or_insert_with(|| built.clone());
                let slot = Arc::new(ArcSwap::new(built));
                torches.push(slot.clone());
                steps.push(Step::Torch(slot));
            }
        }
    }
    if let Some((shell, _, spec)) = &torch_shell {
        live.insert(0, LiveComponent::shell((*spec).clone(), shell.clone(), torches));
    }
    let kv = broker.map(|broker| KvScope {
        store: broker.clone() as Arc<dyn KvStore>,
        namespace: compose.namespace.as_str().into(),
        service: name.into(),
        quota: service.kv,
        streams: Some(broker as Arc<dyn StreamReader>),
    });
    Ok(ServiceRuntime {
        spec: service.clone(),
        pipeline: Pipeline { steps, kv },
        torch: torch_for_cli,
        observe: crate::observe::service(name),
        live,
    })
}
