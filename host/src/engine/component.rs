//! A loaded component and its calls: fresh store, instantiate from the `InstancePre`,
//! call, account, drop.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use wasmtime::component::{Component as WasmComponent, types::ComponentItem};
use wasmtime::{Store, UpdateDeadline};
use wasmtime_wasi::{FsPerms, WasiCtxBuilder};

use crate::broker::Fields;
use crate::config::{Capability, ComponentSpec, Kwargs, Limits};
use crate::engine::bindings::shell::ShellPre;
use crate::engine::bindings::task::TaskPre;
use crate::engine::bindings::{Command, Message};
use crate::engine::output::{CallLog, GuestOutput, Source};
use crate::engine::state::{HostState, Limiter};
use crate::engine::{CallError, Engine, KvScope, LoadError};

/// Which world a component must fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum World {
    Task,
    Shell,
}

impl World {
    pub fn as_str(self) -> &'static str {
        match self {
            World::Task => "task",
            World::Shell => "shell",
        }
    }
}

enum Pre {
    Task(TaskPre<HostState>),
    Shell(ShellPre<HostState>),
}

/// A component ready to be called: compiled once, pre-instantiated once.
pub struct Component {
    /// Name used in logs and errors.
    pub name: String,
    pub world: World,
    /// Whether the compiled code came from the on-disk cache.
    pub from_cache: bool,
    /// Time spent compiling or loading the compiled code.
    pub load_time: Duration,
    pre: Pre,
    engine: wasmtime::Engine,
    fuel_enabled: bool,
    config: Arc<Kwargs>,
    limits: Limits,
    files: Option<PathBuf>,
    kv_granted: bool,
    taskback_granted: bool,
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
    pub value: T,
    pub taskbacks: Vec<Fields>,
    pub stats: CallStats,
}

const CANNON_PREFIX: &str = "cannon:platform/";

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
        let invalid = |reason: String| LoadError::Invalid { name: spec.name.clone(), path: spec.path.clone(), reason };
        let (component, from_cache) = match self.cache() {
            Some(cache) => cache.load(&self.engine, &bytes).map_err(|e| invalid(format!("{e:#}")))?,
            None => (WasmComponent::new(&self.engine, &bytes).map_err(|e| invalid(format!("{e:#}")))?, false),
        };
        check_imports(&self.engine, &component, spec)?;
        let wrong_world =
            |reason: String| LoadError::WrongWorld { name: spec.name.clone(), world: world.as_str(), reason };
        let instance_pre = self.linker.instantiate_pre(&component).map_err(|e| wrong_world(format!("{e:#}")))?;
        let pre = match world {
            World::Task => Pre::Task(TaskPre::new(instance_pre).map_err(|e| wrong_world(export_hint(&e, world)))?),
            World::Shell => Pre::Shell(ShellPre::new(instance_pre).map_err(|e| wrong_world(export_hint(&e, world)))?),
        };
        Ok(Component {
            name: spec.name.clone(),
            world,
            from_cache,
            load_time: started.elapsed(),
            pre,
            engine: self.engine.clone(),
            fuel_enabled: self.fuel,
            config: Arc::new(spec.config.clone()),
            limits: spec.limits,
            files: spec.files.clone(),
            kv_granted: spec.allow.contains(&Capability::Kv),
            taskback_granted: spec.allow.contains(&Capability::Taskback),
        })
    }
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
            continue; // WASI: the linker knows what it provides; instantiate_pre names the rest.
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

    fn store(&self, kv: Option<KvScope>) -> Result<Store<HostState>, CallError> {
        let log_budget = usize::try_from(self.limits.log_kb.saturating_mul(1024)).unwrap_or(usize::MAX);
        let log = Arc::new(Mutex::new(CallLog::new(log_budget)));
        let mut wasi = WasiCtxBuilder::new();
        wasi.stdout(GuestOutput::new(log.clone(), Source::Stdout))
            .stderr(GuestOutput::new(log.clone(), Source::Stderr))
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false);
        if let Some(dir) = &self.files {
            wasi.preopened_dir(dir, "/", FsPerms::ReadOnly)
                .map_err(|e| CallError::Instantiate(format!("cannot open files dir {}: {e:#}", dir.display())))?;
        }
        let memory_max = usize::try_from(self.limits.memory_mb.saturating_mul(1 << 20)).unwrap_or(usize::MAX);
        let state = HostState {
            wasi: wasi.build(),
            table: wasmtime::component::ResourceTable::new(),
            limiter: Limiter::new(memory_max),
            log,
            config: self.config.clone(),
            taskbacks: Vec::new(),
            max_taskbacks: if self.taskback_granted { self.limits.taskbacks } else { 0 },
            max_taskback_bytes: self.output_budget(),
            kv: if self.kv_granted { kv } else { None },
            deadline_hit: false,
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|state| &mut state.limiter);
        if self.fuel_enabled {
            store
                .set_fuel(self.limits.fuel.unwrap_or(u64::MAX))
                .map_err(|e| CallError::Instantiate(format!("{e:#}")))?;
        }
        let deadline = Instant::now() + self.timeout();
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |mut ctx| {
            if Instant::now() >= deadline {
                ctx.data_mut().deadline_hit = true;
                Ok(UpdateDeadline::Interrupt)
            } else {
                Ok(UpdateDeadline::Yield(1))
            }
        });
        Ok(store)
    }

    fn timeout(&self) -> Duration {
        Duration::from_millis(self.limits.timeout_ms)
    }

    fn output_budget(&self) -> usize {
        usize::try_from(self.limits.output_kb.saturating_mul(1024)).unwrap_or(usize::MAX)
    }

    /// Runs a task: `run(msg, results)`.
    pub async fn run(
        &self,
        msg: &Message,
        results: &Fields,
        kv: Option<KvScope>,
    ) -> Result<CallOutput<Fields>, CallError> {
        let Pre::Task(pre) = &self.pre else {
            return Err(CallError::Instantiate(format!("{} is a shell, not a task", self.name)));
        };
        let mut store = self.store(kv)?;
        let started = Instant::now();
        let mut instantiated = started;
        let outcome = tokio::time::timeout(self.timeout(), async {
            let instance = pre.instantiate_async(&mut store).await?;
            instantiated = Instant::now();
            instance.call_run(&mut store, msg, results).await
        })
        .await;
        let value = self.settle(&mut store, outcome)?.map_err(CallError::Guest)?;
        let bytes: usize = value.iter().map(|(k, v)| k.len() + v.len()).sum();
        if bytes > self.output_budget() {
            return Err(CallError::Output(format!(
                "results of {bytes} bytes exceed limits.output_kb = {}",
                self.limits.output_kb
            )));
        }
        Ok(self.output(&mut store, value, started, instantiated))
    }

    /// Runs a shell command: `call(argv, msg)`. `Ok(Err(text))` is the shell's own error.
    pub async fn call(
        &self,
        argv: &[String],
        msg: &Message,
        kv: Option<KvScope>,
    ) -> Result<CallOutput<String>, CallError> {
        let Pre::Shell(pre) = &self.pre else {
            return Err(CallError::Instantiate(format!("{} is a task, not a shell", self.name)));
        };
        let mut store = self.store(kv)?;
        let started = Instant::now();
        let mut instantiated = started;
        let outcome = tokio::time::timeout(self.timeout(), async {
            let instance = pre.instantiate_async(&mut store).await?;
            instantiated = Instant::now();
            instance.call_call(&mut store, argv, msg).await
        })
        .await;
        let value = self.settle(&mut store, outcome)?.map_err(CallError::Guest)?;
        if value.len() > self.output_budget() {
            return Err(CallError::Output(format!(
                "reply of {} bytes exceeds limits.output_kb = {}",
                value.len(),
                self.limits.output_kb
            )));
        }
        Ok(self.output(&mut store, value, started, instantiated))
    }

    /// A shell's command list: `commands()`.
    pub async fn commands(&self) -> Result<Vec<Command>, CallError> {
        let Pre::Shell(pre) = &self.pre else {
            return Err(CallError::Instantiate(format!("{} is a task, not a shell", self.name)));
        };
        let mut store = self.store(None)?;
        let outcome = tokio::time::timeout(self.timeout(), async {
            let instance = pre.instantiate_async(&mut store).await?;
            instance.call_commands(&mut store).await
        })
        .await;
        let commands = self.settle(&mut store, outcome)?;
        store.data().log_lines().finish();
        Ok(commands)
    }

    fn output<T>(
        &self,
        store: &mut Store<HostState>,
        value: T,
        started: Instant,
        instantiated: Instant,
    ) -> CallOutput<T> {
        let fuel = if self.fuel_enabled {
            store.get_fuel().ok().map(|left| self.limits.fuel.unwrap_or(u64::MAX).saturating_sub(left))
        } else {
            None
        };
        let state = store.data_mut();
        state.log_lines().finish();
        let stats = CallStats {
            instantiate: instantiated.saturating_duration_since(started),
            wall: started.elapsed(),
            fuel,
            memory_peak: state.limiter.memory_peak,
        };
        tracing::debug!(
            component = %self.name,
            wall_us = stats.wall.as_micros() as u64,
            instantiate_us = stats.instantiate.as_micros() as u64,
            fuel = stats.fuel,
            memory_peak = stats.memory_peak,
            "call finished"
        );
        CallOutput { value, taskbacks: std::mem::take(&mut state.taskbacks), stats }
    }

    /// Turns a finished (or timed-out) call into its value or a specific error.
    fn settle<T>(
        &self,
        store: &mut Store<HostState>,
        outcome: Result<wasmtime::Result<T>, tokio::time::error::Elapsed>,
    ) -> Result<T, CallError> {
        let state = store.data();
        let err = match outcome {
            Ok(Ok(value)) => return Ok(value),
            Err(_elapsed) => {
                state.log_lines().finish();
                return Err(CallError::Deadline(self.limits.timeout_ms));
            }
            Ok(Err(err)) => err,
        };
        state.log_lines().finish();
        if state.deadline_hit {
            return Err(CallError::Deadline(self.limits.timeout_ms));
        }
        if state.limiter.memory_refused {
            return Err(CallError::Memory(self.limits.memory_mb));
        }
        if state.limiter.table_refused {
            return Err(CallError::Table);
        }
        match err.downcast_ref::<wasmtime::Trap>() {
            Some(wasmtime::Trap::OutOfFuel) => Err(CallError::Fuel(self.limits.fuel.unwrap_or(0))),
            Some(trap) => Err(CallError::Trap(trap_text(trap, &err))),
            None => Err(CallError::Trap(format!("{err:#}"))),
        }
    }
}

/// The trap's message plus the innermost guest frame, on one line.
fn trap_text(trap: &wasmtime::Trap, err: &wasmtime::Error) -> String {
    let frame = err
        .downcast_ref::<wasmtime::WasmBacktrace>()
        .and_then(|bt| bt.frames().first().and_then(|f| f.func_name().map(str::to_owned)));
    match frame {
        Some(func) => format!("{trap} in {func}"),
        None => trap.to_string(),
    }
}
