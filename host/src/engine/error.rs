//! Errors of loading and calling components.

use std::path::PathBuf;

/// A component that cannot be used. Reported by `run` and `check`, naming the component.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read component {name:?} at {path}: {source}")]
    Read { name: String, path: PathBuf, source: std::io::Error },
    #[error("{path} is not a valid WebAssembly component ({name:?}): {reason}")]
    Invalid { name: String, path: PathBuf, reason: String },
    #[error(
        "component {name:?} imports `{import}`, which is not granted; add `allow: [{capability}]` \
         to it in the compose file if it should have it"
    )]
    NotGranted { name: String, import: String, capability: &'static str },
    #[error("component {name:?} imports `{import}`, which cannon does not provide")]
    Unknown { name: String, import: String },
    #[error("component {name:?} does not fit the `{world}` world: {reason}")]
    WrongWorld { name: String, world: &'static str, reason: String },
}

/// Why one call of a component failed. It fails that message only.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CallError {
    #[error("deadline exceeded after {0} ms")]
    Deadline(u64),
    #[error("memory limit {0} MiB exceeded")]
    Memory(u64),
    #[error("table limit exceeded")]
    Table,
    #[error("fuel exhausted ({0} units)")]
    Fuel(u64),
    #[error("output limit exceeded: {0}")]
    Output(String),
    #[error("trap: {0}")]
    Trap(String),
    /// The component returned `err(...)`.
    #[error("{0}")]
    Guest(String),
    #[error("cannot instantiate: {0}")]
    Instantiate(String),
}
