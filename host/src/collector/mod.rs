//! Native collectors: long-lived sources of a service's messages, and the receivers of its
//! taskbacks.
//!
//! [`run`] supervises one collector (a service may have several): when it fails (an error or a panic) the
//! failure is logged and the collector is started again after an exponential backoff,
//! while the service's workers keep draining its stream.
//!
//! ## Layout
//! - `mod.rs`: [`run`] (dispatch on the kind, supervision), [`Context`] (adding messages
//!   with the collector's kwargs and the size limit; reading taskbacks).
//! - `stdin.rs`: interactive chat on standard input and output.
//! - `http.rs`: `POST /` a JSON object; `?wait=MS` answers with the taskback; `auth:` and
//!   `tls:` through [`crate::access`]; `http_serve.rs`: its accept loop (connection cap,
//!   header, body and idle timeouts, TLS handshake per connection).
//! - `tick.rs`: a message on a schedule; `schedule.rs` computes fire times (interval, or
//!   cron through [`crate::time::cron`]).
//! - `stream.rs`: follows another service's data or taskback stream.
//! - `exec.rs`: a program speaking JSON lines on stdin/stdout, restarted when it exits.
//! - `json.rs`: JSON objects to message fields and back (http bodies, exec lines).
//! - `chat/`: chat platforms (`irc`, `matrix`, `slack`, `discord`): the common shape and one module per platform.

mod chat;
mod exec;
mod http;
mod http_serve;
mod json;
mod schedule;
mod stdin;
mod stream;
mod tick;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::broker::{Broker, BrokerError, COLLECTOR_GROUP, Entry, Fields, StreamKind};
use crate::config::{CollectorKind, CollectorSpec, Service, TickSchedule};
use crate::time::backoff;

pub(crate) use json::{json_fields, to_json};
pub use schedule::{Schedule, ScheduleError};

/// First pause before restarting a failed collector (or an `exec` program); doubles per
/// consecutive failure.
pub(crate) const RESTART_BASE: Duration = Duration::from_millis(500);
/// Longest pause before a restart.
pub(crate) const RESTART_CAP: Duration = Duration::from_secs(30);
/// A collector (or program) that ran this long before failing starts its backoff over.
pub(crate) const HEALTHY_RUN: Duration = Duration::from_secs(60);

/// How a collector ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Its input ended (e.g. end of standard input): the process may shut down.
    Finished,
    /// The shutdown token was cancelled.
    Stopped,
}

/// Everything a collector needs.
#[derive(Clone)]
pub struct Context {
    /// The service the collector feeds.
    pub service: Service,
    /// This collector (a service may have several).
    pub spec: CollectorSpec,
    /// Where messages go and taskbacks come from.
    pub broker: Arc<dyn Broker>,
    /// Consumer group on the service's taskback stream through which this collector receives
    /// taskbacks; `None` when another collector of the service delivers them.
    pub taskback_group: Option<String>,
    /// Consumer name in its groups: stable across restarts, so a restarted collector first
    /// takes up the entries it had read but not acknowledged.
    pub consumer: String,
    /// Cancelled when the process stops.
    pub shutdown: CancellationToken,
}

/// Whether a collector kind hands taskbacks to someone (a chat, an http caller, a program).
pub fn delivers_taskbacks(kind: &CollectorKind) -> bool {
    matches!(
        kind,
        CollectorKind::Stdin | CollectorKind::Http { .. } | CollectorKind::Exec { .. } | CollectorKind::Chat(_)
    )
}

/// The taskback group of each of a service's collectors: every collector that delivers
/// taskbacks gets its own group, so each sees all of them (the first is `collector`, later
/// ones `collector.2`, ...). A `tick` or `stream` collector logs them only when no other
/// collector of the service delivers them.
pub fn taskback_groups(collectors: &[CollectorSpec]) -> Vec<Option<String>> {
    let any_delivers = collectors.iter().any(|c| delivers_taskbacks(&c.kind));
    let mut next = 0;
    collectors
        .iter()
        .map(|c| {
            if any_delivers && !delivers_taskbacks(&c.kind) {
                return None;
            }
            next += 1;
            Some(if next == 1 { COLLECTOR_GROUP.to_owned() } else { format!("{COLLECTOR_GROUP}.{next}") })
        })
        .collect()
}

/// Why a message was not added.
#[derive(Debug, thiserror::Error)]
pub enum AddError {
    #[error("message of {bytes} bytes exceeds limits.message_kb = {limit_kb} of service {service:?}")]
    /// Larger than `limits.message_kb`.
    TooLarge {
        /// The message's size (keys, values and per-field overhead).
        bytes: usize,
        /// The limit.
        limit_kb: u64,
        /// The service.
        service: String,
    },
    #[error("message of {fields} fields exceeds limits.max_fields = {limit} of service {service:?}")]
    /// More fields than `limits.max_fields`.
    TooManyFields {
        /// The message's field count.
        fields: usize,
        /// The limit.
        limit: usize,
        /// The service.
        service: String,
    },
    #[error("a message needs at least one field")]
    /// No fields at all.
    Empty,
    #[error(transparent)]
    /// The broker refused or failed.
    Broker(#[from] BrokerError),
}

/// A background task reading taskbacks; stopped (after its current read) when dropped or
/// by [`Background::finish`].
pub(crate) struct Background {
    stop: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Background {
    /// Stops the task and waits until every taskback it took is handled and acknowledged.
    pub(crate) async fn finish(mut self, service: &str) {
        self.stop.cancel();
        if let Some(task) = self.task.take()
            && let Err(err) = task.await
        {
            tracing::error!(service, error = %err, "taskback reader failed");
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Context {
    /// Adds one message built from `fields` plus the collector's kwargs (the message's own
    /// fields win), refusing it when it has more than `limits.max_fields` fields or exceeds
    /// `limits.message_kb` (each field costing its bytes plus 32).
    pub async fn add(&self, fields: Fields) -> Result<String, AddError> {
        let message = self.message(fields)?;
        Ok(self.broker.add(&self.service.name, StreamKind::Data, &message).await?)
    }

    /// Like [`Context::add`], but a broker failure is logged and retried with backoff until
    /// it succeeds; gives up (with the last error) only at shutdown.
    pub async fn add_patiently(&self, fields: Fields) -> Result<String, AddError> {
        let message = self.message(fields)?;
        self.add_message_patiently(message).await
    }

    async fn add_message_patiently(&self, message: Fields) -> Result<String, AddError> {
        let mut failures = 0u32;
        loop {
            match self.broker.add(&self.service.name, StreamKind::Data, &message).await {
                Ok(id) => return Ok(id),
                Err(err) => {
                    failures += 1;
                    let pause = backoff(Duration::from_millis(100), failures, Duration::from_secs(5));
                    tracing::error!(
                        service = %self.service.name,
                        error = %err,
                        retry_in_ms = pause.as_millis() as u64,
                        "cannot add a message; retrying"
                    );
                    tokio::select! {
                        () = tokio::time::sleep(pause) => {}
                        () = self.shutdown.cancelled() => return Err(err.into()),
                    }
                }
            }
        }
    }

    /// Adds the receipt for `taskback` when it asks for one (`cannon.receipt: yes`): the
    /// collector's kwargs plus [`crate::fields::receipt_message`], retried like
    /// [`Context::add_patiently`]. A receipt that cannot be added is logged; returns its id.
    pub async fn receipt(&self, taskback: &Fields, outcome: Result<&str, &str>) -> Option<String> {
        if !crate::fields::wants_receipt(taskback) {
            return None;
        }
        let fields = crate::fields::receipt_message(taskback, outcome)?;
        let added = match self.checked(self.with_kwargs(fields)) {
            Ok(message) => self.add_message_patiently(message).await,
            Err(err) => Err(err),
        };
        match added {
            Ok(id) => Some(id),
            Err(err) => {
                tracing::error!(service = %self.service.name, error = %err, "cannot add a receipt");
                None
            }
        }
    }

    /// The collector's kwargs, then `fields` merged in.
    fn with_kwargs(&self, fields: Fields) -> Fields {
        let mut message = Vec::with_capacity(fields.len() + self.kwargs().len());
        message.extend(self.kwargs().iter().map(|(k, v)| (k.clone(), v.clone())));
        crate::fields::merge(&mut message, fields);
        message
    }

    /// A message from outside (a chat line, a body, a program's line, a kwarg): receipt keys
    /// (`cannon.receipt...`) are dropped, so only [`Context::receipt`] writes them.
    fn message(&self, fields: Fields) -> Result<Fields, AddError> {
        let mut message = self.with_kwargs(fields);
        message.retain(|(k, _)| !crate::fields::is_receipt_key(k));
        crate::observe::trace::collect(&self.service.name, kind_name(&self.spec.kind), &mut message);
        self.checked(message)
    }

    fn checked(&self, message: Fields) -> Result<Fields, AddError> {
        let limit = self.service.limits.max_fields;
        if message.is_empty() {
            return Err(AddError::Empty);
        }
        if message.len() > limit {
            return Err(AddError::TooManyFields { fields: message.len(), limit, service: self.service.name.clone() });
        }
        let bytes = crate::fields::size(&message);
        let limit_kb = self.service.limits.message_kb;
        if bytes as u64 > limit_kb.saturating_mul(1024) {
            return Err(AddError::TooLarge { bytes, limit_kb, service: self.service.name.clone() });
        }
        Ok(message)
    }

    fn kwargs(&self) -> &crate::config::Kwargs {
        &self.spec.kwargs
    }

    /// Reads taskbacks through the collector group until shutdown, calling `handle` on each
    /// and acknowledging it afterwards.
    pub async fn taskbacks(&self, mut handle: impl FnMut(&Entry)) {
        self.for_each_taskback(|entry| {
            handle(&entry);
            std::future::ready(())
        })
        .await;
    }

    /// [`Context::taskbacks`] with an asynchronous handler: a batch is acknowledged once
    /// `handle` has returned for each of its entries.
    pub async fn for_each_taskback<F, Fut>(&self, mut handle: F)
    where
        F: FnMut(Entry) -> Fut,
        Fut: Future<Output = ()>,
    {
        let name = self.service.name.as_str();
        let Some(group) = self.taskback_group.as_deref() else {
            self.shutdown.cancelled().await;
            return;
        };
        let mut failures = 0u32;
        // Entries read before a restart but never acknowledged come first.
        let mut own_pending = true;
        while !self.shutdown.is_cancelled() {
            let block = Duration::from_millis(500);
            let read = if own_pending {
                self.broker.read_own_pending(name, StreamKind::Taskback, group, &self.consumer, 64).await
            } else {
                self.broker.read_group(name, StreamKind::Taskback, group, &self.consumer, 64, block).await
            };
            match read {
                Ok(entries) => {
                    failures = 0;
                    own_pending &= !entries.is_empty();
                    let ids: Vec<String> = entries.iter().map(|e| e.id.clone()).collect();
                    for entry in entries {
                        if let Some(fault) = &entry.not_utf8 {
                            // Never handed on altered; it stays in the taskback stream as written.
                            tracing::error!(
                                service = %name,
                                taskback_id = %entry.id,
                                error = %fault,
                                "taskback is not UTF-8; skipped (it stays in the taskback stream as written)"
                            );
                            continue;
                        }
                        handle(entry).await;
                    }
                    if let Err(err) = self.broker.ack(name, StreamKind::Taskback, group, &ids).await {
                        tracing::error!(service = %name, error = %err, "cannot acknowledge taskbacks");
                    }
                }
                Err(err) => {
                    failures += 1;
                    let pause = backoff(Duration::from_millis(100), failures, Duration::from_secs(5));
                    tracing::error!(service = %name, error = %err, "cannot read taskbacks");
                    tokio::select! {
                        () = tokio::time::sleep(pause) => {}
                        () = self.shutdown.cancelled() => {}
                    }
                }
            }
        }
    }

    /// Runs [`Context::for_each_taskback`] in the background until the returned guard is
    /// finished or dropped.
    pub(crate) fn spawn_taskbacks<F, Fut>(&self, handle: F) -> Background
    where
        F: FnMut(Entry) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send,
    {
        let stop = self.shutdown.child_token();
        let mut ctx = self.clone();
        ctx.shutdown = stop.clone();
        let task = tokio::spawn(async move { ctx.for_each_taskback(handle).await });
        Background { stop, task: Some(task) }
    }

    /// Logs each taskback (for collectors with nobody to hand them to: `tick`, `stream`).
    pub(crate) fn log_taskbacks(&self) -> Background {
        let service = self.service.name.clone();
        self.spawn_taskbacks(move |entry| {
            tracing::info!(service = %service, taskback = %to_json(&entry.fields), "taskback");
            std::future::ready(())
        })
    }
}

/// The kind's name as written in the compose file.
pub fn kind_name(kind: &CollectorKind) -> &'static str {
    match kind {
        CollectorKind::Stdin => "stdin",
        CollectorKind::Http { .. } => "http",
        CollectorKind::Tick { .. } => "tick",
        CollectorKind::Stream { .. } => "stream",
        CollectorKind::Exec { .. } => "exec",
        CollectorKind::Chat(chat) => chat.platform.name(),
    }
}

/// One line describing a collector, e.g. `http on 127.0.0.1:8080`, `tick every 5s`.
pub fn describe(kind: &CollectorKind) -> String {
    match kind {
        CollectorKind::Stdin => "stdin".to_owned(),
        CollectorKind::Http { listen, tls, .. } => format!("http{} on {listen}", if tls.is_some() { "s" } else { "" }),
        CollectorKind::Tick { schedule: TickSchedule::Every(period), .. } => {
            format!("tick every {}", humanize(*period))
        }
        CollectorKind::Tick { schedule: TickSchedule::Cron(expr), .. } => format!("tick cron `{expr}` UTC"),
        CollectorKind::Stream { service, stream } => {
            format!("stream from {service}:{}", stream_name(*stream))
        }
        CollectorKind::Exec { command, .. } => format!("exec `{}`", command.join(" ")),
        CollectorKind::Chat(chat) => chat.platform.describe(),
    }
}

/// The stream's name as written in the compose file and in broker keys.
pub fn stream_name(stream: StreamKind) -> &'static str {
    match stream {
        StreamKind::Data => "data",
        StreamKind::Taskback => "taskback",
        StreamKind::Dead => "dead",
    }
}

fn humanize(period: Duration) -> String {
    let ms = period.as_millis();
    for (unit, size) in [("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)] {
        if ms.is_multiple_of(size) {
            return format!("{}{unit}", ms / size);
        }
    }
    format!("{ms}ms")
}

/// Runs one collector until its input ends or `shutdown`, restarting it with backoff
/// whenever it fails.
pub async fn run(ctx: Context) -> anyhow::Result<Exit> {
    let spec = ctx.spec.clone();
    let kind = kind_name(&spec.kind);
    let mut failures = 0u32;
    // observe: `cannon_collector_up`, 1 while this collector runs.
    let up = crate::observe::collector(&ctx.service.name, kind);
    loop {
        let started = Instant::now();
        up.set(1);
        let outcome = match tokio::spawn(run_once(ctx.clone(), spec.kind.clone())).await {
            Ok(outcome) => outcome,
            Err(join) => Err(anyhow::anyhow!("collector panicked: {join}")),
        };
        up.set(0);
        let err = match outcome {
            Ok(exit) => return Ok(exit),
            Err(err) => err,
        };
        if ctx.shutdown.is_cancelled() {
            tracing::error!(service = %ctx.service.name, collector = kind, error = %format_args!("{err:#}"), "collector failed during shutdown");
            return Ok(Exit::Stopped);
        }
        if started.elapsed() >= HEALTHY_RUN {
            failures = 0;
        }
        failures += 1;
        let pause = backoff(RESTART_BASE, failures, RESTART_CAP);
        tracing::error!(
            service = %ctx.service.name,
            collector = kind,
            error = %format_args!("{err:#}"),
            failures,
            restart_in_ms = pause.as_millis() as u64,
            "collector failed; restarting it (workers carry on)"
        );
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            () = ctx.shutdown.cancelled() => return Ok(Exit::Stopped),
        }
    }
}

async fn run_once(ctx: Context, kind: CollectorKind) -> anyhow::Result<Exit> {
    match kind {
        CollectorKind::Stdin => stdin::run(ctx).await,
        CollectorKind::Http { listen, limits, .. } => http::run(ctx, &listen, limits).await,
        CollectorKind::Tick { schedule, at_start } => tick::run(ctx, &schedule, at_start).await,
        CollectorKind::Stream { service, stream } => stream::run(ctx, &service, stream).await,
        CollectorKind::Exec { command, dir } => exec::run(ctx, &command, &dir).await,
        CollectorKind::Chat(spec) => chat::run(ctx, *spec).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptions() {
        let every =
            |ms| CollectorKind::Tick { schedule: TickSchedule::Every(Duration::from_millis(ms)), at_start: false };
        assert_eq!(describe(&every(5000)), "tick every 5s");
        assert_eq!(describe(&every(7_200_000)), "tick every 2h");
        assert_eq!(describe(&every(1500)), "tick every 1500ms");
        let stream = CollectorKind::Stream { service: "chat".into(), stream: StreamKind::Taskback };
        assert_eq!(describe(&stream), "stream from chat:taskback");
    }

    #[test]
    fn restart_backoff_doubles_and_caps() {
        assert_eq!(backoff(RESTART_BASE, 1, RESTART_CAP), Duration::from_millis(500));
        assert_eq!(backoff(RESTART_BASE, 2, RESTART_CAP), Duration::from_secs(1));
        assert_eq!(backoff(RESTART_BASE, 4, RESTART_CAP), Duration::from_secs(4));
        assert_eq!(backoff(RESTART_BASE, 40, RESTART_CAP), RESTART_CAP);
    }
}
