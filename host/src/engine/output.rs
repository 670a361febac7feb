//! Guest output: the `log` import and WASI stdout/stderr, forwarded line by line into the
//! host's `tracing` log (target `guest`) under one byte budget per call. Output beyond the
//! budget is counted and dropped; it never fails the call.
//!
//! Each line costs its bytes plus [`LINE_OVERHEAD`] (the host's log record around it), so
//! a flood of empty lines is bounded too. Controls, C1 and bidi characters are escaped
//! ([`crate::text::for_terminal`]: `\n`, `\u{1b}`), so a guest cannot forge host log
//! records or drive the operator's terminal.

use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

use crate::engine::bindings::Level;
use crate::engine::secrets::Secrets;

/// Where a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Stdout,
    Stderr,
    Log,
}

impl Source {
    fn as_str(self) -> &'static str {
        match self {
            Source::Stdout => "stdout",
            Source::Stderr => "stderr",
            Source::Log => "log",
        }
    }
}

/// Budget charged per line on top of its bytes: a line is never free, even when empty.
pub const LINE_OVERHEAD: usize = 32;

/// Whose call a record belongs to: written with each record the call's guest causes (its
/// log lines, a refused HTTP request), so a line names its message without a `tracing` span.
#[derive(Debug, Default)]
pub struct CallContext {
    /// The service the message belongs to, `-` for a call without a message.
    pub service: Arc<str>,
    /// The message's stream id, `-` for a call without a message (a shell's command list).
    pub id: String,
    /// The component called.
    pub component: Arc<str>,
}

/// The log output of one call.
#[derive(Debug)]
pub struct CallLog {
    budget: usize,
    used: usize,
    /// Bytes dropped once the budget was spent.
    pub(crate) dropped: usize,
    /// Lines (or line fragments) dropped once the budget was spent.
    pub(crate) dropped_lines: usize,
    /// Unterminated stdout / stderr lines.
    partial: [Vec<u8>; 2],
    /// The component's secrets, masked in every line.
    secrets: Arc<Secrets>,
    /// Written with every line.
    context: Arc<CallContext>,
}

impl CallLog {
    pub fn new(budget: usize) -> Self {
        Self {
            budget,
            used: 0,
            dropped: 0,
            dropped_lines: 0,
            partial: [Vec::new(), Vec::new()],
            secrets: Arc::default(),
            context: Arc::default(),
        }
    }

    /// Names this call's message and component in every line.
    pub fn with_context(mut self, context: Arc<CallContext>) -> Self {
        self.context = context;
        self
    }

    /// Masks these secrets in every line (see `engine/secrets.rs`).
    pub fn with_secrets(mut self, secrets: Arc<Secrets>) -> Self {
        self.secrets = secrets;
        self
    }

    /// One call of the `log` import.
    pub fn log(&mut self, level: Level, text: &str) {
        self.emit(level, Source::Log, text.as_bytes());
    }

    /// Bytes written to stdout or stderr; complete lines are emitted, the rest is kept.
    pub fn write(&mut self, source: Source, bytes: &[u8]) {
        let slot = usize::from(source == Source::Stderr);
        let level = if source == Source::Stderr { Level::Warn } else { Level::Info };
        let mut rest = bytes;
        while let Some(pos) = rest.iter().position(|&b| b == b'\n') {
            let (line, tail) = rest.split_at(pos);
            if self.partial[slot].is_empty() {
                self.emit(level, source, line);
            } else {
                let mut joined = std::mem::take(&mut self.partial[slot]);
                joined.extend_from_slice(line);
                self.emit(level, source, &joined);
            }
            rest = &tail[1..];
        }
        if !rest.is_empty() {
            let room = self.budget.saturating_sub(self.used + self.partial[slot].len());
            let keep = rest.len().min(room);
            self.partial[slot].extend_from_slice(&rest[..keep]);
            if keep < rest.len() {
                self.dropped += rest.len() - keep;
                self.dropped_lines += 1;
            }
        }
    }

    /// Emits unterminated lines and reports dropped output; called when the call ends.
    pub fn finish(&mut self) {
        for (slot, source) in [(0, Source::Stdout), (1, Source::Stderr)] {
            let line = std::mem::take(&mut self.partial[slot]);
            if !line.is_empty() {
                self.emit(Level::Info, source, &line);
            }
        }
        if self.dropped_lines > 0 {
            let CallContext { service, id, component } = &*self.context;
            tracing::warn!(
                target: "guest",
                service = %service,
                id = %id,
                component = %component,
                dropped_bytes = self.dropped,
                dropped_lines = self.dropped_lines,
                "guest output beyond the log budget of {} bytes (limits.log_kb) was dropped",
                self.budget
            );
            self.dropped = 0;
            self.dropped_lines = 0;
        }
    }

    fn emit(&mut self, level: Level, source: Source, bytes: &[u8]) {
        let cost = bytes.len().saturating_add(LINE_OVERHEAD);
        if self.used.saturating_add(cost) > self.budget {
            self.dropped += bytes.len();
            self.dropped_lines += 1;
            return;
        }
        self.used += cost;
        let lossy = String::from_utf8_lossy(bytes);
        let lossy = self.secrets.mask(&lossy);
        let text = crate::text::for_terminal(&lossy);
        let source = source.as_str();
        let CallContext { service, id, component } = &*self.context;
        match level {
            Level::Trace => {
                tracing::trace!(target: "guest", service = %service, id = %id, component = %component, source, "{text}")
            }
            Level::Debug => {
                tracing::debug!(target: "guest", service = %service, id = %id, component = %component, source, "{text}")
            }
            Level::Info => {
                tracing::info!(target: "guest", service = %service, id = %id, component = %component, source, "{text}")
            }
            Level::Warn => {
                tracing::warn!(target: "guest", service = %service, id = %id, component = %component, source, "{text}")
            }
            Level::Error => {
                tracing::error!(target: "guest", service = %service, id = %id, component = %component, source, "{text}")
            }
        }
    }
}

/// A WASI stdout or stderr that writes into a [`CallLog`].
#[derive(Clone)]
pub struct GuestOutput {
    log: Arc<Mutex<CallLog>>,
    source: Source,
}

impl GuestOutput {
    pub fn new(log: Arc<Mutex<CallLog>>, source: Source) -> Self {
        Self { log, source }
    }

    fn write_bytes(&self, bytes: &[u8]) {
        self.log.lock().unwrap_or_else(PoisonError::into_inner).write(self.source, bytes);
    }
}

impl IsTerminal for GuestOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestOutput {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl OutputStream for GuestOutput {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.write_bytes(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(64 * 1024)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for GuestOutput {
    async fn ready(&mut self) {}
}

impl AsyncWrite for GuestOutput {
    fn poll_write(self: Pin<&mut Self>, _cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        self.write_bytes(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_counts_bytes_plus_overhead_and_drops() {
        let mut log = CallLog::new(2 * LINE_OVERHEAD + 10);
        log.write(Source::Stdout, b"hello\nwor");
        log.write(Source::Stdout, b"ld and more\n");
        // "hello" fits; "world and more" (14 bytes) does not fit in what is left.
        assert_eq!(log.used, 5 + LINE_OVERHEAD);
        assert_eq!((log.dropped, log.dropped_lines), (14, 1));
        log.log(Level::Info, "abcd");
        assert_eq!(log.used, 9 + 2 * LINE_OVERHEAD);
    }

    #[test]
    fn empty_lines_are_not_free() {
        let mut log = CallLog::new(10 * LINE_OVERHEAD);
        log.write(Source::Stdout, &[b'\n'; 1000]);
        assert_eq!(log.used, 10 * LINE_OVERHEAD);
        assert_eq!(log.dropped_lines, 990);
    }

    #[test]
    fn partial_lines_are_bounded() {
        let mut log = CallLog::new(4);
        log.write(Source::Stderr, &[b'x'; 100]);
        assert_eq!(log.partial[1].len(), 4);
        assert_eq!(log.dropped, 96);
        log.finish();
        assert!(log.partial[1].is_empty());
    }
}
