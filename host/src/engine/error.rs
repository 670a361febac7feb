//! Errors of loading and calling components.

use std::path::PathBuf;

/// A component that cannot be used. Reported by `run` and `check`, naming the component.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read component {name:?} at {path}: {source}")]
    /// The file could not be read.
    Read {
        /// The component's name.
        name: String,
        /// Its file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    #[error("{path} is not a valid WebAssembly component ({name:?}): {reason}")]
    /// The file is not a valid component.
    Invalid {
        /// The component's name.
        name: String,
        /// Its file.
        path: PathBuf,
        /// What wasmtime said.
        reason: String,
    },
    #[error(
        "component {name:?} imports `{import}`, which is not granted; add `allow: [{capability}]` \
         to it in the compose file if it should have it"
    )]
    /// It imports a cannon interface the compose file does not grant.
    NotGranted {
        /// The component's name.
        name: String,
        /// The import.
        import: String,
        /// The `allow:` entry that would grant it.
        capability: &'static str,
    },
    #[error("component {name:?} imports `{import}`, which cannon does not provide")]
    /// It imports something cannon does not provide.
    Unknown {
        /// The component's name.
        name: String,
        /// The import.
        import: String,
    },
    /// An import of a provided interface whose version or types do not match the host's.
    #[error("component {name:?} has imports cannon cannot satisfy: {reason}")]
    Imports {
        /// The component's name.
        name: String,
        /// What does not match.
        reason: String,
    },
    #[error("component {name:?} does not fit the `{world}` world: {reason}")]
    /// Its exports do not fit the world it is used as.
    WrongWorld {
        /// The component's name.
        name: String,
        /// `task` or `shell`.
        world: &'static str,
        /// What is missing or wrong.
        reason: String,
    },
    /// Compiling it took more CPU time or address space than its limits allow.
    #[error("component {name:?}: compile exceeded limits.{limit} = {value}")]
    CompileLimit {
        /// The component's name.
        name: String,
        /// `compile_s` or `compile_mb`.
        limit: &'static str,
        /// The limit's value.
        value: u64,
    },
    /// The compile child failed for another reason (its last words, escaped).
    #[error("component {name:?} could not be compiled: {reason}")]
    Compile {
        /// The component's name.
        name: String,
        /// What the compile child said.
        reason: String,
    },
    /// Valid, but beyond what this host's instance allocator takes (e.g. more memories or
    /// tables per module than the pooling allocator's slots).
    #[error("component {name:?} cannot be run by this host: {reason}")]
    Unsupported {
        /// The component's name.
        name: String,
        /// What the allocator refused.
        reason: String,
    },
}

/// Why one call of a component failed. It fails that message only.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CallError {
    #[error("deadline exceeded after {0} ms")]
    /// The call ran past `limits.timeout_ms` (the value).
    Deadline(u64),
    #[error("memory limit {0} MiB exceeded")]
    /// The guest's memory grew past `limits.memory_mb` (the value).
    Memory(u64),
    #[error("table limit exceeded")]
    /// The guest's tables grew past the host's cap.
    Table,
    #[error("fuel exhausted ({0} units)")]
    /// The call spent `limits.fuel` (the value).
    Fuel(u64),
    /// Results, a reply, a taskback or one transfer from the guest were too large.
    #[error("output limit exceeded: {0}")]
    Output(String),
    /// The message handed to the component was too large.
    #[error("input limit exceeded: {0}")]
    Input(String),
    #[error("trap: {0}")]
    /// The guest trapped (message and innermost frame, cut).
    Trap(String),
    /// The component returned `err(...)` (cut to [`GUEST_ERROR_MAX`] bytes).
    #[error("{0}")]
    Guest(String),
    #[error("cannot instantiate: {0}")]
    /// The instance could not be created.
    Instantiate(String),
    /// A shell's `commands()` listed a table torch will not show (see `engine::commands`).
    #[error("command table refused: {0}")]
    Commands(String),
    /// The host itself ran short (file descriptors, memory maps) while setting the call up:
    /// not the message's fault, so it costs no attempt; the worker waits and retries.
    #[error("host fault: {0}")]
    HostFault(String),
}

/// Longest error text kept from a guest (its `err(...)` or a trap message); the rest is
/// cut, so a hostile guest cannot fill the dead-letter stream with its error.
pub const GUEST_ERROR_MAX: usize = 2048;

/// The kinds of [`CallError`], for counting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureKind {
    /// See [`CallError::Deadline`].
    Deadline,
    /// See [`CallError::Memory`].
    Memory,
    /// See [`CallError::Table`].
    Table,
    /// See [`CallError::Fuel`].
    Fuel,
    /// See [`CallError::Output`].
    Output,
    /// See [`CallError::Input`].
    Input,
    /// See [`CallError::Trap`].
    Trap,
    /// See [`CallError::Guest`].
    Guest,
    /// See [`CallError::Instantiate`].
    Instantiate,
    /// See [`CallError::HostFault`].
    HostFault,
}

impl FailureKind {
    /// Every kind, in a fixed order (the order of [`crate::engine::MetricsSnapshot::failures`]).
    pub const ALL: [FailureKind; 10] = [
        FailureKind::Deadline,
        FailureKind::Memory,
        FailureKind::Table,
        FailureKind::Fuel,
        FailureKind::Output,
        FailureKind::Input,
        FailureKind::Trap,
        FailureKind::Guest,
        FailureKind::Instantiate,
        FailureKind::HostFault,
    ];

    /// The kind's label in metrics and logs.
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
            FailureKind::HostFault => "host",
        }
    }
}

impl CallError {
    /// The kind of this error, for counting.
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
            CallError::HostFault(_) => FailureKind::HostFault,
        }
    }

    /// Whether the host, not the message, is at fault (see [`CallError::HostFault`]).
    pub fn is_host_fault(&self) -> bool {
        matches!(self, CallError::HostFault(_))
    }
}

/// Errno values that mean the host ran short of a resource of its own.
const HOST_ERRNOS: [(i32, &str); 3] = [(libc::EMFILE, "EMFILE"), (libc::ENFILE, "ENFILE"), (libc::ENOMEM, "ENOMEM")];

/// `EMFILE: too many open files (cannot create a memfd)` when `err` was caused by the host
/// running out of file descriptors or memory maps, else `None`. Looks through the whole
/// chain: wasmtime wraps the OS error in context ("failed to create memfd").
pub fn host_fault(err: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut errno = None;
    let mut source = Some(err);
    while let Some(e) = source {
        errno = errno.or_else(|| match e.downcast_ref::<std::io::Error>() {
            Some(io) => io.raw_os_error(),
            None => os_error_in(&e.to_string()),
        });
        source = e.source();
    }
    let errno = errno?;
    let (_, name) = HOST_ERRNOS.iter().find(|(n, _)| *n == errno)?;
    let what = std::io::Error::from_raw_os_error(errno).to_string();
    let what = what.split(" (os error").next().unwrap_or(&what).to_lowercase();
    Some(format!("{name}: {what} ({})", err.to_string().lines().next().unwrap_or_default()))
}

/// The `N` of an `(os error N)` in an error's text (errors of other crates, e.g. rustix's,
/// print it so).
fn os_error_in(text: &str) -> Option<i32> {
    let start = text.find("(os error ")? + "(os error ".len();
    let digits: String = text[start..].chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
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
    fn host_faults_are_recognised_through_context() {
        let io = std::io::Error::from_raw_os_error(libc::EMFILE);
        let err = anyhow::Error::from(io).context("failed to create memfd");
        let text = host_fault(err.as_ref()).expect("a host fault");
        assert_eq!(text, "EMFILE: too many open files (failed to create memfd)");
        let printed = anyhow::anyhow!("mmap failed: Cannot allocate memory (os error 12)");
        assert!(host_fault(printed.as_ref()).is_some_and(|t| t.starts_with("ENOMEM: ")));
        let guest = anyhow::anyhow!("wasm trap: unreachable");
        assert_eq!(host_fault(guest.as_ref()), None);
        let not_found = anyhow::Error::from(std::io::Error::from_raw_os_error(libc::ENOENT));
        assert_eq!(host_fault(not_found.as_ref()), None);
    }

    #[test]
    fn long_text_is_cut_on_a_char_boundary() {
        assert_eq!(truncate_text("short".into(), 10), "short");
        let cut = truncate_text("é".repeat(10), 5);
        assert_eq!(cut, "éé... (16 more bytes cut)");
    }
}
