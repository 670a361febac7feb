//! A loaded component: compiled once, its imports checked against the compose file's
//! grants, pre-instantiated once. Its calls are in `call.rs`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::component::{Component as WasmComponent, types::ComponentItem};

use crate::engine::bindings::shell::ShellPre;
use crate::engine::bindings::task::TaskPre;
use crate::engine::http::HttpPolicy;
use crate::engine::secrets::Secrets;
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
    /// Name used in logs and errors (shared with each call's log context).
    pub name: Arc<str>,
    /// Which world it was loaded for.
    pub world: World,
    /// Whether the compiled code came from the on-disk cache.
    pub from_cache: bool,
    /// Time spent compiling or loading the compiled code.
    pub load_time: Duration,
    /// First [`VERSION_DIGITS`] hex digits of the SHA-256 of the component's bytes: the
    /// version shown in call logs, dead letters (`name@version`), `info` and metrics.
    pub version: String,
    /// The whole SHA-256 (hex) of its bytes.
    pub sha256: String,
    /// Where its calls are counted for `/metrics` (set by the service that loads it).
    pub observe: Option<Arc<crate::observe::CallMetrics>>,
    pub(super) pre: Prepared,
    pub(super) engine: wasmtime::Engine,
    /// Keeps the epoch ticker (and so this component's deadlines) alive.
    _ticker: Arc<Ticker>,
    /// The engine's seats (`runners.rs`).
    pub(super) runners: Arc<super::runners::Runners>,
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
    /// `allow: [{streams: [...]}]`: the services whose streams it may read (`engine/streams.rs`).
    pub(super) streams: Arc<[String]>,
    /// `allow: [{http: [...]}]` with the limits of outbound requests (`engine/http.rs`).
    pub(super) http: Option<Arc<HttpPolicy>>,
    /// `secrets:`: read through `config.get`, masked in the component's output.
    pub(super) secrets: Arc<Secrets>,
}

/// What one call cost.
#[derive(Debug, Clone, Copy, Default)]
pub struct CallStats {
    /// Instantiation time.
    pub instantiate: Duration,
    /// Whole call, instantiation included, from when it had its seat.
    pub wall: Duration,
    /// Time spent waiting for a seat before the call (`engine/runners.rs`), not in `wall`.
    pub waited: Duration,
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
/// `wasi:http/types` and `wasi:http/outgoing-handler`: linked, but granted per component.
const WASI_HTTP: &str = "wasi:http/";

/// The WASI 0.2 packages the linker provides, locked down per call (no preopens unless
/// `files:` grants one, no environment, no arguments, no network). `wasi:http` needs an
/// `http` grant; anything else outside `cannon:platform` (`wasi:keyvalue`, a made-up
/// interface) is refused at load.
const WASI_PROVIDED: [&str; 6] =
    ["wasi:io/", "wasi:clocks/", "wasi:random/", "wasi:filesystem/", "wasi:sockets/", "wasi:cli/"];

impl Engine {
    /// Compiles (or loads from the cache) and pre-instantiates one component from its file,
    /// refusing it when it imports something not granted, does not fit `world`, or does
    /// not have the SHA-256 its `sha256:` pin names.
    pub fn load(&self, spec: &ComponentSpec, world: World) -> Result<Component, LoadError> {
        let bytes = std::fs::read(&spec.path).map_err(|source| LoadError::Read {
            name: spec.name.clone(),
            path: spec.path.clone(),
            source,
        })?;
        self.load_bytes(spec, world, &bytes, &spec.path.display().to_string())
    }

    /// [`Engine::load`] for bytes from elsewhere (a deployed version); `origin` names where
    /// they came from in errors.
    pub fn load_bytes(
        &self,
        spec: &ComponentSpec,
        world: World,
        bytes: &[u8],
        origin: &str,
    ) -> Result<Component, LoadError> {
        let started = Instant::now();
        let sha256 = sha256_hex(bytes);
        if let Some(pinned) = &spec.sha256
            && *pinned != sha256
        {
            return Err(LoadError::Pinned {
                name: spec.name.clone(),
                origin: origin.to_owned(),
                pinned: pinned.clone(),
                actual: sha256,
            });
        }
        let (component, from_cache) = self.compile(spec, bytes)?;
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
            name: spec.name.as_str().into(),
            world,
            from_cache,
            load_time: started.elapsed(),
            version: sha256[..VERSION_DIGITS].to_owned(),
            sha256,
            observe: None,
            pre,
            engine: self.engine.clone(),
            _ticker: self.ticker.clone(),
            runners: self.runners.clone(),
            fuel_enabled: self.fuel,
            config: Arc::new(spec.config.clone()),
            limits: spec.limits,
            files: spec.files.clone(),
            kv_granted: spec.allow.contains(&Capability::Kv),
            taskback_granted: spec.allow.contains(&Capability::Taskback),
            streams: spec.streams.iter().cloned().collect(),
            http: spec.http.clone().map(|grant| Arc::new(HttpPolicy::new(grant, &spec.limits))),
            secrets: Arc::new(Secrets::new(spec.secrets.clone())),
        })
    }
}

/// Hex digits of the SHA-256 that name a version in logs, dead letters and metrics.
pub const VERSION_DIGITS: usize = 12;

/// The SHA-256 of `bytes`, 64 lower-case hex digits: a component version's identity.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    crate::text::hex(&Sha256::digest(bytes))
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
            if import.starts_with(WASI_HTTP) && spec.http.is_none() {
                return Err(LoadError::NotGranted {
                    name: spec.name.clone(),
                    import: import.to_owned(),
                    capability: "{http: [\"https://HOST\"]}",
                });
            }
            if import.starts_with(WASI_HTTP) || WASI_PROVIDED.iter().any(|package| import.starts_with(package)) {
                continue; // Versions and types are checked by `instantiate_pre`.
            }
            return Err(LoadError::Unknown { name: spec.name.clone(), import: import.to_owned() });
        };
        let interface = interface.split('@').next().unwrap_or(interface);
        let capability = match interface {
            "types" | "log" | "config" => continue,
            "kv" => Capability::Kv,
            "taskback" => Capability::Taskback,
            "streams" if spec.streams.is_empty() => {
                return Err(LoadError::NotGranted {
                    name: spec.name.clone(),
                    import: import.to_owned(),
                    capability: "{streams: [SERVICE]}",
                });
            }
            "streams" => continue,
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
