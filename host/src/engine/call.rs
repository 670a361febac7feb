//! One call of a component: a fresh store with the call's limits and grants, instantiate
//! from the `InstancePre`, call under the deadline, check what came back, account, drop.
//!
//! Every limit is store or engine configuration, not a check in guest-visible code: the
//! epoch callback ends a call past its deadline (and a `tokio` timeout ends one blocked in
//! a host function), the [`Limiter`] refuses memory and table growth, fuel (when on)
//! traps, the store's hostcall budget bounds any single transfer from guest to host (a
//! result map whose strings all alias one buffer cannot make the host copy gigabytes),
//! and the log and taskback imports enforce their own budgets. Whatever happens, the call
//! ends with its cost logged under the message id and counted in [`METRICS`].

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use wasmtime::{Store, UpdateDeadline};
use wasmtime_wasi::{FsPerms, WasiCtxBuilder};

use crate::engine::bindings::{Command, Message};
use crate::engine::commands::check_table;
use crate::engine::component::Prepared;
use crate::engine::error::{GUEST_ERROR_MAX, host_fault, truncate_text};
use crate::engine::http::CallHttp;
use crate::engine::metrics::METRICS;
use crate::engine::output::{CallContext, CallLog, GuestOutput, Source};
use crate::engine::runners::Seat;
use crate::engine::state::{HostState, Limiter};
use crate::engine::streams::CallStreams;
use crate::engine::{CallError, CallOutput, CallStats, Component, KvScope};
use crate::vocab::Fields;
use crate::vocab::fields;

/// Least data one guest-to-host transfer may carry, whatever the output limits: room for
/// a kv value, a log line or a result map with its per-entry overhead.
const HOSTCALL_MIN: usize = 1 << 20;
/// Extra room on top of a kv value for the rest of a `kv.set` call.
const HOSTCALL_SLACK: usize = 64 << 10;
/// How wasmtime words an exhausted hostcall budget (its error type is private).
const HOSTCALL_EXHAUSTED: &str = "fuel allocated for hostcalls has been exhausted";

fn kib(n: u64) -> usize {
    usize::try_from(n.saturating_mul(1024)).unwrap_or(usize::MAX)
}

/// What a call is being made for, for its log line.
struct CallSite<'a> {
    msg_id: Option<&'a str>,
    service: &'a str,
}

impl Component {
    fn timeout(&self) -> Duration {
        Duration::from_millis(self.limits.timeout_ms)
    }

    /// Most bytes of a reply or a result map: `limits.output_kb`.
    pub fn output_budget(&self) -> usize {
        kib(self.limits.output_kb)
    }

    /// Most bytes the guest may hand the host in one import call or one return value.
    pub(super) fn hostcall_budget(&self, kv: Option<&KvScope>) -> usize {
        let kv_value = kv.map_or(0, |kv| kib(kv.quota.max_value_kb).saturating_add(HOSTCALL_SLACK));
        self.output_budget().saturating_mul(2).max(kv_value).max(HOSTCALL_MIN)
    }

    fn store(&self, kv: Option<KvScope>, site: &CallSite<'_>, seat: Seat) -> Result<Store<HostState>, CallError> {
        let service: Arc<str> = site.service.into();
        let context = Arc::new(CallContext {
            // A call without a message (a shell's command list) names neither.
            service: if service.is_empty() { "-".into() } else { service.clone() },
            id: site.msg_id.unwrap_or("-").to_owned(),
            component: self.name.clone(),
        });
        let log =
            CallLog::new(kib(self.limits.log_kb)).with_secrets(self.secrets.clone()).with_context(context.clone());
        let log = Arc::new(Mutex::new(log));
        let memory_max = kib(self.limits.memory_mb.saturating_mul(1024));
        let mut wasi = WasiCtxBuilder::new();
        wasi.stdout(GuestOutput::new(log.clone(), Source::Stdout))
            .stderr(GuestOutput::new(log.clone(), Source::Stderr))
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .max_random_size(memory_max as u64);
        if let Some(dir) = &self.files {
            wasi.preopened_dir(dir, "/", FsPerms::ReadOnly).map_err(|e| match host_fault(e.as_ref()) {
                Some(cause) => CallError::HostFault(cause),
                None => CallError::Instantiate(format!("cannot open files dir {}: {e:#}", dir.display())),
            })?;
        }
        let streams = CallStreams::new(self.streams.clone(), kv.as_ref().and_then(|kv| kv.streams.clone()));
        let kv = if self.kv_granted { kv } else { None };
        let hostcall_budget = self.hostcall_budget(kv.as_ref());
        let state = HostState {
            wasi: wasi.build(),
            table: wasmtime::component::ResourceTable::new(),
            limiter: Limiter::new(memory_max),
            log,
            config: self.config.clone(),
            taskbacks: Vec::new(),
            max_taskbacks: if self.taskback_granted { self.limits.taskbacks } else { 0 },
            max_taskback_bytes: self.output_budget(),
            max_taskback_fields: self.limits.max_fields,
            kv,
            service,
            streams,
            deadline_hit: false,
            http: CallHttp::new(self.http.clone(), context),
            secrets: self.secrets.clone(),
            seat,
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|state| &mut state.limiter);
        store.set_hostcall_fuel(hostcall_budget);
        if self.fuel_enabled {
            store
                .set_fuel(self.limits.fuel.unwrap_or(u64::MAX))
                .map_err(|e| CallError::Instantiate(format!("{e:#}")))?;
        }
        // `None`: a timeout too far away to represent, i.e. none.
        let deadline = Instant::now().checked_add(self.timeout());
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |mut ctx| {
            let now = Instant::now();
            if deadline.is_some_and(|deadline| now >= deadline) {
                ctx.data_mut().deadline_hit = true;
                Ok(UpdateDeadline::Interrupt)
            } else {
                ctx.data_mut().seat.tick();
                Ok(UpdateDeadline::Yield(1))
            }
        });
        Ok(store)
    }

    /// Refuses a message with more than `limits.max_fields` fields or larger than
    /// `limits.message_kb`, whoever put it in the stream.
    fn check_input(&self, msg: &Message) -> Result<(), CallError> {
        if msg.fields.len() > self.limits.max_fields {
            return Err(CallError::Input(format!(
                "message of {} fields exceeds limits.max_fields = {}",
                msg.fields.len(),
                self.limits.max_fields
            )));
        }
        let bytes = fields::size(&msg.fields);
        if bytes > kib(self.limits.message_kb) {
            return Err(CallError::Input(format!(
                "message of {bytes} bytes exceeds limits.message_kb = {}",
                self.limits.message_kb
            )));
        }
        Ok(())
    }

    /// Runs a task: `run(msg, results)`.
    pub async fn run(
        &self,
        msg: &Message,
        results: &Fields,
        kv: Option<KvScope>,
    ) -> Result<CallOutput<Fields>, CallError> {
        let Prepared::Task(pre) = &self.pre else {
            return Err(CallError::Instantiate(format!("{} is a shell, not a task", self.name)));
        };
        let call = async |store: &mut Store<HostState>, instantiated: &mut Option<Instant>| {
            let instance = pre.instantiate_async(&mut *store).await?;
            *instantiated = Some(Instant::now());
            instance.call_run(store, msg, results).await
        };
        let mut out = self
            .invoke(Some(msg), kv, call, |value| guest_result(value).and_then(|value| self.check_results(value)))
            .await?;
        self.secrets.mask_fields(&mut out.value);
        Ok(out)
    }

    /// Runs a shell command: `call(argv, msg)`. `Ok(Err(text))` is the shell's own error.
    pub async fn call(
        &self,
        argv: &[String],
        msg: &Message,
        kv: Option<KvScope>,
    ) -> Result<CallOutput<String>, CallError> {
        let Prepared::Shell(pre) = &self.pre else {
            return Err(CallError::Instantiate(format!("{} is a task, not a shell", self.name)));
        };
        let call = async |store: &mut Store<HostState>, instantiated: &mut Option<Instant>| {
            let instance = pre.instantiate_async(&mut *store).await?;
            *instantiated = Some(Instant::now());
            instance.call_call(store, argv, msg).await
        };
        let mut out = self
            .invoke(Some(msg), kv, call, |value| guest_result(value).and_then(|value| self.check_reply(value)))
            .await?;
        self.secrets.mask_text(&mut out.value);
        Ok(out)
    }

    /// A shell's command list: `commands()`, refused when it breaks a rule of
    /// [`crate::engine::commands::check_table`].
    pub async fn commands(&self) -> Result<Vec<Command>, CallError> {
        let Prepared::Shell(pre) = &self.pre else {
            return Err(CallError::Instantiate(format!("{} is a task, not a shell", self.name)));
        };
        let call = async |store: &mut Store<HostState>, instantiated: &mut Option<Instant>| {
            let instance = pre.instantiate_async(&mut *store).await?;
            *instantiated = Some(Instant::now());
            instance.call_commands(store).await
        };
        let checked = |commands: Vec<Command>| check_table(&commands).map(|()| commands).map_err(CallError::Commands);
        self.invoke(None, None, call, checked).await.map(|out| out.value)
    }

    /// The one path of every call: check the message, a seat (`runners.rs`), a fresh store,
    /// instantiate and call (`call` records when instantiation ended) under the deadline,
    /// turn the outcome into a value or a specific error, `check` the value, then log and
    /// count the cost. The call's time and deadline start once it has its seat.
    async fn invoke<R, T>(
        &self,
        msg: Option<&Message>,
        kv: Option<KvScope>,
        call: impl AsyncFnOnce(&mut Store<HostState>, &mut Option<Instant>) -> wasmtime::Result<R>,
        check: impl FnOnce(R) -> Result<T, CallError>,
    ) -> Result<CallOutput<T>, CallError> {
        let site = CallSite { msg_id: msg.map(|m| m.id.as_str()), service: msg.map_or("", |m| m.service.as_str()) };
        let started = Instant::now();
        if let Some(msg) = msg
            && let Err(err) = self.check_input(msg)
        {
            return self.refused(&site, started, err);
        }
        let seat = self.runners.sit(started).await;
        let (started, waited) = (seat.seated, seat.waited);
        let mut store = match self.store(kv, &site, seat) {
            Ok(store) => store,
            Err(err) => return self.refused(&site, started, err),
        };
        let mut instantiated = None;
        let outcome = tokio::time::timeout(self.timeout(), call(&mut store, &mut instantiated)).await;
        let value = self.outcome(&mut store, outcome, instantiated.is_some()).and_then(check);
        self.finish(&mut store, &site, (started, waited), instantiated, value)
    }

    /// A task's results within `limits.max_fields` and `limits.output_kb`.
    fn check_results(&self, value: Fields) -> Result<Fields, CallError> {
        // The count first: it costs nothing, whatever the guest returned.
        if value.len() > self.limits.max_fields {
            return Err(CallError::Output(format!(
                "{} fields exceed limits.max_fields = {}",
                value.len(),
                self.limits.max_fields
            )));
        }
        let bytes = fields::size(&value);
        if bytes > self.output_budget() {
            return Err(CallError::Output(format!(
                "results of {bytes} bytes exceed limits.output_kb = {}",
                self.limits.output_kb
            )));
        }
        Ok(value)
    }

    /// A shell's reply within `limits.output_kb`.
    fn check_reply(&self, value: String) -> Result<String, CallError> {
        if value.len() > self.output_budget() {
            return Err(CallError::Output(format!(
                "reply of {} bytes exceeds limits.output_kb = {}",
                value.len(),
                self.limits.output_kb
            )));
        }
        Ok(value)
    }

    /// A call refused before it started: logged and counted like any other.
    fn refused<T>(&self, site: &CallSite<'_>, started: Instant, err: CallError) -> Result<CallOutput<T>, CallError> {
        let stats = CallStats { wall: started.elapsed(), ..CallStats::default() };
        self.account(site, &stats, Some(&err));
        Err(err)
    }

    /// Flushes the call's log, then logs and counts its cost, whatever the outcome.
    fn finish<T>(
        &self,
        store: &mut Store<HostState>,
        site: &CallSite<'_>,
        (started, waited): (Instant, Duration),
        instantiated: Option<Instant>,
        value: Result<T, CallError>,
    ) -> Result<CallOutput<T>, CallError> {
        let wall = started.elapsed();
        let fuel = if self.fuel_enabled {
            store.get_fuel().ok().map(|left| self.limits.fuel.unwrap_or(u64::MAX).saturating_sub(left))
        } else {
            None
        };
        let value = value.map_err(|err| self.secrets.mask_error(err));
        let state = store.data_mut();
        state.log_lines().finish();
        let stats = CallStats {
            instantiate: instantiated.map_or(wall, |at| at.saturating_duration_since(started)),
            wall,
            waited,
            fuel,
            memory_peak: state.limiter.memory_peak,
        };
        self.account(site, &stats, value.as_ref().err());
        let value = value?;
        let mut taskbacks = std::mem::take(&mut state.taskbacks);
        for taskback in &mut taskbacks {
            self.secrets.mask_fields(taskback);
        }
        Ok(CallOutput { value, taskbacks, stats })
    }

    fn account(&self, site: &CallSite<'_>, stats: &CallStats, err: Option<&CallError>) {
        METRICS.record(stats, err.map(CallError::kind));
        // observe: per-component counters for `/metrics` (handles resolved at load).
        if let Some(observe) = &self.observe {
            observe.record(stats, err.map(CallError::kind));
        }
        tracing::debug!(
            component = %self.name,
            version = %self.version,
            service = %site.service,
            msg_id = %site.msg_id.unwrap_or("-"),
            outcome = %err.map_or("ok", |e| e.kind().as_str()),
            wall_us = stats.wall.as_micros() as u64,
            instantiate_us = stats.instantiate.as_micros() as u64,
            waited_us = stats.waited.as_micros() as u64,
            fuel = stats.fuel,
            memory_peak = stats.memory_peak,
            "call finished"
        );
    }

    /// Turns a finished (or timed-out) call into its value or a specific error. A failure
    /// to instantiate for want of a host resource (fds, memory maps) is a host fault.
    fn outcome<T>(
        &self,
        store: &mut Store<HostState>,
        outcome: Result<wasmtime::Result<T>, tokio::time::error::Elapsed>,
        instantiated: bool,
    ) -> Result<T, CallError> {
        let state = store.data();
        let err = match outcome {
            Ok(Ok(value)) => return Ok(value),
            Err(_elapsed) => return Err(CallError::Deadline(self.limits.timeout_ms)),
            Ok(Err(err)) => err,
        };
        if state.deadline_hit {
            return Err(CallError::Deadline(self.limits.timeout_ms));
        }
        if state.limiter.memory_refused {
            return Err(CallError::Memory(self.limits.memory_mb));
        }
        if state.limiter.table_refused {
            return Err(CallError::Table);
        }
        if !instantiated && let Some(cause) = host_fault(err.as_ref()) {
            return Err(CallError::HostFault(cause));
        }
        let text = format!("{err:#}");
        if text.contains(HOSTCALL_EXHAUSTED) {
            return Err(CallError::Output(format!(
                "the guest passed more than {} bytes to the host at once",
                self.hostcall_budget(state.kv.as_ref())
            )));
        }
        match err.downcast_ref::<wasmtime::Trap>() {
            Some(wasmtime::Trap::OutOfFuel) => Err(CallError::Fuel(self.limits.fuel.unwrap_or(0))),
            Some(trap) => Err(CallError::Trap(truncate_text(trap_text(trap, &err), GUEST_ERROR_MAX))),
            None => Err(CallError::Trap(truncate_text(text, GUEST_ERROR_MAX))),
        }
    }
}

/// The guest's own `err(...)`, cut to [`GUEST_ERROR_MAX`].
fn guest_result<T>(result: Result<T, String>) -> Result<T, CallError> {
    result.map_err(|text| CallError::Guest(truncate_text(text, GUEST_ERROR_MAX)))
}

/// The trap's message (without wasmtime's `wasm trap: ` prefix) plus the innermost guest
/// frame when known, on one line.
fn trap_text(trap: &wasmtime::Trap, err: &wasmtime::Error) -> String {
    let text = trap.to_string();
    let text = text.strip_prefix("wasm trap: ").unwrap_or(&text);
    let frame = err
        .downcast_ref::<wasmtime::WasmBacktrace>()
        .and_then(|bt| bt.frames().first().and_then(|f| f.func_name().map(str::to_owned)));
    match frame {
        Some(func) => format!("{text} in {func}"),
        None => text.to_owned(),
    }
}
