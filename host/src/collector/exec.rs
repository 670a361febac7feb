//! `exec`: runs a program (`command: [prog, arg, ...]`, in the host's working directory,
//! with `CANNON_SERVICE` set). Each line it writes on stdout is a JSON object that becomes
//! a message; a line that is not one is logged with its text and skipped. Its stderr lines
//! go to the log. Each taskback is written to its stdin as one JSON object per line. When
//! it exits it is started again after an exponential backoff. At shutdown its stdin is
//! closed, it gets [`GRACE`] to exit, and is then killed.
//!
//! Receipts: a taskback that asks for one reaches the program with `cannon.receipt: "yes"`;
//! the program acknowledges it with a line `{"receipt_for": ID, "receipt": "ok"}` (`ID` the
//! taskback's `cannon.id`; any other `receipt` value is an error; optional `detail` and
//! `receipt_ref`), which the collector turns into the receipt message. Such a line is never
//! an ordinary message; one for an id that has no receipt outstanding is logged and skipped.
//! At most [`MAX_PENDING_RECEIPTS`] receipts are outstanding; beyond that the oldest is
//! forgotten (its acknowledgement is then skipped).

use std::collections::VecDeque;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{ChildStdin, Command};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::collector::{AddError, Context, Exit, HEALTHY_RUN, RESTART_BASE, RESTART_CAP, json_fields, to_json};
use crate::time::backoff;

/// How long the program may take to exit after its stdin is closed at shutdown.
const GRACE: Duration = Duration::from_secs(2);
/// After the program exited, how long its stdout is still drained (a child of its own may
/// hold the pipe open).
const DRAIN: Duration = Duration::from_secs(1);
/// Longest stderr line logged in full.
const MAX_STDERR_LINE: usize = 16 * 1024;

/// Receipts handed to the program and not acknowledged yet, oldest first.
const MAX_PENDING_RECEIPTS: usize = 4096;

/// Message ids of the taskbacks handed to the program that ask for a receipt (an id once
/// per such taskback), oldest first.
type Pending = Arc<Mutex<VecDeque<String>>>;

/// Taskback lines on their way to the program, kept across restarts.
struct Outbox {
    rx: mpsc::Receiver<String>,
    /// A line the previous program did not take; the next one gets it first.
    carry: Option<String>,
}

enum Ended {
    Exited(ExitStatus),
    Shutdown,
}

pub async fn run(ctx: Context, command: &[String], dir: &Path) -> anyhow::Result<Exit> {
    let name = ctx.service.name.clone();
    let (tx, rx) = mpsc::channel::<String>(256);
    let pending = Pending::default();
    let waiting = pending.clone();
    let taskbacks = ctx.spawn_taskbacks(move |entry| {
        let tx = tx.clone();
        if crate::fields::wants_receipt(&entry.fields)
            && let Some(id) = crate::fields::host_id(&entry.fields)
        {
            let mut waiting = waiting.lock().unwrap_or_else(PoisonError::into_inner);
            if waiting.len() >= MAX_PENDING_RECEIPTS {
                waiting.pop_front();
            }
            waiting.push_back(id.to_owned());
        }
        async move {
            // Waits while no program is reading, so taskbacks stay in the stream meanwhile.
            let _ = tx.send(crate::text::for_json(to_json(&entry.fields).to_string())).await;
        }
    });
    let mut outbox = Some(Outbox { rx, carry: None });
    let mut failures = 0u32;
    let shown = command.join(" ");
    let exit = loop {
        let started = Instant::now();
        let ended = run_program(&ctx, command, dir, &mut outbox, &pending).await;
        let why = match ended {
            Ok(Ended::Shutdown) => break Exit::Stopped,
            Ok(Ended::Exited(status)) => format!("program exited ({status})"),
            Err(err) => format!("{err:#}"),
        };
        if ctx.shutdown.is_cancelled() {
            break Exit::Stopped;
        }
        if started.elapsed() >= HEALTHY_RUN {
            failures = 0;
        }
        failures += 1;
        let pause = backoff(RESTART_BASE, failures, RESTART_CAP);
        tracing::warn!(
            service = %name,
            command = %shown,
            restart_in_ms = pause.as_millis() as u64,
            "{why}; restarting it"
        );
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            () = ctx.shutdown.cancelled() => break Exit::Stopped,
        }
    };
    // Dropping the outbox unblocks a reader waiting to hand over a taskback.
    drop(outbox);
    taskbacks.finish(&name).await;
    Ok(exit)
}

/// Starts the program in `dir` with its three standard streams piped; killed on drop.
fn spawn(
    command: &[String],
    dir: &Path,
    service: &str,
) -> anyhow::Result<(tokio::process::Child, ChildStdin, tokio::process::ChildStdout, tokio::process::ChildStderr)> {
    let (program, args) = command.split_first().context("empty command")?;
    let mut child = Command::new(program)
        .args(args)
        .current_dir(dir)
        .env("CANNON_SERVICE", service)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("cannot start {:?}", command.join(" ")))?;
    let (Some(stdin), Some(stdout), Some(stderr)) = (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        anyhow::bail!("the program's standard streams are not available");
    };
    Ok((child, stdin, stdout, stderr))
}

/// Runs the program once, until it exits or shutdown.
async fn run_program(
    ctx: &Context,
    command: &[String],
    dir: &Path,
    outbox: &mut Option<Outbox>,
    pending: &Pending,
) -> anyhow::Result<Ended> {
    let name = ctx.service.name.as_str();
    let (mut child, stdin, stdout, stderr) = spawn(command, dir, name)?;
    let pid = child.id().unwrap_or(0);
    tracing::info!(service = %name, pid, command = %command.join(" "), "program started");
    let writer_stop = CancellationToken::new();
    let writer = match outbox.take() {
        Some(out) => tokio::spawn(write_taskbacks(stdin, out, writer_stop.clone())),
        None => anyhow::bail!("taskback queue lost"),
    };
    let max_line = usize::try_from(ctx.service.limits.message_kb.saturating_mul(2048)).unwrap_or(usize::MAX);
    let mut out = LineReader::new(BufReader::new(stdout), max_line.saturating_add(64 * 1024));
    let mut err = LineReader::new(BufReader::new(stderr), MAX_STDERR_LINE);
    let (mut out_open, mut err_open) = (true, true);
    let mut status = None;
    let drain = tokio::time::sleep(Duration::MAX);
    tokio::pin!(drain);
    let ended = loop {
        if status.is_some() && !out_open {
            break status.map(Ended::Exited);
        }
        tokio::select! {
            line = out.next(), if out_open => match line {
                Ok(Some(Line::Text(text))) => {
                    if !forward(ctx, pid, &text, pending).await {
                        break None;
                    }
                }
                Ok(Some(Line::TooLong(len))) => {
                    tracing::warn!(service = %name, pid, bytes = len, "program wrote a line too long for a message; skipped");
                }
                Ok(None) => out_open = false,
                Err(e) => {
                    tracing::warn!(service = %name, pid, error = %e, "cannot read the program's stdout");
                    out_open = false;
                }
            },
            line = err.next(), if err_open => match line {
                Ok(Some(Line::Text(text))) => tracing::info!(service = %name, pid, "program: {text}"),
                Ok(Some(Line::TooLong(len))) => tracing::info!(service = %name, pid, "program: ({len} bytes on one line, not shown)"),
                Ok(None) | Err(_) => err_open = false,
            },
            exited = child.wait(), if status.is_none() => {
                let exited = exited.context("cannot wait for the program")?;
                status = Some(exited);
                writer_stop.cancel();
                drain.as_mut().reset(tokio::time::Instant::now() + DRAIN);
            },
            () = &mut drain => break status.map(Ended::Exited),
            () = ctx.shutdown.cancelled() => break None,
        }
    };
    writer_stop.cancel();
    match writer.await {
        Ok(out) => *outbox = Some(out),
        Err(e) => anyhow::bail!("taskback writer failed: {e}"),
    }
    match ended {
        Some(ended) => Ok(ended),
        None => {
            // Shutdown: stdin is closed now (the writer dropped it); give the program a moment.
            if tokio::time::timeout(GRACE, child.wait()).await.is_err() {
                tracing::warn!(service = %name, pid, "program did not exit within {} ms; killing it", GRACE.as_millis());
                let _ = child.kill().await;
            }
            Ok(Ended::Shutdown)
        }
    }
}

/// Adds one stdout line as a message; `false` when shutdown interrupted it.
async fn forward(ctx: &Context, pid: u32, text: &str, pending: &Pending) -> bool {
    let name = ctx.service.name.as_str();
    let text = text.trim();
    if text.is_empty() {
        return true;
    }
    let fields = match json_fields(text.as_bytes()) {
        Ok(fields) => fields,
        Err(error) => {
            let shown: String = text.chars().take(300).collect();
            tracing::warn!(service = %name, pid, line = %shown, %error, "program wrote a line that is not a message; skipped");
            return true;
        }
    };
    if fields.iter().any(|(k, _)| k == ACK_FOR) {
        acknowledge(ctx, pid, &fields, pending).await;
        return true;
    }
    match ctx.add_patiently(fields).await {
        Ok(id) => {
            tracing::debug!(service = %name, pid, id = %id, "message from program");
            true
        }
        Err(AddError::Broker(_)) => false,
        Err(error) => {
            tracing::warn!(service = %name, pid, %error, "program's message skipped");
            true
        }
    }
}

/// The key of a program's line that acknowledges a taskback (its value: the taskback's `cannon.id`).
const ACK_FOR: &str = "receipt_for";

/// Turns the program's acknowledgement into the receipt of the oldest outstanding taskback
/// of that id.
async fn acknowledge(ctx: &Context, pid: u32, fields: &[(String, String)], pending: &Pending) {
    use crate::broker::ID_FIELD;
    use crate::fields::{RECEIPT_FIELD, RECEIPT_REF, RECEIPT_REQUEST};
    let get = |key: &str| fields.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v.as_str());
    let id = get(ACK_FOR).unwrap_or_default();
    let known = {
        let mut pending = pending.lock().unwrap_or_else(PoisonError::into_inner);
        match pending.iter().position(|p| p == id) {
            Some(at) => pending.remove(at).is_some(),
            None => false,
        }
    };
    if !known {
        let shown: String = id.chars().take(100).collect();
        tracing::warn!(service = %ctx.service.name, pid, receipt_for = %shown, "program acknowledged a taskback that has no receipt outstanding; skipped");
        return;
    }
    let mut taskback = vec![(ID_FIELD.to_owned(), id.to_owned()), (RECEIPT_FIELD.to_owned(), "yes".to_owned())];
    if let Some(reference) = get(RECEIPT_REF) {
        taskback.push((RECEIPT_REF.to_owned(), reference.to_owned()));
    }
    let detail = get("detail").unwrap_or_default();
    let outcome = if get(RECEIPT_REQUEST) == Some("ok") { Ok(detail) } else { Err(detail) };
    ctx.receipt(&taskback, outcome).await;
}

/// Writes taskback lines to the program until it goes away or `stop`; gives the queue back.
async fn write_taskbacks(mut stdin: ChildStdin, mut out: Outbox, stop: CancellationToken) -> Outbox {
    loop {
        let line = match out.carry.take() {
            Some(line) => line,
            None => tokio::select! {
                line = out.rx.recv() => match line {
                    Some(line) => line,
                    None => return out,
                },
                () = stop.cancelled() => return out,
            },
        };
        let mut bytes = line.into_bytes();
        bytes.push(b'\n');
        let written = tokio::select! {
            written = async {
                stdin.write_all(&bytes).await?;
                stdin.flush().await
            } => written.is_ok(),
            () = stop.cancelled() => false,
        };
        if !written {
            bytes.pop();
            out.carry = Some(String::from_utf8_lossy(&bytes).into_owned());
            return out;
        }
    }
}

/// One line read by [`LineReader`].
#[derive(Debug, PartialEq, Eq)]
enum Line {
    Text(String),
    /// A line longer than the limit, skipped; its length in bytes.
    TooLong(usize),
}

/// Reads lines of bounded length (a longer one is skipped, not buffered). Cancel-safe: all
/// state lives in the struct between awaits.
struct LineReader<R> {
    inner: R,
    buf: Vec<u8>,
    max: usize,
    /// Bytes of the current line dropped so far because it is too long.
    skipped: usize,
}

impl<R: AsyncBufRead + Unpin> LineReader<R> {
    fn new(inner: R, max: usize) -> Self {
        Self { inner, buf: Vec::new(), max, skipped: 0 }
    }

    async fn next(&mut self) -> std::io::Result<Option<Line>> {
        loop {
            let available = self.inner.fill_buf().await?;
            if available.is_empty() {
                // End of input: a last line without a newline still counts.
                if self.skipped > 0 {
                    let len = std::mem::take(&mut self.skipped) + self.buf.len();
                    self.buf.clear();
                    return Ok(Some(Line::TooLong(len)));
                }
                if self.buf.is_empty() {
                    return Ok(None);
                }
                let text = String::from_utf8_lossy(&std::mem::take(&mut self.buf)).into_owned();
                return Ok(Some(Line::Text(text)));
            }
            let (chunk, newline) = match available.iter().position(|&b| b == b'\n') {
                Some(i) => (&available[..i], true),
                None => (available, false),
            };
            let used = chunk.len() + usize::from(newline);
            if self.skipped > 0 || self.buf.len() + chunk.len() > self.max {
                self.skipped += self.buf.len() + chunk.len();
                self.buf.clear();
            } else {
                self.buf.extend_from_slice(chunk);
            }
            self.inner.consume(used);
            if newline {
                if self.skipped > 0 {
                    return Ok(Some(Line::TooLong(std::mem::take(&mut self.skipped))));
                }
                let mut bytes = std::mem::take(&mut self.buf);
                if bytes.last() == Some(&b'\r') {
                    bytes.pop();
                }
                return Ok(Some(Line::Text(String::from_utf8_lossy(&bytes).into_owned())));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn lines_are_bounded() {
        let input: &[u8] = b"short\r\nthis one is far too long\nok\nlast";
        let mut reader = LineReader::new(BufReader::with_capacity(4, input), 10);
        let mut got = Vec::new();
        while let Some(line) = reader.next().await.unwrap() {
            got.push(line);
        }
        assert_eq!(
            got,
            [Line::Text("short".into()), Line::TooLong(24), Line::Text("ok".into()), Line::Text("last".into())]
        );
    }
}
