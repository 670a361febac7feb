//! Per-call sandbox limits and per-service kv quotas, as plain values: the compose file
//! sets them (`config`), the engine and the brokers enforce them.

use serde::Deserialize;

/// Per-call sandbox limits. Set on a service; a component may override any of them.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Wall-clock deadline of one call, host functions included.
    pub timeout_ms: u64,
    /// Cap on the instance's linear memory.
    pub memory_mb: u64,
    /// Cap on the bytes of a call's results (keys plus values) or reply. The default is
    /// twice `message_kb`, so any accepted message can be transformed and answered (case
    /// mapping can make text longer).
    pub output_kb: u64,
    /// Cap on the bytes a call may log (log import plus stdout/stderr); the rest is dropped.
    pub log_kb: u64,
    /// Cap on extra taskbacks one call may send.
    pub taskbacks: u32,
    /// Optional fuel (roughly, Wasm instructions) per call.
    pub fuel: Option<u64>,
    /// Cap on one message accepted from a collector (all keys and values).
    pub message_kb: u64,
    /// Cap on the fields of one message, of one call's results and of one taskback.
    pub max_fields: usize,
    /// CPU seconds (all threads) of compiling the component, in a child process; its wall
    /// clock may take twice as long. Paid once per component version (then cached).
    pub compile_s: u64,
    /// Address space of the process compiling the component.
    pub compile_mb: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            timeout_ms: 1000,
            memory_mb: 32,
            output_kb: 512,
            log_kb: 16,
            taskbacks: 16,
            fuel: None,
            message_kb: 256,
            max_fields: 1000,
            compile_s: 120,
            compile_mb: 2048,
        }
    }
}

/// Per-service quotas of the `kv` store.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KvQuota {
    /// Most keys the service may hold.
    pub max_keys: u64,
    /// Most bytes (keys plus values) the service may hold.
    pub max_bytes: u64,
    /// Largest single value.
    pub max_value_kb: u64,
    /// Most keys one `list-keys` call returns.
    pub list_limit: u32,
}

impl Default for KvQuota {
    fn default() -> Self {
        Self { max_keys: 10_000, max_bytes: 16 * 1024 * 1024, max_value_kb: 512, list_limit: 1000 }
    }
}
