//! The data of one `Store`: everything a single call may touch, built fresh per call.

use std::sync::{Arc, Mutex, PoisonError};

use wasmtime::ResourceLimiter;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::broker::Fields;
use crate::engine::kv::KvScope;
use crate::engine::output::CallLog;

/// Store data of one call.
pub struct HostState {
    /// Locked-down WASI: no dirs (unless `files:` granted), env, args or sockets.
    pub(crate) wasi: WasiCtx,
    pub(crate) table: ResourceTable,
    pub(crate) limiter: Limiter,
    /// Guest log lines and stdout/stderr, bounded by `limits.log_kb`.
    pub(crate) log: Arc<Mutex<CallLog>>,
    /// The component's `config` import: its resolved kwargs.
    pub(crate) config: Arc<crate::config::Kwargs>,
    /// Extra taskbacks queued through the `taskback` import.
    pub(crate) taskbacks: Vec<Fields>,
    /// Most taskbacks this call may queue.
    pub(crate) max_taskbacks: u32,
    /// Most bytes one taskback may hold.
    pub(crate) max_taskback_bytes: usize,
    /// The service's kv store, when granted.
    pub(crate) kv: Option<KvScope>,
    /// Set by the epoch callback when the wall-clock deadline passed.
    pub(crate) deadline_hit: bool,
}

impl HostState {
    pub(crate) fn log_lines(&self) -> std::sync::MutexGuard<'_, CallLog> {
        self.log.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

/// Caps memory, tables and instances of one call, and remembers why a growth was refused
/// so the error can say `memory limit 32 MiB exceeded` instead of a bare trap.
#[derive(Debug)]
pub struct Limiter {
    pub(crate) memory_max: usize,
    /// Largest size any linear memory reached, for accounting.
    pub(crate) memory_peak: usize,
    /// A memory growth beyond `memory_max` was refused.
    pub(crate) memory_refused: bool,
    pub(crate) table_elements_max: usize,
    pub(crate) table_refused: bool,
}

/// Most elements of one table: generous for real programs, small enough that a table flood
/// cannot eat the host's memory.
const TABLE_ELEMENTS_MAX: usize = 1 << 20;
/// Most core instances, tables and memories one component may create.
pub(crate) const PARTS_MAX: usize = 256;

impl Limiter {
    pub(crate) fn new(memory_max: usize) -> Self {
        Self {
            memory_max,
            memory_peak: 0,
            memory_refused: false,
            table_elements_max: TABLE_ELEMENTS_MAX,
            table_refused: false,
        }
    }
}

impl ResourceLimiter for Limiter {
    fn memory_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.memory_max {
            self.memory_refused = true;
            return Ok(false);
        }
        self.memory_peak = self.memory_peak.max(desired);
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.table_elements_max {
            self.table_refused = true;
            return Ok(false);
        }
        Ok(true)
    }

    fn instances(&self) -> usize {
        PARTS_MAX
    }

    fn tables(&self) -> usize {
        PARTS_MAX
    }

    fn memories(&self) -> usize {
        PARTS_MAX
    }
}
