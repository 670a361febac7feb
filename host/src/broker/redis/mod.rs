//! Redis streams with consumer groups.
//!
//! Short commands share one auto-reconnecting multiplexed connection (on a Redis Cluster,
//! one cluster connection, which sends each command to the node owning its keys' slot).
//! Blocking reads (`XREADGROUP ... BLOCK`, `XREAD ... BLOCK`) each borrow a dedicated
//! connection from a small pool, because a blocked command would stall every other command
//! queued on a shared connection.
//!
//! ## Layout
//! - `mod.rs`: [`RedisBroker`], its connections, and the [`Broker`] implementation.
//! - `connection.rs`: the broker URL (one Redis or a cluster, `wait_replicas`) and the
//!   connections it opens.
//! - `keys.rs`: the key layout, every key of a service under its hash tag `{ns:service}`.
//! - `finish.rs`: the hot path's atomic writes: taskbacks plus ack, dead letter plus ack,
//!   each only while this consumer still holds the message (Lua scripts).
//! - `admin.rs`: the [`crate::broker::BrokerAdmin`] side: tails, dead-letter replays,
//!   deleting a service.
//! - `claims.rs`: inspection (`XINFO`, `XPENDING`), claims that check ownership, trims
//!   and replays of dead letters (Lua scripts where a check and a write must be atomic).
//! - `kv.rs`: the kv store, with its quotas checked in Lua.
//! - `rate.rs`: `rate_limit:` counters.
//! - `range.rs`: bounded reads for the `streams` import ([`crate::broker::StreamReader`]).
//! - `parse.rs`: decoding of Redis replies (fuzzed: `fuzz/fuzz_targets/replies.rs`).
//! - `acl.rs`: the `ACL SETUSER` rule that confines a service's processes to its own keys.
//! - `versions.rs`: deployed component versions ([`crate::broker::ComponentStore`]).

pub(super) mod acl;
mod admin;
mod claims;
mod connection;
mod finish;
pub(crate) mod keys;
mod kv;
pub mod migrate;
pub mod parse;
mod range;
mod rate;
pub(crate) mod versions;

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use redis::{Cmd, Value};

pub(crate) use self::connection::Con;
use self::connection::{Nodes, RESPONSE_TIMEOUT, WaitReplicas};
use self::finish::Outgoing;
use self::parse::RawEntry;
use crate::broker::{
    Broker, BrokerError, Completion, DeadLetter, Delivery, Entry, PendingEntry, Result, StreamInfo, StreamKind,
    WORKER_GROUP,
};

/// Default approximate stream length when a service was not prepared.
const DEFAULT_MAXLEN: u64 = 100_000;

/// The Redis broker: streams with consumer groups, kv and rate counters in Lua.
pub struct RedisBroker {
    nodes: Nodes,
    /// The URL without its password, for messages.
    url: String,
    pub(super) namespace: String,
    /// The shared connection for short commands.
    pub(super) manager: Con,
    /// Dedicated connections for blocking reads, reused across reads.
    blocking: Mutex<Vec<Con>>,
    /// `wait_replicas`: `WAIT` after each write that must survive a failover.
    wait: Option<WaitReplicas>,
    /// Approximate maximum length per service, from `prepare`.
    maxlen: RwLock<HashMap<String, u64>>,
    /// Whether `streams` reads still try the read-only script (`range.rs`): cleared the
    /// first time this Redis or this user cannot run `EVALSHA_RO`.
    pub(super) read_only_scripts: std::sync::atomic::AtomicBool,
}

/// `redis://user:secret@host` -> `redis://user:***@host`.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

impl RedisBroker {
    /// Connects to `url` (`redis://`, `rediss://`, `redis+cluster://`, `rediss+cluster://`,
    /// see `connection.rs`); every key carries the hash tag `{namespace:service}`.
    pub async fn connect(url: &str, namespace: &str) -> Result<Self> {
        // `rediss://` goes through rustls, whose provider the whole process shares (ring).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let shown = redact(url);
        let bad_url = |reason: String| BrokerError::Url { url: shown.clone(), reason };
        let target = connection::parse_target(url).map_err(bad_url)?;
        let nodes = Nodes::open(&target).map_err(|e| bad_url(e.to_string()))?;
        let manager = nodes.shared().await.map_err(|source| BrokerError::Redis { url: shown.clone(), source })?;
        Ok(Self {
            nodes,
            url: shown,
            namespace: namespace.to_owned(),
            manager,
            blocking: Mutex::new(Vec::new()),
            wait: target.wait,
            maxlen: RwLock::new(HashMap::new()),
            read_only_scripts: std::sync::atomic::AtomicBool::new(true),
        })
    }

    /// Whether this broker is a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        self.manager.is_cluster()
    }

    /// With `wait_replicas`, waits until that many replicas have every write made so far
    /// on the shared connection to the node of `key` (`WAIT`); fewer within the timeout is
    /// an error (the write is in place on the primary, but a failover now could lose it).
    pub(super) async fn wait_replicas(&self, key: &str) -> Result<()> {
        self.wait_replicas_on(&mut self.manager.clone(), key).await
    }

    /// [`RedisBroker::wait_replicas`] for writes made on `con`.
    pub(super) async fn wait_replicas_on(&self, con: &mut Con, key: &str) -> Result<()> {
        let Some(wait) = self.wait else { return Ok(()) };
        let mut cmd = redis::cmd("WAIT");
        cmd.arg(wait.replicas).arg(wait.timeout_ms);
        let reply = con.on_slot_of(key, &cmd).await.map_err(|e| self.err(e))?;
        let acked = parse::int(&reply).map_err(|d| self.protocol("WAIT", d))?;
        if acked < i64::from(wait.replicas) {
            // The code Redis itself gives a write refused for want of replicas
            // (`min-replicas-to-write`): transient, the write is retried.
            let detail = format!(
                "only {acked} of wait_replicas={} replicas acknowledged the write to {key} within {} ms",
                wait.replicas, wait.timeout_ms
            );
            return Err(self.err(redis::make_extension_error("NOREPLICAS".to_owned(), Some(detail))));
        }
        Ok(())
    }

    /// `{ns:service}:stream` ([`keys::stream`]).
    pub fn key(&self, service: &str, stream: StreamKind) -> String {
        keys::stream(&self.namespace, service, stream)
    }

    pub(super) fn maxlen(&self, service: &str) -> u64 {
        self.maxlen.read().unwrap_or_else(PoisonError::into_inner).get(service).copied().unwrap_or(DEFAULT_MAXLEN)
    }

    pub(super) fn err(&self, source: redis::RedisError) -> BrokerError {
        BrokerError::Redis { url: self.url.clone(), source }
    }

    pub(super) fn protocol(&self, command: &'static str, detail: String) -> BrokerError {
        BrokerError::Protocol { url: self.url.clone(), command, detail }
    }

    pub(super) async fn query(&self, cmd: &Cmd) -> Result<Value> {
        let mut con = self.manager.clone();
        cmd.query_async(&mut con).await.map_err(|e| self.err(e))
    }

    /// A new connection of its own, for a write large enough that Redis might refuse it by
    /// closing the connection (dropped after use).
    pub(super) async fn dedicated(&self) -> Result<Con> {
        self.nodes.own(Some(RESPONSE_TIMEOUT * 6)).await.map_err(|e| self.err(e))
    }

    /// Runs a blocking command on a dedicated connection.
    pub(super) async fn query_blocking(&self, cmd: &Cmd) -> Result<Value> {
        let pooled = self.blocking.lock().unwrap_or_else(PoisonError::into_inner).pop();
        let mut con = match pooled {
            Some(con) => con,
            None => self.nodes.own(None).await.map_err(|e| self.err(e))?,
        };
        let value: Value = cmd.query_async(&mut con).await.map_err(|e| self.err(e))?;
        self.blocking.lock().unwrap_or_else(PoisonError::into_inner).push(con);
        Ok(value)
    }

    /// `XADD`; with `maxlen`, trimmed by length on the way (only for streams without
    /// consumer groups: the others are trimmed by [`Broker::trim`], which spares backlogs).
    pub(super) fn xadd(&self, key: &str, maxlen: Option<u64>, fields: &[(String, String)]) -> Cmd {
        let mut cmd = redis::cmd("XADD");
        cmd.arg(key);
        if let Some(maxlen) = maxlen {
            cmd.arg("MAXLEN").arg("~").arg(maxlen);
        }
        cmd.arg("*");
        for (k, v) in fields {
            cmd.arg(k).arg(v);
        }
        cmd
    }

    pub(super) async fn ensure_group(&self, key: &str, group: &str, start: &str) -> Result<()> {
        let mut cmd = redis::cmd("XGROUP");
        cmd.arg("CREATE").arg(key).arg(group).arg(start).arg("MKSTREAM");
        match self.query(&cmd).await {
            Ok(_) => Ok(()),
            Err(BrokerError::Redis { source, .. }) if source.code() == Some("BUSYGROUP") => Ok(()),
            Err(err) => Err(err),
        }
    }

    /// Drops entries deleted while pending (acknowledging them) and keeps the rest.
    pub(super) async fn live_entries(&self, key: &str, group: &str, raw: Vec<RawEntry>) -> Result<Vec<Entry>> {
        let mut gone = Vec::new();
        let mut live = Vec::with_capacity(raw.len());
        for RawEntry { id, fields } in raw {
            match fields {
                Some(decoded) => live.push(Entry { id, fields: decoded.fields, not_utf8: decoded.not_utf8 }),
                None => gone.push(id),
            }
        }
        if !gone.is_empty() {
            tracing::warn!(stream = key, count = gone.len(), "acknowledging entries deleted while pending");
            let mut ack = redis::cmd("XACK");
            ack.arg(key).arg(group).arg(&gone);
            self.query(&ack).await?;
        }
        Ok(live)
    }

    /// Blocking `XREADGROUP` of new entries.
    async fn read_entries(
        &self,
        key: &str,
        group: &str,
        consumer: &str,
        count: usize,
        block: Duration,
    ) -> Result<Vec<Entry>> {
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP").arg(group).arg(consumer).arg("COUNT").arg(count.max(1));
        if !block.is_zero() {
            cmd.arg("BLOCK").arg(block.as_millis().max(1) as u64);
        }
        cmd.arg("STREAMS").arg(key).arg(">");
        let reply = match self.read_once(&cmd, block).await {
            // The group is gone (Redis lost its data, or someone deleted the key): recreate
            // it from the start of what the stream still holds, and read again.
            Err(BrokerError::Redis { source, .. }) if source.code() == Some("NOGROUP") => {
                tracing::warn!(stream = key, group, "consumer group missing; recreating it");
                self.ensure_group(key, group, "0").await?;
                self.read_once(&cmd, block).await?
            }
            other => other?,
        };
        let raw = parse::read_reply(&reply).map_err(|d| self.protocol("XREADGROUP", d))?;
        self.live_entries(key, group, raw).await
    }

    async fn read_once(&self, cmd: &Cmd, block: Duration) -> Result<Value> {
        if block.is_zero() { self.query(cmd).await } else { self.query_blocking(cmd).await }
    }
}

#[async_trait]
impl Broker for RedisBroker {
    fn describe(&self) -> String {
        self.url.clone()
    }

    async fn prepare(&self, service: &str, maxlen: u64) -> Result<()> {
        self.maxlen.write().unwrap_or_else(PoisonError::into_inner).insert(service.to_owned(), maxlen);
        // "0": messages sent before the first worker started are processed too. The
        // taskback stream gets its groups from the collectors that read it.
        self.ensure_group(&self.key(service, StreamKind::Data), WORKER_GROUP, "0").await
    }

    async fn add(&self, service: &str, stream: StreamKind, fields: &[(String, String)]) -> Result<String> {
        let maxlen = (stream == StreamKind::Dead).then(|| self.maxlen(service));
        let key = self.key(service, stream);
        let cmd = self.xadd(&key, maxlen, fields);
        let id = match self.query(&cmd).await? {
            Value::BulkString(id) => String::from_utf8_lossy(&id).into_owned(),
            Value::SimpleString(id) => id,
            other => return Err(self.protocol("XADD", format!("{other:?}"))),
        };
        self.wait_replicas(&key).await?;
        Ok(id)
    }

    async fn read(&self, service: &str, consumer: &str, count: usize, block: Duration) -> Result<Vec<Delivery>> {
        let key = self.key(service, StreamKind::Data);
        let entries = self.read_entries(&key, WORKER_GROUP, consumer, count, block).await?;
        Ok(entries
            .into_iter()
            .map(|e| Delivery { id: e.id, fields: e.fields, deliveries: 1, not_utf8: e.not_utf8 })
            .collect())
    }

    async fn reclaim(&self, service: &str, consumer: &str, min_idle: Duration, count: usize) -> Result<Vec<Delivery>> {
        let key = self.key(service, StreamKind::Data);
        let mut cmd = redis::cmd("XAUTOCLAIM");
        cmd.arg(&key)
            .arg(WORKER_GROUP)
            .arg(consumer)
            .arg(min_idle.as_millis() as u64)
            .arg("0-0")
            .arg("COUNT")
            .arg(count.max(1));
        let reply = self.query(&cmd).await?;
        let raw = parse::autoclaim_reply(&reply).map_err(|d| self.protocol("XAUTOCLAIM", d))?;
        let entries = self.live_entries(&key, WORKER_GROUP, raw).await?;
        let (Some(first), Some(last)) = (entries.first(), entries.last()) else {
            return Ok(Vec::new());
        };
        // Delivery counts, which XAUTOCLAIM has just incremented, come from XPENDING.
        let mut pending = redis::cmd("XPENDING");
        pending.arg(&key).arg(WORKER_GROUP).arg(&first.id).arg(&last.id).arg(entries.len() * 2 + 16).arg(consumer);
        let rows = parse::pending_reply(&self.query(&pending).await?).map_err(|d| self.protocol("XPENDING", d))?;
        let counts: HashMap<String, u32> = rows.into_iter().map(|(id, _, _, n)| (id, n)).collect();
        Ok(entries
            .into_iter()
            .map(|e| {
                let deliveries = counts.get(&e.id).copied().unwrap_or(2);
                Delivery { id: e.id, fields: e.fields, deliveries, not_utf8: e.not_utf8 }
            })
            .collect())
    }

    async fn complete(&self, service: &str, consumer: &str, done: &[Completion]) -> Result<usize> {
        let outgoing: Vec<Outgoing<'_>> = done
            .iter()
            .map(|c| Outgoing { id: &c.id, entries: c.taskbacks.iter().map(Vec::as_slice).collect() })
            .collect();
        let (data, taskback) = (self.key(service, StreamKind::Data), self.key(service, StreamKind::Taskback));
        self.finish(&data, &taskback, None, consumer, &outgoing).await
    }

    async fn dead_letter(&self, service: &str, consumer: &str, dead: &[DeadLetter]) -> Result<usize> {
        let (data, dead_key) = (self.key(service, StreamKind::Data), self.key(service, StreamKind::Dead));
        self.write_dead_letters(&data, &dead_key, self.maxlen(service), consumer, dead).await
    }

    async fn create_group(&self, service: &str, stream: StreamKind, group: &str, start: &str) -> Result<()> {
        self.ensure_group(&self.key(service, stream), group, start).await
    }

    async fn read_group(
        &self,
        service: &str,
        stream: StreamKind,
        group: &str,
        consumer: &str,
        count: usize,
        block: Duration,
    ) -> Result<Vec<Entry>> {
        self.read_entries(&self.key(service, stream), group, consumer, count, block).await
    }

    async fn read_own_pending(
        &self,
        service: &str,
        stream: StreamKind,
        group: &str,
        consumer: &str,
        count: usize,
    ) -> Result<Vec<Entry>> {
        let key = self.key(service, stream);
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP").arg(group).arg(consumer).arg("COUNT").arg(count.max(1)).arg("STREAMS").arg(&key).arg("0");
        let reply = match self.query(&cmd).await {
            Err(BrokerError::Redis { source, .. }) if source.code() == Some("NOGROUP") => return Ok(Vec::new()),
            other => other?,
        };
        let raw = parse::read_reply(&reply).map_err(|d| self.protocol("XREADGROUP", d))?;
        self.live_entries(&key, group, raw).await
    }

    async fn trim(&self, service: &str) -> Result<()> {
        let maxlen = self.maxlen(service);
        for stream in [StreamKind::Data, StreamKind::Taskback] {
            self.trim_stream(&self.key(service, stream), maxlen).await?;
        }
        Ok(())
    }

    async fn rate_count(&self, service: &str, bucket: &str, window: Duration) -> Result<crate::broker::RateCount> {
        self.count_rate(service, bucket, window).await
    }

    async fn ack(&self, service: &str, stream: StreamKind, group: &str, ids: &[String]) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let mut cmd = redis::cmd("XACK");
        cmd.arg(self.key(service, stream)).arg(group).arg(ids);
        self.query(&cmd).await.map(drop)
    }

    async fn last_id(&self, service: &str, stream: StreamKind) -> Result<String> {
        let mut cmd = redis::cmd("XREVRANGE");
        cmd.arg(self.key(service, stream)).arg("+").arg("-").arg("COUNT").arg(1);
        let reply = self.query(&cmd).await?;
        let entries = parse::entries(&reply).map_err(|d| self.protocol("XREVRANGE", d))?;
        Ok(entries.into_iter().next().map_or_else(|| "0-0".to_owned(), |e| e.id))
    }

    async fn scan(&self, service: &str, stream: StreamKind, after: &str, count: usize) -> Result<Vec<Entry>> {
        crate::broker::BrokerAdmin::tail(self, service, stream, after, count, Duration::ZERO).await
    }

    async fn stream_info(&self, service: &str, stream: StreamKind) -> Result<StreamInfo> {
        self.info(&self.key(service, stream)).await
    }

    async fn pending(
        &self,
        service: &str,
        stream: StreamKind,
        group: &str,
        consumer: Option<&str>,
        count: usize,
    ) -> Result<Vec<PendingEntry>> {
        self.pending_entries(&self.key(service, stream), group, consumer, count).await
    }

    async fn claim(&self, service: &str, consumer: &str, from: &str, ids: &[String]) -> Result<Vec<Delivery>> {
        self.claim_from(&self.key(service, StreamKind::Data), consumer, from, ids).await
    }

    async fn refresh_claims(&self, service: &str, consumer: &str, ids: &[String]) -> Result<Vec<String>> {
        self.refresh_owned(&self.key(service, StreamKind::Data), consumer, ids).await
    }

    async fn remove_consumer(&self, service: &str, stream: StreamKind, group: &str, consumer: &str) -> Result<()> {
        let mut cmd = redis::cmd("XGROUP");
        cmd.arg("DELCONSUMER").arg(self.key(service, stream)).arg(group).arg(consumer);
        match self.query(&cmd).await {
            Err(BrokerError::Redis { source, .. }) if source.code() == Some("NOGROUP") => Ok(()),
            other => other.map(drop),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(redact("redis://u:pw@h:1/0"), "redis://u:***@h:1/0");
        assert_eq!(redact("redis://:pw@h"), "redis://:***@h");
        assert_eq!(redact("redis://h:6379"), "redis://h:6379");
    }
}
