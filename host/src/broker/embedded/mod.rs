//! The embedded broker: Redis-stream semantics in one SQLite database under the data
//! directory (`{data_dir}/cannon.db`), so a single machine needs no Redis, a restart loses
//! nothing, and `cannon-host send`, `info` or `dead` in another process see the same data.
//!
//! The database runs in WAL mode (readers never block the writer); writes are
//! `BEGIN IMMEDIATE` transactions, so concurrent processes queue on the write lock
//! (`busy_timeout`) instead of failing, and the writes of one process that arrive together
//! share one transaction (group commit, a savepoint each). Blocking reads poll: an add in
//! this process wakes its readers at once, adds from other processes are seen within
//! [`POLL`].
//!
//! ## Layout
//! - `mod.rs`: opening, the connection, the async [`Broker`] surface.
//! - `streams.rs`: the schema and the stream, group and pending operations, in SQL.
//! - `inspect.rs`: read-only views (ranges, newest id, groups, consumers, pending).
//! - `kv.rs`: the [`crate::broker::KvStore`] side.
//! - `versions.rs`: deployed component versions ([`crate::broker::ComponentStore`]).

mod inspect;
mod kv;
mod rate;
mod streams;
mod versions;

pub use versions::EmbeddedVersions;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use rusqlite::{Connection, TransactionBehavior};

use crate::broker::{
    Broker, BrokerError, Completion, DeadLetter, Delivery, Entry, PendingEntry, Result, StreamInfo, StreamKind,
    WORKER_GROUP,
};

/// How often a blocked read looks for entries added by other processes.
const POLL: Duration = Duration::from_millis(20);
/// How long a write waits for another process holding the write lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);
/// Prepared statements kept per connection.
const STATEMENT_CACHE: usize = 64;
/// File name of the database inside the data directory.
pub const DB_FILE: &str = "cannon.db";

/// A failure inside a database call.
#[derive(Debug)]
pub(super) enum Fail {
    Sql(rusqlite::Error),
    Invalid(String),
}

impl From<rusqlite::Error> for Fail {
    fn from(err: rusqlite::Error) -> Self {
        Fail::Sql(err)
    }
}

pub struct EmbeddedBroker {
    inner: Arc<Inner>,
}

struct Inner {
    /// The database file, for messages.
    shown: String,
    namespace: String,
    /// One connection per process, used by one call at a time on a blocking thread.
    conn: Mutex<Connection>,
    /// Writes waiting for the next group commit ([`EmbeddedBroker::write`]).
    queued: Mutex<Vec<Box<dyn QueuedWrite>>>,
    /// Wakes this process's blocked readers when it adds entries.
    added: tokio::sync::Notify,
}

impl EmbeddedBroker {
    /// Opens (creating when missing) the database in `data_dir`.
    pub async fn open(data_dir: &Path, namespace: &str) -> Result<Self> {
        let path = data_dir.join(DB_FILE);
        let shown = path.display().to_string();
        let dir = data_dir.to_path_buf();
        let opened = tokio::task::spawn_blocking(move || open_db(&dir, &path)).await;
        let conn = match opened {
            Ok(Ok(conn)) => conn,
            Ok(Err(fail)) => return Err(error(&shown, fail)),
            Err(join) => return Err(BrokerError::Embedded { path: shown, detail: join.to_string() }),
        };
        let inner = Inner {
            shown,
            namespace: namespace.to_owned(),
            conn: Mutex::new(conn),
            queued: Mutex::new(Vec::new()),
            added: tokio::sync::Notify::new(),
        };
        Ok(Self { inner: Arc::new(inner) })
    }

    /// `{ns}:{service}:{stream}`, the same names as in Redis.
    fn key(&self, service: &str, stream: StreamKind) -> String {
        format!("{}:{service}:{}", self.inner.namespace, stream.as_str())
    }

    fn kv_scope(&self, service: &str) -> String {
        format!("{}:kv:{service}", self.inner.namespace)
    }

    /// Runs `f` on the connection on a blocking thread.
    async fn call<T, E>(
        &self,
        f: impl FnOnce(&mut Connection) -> std::result::Result<T, E> + Send + 'static,
    ) -> std::result::Result<T, E>
    where
        T: Send + 'static,
        E: From<Fail> + Send + 'static,
    {
        let inner = self.inner.clone();
        let joined = tokio::task::spawn_blocking(move || {
            let mut conn = inner.conn.lock().unwrap_or_else(PoisonError::into_inner);
            f(&mut conn)
        })
        .await;
        joined.unwrap_or_else(|join| Err(E::from(Fail::Invalid(format!("database call failed: {join}")))))
    }

    /// Runs `f` atomically: all of it is committed, or none of it. Writes that arrive while
    /// the connection is busy are grouped into one `BEGIN IMMEDIATE` transaction (group
    /// commit), each inside its own savepoint, so one that fails leaves the others intact;
    /// each caller hears back only after the commit.
    async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&rusqlite::Transaction<'_>) -> std::result::Result<T, Fail> + Send + 'static,
    ) -> Result<T> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let job: Box<dyn QueuedWrite> = Box::new(Write { f: Some(f), out: None, reply });
        self.inner.queued.lock().unwrap_or_else(PoisonError::into_inner).push(job);
        let inner = self.inner.clone();
        let ran = tokio::task::spawn_blocking(move || commit_queued(&inner)).await;
        let outcome = match answer.await {
            Ok(outcome) => outcome,
            // The blocking task that took our write panicked before answering.
            Err(_) => Err(Fail::Invalid(match ran {
                Err(join) => format!("database call failed: {join}"),
                Ok(()) => "database call failed".to_owned(),
            })),
        };
        outcome.map_err(|fail| error(&self.inner.shown, fail))
    }

    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> std::result::Result<T, Fail> + Send + 'static,
    ) -> Result<T> {
        self.call(move |conn| f(conn)).await.map_err(|fail| error(&self.inner.shown, fail))
    }

    /// [`streams::finish`] for [`Broker::complete`] and [`Broker::bury`].
    async fn finish(
        &self,
        service: &str,
        out: StreamKind,
        consumer: &str,
        done: Vec<(String, Vec<crate::broker::Fields>)>,
    ) -> Result<usize> {
        if done.is_empty() {
            return Ok(0);
        }
        let (data, out, consumer) = (self.key(service, StreamKind::Data), self.key(service, out), consumer.to_owned());
        let skipped = self.write(move |tx| streams::finish(tx, &data, &out, &consumer, &done)).await?;
        self.inner.added.notify_waiters();
        Ok(skipped)
    }

    /// Waits until `block` passed or something may have been added.
    async fn wait(&self, until: Instant) -> bool {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        let _ = tokio::time::timeout(left.min(POLL), self.inner.added.notified()).await;
        true
    }

    async fn read_entries(
        &self,
        stream: String,
        group: &str,
        consumer: &str,
        count: usize,
        block: Duration,
    ) -> Result<Vec<(String, crate::broker::Fields)>> {
        let until = Instant::now() + block;
        let mut first = true;
        loop {
            // Only the first attempt writes unconditionally (it records the consumer);
            // later polls first look, read-only, whether anything is new.
            let new = first || {
                let (stream, group) = (stream.clone(), group.to_owned());
                self.read(move |conn| streams::has_new(conn, &stream, &group)).await?
            };
            if new {
                let (stream, group, consumer) = (stream.clone(), group.to_owned(), consumer.to_owned());
                let got =
                    self.write(move |tx| streams::read_group(tx, &stream, &group, &consumer, count.max(1))).await?;
                if !got.is_empty() {
                    return Ok(got);
                }
            }
            first = false;
            if !self.wait(until).await {
                return Ok(Vec::new());
            }
        }
    }
}

/// A write waiting for the next group commit.
trait QueuedWrite: Send {
    /// Runs the write inside the open transaction, in a savepoint of its own. False when a
    /// failed write could not be undone: then the whole transaction must not commit.
    fn run(&mut self, tx: &rusqlite::Transaction<'_>) -> bool;
    /// Answers the caller: the write's outcome if the transaction committed, else why not.
    fn answer(self: Box<Self>, committed: std::result::Result<(), String>);
}

struct Write<T, F> {
    f: Option<F>,
    out: Option<std::result::Result<T, Fail>>,
    reply: tokio::sync::oneshot::Sender<std::result::Result<T, Fail>>,
}

impl<T, F> QueuedWrite for Write<T, F>
where
    T: Send,
    F: FnOnce(&rusqlite::Transaction<'_>) -> std::result::Result<T, Fail> + Send,
{
    fn run(&mut self, tx: &rusqlite::Transaction<'_>) -> bool {
        let Some(f) = self.f.take() else { return true };
        if let Err(err) = tx.execute_batch("SAVEPOINT write") {
            self.out = Some(Err(err.into()));
            return false;
        }
        let (out, sound) = match f(tx) {
            Ok(value) => match tx.execute_batch("RELEASE write") {
                Ok(()) => (Ok(value), true),
                Err(err) => (Err(err.into()), false),
            },
            // Undo this write only; the transaction goes on with the others.
            Err(fail) => (Err(fail), tx.execute_batch("ROLLBACK TO write; RELEASE write").is_ok()),
        };
        self.out = Some(out);
        sound
    }

    fn answer(self: Box<Self>, committed: std::result::Result<(), String>) {
        let outcome = match (committed, self.out) {
            (Ok(()), Some(out)) => out,
            (Ok(()), None) => Err(Fail::Invalid("write was not run".to_owned())),
            (Err(why), _) => Err(Fail::Invalid(why)),
        };
        // The caller may have gone away (its future was dropped); nothing to tell then.
        let _ = self.reply.send(outcome);
    }
}

/// Runs every queued write in one transaction and answers each; does nothing when another
/// call already took them.
fn commit_queued(inner: &Inner) {
    let mut conn = inner.conn.lock().unwrap_or_else(PoisonError::into_inner);
    let mut jobs = std::mem::take(&mut *inner.queued.lock().unwrap_or_else(PoisonError::into_inner));
    if jobs.is_empty() {
        return;
    }
    let committed = (|| {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        for job in &mut jobs {
            if !job.run(&tx) {
                // Dropping the transaction rolls all of it back.
                return Ok(Err("a failed write could not be undone; nothing was written".to_owned()));
            }
        }
        tx.commit().map(Ok)
    })()
    .unwrap_or_else(|e: rusqlite::Error| Err(format!("transaction failed: {e}")));
    for job in jobs {
        job.answer(committed.clone());
    }
}

fn error(path: &str, fail: Fail) -> BrokerError {
    match fail {
        Fail::Sql(source) => BrokerError::Sqlite { path: path.to_owned(), source },
        Fail::Invalid(detail) => BrokerError::Embedded { path: path.to_owned(), detail },
    }
}

fn open_db(dir: &PathBuf, path: &Path) -> std::result::Result<Connection, Fail> {
    std::fs::create_dir_all(dir)
        .map_err(|e| Fail::Invalid(format!("cannot create data directory {}: {e}", dir.display())))?;
    let conn = Connection::open(path)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    // Room for every statement of the hot paths (rusqlite keeps 16 by default).
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(Fail::Invalid(format!("cannot switch {} to WAL mode (got {mode})", path.display())));
    }
    // NORMAL in WAL mode: a committed transaction survives a crash of the process; a power
    // loss may lose the last ones (like Redis with `appendfsync everysec`).
    conn.execute_batch("PRAGMA synchronous = NORMAL;")?;
    streams::migrate(&conn)?;
    Ok(conn)
}

#[async_trait]
impl Broker for EmbeddedBroker {
    fn describe(&self) -> String {
        format!("embedded:{}", self.inner.shown)
    }

    async fn prepare(&self, service: &str, maxlen: u64) -> Result<()> {
        let keys = [StreamKind::Data, StreamKind::Taskback, StreamKind::Dead].map(|s| self.key(service, s));
        self.write(move |tx| {
            for key in &keys {
                streams::set_maxlen(tx, key, maxlen)?;
            }
            // "0": messages sent before the first worker started are processed too. The
            // taskback stream gets its groups from the collectors that read it.
            streams::create_group(tx, &keys[0], WORKER_GROUP, "0")
        })
        .await
    }

    async fn add(&self, service: &str, stream: StreamKind, fields: &[(String, String)]) -> Result<String> {
        let key = self.key(service, stream);
        let fields = fields.to_vec();
        let id = self.write(move |tx| streams::add(tx, &key, &fields)).await?;
        self.inner.added.notify_waiters();
        Ok(id)
    }

    async fn read(&self, service: &str, consumer: &str, count: usize, block: Duration) -> Result<Vec<Delivery>> {
        let got = self.read_entries(self.key(service, StreamKind::Data), WORKER_GROUP, consumer, count, block).await?;
        Ok(got.into_iter().map(|(id, fields)| Delivery { id, fields, deliveries: 1, not_utf8: None }).collect())
    }

    async fn reclaim(&self, service: &str, consumer: &str, min_idle: Duration, count: usize) -> Result<Vec<Delivery>> {
        let (key, consumer) = (self.key(service, StreamKind::Data), consumer.to_owned());
        let min_idle = i64::try_from(min_idle.as_millis()).unwrap_or(i64::MAX);
        self.write(move |tx| streams::reclaim(tx, &key, WORKER_GROUP, &consumer, min_idle, count.max(1))).await
    }

    async fn complete(&self, service: &str, consumer: &str, done: &[Completion]) -> Result<usize> {
        let done = done.iter().map(|c| (c.id.clone(), c.taskbacks.clone())).collect();
        self.finish(service, StreamKind::Taskback, consumer, done).await
    }

    async fn bury(&self, service: &str, consumer: &str, dead: &[DeadLetter]) -> Result<usize> {
        let done = dead.iter().map(|d| (d.id.clone(), vec![d.entry()])).collect();
        self.finish(service, StreamKind::Dead, consumer, done).await
    }

    async fn create_group(&self, service: &str, stream: StreamKind, group: &str, start: &str) -> Result<()> {
        let (key, group, start) = (self.key(service, stream), group.to_owned(), start.to_owned());
        self.write(move |tx| streams::create_group(tx, &key, &group, &start)).await
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
        let got = self.read_entries(self.key(service, stream), group, consumer, count, block).await?;
        Ok(got.into_iter().map(|(id, fields)| Entry { id, fields, not_utf8: None }).collect())
    }

    async fn read_own_pending(
        &self,
        service: &str,
        stream: StreamKind,
        group: &str,
        consumer: &str,
        count: usize,
    ) -> Result<Vec<Entry>> {
        let (key, group, consumer) = (self.key(service, stream), group.to_owned(), consumer.to_owned());
        let got = self.write(move |tx| streams::read_own_pending(tx, &key, &group, &consumer, count.max(1))).await?;
        Ok(got.into_iter().map(|(id, fields)| Entry { id, fields, not_utf8: None }).collect())
    }

    async fn trim(&self, _service: &str) -> Result<()> {
        // Every add trims its stream (see `streams::add`), sparing what groups still need.
        Ok(())
    }

    async fn rate_count(&self, service: &str, bucket: &str, window: Duration) -> Result<crate::broker::RateCount> {
        self.count_rate(service, bucket, window).await
    }

    async fn drop_service(&self, service: &str) -> Result<()> {
        let keys: Vec<String> =
            [StreamKind::Data, StreamKind::Taskback, StreamKind::Dead].iter().map(|s| self.key(service, *s)).collect();
        let scope = self.kv_scope(service);
        self.write(move |tx| streams::drop_streams(tx, &keys, &scope)).await
    }

    async fn ack(&self, service: &str, stream: StreamKind, group: &str, ids: &[String]) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let (key, group, ids) = (self.key(service, stream), group.to_owned(), ids.to_vec());
        self.write(move |tx| streams::ack(tx, &key, &group, &ids)).await
    }

    async fn last_id(&self, service: &str, stream: StreamKind) -> Result<String> {
        let key = self.key(service, stream);
        self.read(move |conn| inspect::last_id(conn, &key)).await
    }

    async fn tail(
        &self,
        service: &str,
        stream: StreamKind,
        after: &str,
        count: usize,
        block: Duration,
    ) -> Result<Vec<Entry>> {
        let key = self.key(service, stream);
        let after = streams::parse_id(after).map_err(|detail| BrokerError::Embedded {
            path: self.inner.shown.clone(),
            detail: format!("tail of {key}: {detail}"),
        })?;
        let until = Instant::now() + block;
        loop {
            let key = key.clone();
            let got = self.read(move |conn| inspect::range_after(conn, &key, after, count.max(1))).await?;
            if !got.is_empty() || !self.wait(until).await {
                return Ok(got);
            }
        }
    }

    async fn stream_info(&self, service: &str, stream: StreamKind) -> Result<StreamInfo> {
        let key = self.key(service, stream);
        self.read(move |conn| inspect::info(conn, &key)).await
    }

    async fn pending(
        &self,
        service: &str,
        stream: StreamKind,
        group: &str,
        consumer: Option<&str>,
        count: usize,
    ) -> Result<Vec<PendingEntry>> {
        let (key, group, consumer) = (self.key(service, stream), group.to_owned(), consumer.map(str::to_owned));
        self.read(move |conn| inspect::pending(conn, &key, &group, consumer.as_deref(), count.max(1))).await
    }

    async fn claim(&self, service: &str, consumer: &str, from: &str, ids: &[String]) -> Result<Vec<Delivery>> {
        let key = self.key(service, StreamKind::Data);
        let (consumer, from, ids) = (consumer.to_owned(), from.to_owned(), ids.to_vec());
        self.write(move |tx| streams::claim(tx, &key, WORKER_GROUP, &consumer, &from, &ids)).await
    }

    async fn keep(&self, service: &str, consumer: &str, ids: &[String]) -> Result<Vec<String>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let (key, consumer, ids) = (self.key(service, StreamKind::Data), consumer.to_owned(), ids.to_vec());
        self.write(move |tx| streams::keep(tx, &key, WORKER_GROUP, &consumer, &ids)).await
    }

    async fn remove_consumer(&self, service: &str, stream: StreamKind, group: &str, consumer: &str) -> Result<()> {
        let (key, group, consumer) = (self.key(service, stream), group.to_owned(), consumer.to_owned());
        self.write(move |tx| streams::remove_consumer(tx, &key, &group, &consumer)).await
    }

    async fn replay(&self, service: &str, dead_ids: &[String]) -> Result<Vec<(String, String)>> {
        let (data, dead) = (self.key(service, StreamKind::Data), self.key(service, StreamKind::Dead));
        let ids = dead_ids.to_vec();
        let moved = self.write(move |tx| streams::replay(tx, &data, &dead, &ids)).await?;
        self.inner.added.notify_waiters();
        Ok(moved)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Concurrent writes share transactions; one that fails after writing is undone alone.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_write_is_undone_without_its_group() {
        let dir = tempfile::tempdir().expect("tempdir");
        let broker = EmbeddedBroker::open(dir.path(), "t").await.expect("open");
        let mut writes = tokio::task::JoinSet::new();
        for i in 0..90 {
            let broker = EmbeddedBroker { inner: broker.inner.clone() };
            writes.spawn(async move {
                let fields = vec![("i".to_owned(), i.to_string())];
                let out = broker
                    .write(move |tx| {
                        let id = streams::add(tx, "t:s:data", &fields)?;
                        if i % 3 == 0 { Err(Fail::Invalid(format!("write {i} fails after adding"))) } else { Ok(id) }
                    })
                    .await;
                (i, out)
            });
        }
        let mut failed = 0;
        while let Some(joined) = writes.join_next().await {
            let (i, out) = joined.expect("join");
            match out {
                Ok(_) => assert_ne!(i % 3, 0, "write {i} should have failed"),
                Err(err) => {
                    assert_eq!(i % 3, 0, "write {i}: {err}");
                    assert!(err.to_string().contains("fails after adding"), "{err}");
                    failed += 1;
                }
            }
        }
        assert_eq!(failed, 30);
        let entries = broker.tail("s", StreamKind::Data, "0-0", 1000, Duration::ZERO).await.expect("tail");
        let mut kept: Vec<u32> = entries.iter().map(|e| e.fields[0].1.parse().expect("number")).collect();
        kept.sort_unstable();
        let expected: Vec<u32> = (0..90).filter(|i| i % 3 != 0).collect();
        assert_eq!(kept, expected, "exactly the writes that succeeded are in the stream");
        assert_eq!(broker.stream_info("s", StreamKind::Data).await.expect("info").length, 60);
    }
}
