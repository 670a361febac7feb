//! A loaded component: compiled once, its imports checked against the compose file's
//! grants, pre-instantiated once. Its calls are in `call.rs`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::component::{Component as WasmComponent, types::ComponentItem};

use crate::engine::bindings::shell::ShellPre;
use crate::engine::bindings::task::TaskPre;
use crate::engine::state::HostState;
use crate::engine::{Engine, LoadError, Ticker};
use crate::vocab::Fields;
use crate::vocab::{Capability, ComponentSpec, Kwargs, Limits};

/// Which world a component must fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum World {
    /// `run(msg, results)`: a pipeline step.
    Task,
    /// `commands()` and `call(argv, msg)`: a command tree for torch.
    Shell,
}

impl World {
    /// The world's name in WIT and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            World::Task => "task",
            World::Shell => "shell",
        }
    }
}

/// A component pre-instantiated for its world (`InstancePre` with typed exports).
pub(super) enum Prepared {
    Task(TaskPre<HostState>),
    Shell(ShellPre<HostState>),
}

/// A component ready to be called: compiled once, pre-instantiated once.
pub struct Component {
    /// Name used in logs and errors.
    pub name: String,
    /// Which world it was loaded for.
    pub world: World,
    /// Whether the compiled code came from the on-disk cache.
    pub from_cache: bool,
    /// Time spent compiling or loading the compiled code.
    pub load_time: Duration,
    /// First 12 hex digits of the SHA-256 of the component's bytes (metrics label).
    pub version: String,
    /// Where its calls are counted for `/metrics` (set by the service that loads it).
    pub observe: Option<Arc<crate::observe::CallMetrics>>,
    pub(super) pre: Prepared,
    pub(super) engine: wasmtime::Engine,
    /// Keeps the epoch ticker (and so this component's deadlines) alive.
    _ticker: Arc<Ticker>,
    /// Whether the engine meters fuel (it does for every call once any component sets it).
    pub(super) fuel_enabled: bool,
    /// What the `config` import answers.
    pub(super) config: Arc<Kwargs>,
    pub(super) limits: Limits,
    /// Host directory preopened read-only as `/` (`files:`).
    pub(super) files: Option<PathBuf>,
    /// `allow: [kv]`: only then does a call get the service's kv store.
    pub(super) kv_granted: bool,
    /// `allow: [taskback]`: only then may a call queue taskbacks.
    pub(super) taskback_granted: bool,
}

/// What one call cost.
#[derive(Debug, Clone, Copy, Default)]
pub struct CallStats {
    /// Instantiation time.
    pub instantiate: Duration,
    /// Whole call, instantiation included.
    pub wall: Duration,
    /// Fuel consumed, when fuel is on.
    pub fuel: Option<u64>,
    /// Largest linear memory size reached, in bytes.
    pub memory_peak: usize,
}

/// A successful call's value, the taskbacks it queued and its cost.
#[derive(Debug)]
pub struct CallOutput<T> {
    /// What the call returned.
    pub value: T,
    /// Taskbacks the call queued (`allow: [taskback]`).
    pub taskbacks: Vec<Fields>,
    /// What the call cost.
    pub stats: CallStats,
}

const CANNON_PREFIX: &str = "cannon:platform/";

/// The WASI 0.2 packages the linker provides, locked down per call (no preopens unless
/// `files:` grants one, no environment, no arguments, no network). Anything else outside
/// `cannon:platform` (`wasi:http`, `wasi:keyvalue`, a made-up interface) is refused at load.
const WASI_PROVIDED: [&str; 6] =
    ["wasi:io/", "wasi:clocks/", "wasi:random/", "wasi:filesystem/", "wasi:sockets/", "wasi:cli/"];

impl Engine {
    /// Compiles (or loads from the cache) and pre-instantiates one component, refusing it
    /// when it imports something not granted or does not fit `world`.
    pub fn load(&self, spec: &ComponentSpec, world: World) -> Result<Component, LoadError> {
        let started = Instant::now();
        let bytes = std::fs::read(&spec.path).map_err(|source| LoadError::Read {
            name: spec.name.clone(),
            path: spec.path.clone(),
            source,
        })?;
        let (component, from_cache) = self.compile(spec, &bytes)?;
        check_imports(&self.engine, &component, spec)?;
        let wrong_world =
            |reason: String| LoadError::WrongWorld { name: spec.name.clone(), world: world.as_str(), reason };
        let instance_pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(|e| LoadError::Imports { name: spec.name.clone(), reason: format!("{e:#}") })?;
        let pre = match world {
            World::Task => Prepared::Task(TaskPre::new(instance_pre).map_err(|e| wrong_world(export_hint(&e, world)))?),
            World::Shell => {
                Prepared::Shell(ShellPre::new(instance_pre).map_err(|e| wrong_world(export_hint(&e, world)))?)
            }
        };
        Ok(Component {
            name: spec.name.clone(),
            world,
            from_cache,
            load_time: started.elapsed(),
            version: short_hash(&bytes),
            observe: None,
            pre,
            engine: self.engine.clone(),
            _ticker: self.ticker.clone(),
            fuel_enabled: self.fuel,
            config: Arc::new(spec.config.clone()),
            limits: spec.limits,
            files: spec.files.clone(),
            kv_granted: spec.allow.contains(&Capability::Kv),
            taskback_granted: spec.allow.contains(&Capability::Taskback),
        })
    }
}

/// First 12 hex digits of the SHA-256 of `bytes`.
fn short_hash(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    crate::text::hex(&Sha256::digest(bytes)[..6])
}

fn export_hint(err: &wasmtime::Error, world: World) -> String {
    let wanted = match world {
        World::Task => "`run: func(msg: message, results: fields) -> result<fields, string>`",
        World::Shell => "`commands` and `call`",
    };
    format!("expected the export {wanted} ({err:#})")
}

/// Refuses imports the compose file does not grant, naming the import and the component.
fn check_imports(engine: &wasmtime::Engine, component: &WasmComponent, spec: &ComponentSpec) -> Result<(), LoadError> {
    for (import, item) in component.component_type().imports(engine) {
        if !matches!(item.ty, ComponentItem::ComponentInstance(_)) {
            return Err(LoadError::Unknown { name: spec.name.clone(), import: import.to_owned() });
        }
        let Some(interface) = import.strip_prefix(CANNON_PREFIX) else {
            if WASI_PROVIDED.iter().any(|package| import.starts_with(package)) {
                continue; // Versions and types are checked by `instantiate_pre`.
            }
            return Err(LoadError::Unknown { name: spec.name.clone(), import: import.to_owned() });
        };
        let interface = interface.split('@').next().unwrap_or(interface);
        let capability = match interface {
            "types" | "log" | "config" => continue,
            "kv" => Capability::Kv,
            "taskback" => Capability::Taskback,
            _ => return Err(LoadError::Unknown { name: spec.name.clone(), import: import.to_owned() }),
        };
        if !spec.allow.contains(&capability) {
            return Err(LoadError::NotGranted {
                name: spec.name.clone(),
                import: import.to_owned(),
                capability: match capability {
                    Capability::Kv => "kv",
                    Capability::Taskback => "taskback",
                },
            });
        }
    }
    Ok(())
}

impl Component {
    /// The limits this component runs under.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }
}
