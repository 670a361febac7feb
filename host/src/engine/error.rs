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
    /// An import of a provided interface whose version or types do not match the host's.
    #[error("component {name:?} has imports cannon cannot satisfy: {reason}")]
    Imports { name: String, reason: String },
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
    /// Results, a reply, a taskback or one transfer from the guest were too large.
    #[error("output limit exceeded: {0}")]
    Output(String),
    /// The message handed to the component was too large.
    #[error("input limit exceeded: {0}")]
    Input(String),
    #[error("trap: {0}")]
    Trap(String),
    /// The component returned `err(...)` (cut to [`GUEST_ERROR_MAX`] bytes).
    #[error("{0}")]
    Guest(String),
    #[error("cannot instantiate: {0}")]
    Instantiate(String),
    /// A shell's `commands()` listed a table torch will not show (see `engine::commands`).
    #[error("command table refused: {0}")]
    Commands(String),
}

/// Longest error text kept from a guest (its `err(...)` or a trap message); the rest is
/// cut, so a hostile guest cannot fill the dead-letter stream with its error.
pub const GUEST_ERROR_MAX: usize = 2048;

/// The kinds of [`CallError`], for counting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureKind {
    Deadline,
    Memory,
    Table,
    Fuel,
    Output,
    Input,
    Trap,
    Guest,
    Instantiate,
}

impl FailureKind {
    /// Every kind, in a fixed order (the order of [`crate::engine::MetricsSnapshot::failures`]).
    pub const ALL: [FailureKind; 9] = [
        FailureKind::Deadline,
        FailureKind::Memory,
        FailureKind::Table,
        FailureKind::Fuel,
        FailureKind::Output,
        FailureKind::Input,
        FailureKind::Trap,
        FailureKind::Guest,
        FailureKind::Instantiate,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Deadline => "deadline",
            FailureKind::Memory => "memory",
            FailureKind::Table => "table",
            FailureKind::Fuel => "fuel",
            FailureKind::Output => "output",
            FailureKind::Input => "input",
            FailureKind::Trap => "trap",
            FailureKind::Guest => "guest",
            FailureKind::Instantiate => "instantiate",
        }
    }
}

impl CallError {
    pub fn kind(&self) -> FailureKind {
        match self {
            CallError::Deadline(_) => FailureKind::Deadline,
            CallError::Memory(_) => FailureKind::Memory,
            CallError::Table => FailureKind::Table,
            CallError::Fuel(_) => FailureKind::Fuel,
            CallError::Output(_) | CallError::Commands(_) => FailureKind::Output,
            CallError::Input(_) => FailureKind::Input,
            CallError::Trap(_) => FailureKind::Trap,
            CallError::Guest(_) => FailureKind::Guest,
            CallError::Instantiate(_) => FailureKind::Instantiate,
        }
    }
}

/// `text` cut to at most `max` bytes on a character boundary, saying how much was cut.
pub fn truncate_text(mut text: String, max: usize) -> String {
    if text.len() <= max {
        return text;
    }
    let total = text.len();
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text.push_str(&format!("... ({} more bytes cut)", total - end));
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_text_is_cut_on_a_char_boundary() {
        assert_eq!(truncate_text("short".into(), 10), "short");
        let cut = truncate_text("é".repeat(10), 5);
        assert_eq!(cut, "éé... (16 more bytes cut)");
    }
}
