//! The typed model of `cannon-compose.yml`.
//!
//! Every struct denies unknown keys, so a typo is an error with a line number rather than
//! a silently ignored setting. Defaults are chosen so that a service with only a `tasks:`
//! list runs safely: bounded time, memory and output per call, three attempts per message.

use std::path::PathBuf;
use std::time::Duration;

use indexmap::IndexMap;
use serde::Deserialize;

pub use crate::vocab::component::{Capability, ComponentSpec, Kwargs};
pub use crate::vocab::limits::{KvQuota, Limits};
pub use crate::vocab::stream::StreamKind;

/// A whole compose file after loading: `${ENV}` substituted, params resolved, paths made
/// absolute against the file's directory.
#[derive(Debug, Clone)]
pub struct Compose {
    /// The file this was loaded from; errors and relative paths refer to it.
    pub path: PathBuf,
    /// Prefix of every broker key, so several deployments can share one Redis.
    pub namespace: String,
    /// Broker URL from the file (`--broker` and `CANNON_BROKER` take precedence). A
    /// [`Secret`](crate::vocab::Secret): the URL may carry a password, so `Debug` hides it.
    pub broker: Option<crate::vocab::Secret>,
    /// Directory where `file: NAME` components live as `NAME.wasm`.
    pub app_dir: PathBuf,
    /// Directory of the embedded broker (relative to the compose file unless absolute).
    pub data_dir: PathBuf,
    /// Named groups of users, referenced by shell permissions.
    pub groups: IndexMap<String, Vec<String>>,
    /// Named kwargs, defined once and reused with `conf: {key: NAME}`.
    pub params: IndexMap<String, Kwargs>,
    /// The services, in file order.
    pub services: IndexMap<String, Service>,
    /// `metrics: {listen: ADDR}`: where `run` serves `/metrics` and the dashboard
    /// (`--metrics` takes precedence).
    pub metrics_listen: Option<String>,
    /// `metrics: {auth: ...}`: who may read them (`bearer` or `none`); required off loopback.
    pub metrics_auth: Option<super::access::HttpAuth>,
    /// `metrics: {tls: {cert, key}}`: serve them over HTTPS, reloaded like the http collector's.
    pub metrics_tls: Option<super::access::TlsFiles>,
}

/// One entry under `services:`.
#[derive(Debug, Clone)]
pub struct Service {
    /// The key under `services:`; also the middle part of the service's stream names.
    pub name: String,
    /// Line of the service's key in the compose file, for messages that name it.
    pub line: usize,
    /// Where messages come from (`collector:`, or several under `collectors:`, e.g. a chat
    /// and a timer); empty means only `cannon-host send` (or another process) adds them.
    pub collectors: Vec<CollectorSpec>,
    /// The command tree that `torch` tasks dispatch into.
    pub shell: Option<ComponentSpec>,
    /// The pipeline, in order.
    pub tasks: Vec<TaskSpec>,
    /// Concurrency, batching and drain of its workers.
    pub workers: Workers,
    /// Per-call sandbox limits (a component may override them).
    pub limits: Limits,
    /// Attempts, visibility timeout and backoff.
    pub retry: Retry,
    /// Stream retention.
    pub stream: StreamSettings,
    /// Quotas of its kv store.
    pub kv: KvQuota,
    /// Flood protection: at most so many messages per window, counted in the broker.
    pub rate_limit: Option<RateLimit>,
}

/// `rate_limit: {per: user, max: 5, every: 10s}`: at most `max` messages per `every` in
/// each bucket; beyond, the first message of a window gets one polite reply and the rest
/// are acknowledged without running until the window ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimit {
    /// What is counted separately.
    pub per: RatePer,
    /// Messages allowed per window and bucket.
    pub max: u64,
    /// The window.
    pub every: Duration,
}

/// What a rate limit counts separately.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RatePer {
    /// Every message of the service in one count.
    Service,
    /// One count per value of this message field (`user`, `channel`); messages without
    /// it share one count.
    Field(String),
}

/// A native collector: the long-lived source of a service's messages.
#[derive(Debug, Clone)]
pub struct CollectorSpec {
    /// Which source, with its options.
    pub kind: CollectorKind,
    /// Fields added to every message the collector yields (botcannon's `conf.kwargs`);
    /// for `stdin`, `user` names the sender (default `$USER`).
    pub kwargs: Kwargs,
    /// Line of the collector in the compose file.
    pub line: usize,
}

#[derive(Debug, Clone)]
/// The kinds of collector, with their options.
pub enum CollectorKind {
    /// One message `{user, text}` per line of standard input; taskbacks are printed.
    Stdin,
    /// `POST /` with a JSON object body; `GET /healthz`.
    Http {
        /// Address to listen on (`HOST:PORT`).
        listen: String,
        /// Connection cap and header, body and idle timeouts of its accept loop.
        limits: HttpLimits,
        /// Who may post (`auth:`); `None` when not written, allowed only on loopback.
        auth: Option<super::access::HttpAuth>,
        /// Serve HTTPS with these files (`tls:`), reloaded on SIGHUP or when they change.
        tls: Option<super::access::TlsFiles>,
    },
    /// `{tick: RFC 3339 time}` every `every`, or on a UTC cron schedule.
    Tick {
        /// When it fires.
        schedule: TickSchedule,
        /// Whether it also fires once at start.
        at_start: bool,
    },
    /// Follows another service's stream with its own consumer group.
    Stream {
        /// The service followed.
        service: String,
        /// Which of its streams.
        stream: StreamKind,
    },
    /// A program that writes JSON-object lines (messages) and reads taskbacks as JSON lines.
    /// A program path containing `/` is resolved against the compose file's directory, which
    /// is also the program's working directory (`dir`).
    Exec {
        /// Program and arguments.
        command: Vec<String>,
        /// Its working directory.
        dir: PathBuf,
    },
    /// A chat platform (`irc`, `matrix`, `slack`, `discord`): channel messages in, replies out
    /// (config/chat.rs, config/chat_hosted.rs).
    Chat(Box<super::chat::ChatSpec>),
}

#[derive(Debug, Clone)]
/// When a `tick` collector fires.
pub enum TickSchedule {
    /// Every so long, aligned to the Unix epoch.
    Every(Duration),
    /// A standard five-field cron expression, evaluated in UTC.
    Cron(String),
}

/// One step of a pipeline.
#[derive(Debug, Clone)]
#[expect(clippy::large_enum_variant, reason = "a few per service, built once at load")]
pub enum TaskSpec {
    /// The built-in task that dispatches `message[in_key]` into the service's shell.
    Torch(TorchSpec),
    /// A Wasm component run as a task.
    Wasm(ComponentSpec),
}

#[derive(Debug, Clone)]
/// The built-in torch task's settings.
pub struct TorchSpec {
    /// Message field holding the command line (default `text`).
    pub in_key: String,
    /// Result key receiving the reply (default `text`).
    pub out_key: String,
    /// Message field naming the sender, for permissions (default `user`).
    pub user_key: String,
    /// When set, only lines starting with it directly followed by a letter are commands (it
    /// is stripped: `.roll 2d6` with prefix `.` runs `roll 2d6`); other lines (`just chatting`,
    /// `...`, `.5 pm`) get no reply, as in a busy chat room.
    pub prefix: Option<String>,
    /// When true, a line whose first word is not a command (nor `help`) gets no reply
    /// instead of the command list: ordinary chat in a room where commands have no prefix.
    pub ignore_unknown: bool,
    /// Line of the task in the compose file.
    pub line: usize,
}

/// How many messages a worker process handles at once and how it reads them.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Workers {
    /// Messages processed concurrently per process.
    pub concurrency: usize,
    /// Messages fetched per read from the broker; the next read goes out once half a batch is
    /// left to start, so a process holds up to `concurrency + batch + batch / 2` messages.
    pub batch: usize,
    /// How long one blocking read waits for new messages, in milliseconds.
    pub block_ms: u64,
    /// How long shutdown waits for in-flight messages, in milliseconds.
    pub drain_timeout_ms: u64,
    /// A message field (e.g. `user`): messages with the same value of it start only after
    /// the previous one with that value finished; others run in parallel. Holds per worker
    /// process (see `worker/order.rs`).
    pub order_by: Option<String>,
}

impl Default for Workers {
    fn default() -> Self {
        Self { concurrency: 16, batch: 64, block_ms: 1000, drain_timeout_ms: 10_000, order_by: None }
    }
}

/// What happens when a message's pipeline fails.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Retry {
    /// Deliveries before the message goes to the dead-letter stream.
    pub max_attempts: u32,
    /// A message pending this long with an idle consumer is reclaimed by another worker.
    pub visibility_timeout_ms: u64,
    /// First retry delay; doubles per attempt.
    pub backoff_ms: u64,
}

impl Default for Retry {
    fn default() -> Self {
        Self { max_attempts: 3, visibility_timeout_ms: 30_000, backoff_ms: 100 }
    }
}

/// Stream retention.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StreamSettings {
    /// Approximate maximum length of each stream (`XADD MAXLEN ~ N`).
    pub maxlen: u64,
}

impl Default for StreamSettings {
    fn default() -> Self {
        Self { maxlen: 100_000 }
    }
}

/// Timeouts and the connection cap of an `http` collector (keys of its `collector:`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// A request's headers must be complete this long after the connection is ready for
    /// it (opened, or done with the previous response): slow or silent clients are cut off.
    pub header_timeout_ms: u64,
    /// A request's body must be complete this long after its headers (`408` otherwise).
    pub body_timeout_ms: u64,
    /// A keep-alive connection without a request in progress that sends nothing for this
    /// long is closed.
    pub idle_timeout_ms: u64,
    /// Connections served at once. Beyond, a reserve of [`HttpLimits::reserve`] more answers
    /// `GET /healthz` and `503` to the rest, each on a short deadline; beyond that, new
    /// connections are closed at once.
    pub max_connections: usize,
}

impl HttpLimits {
    /// Connections over `max_connections` still answered (`/healthz`, or `503`).
    pub fn reserve(&self) -> usize {
        (self.max_connections / 8).clamp(4, 64)
    }
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self { header_timeout_ms: 10_000, body_timeout_ms: 30_000, idle_timeout_ms: 5_000, max_connections: 512 }
    }
}
