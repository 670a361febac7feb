//! The data of one `Store`: everything a single call may touch, built fresh per call.

use std::sync::{Arc, Mutex, PoisonError};

use wasmtime::ResourceLimiter;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::engine::output::CallLog;
use crate::vocab::{Fields, KvQuota, KvStore, StreamReader};

/// A service's view of the kv store.
#[derive(Clone)]
pub struct KvScope {
    /// The broker's kv store.
    pub store: Arc<dyn KvStore>,
    /// The deployment's key prefix.
    pub namespace: Arc<str>,
    /// The service whose keys these are.
    pub service: Arc<str>,
    /// The service's quotas.
    pub quota: KvQuota,
    /// The broker's streams, read through the `streams` import by components granted
    /// `{streams: [...]}` (each call checks the service against the grant). `None`: no
    /// broker to read (`cannon-host torch` on a shell without a broker).
    pub streams: Option<Arc<dyn StreamReader>>,
}

/// Store data of one call.
pub struct HostState {
    /// Locked-down WASI: no dirs (unless `files:` granted), env, args or sockets.
    pub(crate) wasi: WasiCtx,
    pub(crate) table: ResourceTable,
    pub(crate) limiter: Limiter,
    /// Guest log lines and stdout/stderr, bounded by `limits.log_kb`.
    pub(crate) log: Arc<Mutex<CallLog>>,
    /// The component's `config` import: its resolved kwargs.
    pub(crate) config: Arc<crate::vocab::Kwargs>,
    /// Extra taskbacks queued through the `taskback` import.
    pub(crate) taskbacks: Vec<Fields>,
    /// Most taskbacks this call may queue.
    pub(crate) max_taskbacks: u32,
    /// Most bytes one taskback may hold (each field costing its bytes plus 32).
    pub(crate) max_taskback_bytes: usize,
    /// Most fields one taskback may hold (`limits.max_fields`).
    pub(crate) max_taskback_fields: usize,
    /// The service's kv store, when granted and attached.
    pub(crate) kv: Option<KvScope>,
    /// The calling service: kv keys are relative to it.
    pub(crate) service: Arc<str>,
    /// The `streams` import: the services this component may read and the broker.
    pub(crate) streams: crate::engine::streams::CallStreams,
    /// Set by the epoch callback when the wall-clock deadline passed.
    pub(crate) deadline_hit: bool,
    /// Outbound HTTP of this call: the component's grant and the requests sent so far.
    pub(crate) http: crate::engine::http::CallHttp,
    /// The component's `secrets:`: answered by `config.get`, masked in its output.
    pub(crate) secrets: Arc<crate::engine::secrets::Secrets>,
    /// The call's turn at running guest code (`engine/runners.rs`): given up at its first
    /// kv, streams or HTTP call and when its slice is over.
    pub(crate) seat: crate::engine::runners::Seat,
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
///
/// The caps are totals over the whole store: a component made of several core modules
/// (Python's has about ten) gets `memory_max` bytes for all its linear memories together,
/// not per memory.
#[derive(Debug)]
pub struct Limiter {
    pub(crate) memory_max: usize,
    /// Bytes of all linear memories of the call right now.
    memory_used: usize,
    /// Largest `memory_used` reached, for accounting.
    pub(crate) memory_peak: usize,
    /// A memory growth beyond `memory_max` was refused.
    pub(crate) memory_refused: bool,
    table_elements_max: usize,
    /// Elements of all tables of the call right now.
    table_elements: usize,
    pub(crate) table_refused: bool,
}

/// Most table elements of one call, all tables together: generous for real programs
/// (a Python component needs a few thousand), small enough that a table flood cannot eat
/// the host's memory (at most 8 MiB of host pointers).
pub(crate) const TABLE_ELEMENTS_MAX: usize = 1 << 20;
/// Most core instances, tables and memories one component may create.
pub(crate) const PARTS_MAX: usize = 256;

impl Limiter {
    pub(crate) fn new(memory_max: usize) -> Self {
        Self {
            memory_max,
            memory_used: 0,
            memory_peak: 0,
            memory_refused: false,
            table_elements_max: TABLE_ELEMENTS_MAX,
            table_elements: 0,
            table_refused: false,
        }
    }
}

impl ResourceLimiter for Limiter {
    fn memory_growing(&mut self, current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        let total = self.memory_used.saturating_sub(current).saturating_add(desired);
        if total > self.memory_max {
            self.memory_refused = true;
            return Ok(false);
        }
        self.memory_used = total;
        self.memory_peak = self.memory_peak.max(total);
        Ok(true)
    }

    fn table_growing(&mut self, current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        let total = self.table_elements.saturating_sub(current).saturating_add(desired);
        if total > self.table_elements_max {
            self.table_refused = true;
            return Ok(false);
        }
        self.table_elements = total;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_cap_counts_every_memory_of_the_call() {
        let mut limiter = Limiter::new(10 << 20);
        assert!(limiter.memory_growing(0, 4 << 20, None).unwrap());
        assert!(limiter.memory_growing(0, 4 << 20, None).unwrap());
        // A third memory of 4 MiB would make 12 MiB in all.
        assert!(!limiter.memory_growing(0, 4 << 20, None).unwrap());
        assert!(limiter.memory_refused);
        // Growing the first from 4 to 6 MiB fits exactly.
        assert!(limiter.memory_growing(4 << 20, 6 << 20, None).unwrap());
        assert_eq!(limiter.memory_peak, 10 << 20);
    }

    #[test]
    fn table_cap_counts_every_table_of_the_call() {
        let mut limiter = Limiter::new(0);
        assert!(limiter.table_growing(0, TABLE_ELEMENTS_MAX / 2, None).unwrap());
        assert!(limiter.table_growing(0, TABLE_ELEMENTS_MAX / 2, None).unwrap());
        assert!(!limiter.table_growing(0, 1, None).unwrap());
        assert!(limiter.table_refused);
    }
}
