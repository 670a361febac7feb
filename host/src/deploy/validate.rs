//! What `deploy` and `rollback` check before a version is stored or activated: exactly what
//! `run` does when it loads a component (the engine, instance allocator, compile child and
//! limits of the service), plus a shell's command table.

use std::sync::Arc;

use anyhow::Context as _;

use crate::config::{ComponentSpec, Service, TaskSpec};
use crate::engine::{Engine, World};

/// Every entry of `service` that names `component` (a task may appear twice with other
/// `conf:`), each with its world; an error listing the service's components when none does.
pub fn targets(service: &Service, component: &str) -> anyhow::Result<Vec<(ComponentSpec, World)>> {
    let all: Vec<(&ComponentSpec, World)> = service
        .shell
        .iter()
        .map(|s| (s, World::Shell))
        .chain(service.tasks.iter().filter_map(|t| match t {
            TaskSpec::Wasm(c) => Some((c, World::Task)),
            TaskSpec::Torch(_) => None,
        }))
        .collect();
    let found: Vec<(ComponentSpec, World)> =
        all.iter().filter(|(spec, _)| spec.name == component).map(|(spec, world)| ((*spec).clone(), *world)).collect();
    if found.is_empty() {
        let names: Vec<&str> = all.iter().map(|(spec, _)| spec.name.as_str()).collect();
        anyhow::bail!(
            "service {:?} has no component {:?} (its components: {})",
            service.name,
            crate::text::for_terminal(component),
            if names.is_empty() { "none".to_owned() } else { names.join(", ") }
        );
    }
    Ok(found)
}

/// Loads `bytes` as each entry of `service` named `component` would be loaded by `run`
/// (grants, world, pin, compile limits) and asks a shell for its command table. `origin`
/// names the bytes in errors.
pub async fn validate(
    engine: &Arc<Engine>,
    service: &Service,
    component: &str,
    bytes: Arc<Vec<u8>>,
    origin: &str,
) -> anyhow::Result<()> {
    for (spec, world) in targets(service, component)? {
        let loaded =
            crate::service::load(engine, &spec, world, &service.name, Some((bytes.clone(), origin.to_owned()))).await?;
        if world == World::Shell {
            loaded.commands().await.with_context(|| {
                format!("service {:?}: shell {:?} failed to list its commands", service.name, spec.name)
            })?;
        }
    }
    Ok(())
}
