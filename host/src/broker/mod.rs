//! Brokers: where messages, taskbacks, dead letters and kv data live.
//!
//! Each service has three streams, `data`, `taskback` and `dead` (Redis:
//! `{ns:service}:data`, ...; `redis/keys.rs` has the layout). Workers
//! read the data stream through the consumer group [`WORKER_GROUP`]; a collector reads the
//! taskback stream through [`COLLECTOR_GROUP`]. A message is acknowledged only after its
//! pipeline finished, in the same transaction that adds its taskback.
//!
//! Two implementations pass one conformance suite (`tests/e2e/conformance.rs`): Redis
//! (streams, consumer groups; for several machines) and the embedded broker (SQLite in a
//! data directory; the default, for one machine). `docs/brokers.md` compares them.
//!
//! ## Layout
//! - `mod.rs`: the [`Broker`] trait (what running services use), the [`BrokerAdmin`]
//!   trait (what the tools add), their data types, [`connect`].
//! - `redis/`: Redis streams and consumer groups (its `mod.rs` names the files: claims
//!   and replays as Lua scripts, kv with quotas in Lua, the decoding of replies, and the
//!   `ACL SETUSER` rule that confines a service's processes to its own keys).
//! - `versions.rs`: the [`ComponentStore`] trait of deployed component versions, apart from
//!   [`Broker`]; `redis/versions.rs` and `embedded/versions.rs` implement it.
//! - `embedded/`: the same semantics in SQLite (`streams.rs`: streams, groups, pending;
//!   `kv.rs`: kv), usable by several processes on one data directory.

mod embedded;
mod redis;
pub mod versions;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

pub use self::embedded::{DB_FILE as EMBEDDED_DB_FILE, EmbeddedBroker};
pub use self::redis::acl::{WORKER_CHANNELS, WORKER_COMMANDS, acl_setuser};
pub use self::redis::keys::names_broker_key;
pub use self::redis::migrate::{MigrateError, Migration};
pub use self::redis::{RedisBroker, parse};
pub use self::versions::ComponentStore;
pub use crate::vocab::fields::{ATTEMPTS_FIELD, DEAD_FIELDS, ERROR_FIELD, FAILED_AT_FIELD, Fields, ID_FIELD};
pub use crate::vocab::kv::{KvFailure, KvStore, MAX_KV_TTL, kv_ttl_ms};
pub use crate::vocab::stream::StreamKind;
pub use crate::vocab::streams::{RangeFailure, RangePage, RangeQuery, RangeRequest, StreamReader};

/// Consumer group of the workers on a data stream.
pub const WORKER_GROUP: &str = "cannon";
/// Consumer group of a service's collector on its taskback stream.
pub const COLLECTOR_GROUP: &str = "collector";

/// One stream entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Stream id (`ms-seq`).
    pub id: String,
    /// Its fields, in stored order.
    pub fields: Fields,
    /// Set when a key or value of the stored entry is not UTF-8 (Redis: any producer can
    /// `XADD` bytes): which field and at what byte. `fields` then has each invalid byte
    /// written `\xNN`, for display only; such an entry is never processed.
    pub not_utf8: Option<String>,
}

/// A data-stream entry handed to this consumer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// Stream id (`ms-seq`).
    pub id: String,
    /// The message's fields, in stored order.
    pub fields: Fields,
    /// How many times the broker has handed this entry out, this time included.
    pub deliveries: u32,
    /// As [`Entry::not_utf8`]: the worker dead-letters such a message without running it.
    pub not_utf8: Option<String>,
}

/// A processed message: the taskbacks to add and the entry to acknowledge, atomically.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion {
    /// Data-stream id of the message.
    pub id: String,
    /// Entries to add to the taskback stream, in order.
    pub taskbacks: Vec<Fields>,
}

/// A message that failed `retry.max_attempts` times.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// Data-stream id of the message.
    pub id: String,
    /// The message's fields.
    pub fields: Fields,
    /// Why it failed (the last error).
    pub error: String,
    /// Deliveries spent on it (0: never run).
    pub attempts: u32,
    /// Milliseconds since the Unix epoch of the last failure.
    pub failed_at_ms: u64,
}

impl DeadLetter {
    /// The dead-stream entry: the [`DEAD_FIELDS`] first, each once, then the message's
    /// fields without host-owned keys (`cannon.*`), so a message cannot forge them. (Redis
    /// copies the message's fields from the stored entry instead, byte for byte, when it has
    /// it, in the same order and with the same keys left out.)
    pub fn entry(&self) -> Fields {
        let mut entry = self.added();
        entry.extend(crate::vocab::fields::guest_pairs(self.fields.iter().cloned()));
        entry
    }

    /// The [`DEAD_FIELDS`] with their values.
    pub fn added(&self) -> Fields {
        vec![
            (ID_FIELD.to_owned(), self.id.clone()),
            (ERROR_FIELD.to_owned(), self.error.clone()),
            (ATTEMPTS_FIELD.to_owned(), self.attempts.to_string()),
            (FAILED_AT_FIELD.to_owned(), self.failed_at_ms.to_string()),
        ]
    }
}

/// One entry delivered to a consumer of a group and not yet acknowledged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingEntry {
    /// Stream id of the entry.
    pub id: String,
    /// The consumer holding it.
    pub consumer: String,
    /// Milliseconds since it was last delivered (or kept alive by its consumer).
    pub idle_ms: u64,
    /// How many times it has been delivered.
    pub deliveries: u32,
}

/// One message counted against a service's `rate_limit:` ([`Broker::rate_count`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateCount {
    /// Messages counted in the bucket's current window, this one included.
    pub count: u64,
    /// Milliseconds until that window ends.
    pub left_ms: u64,
}

/// A consumer of a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerInfo {
    /// Consumer name (`{host}-{pid}`, `{host}-collector`).
    pub name: String,
    /// Entries it holds unacknowledged.
    pub pending: u64,
    /// Milliseconds since it last read or claimed.
    pub idle_ms: u64,
}

/// A consumer group of a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupInfo {
    /// Group name.
    pub name: String,
    /// Entries delivered to its consumers and not acknowledged.
    pub pending: u64,
    /// Id of the last entry handed to any of its consumers.
    pub last_delivered: String,
    /// Its consumers.
    pub consumers: Vec<ConsumerInfo>,
}

/// One stream of a service.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StreamInfo {
    /// Entries in the stream.
    pub length: u64,
    /// Id of the newest entry (`0-0` when the stream is empty or missing).
    pub last_id: String,
    /// Its consumer groups.
    pub groups: Vec<GroupInfo>,
}

#[derive(Debug, thiserror::Error)]
/// A broker operation that failed, naming the broker (URL without password, or file).
pub enum BrokerError {
    #[error("broker {url}: {source}")]
    /// Redis answered with an error, or the connection failed.
    Redis {
        /// The broker's URL, password removed.
        url: String,
        #[source]
        /// What the client reported.
        source: ::redis::RedisError,
    },
    #[error("broker {url}: unexpected reply to {command}: {detail}")]
    /// Redis answered with a reply of an unexpected shape.
    Protocol {
        /// The broker's URL, password removed.
        url: String,
        /// The command or script that got the reply.
        command: &'static str,
        /// What was wrong with it.
        detail: String,
    },
    #[error("invalid broker URL {url:?}: {reason}")]
    /// The broker URL is not usable.
    Url {
        /// The URL as given.
        url: String,
        /// Why not.
        reason: String,
    },
    #[error("embedded broker {path}: {source}")]
    /// SQLite failed.
    Sqlite {
        /// The database file.
        path: String,
        #[source]
        /// What SQLite reported.
        source: rusqlite::Error,
    },
    #[error("embedded broker {path}: {detail}")]
    /// The embedded broker refused or failed for another reason.
    Embedded {
        /// The database file.
        path: String,
        /// What went wrong.
        detail: String,
    },
}

impl BrokerError {
    /// Whether the broker refused this for good: the same write would be refused again
    /// (Redis answered `ERR`, as for `Protocol error: invalid bulk length` or a script
    /// error, but not `ERR max number of clients reached`; `WRONGTYPE`, `NOPERM` or
    /// `CROSSSLOT`; SQLite said `string or blob too big`).
    /// Every other error is not known to be about the write and counts as transient: lost
    /// connections, timeouts, the passing states (`LOADING`, `BUSY`, `READONLY`, `MOVED`,
    /// ...), and codes this list does not know. The worker's writer tells a refusal in
    /// disguise apart (Redis refuses some requests by closing the connection) by retrying
    /// the message alone while the broker answers other requests. The list is of known
    /// refusals, not of known transient states, because a transient state taken for a
    /// refusal turns a message's taskbacks into a dead letter: a `MOVED` during a cluster
    /// failover once did.
    pub fn is_permanent(&self) -> bool {
        match self {
            BrokerError::Redis { source, .. } => {
                if source.is_io_error() || source.is_timeout() || source.is_connection_dropped() {
                    return false;
                }
                match source.code() {
                    // Redis's one transient state without a code of its own.
                    Some("ERR") => !source.detail().is_some_and(|d| d.starts_with("max number of clients")),
                    Some(code) => matches!(code, "WRONGTYPE" | "NOPERM" | "CROSSSLOT"),
                    None => false,
                }
            }
            BrokerError::Sqlite { source, .. } => source.sqlite_error_code() == Some(rusqlite::ErrorCode::TooBig),
            BrokerError::Protocol { .. } | BrokerError::Url { .. } | BrokerError::Embedded { .. } => false,
        }
    }
}

impl BrokerError {
    /// Whether the broker said it is in a passing state (`LOADING`, `BUSY`, `TRYAGAIN`,
    /// `MASTERDOWN`, `READONLY`, `MOVED`, `ASK`, `NOREPLICAS`, `CLUSTERDOWN`, `OOM`, `MISCONF`;
    /// a redirect the cluster client could not follow yet is a failover in progress): such a write
    /// is retried for as long as it takes, even while the broker answers reads, because the
    /// same bytes will be taken once the state passes (`NOREPLICAS` while a replica resyncs
    /// after a failover, say). Only errors without such a code (a dropped connection) can be a
    /// refusal in disguise.
    pub fn is_passing_state(&self) -> bool {
        match self {
            BrokerError::Redis { source, .. } => matches!(
                source.code(),
                Some(
                    "LOADING"
                        | "BUSY"
                        | "TRYAGAIN"
                        | "MASTERDOWN"
                        | "READONLY"
                        | "MOVED"
                        | "ASK"
                        | "NOREPLICAS"
                        | "CLUSTERDOWN"
                        | "OOM"
                        | "MISCONF"
                )
            ),
            _ => false,
        }
    }
}

/// A broker operation's result.
pub type Result<T, E = BrokerError> = std::result::Result<T, E>;

/// Message transport of a set of services, as running services use it: workers (read,
/// complete, dead-letter, recover), collectors (add, read taskbacks) and the metrics
/// sampler. Every broker is also the service's kv store (`Arc<dyn Broker>` coerces to
/// `Arc<dyn KvStore>`) and the reader behind the `streams` import ([`StreamReader`]:
/// bounded, group-less reads; `redis/range.rs`, `embedded/streams.rs`); the tools' extra
/// operations are in [`BrokerAdmin`].
#[async_trait]
pub trait Broker: KvStore + StreamReader + Send + Sync + 'static {
    /// Where this broker lives, for messages (password removed).
    fn describe(&self) -> String;

    /// Creates the service's streams and consumer groups when missing, and records the
    /// approximate maximum stream length used when adding entries.
    async fn prepare(&self, service: &str, maxlen: u64) -> Result<()>;

    /// Appends an entry to one of the service's streams; returns its id.
    async fn add(&self, service: &str, stream: StreamKind, fields: &[(String, String)]) -> Result<String>;

    /// New data-stream entries for `consumer`, waiting up to `block` for the first.
    async fn read(&self, service: &str, consumer: &str, count: usize, block: Duration) -> Result<Vec<Delivery>>;

    /// Takes over entries pending longer than `min_idle` with any consumer.
    async fn reclaim(&self, service: &str, consumer: &str, min_idle: Duration, count: usize) -> Result<Vec<Delivery>>;

    /// For each completion whose entry is still pending with `consumer` (data stream, worker
    /// group), atomically: check that, add its taskbacks, acknowledge the entry. An entry
    /// `consumer` no longer holds (taken over after the visibility timeout, or acknowledged by
    /// an earlier write whose reply was lost) is left alone, so nothing is written twice.
    /// Returns how many were left alone.
    async fn complete(&self, service: &str, consumer: &str, done: &[Completion]) -> Result<usize>;

    /// Like [`Broker::complete`], for dead letters: each goes to the dead stream and its
    /// entry is acknowledged, if `consumer` still holds it. Returns how many were left alone.
    async fn dead_letter(&self, service: &str, consumer: &str, dead: &[DeadLetter]) -> Result<usize>;

    /// Creates consumer group `group` on one of the service's streams when missing, starting
    /// at `start` (`"0"`: the whole stream, `"$"`: new entries only).
    async fn create_group(&self, service: &str, stream: StreamKind, group: &str, start: &str) -> Result<()>;

    /// New entries of one of the service's streams for `consumer` of `group`, waiting up to
    /// `block` for the first.
    async fn read_group(
        &self,
        service: &str,
        stream: StreamKind,
        group: &str,
        consumer: &str,
        count: usize,
        block: Duration,
    ) -> Result<Vec<Entry>>;

    /// Entries of `group` already handed to `consumer` and not acknowledged, oldest first:
    /// a consumer with a stable name takes them up after a restart before reading new ones.
    async fn read_own_pending(
        &self,
        service: &str,
        stream: StreamKind,
        group: &str,
        consumer: &str,
        count: usize,
    ) -> Result<Vec<Entry>>;

    /// Trims the service's data and taskback streams to about `stream.maxlen` entries, never
    /// removing an entry that one of the stream's consumer groups has not yet handled (read
    /// and acknowledged): a backlog is kept whole, however long. A stream without groups (the
    /// dead letters, a taskback stream nobody collects) is trimmed by length alone.
    async fn trim(&self, service: &str) -> Result<()>;

    /// Acknowledges entries `group` has handled.
    async fn ack(&self, service: &str, stream: StreamKind, group: &str, ids: &[String]) -> Result<()>;

    /// Id of the newest entry of a stream (`0-0` when empty), to tail from.
    async fn last_id(&self, service: &str, stream: StreamKind) -> Result<String>;

    /// Up to `count` entries of one of the service's streams after `after`, without a group
    /// and without waiting (the Matrix collector's resume scan of what it already added).
    async fn scan(&self, service: &str, stream: StreamKind, after: &str, count: usize) -> Result<Vec<Entry>>;

    /// Length, newest id, groups and consumers of one of the service's streams (empty when
    /// the stream does not exist).
    async fn stream_info(&self, service: &str, stream: StreamKind) -> Result<StreamInfo>;

    /// Up to `count` entries pending in `group`, oldest first, optionally only `consumer`'s.
    async fn pending(
        &self,
        service: &str,
        stream: StreamKind,
        group: &str,
        consumer: Option<&str>,
        count: usize,
    ) -> Result<Vec<PendingEntry>>;

    /// Takes over those of `ids` (data stream, worker group) still pending with consumer
    /// `from`, counting a delivery each; entries deleted meanwhile are dropped.
    async fn claim(&self, service: &str, consumer: &str, from: &str, ids: &[String]) -> Result<Vec<Delivery>>;

    /// Keeps `consumer`'s claim on `ids` (data stream, worker group) fresh, so they are not
    /// reclaimed as abandoned; returns those still pending with `consumer`.
    async fn refresh_claims(&self, service: &str, consumer: &str, ids: &[String]) -> Result<Vec<String>>;

    /// Removes a consumer (and whatever it still had pending) from a group.
    async fn remove_consumer(&self, service: &str, stream: StreamKind, group: &str, consumer: &str) -> Result<()>;

    /// Counts one message in `bucket` of the service's `rate_limit:`: a fixed window of
    /// `window` that starts with the first message counted in it. Atomic, so every worker
    /// of the service shares the count (Redis: `{ns:service}:rate:{bucket}`).
    async fn rate_count(&self, service: &str, bucket: &str, window: Duration) -> Result<RateCount>;
}

/// What the command-line tools need beyond a running service: reading a stream from any
/// point without a group (`send --wait`, `watch`, `dead`, `bench`), replaying dead letters,
/// deleting a scratch service. Workers and collectors only see [`Broker`].
#[async_trait]
pub trait BrokerAdmin: Broker {
    /// Entries after `after`, waiting up to `block` for the first; no consumer group.
    async fn tail(
        &self,
        service: &str,
        stream: StreamKind,
        after: &str,
        count: usize,
        block: Duration,
    ) -> Result<Vec<Entry>>;

    /// Deletes the service's streams, groups and kv data (used by `cannon-host bench` for its
    /// scratch namespace).
    async fn drop_service(&self, service: &str) -> Result<()>;

    /// The name under which this broker keeps one of the service's streams, for display
    /// (Redis: the key, `{ns:service}:data`; embedded: `ns:service:data`).
    fn stream_name(&self, service: &str, stream: StreamKind) -> String;

    /// Moves dead letters (ids of the dead stream) back onto the data stream, without the
    /// [`DEAD_FIELDS`], atomically per letter; returns `(dead id, new data id)` of each moved.
    async fn replay(&self, service: &str, dead_ids: &[String]) -> Result<Vec<(String, String)>>;
}

/// Opens the Redis broker at `url` (`redis://` or `rediss://`).
pub async fn connect(url: &str, namespace: &str) -> Result<Arc<dyn BrokerAdmin>> {
    Ok(Arc::new(RedisBroker::connect(url, namespace).await?))
}

/// Opens (creating when missing) the embedded broker in `data_dir`.
pub async fn open_embedded(data_dir: &Path, namespace: &str) -> Result<Arc<dyn BrokerAdmin>> {
    Ok(Arc::new(EmbeddedBroker::open(data_dir, namespace).await?))
}

#[cfg(test)]
mod tests {
    use super::BrokerError;

    fn redis(source: ::redis::RedisError) -> BrokerError {
        BrokerError::Redis { url: "redis://h".into(), source }
    }

    #[test]
    fn refusals_for_good_are_told_from_transient_failures() {
        let refused = ::redis::make_extension_error("ERR".into(), Some("Protocol error: invalid bulk length".into()));
        assert!(redis(refused).is_permanent());
        for code in ["OOM", "LOADING", "BUSY", "READONLY", "MISCONF", "SOMETHINGNEW"] {
            assert!(!redis(::redis::make_extension_error(code.into(), None)).is_permanent(), "{code}");
        }
        // As Redis sends them: a redirect the cluster client gave up on during a failover
        // (node down) is no refusal of the write; a wrong-type or script error is.
        let reply = |wire: &str| -> BrokerError {
            let value = ::redis::parse_redis_value(wire.as_bytes()).expect("a RESP error reply");
            redis(value.extract_error().expect_err("an error reply"))
        };
        for wire in [
            "-ERR max number of clients reached\r\n",
            "-MOVED 11110 127.0.0.1:40855\r\n",
            "-ASK 3999 127.0.0.1:6381\r\n",
            "-CLUSTERDOWN The cluster is down\r\n",
            "-EXECABORT Transaction discarded\r\n",
        ] {
            assert!(!reply(wire).is_permanent(), "{wire}");
        }
        assert!(reply("-MOVED 11110 127.0.0.1:40855\r\n").is_passing_state());
        for wire in [
            "-WRONGTYPE Operation against a key holding the wrong kind of value\r\n",
            "-ERR user_script:1: Script attempted to access nonexistent global variable\r\n",
        ] {
            assert!(reply(wire).is_permanent(), "{wire}");
        }
        let reset = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        assert!(!redis(reset.into()).is_permanent());
        assert!(redis(::redis::make_extension_error("NOREPLICAS".into(), None)).is_passing_state());
        assert!(!redis(::redis::make_extension_error("ERR".into(), None)).is_passing_state());
        let embedded = BrokerError::Embedded { path: "d".into(), detail: "busy".into() };
        assert!(!embedded.is_permanent());
        let sqlite = |code| BrokerError::Sqlite {
            path: "d".into(),
            source: rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(code), None),
        };
        assert!(sqlite(rusqlite::ffi::SQLITE_TOOBIG).is_permanent());
        assert!(!sqlite(rusqlite::ffi::SQLITE_FULL).is_permanent());
        assert!(!sqlite(rusqlite::ffi::SQLITE_BUSY).is_permanent());
    }
}
