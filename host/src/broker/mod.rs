//! Brokers: where messages, taskbacks, dead letters and kv data live.
//!
//! Each service has three streams, `{ns}:{service}:data`, `:taskback` and `:dead`. Workers
//! read the data stream through the consumer group [`WORKER_GROUP`]; a collector reads the
//! taskback stream through [`COLLECTOR_GROUP`]. A message is acknowledged only after its
//! pipeline finished, in the same transaction that adds its taskback.
//!
//! Two implementations pass one conformance suite (`tests/e2e/conformance.rs`): Redis
//! (streams, consumer groups; for several machines) and the embedded broker (SQLite in a
//! data directory; the default, for one machine). `docs/brokers.md` compares them.
//!
//! ## Layout
//! - `mod.rs`: the [`Broker`] and [`KvStore`] traits, their data types, [`connect`].
//! - `redis.rs`: Redis streams and consumer groups; `redis_admin.rs`: inspection, claims
//!   and replays (Lua scripts where a check and a write must be atomic); `redis_kv.rs`: kv
//!   with quotas in Lua; `parse.rs`: decoding of Redis replies; `redis_acl.rs`: the
//!   `ACL SETUSER` rule that confines a service's processes to its own keys.
//! - `versions.rs`: the [`ComponentStore`] trait of deployed component versions, apart from
//!   [`Broker`]; `redis_versions.rs` and `embedded/versions.rs` implement it.
//! - `embedded/`: the same semantics in SQLite (`streams.rs`: streams, groups, pending;
//!   `kv.rs`: kv), usable by several processes on one data directory.

mod embedded;
pub mod parse;
mod redis;
mod redis_acl;
mod redis_admin;
mod redis_kv;
mod redis_rate;
mod redis_versions;
pub mod versions;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

pub use self::embedded::{DB_FILE as EMBEDDED_DB_FILE, EmbeddedBroker};
pub use self::redis::RedisBroker;
pub use self::redis_acl::{WORKER_CHANNELS, WORKER_COMMANDS, acl_setuser};
pub use self::versions::ComponentStore;
pub use crate::config::StreamKind;

/// Ordered `key -> value` pairs: a message's fields, results or a taskback.
pub type Fields = Vec<(String, String)>;

/// Consumer group of the workers on a data stream.
pub const WORKER_GROUP: &str = "cannon";
/// Consumer group of a service's collector on its taskback stream.
pub const COLLECTOR_GROUP: &str = "collector";
/// Field of a taskback naming the message it answers.
pub const ID_FIELD: &str = "cannon.id";

/// One stream entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub id: String,
    pub fields: Fields,
    /// Set when a key or value of the stored entry is not UTF-8 (Redis: any producer can
    /// `XADD` bytes): which field and at what byte. `fields` then has each invalid byte
    /// written `\xNN`, for display only; such an entry is never processed.
    pub not_utf8: Option<String>,
}

/// A data-stream entry handed to this consumer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub id: String,
    pub fields: Fields,
    /// How many times the broker has handed this entry out, this time included.
    pub deliveries: u32,
    /// As [`Entry::not_utf8`]: the worker dead-letters such a message without running it.
    pub not_utf8: Option<String>,
}

/// A processed message: the taskbacks to add and the entry to acknowledge, atomically.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion {
    pub id: String,
    pub taskbacks: Vec<Fields>,
}

/// A message that failed `retry.max_attempts` times.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    pub id: String,
    pub fields: Fields,
    pub error: String,
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
        entry.extend(crate::fields::guest_pairs(self.fields.iter().cloned()));
        entry
    }

    /// The [`DEAD_FIELDS`] with their values.
    pub fn added(&self) -> Fields {
        vec![
            (ID_FIELD.to_owned(), self.id.clone()),
            ("cannon.error".to_owned(), self.error.clone()),
            ("cannon.attempts".to_owned(), self.attempts.to_string()),
            ("cannon.failed_at".to_owned(), self.failed_at_ms.to_string()),
        ]
    }
}

/// Fields [`Broker::bury`] adds to a dead letter (before the message's own fields), and
/// which [`Broker::replay`] strips again.
pub const DEAD_FIELDS: [&str; 4] = [ID_FIELD, "cannon.error", "cannon.attempts", "cannon.failed_at"];

/// One entry delivered to a consumer of a group and not yet acknowledged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingEntry {
    pub id: String,
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
    pub name: String,
    /// Entries it holds unacknowledged.
    pub pending: u64,
    /// Milliseconds since it last read or claimed.
    pub idle_ms: u64,
}

/// A consumer group of a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupInfo {
    pub name: String,
    pub pending: u64,
    /// Id of the last entry handed to any of its consumers.
    pub last_delivered: String,
    pub consumers: Vec<ConsumerInfo>,
}

/// One stream of a service.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StreamInfo {
    pub length: u64,
    /// Id of the newest entry (`0-0` when the stream is empty or missing).
    pub last_id: String,
    pub groups: Vec<GroupInfo>,
}

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("broker {url}: {source}")]
    Redis {
        url: String,
        #[source]
        source: ::redis::RedisError,
    },
    #[error("broker {url}: unexpected reply to {command}: {detail}")]
    Protocol { url: String, command: &'static str, detail: String },
    #[error("invalid broker URL {url:?}: {reason}")]
    Url { url: String, reason: String },
    #[error("embedded broker {path}: {source}")]
    Sqlite {
        path: String,
        #[source]
        source: rusqlite::Error,
    },
    #[error("embedded broker {path}: {detail}")]
    Embedded { path: String, detail: String },
}

impl BrokerError {
    /// Whether the broker refused this for good: the same write would be refused again
    /// (Redis answered with an error such as `ERR Protocol error: invalid bulk length` or a
    /// script error; SQLite said `string or blob too big`). Lost connections, timeouts,
    /// `LOADING`, `BUSY`, `READONLY`, `OOM`, `MISCONF`, a busy or full database are
    /// transient. A refusal Redis makes by closing the connection looks transient here; the
    /// worker's writer tells it apart by retrying the message alone while the broker answers.
    pub fn is_permanent(&self) -> bool {
        match self {
            BrokerError::Redis { source, .. } => {
                if source.is_io_error() || source.is_timeout() || source.is_connection_dropped() {
                    return false;
                }
                match source.code() {
                    Some(code) => !matches!(
                        code,
                        "LOADING"
                            | "BUSY"
                            | "TRYAGAIN"
                            | "MASTERDOWN"
                            | "READONLY"
                            | "NOREPLICAS"
                            | "CLUSTERDOWN"
                            | "OOM"
                            | "MISCONF"
                            | "NOSCRIPT"
                    ),
                    None => false,
                }
            }
            BrokerError::Sqlite { source, .. } => source.sqlite_error_code() == Some(rusqlite::ErrorCode::TooBig),
            BrokerError::Protocol { .. } | BrokerError::Url { .. } | BrokerError::Embedded { .. } => false,
        }
    }
}

pub type Result<T, E = BrokerError> = std::result::Result<T, E>;

/// Message transport of a set of services. Every broker is also the service's kv store
/// (`Arc<dyn Broker>` coerces to `Arc<dyn KvStore>`).
#[async_trait]
pub trait Broker: KvStore + Send + Sync + 'static {
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
    async fn bury(&self, service: &str, consumer: &str, dead: &[DeadLetter]) -> Result<usize>;

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

    /// Deletes the service's streams, groups and kv data (used by `cannon-host bench` for its
    /// scratch namespace).
    async fn drop_service(&self, service: &str) -> Result<()>;

    /// Acknowledges entries `group` has handled.
    async fn ack(&self, service: &str, stream: StreamKind, group: &str, ids: &[String]) -> Result<()>;

    /// Id of the newest entry of a stream (`0-0` when empty), to tail from.
    async fn last_id(&self, service: &str, stream: StreamKind) -> Result<String>;

    /// Entries after `after`, waiting up to `block` for the first; no consumer group.
    async fn tail(
        &self,
        service: &str,
        stream: StreamKind,
        after: &str,
        count: usize,
        block: Duration,
    ) -> Result<Vec<Entry>>;

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
    async fn keep(&self, service: &str, consumer: &str, ids: &[String]) -> Result<Vec<String>>;

    /// Removes a consumer (and whatever it still had pending) from a group.
    async fn remove_consumer(&self, service: &str, stream: StreamKind, group: &str, consumer: &str) -> Result<()>;

    /// Counts one message in `bucket` of the service's `rate_limit:`: a fixed window of
    /// `window` that starts with the first message counted in it. Atomic, so every worker
    /// of the service shares the count (Redis: `{ns}:{service}:rate:{bucket}`).
    async fn rate_count(&self, service: &str, bucket: &str, window: Duration) -> Result<RateCount>;

    /// Moves dead letters (ids of the dead stream) back onto the data stream, without the
    /// [`DEAD_FIELDS`], atomically per letter; returns `(dead id, new data id)` of each moved.
    async fn replay(&self, service: &str, dead_ids: &[String]) -> Result<Vec<(String, String)>>;
}

/// The longest `kv` TTL: 100 years. A longer one (up to `u64::MAX` ms from a guest) is
/// clamped to it by both brokers, so both answer the same: Redis refuses expiry times past
/// about 2^63 ms and its Lua scripts count in doubles, exact to 2^53.
pub const MAX_KV_TTL: Duration = Duration::from_millis(100 * 365 * 24 * 3600 * 1000);

/// `ttl` clamped to [`MAX_KV_TTL`], in whole milliseconds, at least 1.
pub fn kv_ttl_ms(ttl: Duration) -> u64 {
    u64::try_from(ttl.min(MAX_KV_TTL).as_millis()).unwrap_or(u64::MAX).max(1)
}

/// Why a kv operation was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvFailure {
    QuotaExceeded(String),
    NotANumber(String),
    Unavailable(String),
}

/// Storage behind the `kv` import. Keys are relative to the service; the store scopes them.
#[async_trait]
pub trait KvStore: Send + Sync + 'static {
    async fn kv_get(&self, service: &str, key: &str) -> Result<Option<Vec<u8>>, KvFailure>;
    async fn kv_set(
        &self,
        service: &str,
        key: &str,
        value: &[u8],
        ttl: Option<Duration>,
        quota: &crate::config::KvQuota,
    ) -> Result<(), KvFailure>;
    async fn kv_delete(&self, service: &str, key: &str) -> Result<bool, KvFailure>;
    async fn kv_increment(
        &self,
        service: &str,
        key: &str,
        delta: i64,
        quota: &crate::config::KvQuota,
    ) -> Result<i64, KvFailure>;
    async fn kv_list(&self, service: &str, prefix: &str, limit: u32) -> Result<Vec<String>, KvFailure>;
}

/// Opens the Redis broker at `url` (`redis://` or `rediss://`).
pub async fn connect(url: &str, namespace: &str) -> Result<Arc<dyn Broker>> {
    Ok(Arc::new(RedisBroker::connect(url, namespace).await?))
}

/// Opens (creating when missing) the embedded broker in `data_dir`.
pub async fn open_embedded(data_dir: &Path, namespace: &str) -> Result<Arc<dyn Broker>> {
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
        for code in ["OOM", "LOADING", "BUSY", "READONLY", "MISCONF"] {
            assert!(!redis(::redis::make_extension_error(code.into(), None)).is_permanent(), "{code}");
        }
        let reset = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        assert!(!redis(reset.into()).is_permanent());
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
