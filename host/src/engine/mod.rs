//! The Wasm engine: one wasmtime `Engine` and `Linker` per process, one `InstancePre` per
//! component, a fresh `Store` per call.
//!
//! ## Layout
//! - `mod.rs`: [`Engine`] (configuration, pooling allocator, epoch ticker) and loading.
//! - `component.rs`: [`Component`], a loaded task or shell, and the import check at load.
//! - `call.rs`: one call: a fresh store with its limits and grants, the call, its cost.
//! - `commands.rs`: what a shell's command table may hold (checked at load).
//! - `state.rs`: the per-call store data ([`KvScope`] included) and its resource limiter.
//! - `runners.rs`: how many calls run guest code at once (seats), and for how long.
//! - `metrics.rs`: process-wide call counters ([`metrics::snapshot`]).
//! - `output.rs`: guest log and stdout/stderr, bounded, into `tracing`.
//! - `imports.rs`, `kv.rs`, `streams.rs`: the cannon imports.
//! - `http.rs`, `http_tls.rs`: `wasi:http/outgoing-handler` behind a component's `http`
//!   grant (allow-list, resolved addresses, per-call limits); TLS roots.
//! - `secrets.rs`: a component's `secrets:`, and masking them in its output.
//! - `cache.rs`: compiled components on disk.
//! - `compile.rs`: compiling untrusted components in a child process under rlimits.
//! - `bindings.rs`: all `bindgen!` output.

mod bindings;
mod cache;
mod call;
pub mod commands;
pub mod compile;
mod component;
mod error;
mod http;
mod http_tls;
mod imports;
mod kv;
pub mod metrics;
mod output;
mod runners;
mod secrets;
mod state;
mod streams;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use wasmtime::component::Linker;
use wasmtime::{Config, Enabled, InstanceAllocationStrategy, PoolingAllocationConfig};

pub use bindings::{Command, KvError, Message, StreamsError};
pub use cache::ComponentCache;
pub use compile::Compiler;
pub use component::{CallOutput, CallStats, Component, VERSION_DIGITS, World, sha256_hex};
pub use error::{CallError, FailureKind, GUEST_ERROR_MAX, LoadError};
pub use metrics::MetricsSnapshot;
pub use runners::{RUN_SLICE, RUN_WAIT, RunnerOptions};
pub use state::{HostState, KvScope};

/// How often the epoch advances: the granularity of deadlines, and how often a busy guest
/// yields its thread to other messages.
pub const EPOCH_TICK: Duration = Duration::from_millis(1);

/// Engine-wide settings, derived from the services a process runs.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// Component instances that may exist at once (pooling allocator slots); 0 selects the
    /// on-demand allocator.
    pub instances: u32,
    /// Largest memory cap of any component, which sizes the pool's memory slots.
    pub max_memory_mb: u64,
    /// Whether any component sets `limits.fuel` (fuel metering costs every call a little).
    pub fuel: bool,
    /// Compiled-component cache; `None` compiles every time.
    pub cache_dir: Option<PathBuf>,
    /// Where components are compiled: the `cannon-host` commands compile in a child
    /// process under `limits.compile_s` and `limits.compile_mb`.
    pub compiler: Compiler,
    /// How many calls run guest code at once (`runners.rs`).
    pub runners: RunnerOptions,
}

impl Default for EngineOptions {
    fn default() -> Self {
        Self {
            instances: 0,
            max_memory_mb: 32,
            fuel: false,
            cache_dir: ComponentCache::default_dir(),
            compiler: Compiler::InProcess,
            runners: RunnerOptions::default(),
        }
    }
}

/// The wasmtime engine, its linker and the epoch ticker that enforces deadlines.
pub struct Engine {
    pub(crate) engine: wasmtime::Engine,
    pub(crate) linker: Arc<Linker<HostState>>,
    cache: Option<ComponentCache>,
    pub(crate) compiler: Compiler,
    pub(crate) fuel: bool,
    /// Shared with every loaded [`Component`]: the ticker runs while any of them exists,
    /// even after the `Engine` itself is dropped (without ticks no deadline would fire).
    pub(crate) ticker: Arc<Ticker>,
    /// The seats calls take turns at; shared with every loaded [`Component`].
    pub(crate) runners: Arc<runners::Runners>,
}

/// The thread that advances the engine's epoch every [`EPOCH_TICK`]; stopped on drop.
#[derive(Debug)]
pub(crate) struct Ticker {
    stop: Arc<AtomicBool>,
}

impl Ticker {
    fn spawn(engine: wasmtime::Engine) -> anyhow::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        std::thread::Builder::new().name("cannon-epoch".into()).spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                std::thread::sleep(EPOCH_TICK);
                engine.increment_epoch();
            }
        })?;
        Ok(Self { stop })
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Core instances one component may create: a Rust guest needs 3, a Python one about 10.
const CORE_INSTANCES_PER_COMPONENT: u32 = 32;
const MEMORIES_PER_COMPONENT: u32 = 4;
const TABLES_PER_COMPONENT: u32 = 8;
/// Bytes of a linear memory slot kept mapped and reset with memset when reused, where the
/// kernel cannot tell which pages a call wrote. A Rust guest built by guests/build.sh
/// (64 KiB stack) uses 2-4 pages; bigger guests pay madvise for the rest.
const MEMORY_KEEP_RESIDENT: usize = 512 << 10;
/// The same where the kernel reports written pages (`PAGEMAP_SCAN`, Linux 6.7+): then only
/// the pages a call wrote are restored, with memcpy from the image, up to this many bytes,
/// so a reused slot of an interpreter guest (Python, JavaScript: 1-3 MiB written per call)
/// takes no page fault and no TLB-shootdown IPI, and a small guest costs no more than its
/// few dirty pages. Pages written past this are given back with madvise.
const MEMORY_KEEP_RESIDENT_SCANNED: usize = 16 << 20;
/// Likewise for tables (function tables of small guests are a few KiB).
const TABLE_KEEP_RESIDENT: usize = 16 << 10;
/// Likewise for the async stacks guest calls run on.
const STACK_KEEP_RESIDENT: usize = 64 << 10;

/// The configuration every compiled artifact depends on (its compatibility hash covers it),
/// shared by the engine that runs components and by the compile child, which must produce
/// artifacts the first accepts. The allocation strategy is not part of it: the compile child
/// uses the on-demand allocator, which reserves no address space up front, so its
/// `RLIMIT_AS` measures the compilation alone.
pub(crate) fn base_config(fuel: bool) -> Config {
    let mut config = Config::new();
    config.epoch_interruption(true);
    config.consume_fuel(fuel);
    config.memory_init_cow(true);
    config
}

/// Bytes of a reused memory slot reset in place ([`MEMORY_KEEP_RESIDENT_SCANNED`] or
/// [`MEMORY_KEEP_RESIDENT`]); `CANNON_KEEP_RESIDENT_KB` overrides it (docs/performance.md).
fn keep_resident(scanned: bool) -> anyhow::Result<usize> {
    let Ok(kb) = std::env::var("CANNON_KEEP_RESIDENT_KB") else {
        return Ok(if scanned { MEMORY_KEEP_RESIDENT_SCANNED } else { MEMORY_KEEP_RESIDENT });
    };
    kb.trim()
        .parse::<usize>()
        .ok()
        .and_then(|n| n.checked_mul(1024))
        .ok_or_else(|| anyhow::anyhow!("CANNON_KEEP_RESIDENT_KB={kb:?} is not a number of KiB"))
}

impl Engine {
    /// Builds the engine, its linker and the epoch ticker from `options`.
    pub fn new(options: &EngineOptions) -> anyhow::Result<Self> {
        let mut config = base_config(options.fuel);
        if options.instances > 0 {
            let n = options.instances;
            let mut pool = PoolingAllocationConfig::default();
            pool.total_component_instances(n)
                // Enough for every in-flight instance to be as large as a component may be:
                // a Python guest has about 10 core instances. Slots are address space, not
                // memory, until used.
                .total_core_instances(n.saturating_mul(CORE_INSTANCES_PER_COMPONENT))
                .total_memories(n.saturating_mul(MEMORIES_PER_COMPONENT))
                .total_tables(n.saturating_mul(TABLES_PER_COMPONENT))
                .total_stacks(n)
                .max_core_instances_per_component(CORE_INSTANCES_PER_COMPONENT)
                .max_memories_per_component(MEMORIES_PER_COMPONENT)
                .max_tables_per_component(TABLES_PER_COMPONENT)
                .max_memory_size(usize::try_from(options.max_memory_mb << 20).unwrap_or(usize::MAX));
            // Reset reused slots with memset instead of madvise: no page faults and, above
            // all, no TLB-shootdown IPIs to the other cores (see docs/performance.md).
            // Where the kernel reports which pages a call wrote, restore only those.
            let scanned = PoolingAllocationConfig::is_pagemap_scan_available();
            pool.pagemap_scan(if scanned { Enabled::Yes } else { Enabled::No })
                .linear_memory_keep_resident(keep_resident(scanned)?)
                .table_keep_resident(TABLE_KEEP_RESIDENT)
                .async_stack_keep_resident(STACK_KEEP_RESIDENT);
            config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        }
        let engine = wasmtime::Engine::new(&config).map_err(anyhow::Error::from)?;
        let mut linker = Linker::<HostState>::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(anyhow::Error::from)?;
        // Linked for every component, used only by those granted `http` (checked at load).
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker).map_err(anyhow::Error::from)?;
        bindings::task::Task::add_to_linker::<HostState, wasmtime::component::HasSelf<HostState>>(
            &mut linker,
            |state| state,
        )
        .map_err(anyhow::Error::from)?;
        let ticker = Arc::new(Ticker::spawn(engine.clone())?);
        let runners = Arc::new(runners::Runners::new(&options.runners)?);
        Ok(Self {
            engine,
            linker: Arc::new(linker),
            cache: options.cache_dir.clone().map(ComponentCache::new),
            compiler: options.compiler.clone(),
            fuel: options.fuel,
            ticker,
            runners,
        })
    }

    /// Most calls of this engine's components that had a store at once, seated or not
    /// (each holds a pool slot while it lives).
    pub fn live_calls_peak(&self) -> usize {
        self.runners.peak()
    }

    /// The compiled-component cache, if enabled.
    pub fn cache(&self) -> Option<&ComponentCache> {
        self.cache.as_ref()
    }
}
