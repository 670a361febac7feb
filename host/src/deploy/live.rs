//! A component of a running service as a deploy replaces it: every pipeline step it backs,
//! swapped together between messages.

use std::sync::Arc;

use anyhow::Context as _;
use arc_swap::ArcSwap;

use crate::config::ComponentSpec;
use crate::engine::{Component, World};
use crate::torch::Torch;

/// One component of a running service (a task, or the shell with its torch steps).
pub struct LiveComponent {
    /// Its compose entry: grants, limits, pin; a new version is loaded under the same.
    pub spec: ComponentSpec,
    /// The world it implements (task or shell).
    pub world: World,
    place: Place,
}

enum Place {
    /// The pipeline step of a task.
    Task(Arc<ArcSwap<Component>>),
    /// A shell: its current version, and every torch step that dispatches into it.
    Shell { current: ArcSwap<Component>, torches: Vec<Arc<ArcSwap<Torch>>> },
}

impl LiveComponent {
    /// A task backing the pipeline step `slot`.
    pub fn task(spec: ComponentSpec, slot: Arc<ArcSwap<Component>>) -> Self {
        Self { spec, world: World::Task, place: Place::Task(slot) }
    }

    /// A shell, currently `shell`, behind `torches`.
    pub fn shell(spec: ComponentSpec, shell: Arc<Component>, torches: Vec<Arc<ArcSwap<Torch>>>) -> Self {
        Self { spec, world: World::Shell, place: Place::Shell { current: ArcSwap::new(shell), torches } }
    }

    /// The version running now.
    pub fn current(&self) -> Arc<Component> {
        match &self.place {
            Place::Task(slot) => slot.load_full(),
            Place::Shell { current, .. } => current.load_full(),
        }
    }

    /// Makes `component` the version the next messages run; messages already started
    /// finish on the one they took. A shell is first asked for its commands (refused when
    /// it cannot list them or its table breaks the rules), so a torch never runs a shell
    /// whose table it has not checked.
    pub async fn swap(&self, component: Arc<Component>) -> anyhow::Result<()> {
        match &self.place {
            Place::Task(slot) => slot.store(component),
            Place::Shell { current, torches } => {
                let commands = component
                    .commands()
                    .await
                    .with_context(|| format!("shell {:?} failed to list its commands", self.spec.name))?;
                let commands = Arc::new(commands);
                for torch in torches {
                    let rebound = torch.load().with_shell(component.clone(), commands.clone());
                    torch.store(Arc::new(rebound));
                }
                current.store(component);
            }
        }
        Ok(())
    }
}
