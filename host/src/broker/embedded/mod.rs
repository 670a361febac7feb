//! The embedded broker: Redis-stream semantics in one SQLite database under the data
//! directory (`{data_dir}/cannon.db`), so a single machine needs no Redis, a restart loses
//! nothing, and `cannon-host send`, `info` or `dead` in another process see the same data.
//!
//! The database runs in WAL mode (readers never block the writer); writes are
//! `BEGIN IMMEDIATE` transactions, so concurrent processes queue on the write lock
//! (`busy_timeout`) instead of failing. In a process, one thread owns the connection that
//! writes and takes writes from a queue: those that arrive together share one transaction
//! (group commit, a savepoint each). Reads use a second connection on the blocking pool, so
//! they never wait for a commit. Blocking reads poll: an add in this process wakes its
//! readers at once, adds from other processes are seen within [`POLL`].
//!
//! ## Layout
//! - `mod.rs`: opening, the two connections, reads on a blocking thread.
//! - `commit.rs`: the writer thread and its queue: writes that arrive together share one
//!   transaction, a savepoint each.
//! - `broker.rs`: the [`crate::broker::Broker`] implementation (blocking reads poll here).
//! - `admin.rs`: the [`crate::broker::BrokerAdmin`] side (tail, replay, drop).
//! - `streams.rs`: the schema, ids, and the stream and group operations, in SQL.
//! - `claims.rs`: pending entries in SQL: reclaims, claims, finishing, acks, replays.
//! - `inspect.rs`: read-only views (ranges, newest id, groups, consumers, pending).
//! - `kv.rs`: the [`crate::broker::KvStore`] side.
//! - `versions.rs`: deployed component versions ([`crate::broker::ComponentStore`]).

mod admin;
mod broker;
mod claims;
mod commit;
mod inspect;
mod kv;
mod rate;
mod streams;
mod versions;

pub use versions::EmbeddedVersions;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rusqlite::Connection;
use rusqlite::config::DbConfig;

use self::commit::Job;
use crate::broker::{BrokerError, Result, StreamKind};

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

/// The embedded broker: streams, groups and kv in one SQLite database per data directory.
pub struct EmbeddedBroker {
    inner: Arc<Inner>,
}

struct Inner {
    /// The database file, for messages.
    shown: String,
    /// Prefix of every stream and kv key.
    namespace: String,
    /// The connection for reads, used by one read at a time on a blocking thread.
    reader: Mutex<Connection>,
    /// The queue of the writer thread, which owns the connection that writes (`commit.rs`).
    writer: std::sync::mpsc::Sender<Job>,
    /// Wakes this process's blocked readers when it adds entries.
    added: tokio::sync::Notify,
}

impl EmbeddedBroker {
    /// Opens (creating when missing) the database in `data_dir`.
    pub async fn open(data_dir: &Path, namespace: &str) -> Result<Self> {
        let path = data_dir.join(DB_FILE);
        let shown = path.display().to_string();
        let dir = data_dir.to_path_buf();
        let opened = tokio::task::spawn_blocking(move || {
            // The writer's connection first: it creates the schema the reader then sees.
            let writer = open_db(&dir, &path)?;
            Ok::<_, Fail>((writer, open_db(&dir, &path)?))
        })
        .await;
        let (writer, reader) = match opened {
            Ok(Ok(conns)) => conns,
            Ok(Err(fail)) => return Err(error(&shown, fail)),
            Err(join) => return Err(BrokerError::Embedded { path: shown, detail: join.to_string() }),
        };
        let writer = commit::spawn_writer(writer).map_err(|e| BrokerError::Embedded {
            path: shown.clone(),
            detail: format!("cannot start the writer thread: {e}"),
        })?;
        let inner = Inner {
            shown,
            namespace: namespace.to_owned(),
            reader: Mutex::new(reader),
            writer,
            added: tokio::sync::Notify::new(),
        };
        Ok(Self { inner: Arc::new(inner) })
    }

    /// `{ns}:{service}:{stream}`, the same names as in Redis.
    pub(super) fn key(&self, service: &str, stream: StreamKind) -> String {
        format!("{}:{service}:{}", self.inner.namespace, stream.as_str())
    }

    fn kv_scope(&self, service: &str) -> String {
        format!("{}:kv:{service}", self.inner.namespace)
    }

    /// Runs `f` on the writer's connection, on the writer thread, outside any transaction
    /// (it opens its own): for writes that are not grouped (kv, whose errors are its own).
    async fn call<T, E>(
        &self,
        f: impl FnOnce(&mut Connection) -> std::result::Result<T, E> + Send + 'static,
    ) -> std::result::Result<T, E>
    where
        T: Send + 'static,
        E: From<Fail> + Send + 'static,
    {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let job = Job::Call(Box::new(move |conn: &mut Connection| {
            // The caller may have gone away (its future was dropped); nothing to tell then.
            let _ = reply.send(f(conn));
        }));
        self.inner.writer.send(job).map_err(|_| E::from(Fail::Invalid(commit::WRITER_GONE.to_owned())))?;
        answer.await.unwrap_or_else(|_| Err(E::from(Fail::Invalid(commit::WRITER_FAILED.to_owned()))))
    }

    /// Runs `f` on the reading connection on a blocking thread: it sees every write this
    /// process has committed, and never waits for the writer.
    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> std::result::Result<T, Fail> + Send + 'static,
    ) -> Result<T> {
        let inner = self.inner.clone();
        let joined =
            tokio::task::spawn_blocking(move || f(&inner.reader.lock().unwrap_or_else(PoisonError::into_inner))).await;
        joined
            .unwrap_or_else(|join| Err(Fail::Invalid(format!("database call failed: {join}"))))
            .map_err(|fail| error(&self.inner.shown, fail))
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
    // Without the query planner stability guarantee SQLite compiles the value bound to
    // `LIMIT ?N` into the statement, so binding another expires it: every run of a cached
    // statement with a limit (reads of a group, tails, ranges) was parsed and planned anew.
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::{Broker, BrokerAdmin};

    /// A cached statement with a bound `LIMIT` runs again without being compiled again.
    #[test]
    fn a_cached_statement_with_a_limit_is_not_prepared_again() {
        let dir = tempfile::tempdir().expect("tempdir");
        let conn = open_db(&dir.path().to_path_buf(), &dir.path().join(DB_FILE)).expect("open");
        for limit in 1..=3_i64 {
            let mut select = conn.prepare_cached("SELECT ms FROM entries WHERE stream = ?1 LIMIT ?2").expect("prepare");
            let rows: Vec<i64> = select
                .query_map(rusqlite::params!["s", limit], |r| r.get(0))
                .expect("query")
                .map(|r| r.expect("row"))
                .collect();
            assert!(rows.is_empty());
            assert_eq!(select.get_status(rusqlite::StatementStatus::RePrepare), 0, "limit {limit}");
        }
    }

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

    /// Adds queued together to one stream run as one, each answered with its own id, in the
    /// order they were queued; one that fails (here: a trigger refuses its fields) fails
    /// alone and the others are written, ids still in order.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn adds_queued_together_run_as_one_and_fail_alone() {
        let dir = tempfile::tempdir().expect("tempdir");
        let broker = EmbeddedBroker::open(dir.path(), "t").await.expect("open");
        let other = Connection::open(dir.path().join(DB_FILE)).expect("second connection");
        other
            .execute_batch(
                "CREATE TRIGGER poison BEFORE INSERT ON entries WHEN NEW.fields LIKE '%poison%'
                 BEGIN SELECT RAISE(ABORT, 'poisoned entry'); END;",
            )
            .expect("trigger");
        // Queued from one task without awaiting in between, so the writer finds them waiting
        // together (the first may start alone).
        let fields: Vec<Vec<(String, String)>> = (0..200)
            .map(|i| vec![("i".to_owned(), if i == 150 { "poison".to_owned() } else { i.to_string() })])
            .collect();
        let adds: Vec<_> = fields.iter().map(|f| broker.add("s", StreamKind::Data, f)).collect();
        let grouped = commit::ADDS_GROUPED.load(std::sync::atomic::Ordering::Relaxed);
        let outs = futures_util::future::join_all(adds).await;
        assert!(commit::ADDS_GROUPED.load(std::sync::atomic::Ordering::Relaxed) > grouped, "some adds ran together");
        let mut ids = Vec::new();
        for (i, out) in outs.into_iter().enumerate() {
            match out {
                Ok(id) => {
                    assert_ne!(i, 150, "the poisoned add was written");
                    ids.push((streams::parse_id(&id).expect("id"), i));
                }
                Err(err) => {
                    assert_eq!(i, 150, "add {i}: {err}");
                    assert!(err.to_string().contains("poisoned entry"), "{err}");
                }
            }
        }
        assert_eq!(ids.len(), 199);
        assert!(ids.windows(2).all(|w| w[0].0 < w[1].0), "ids rise in the order the adds were queued");
        let entries = broker.tail("s", StreamKind::Data, "0-0", 1000, Duration::ZERO).await.expect("tail");
        let stored: Vec<(String, String)> = entries.iter().map(|e| (e.id.clone(), e.fields[0].1.clone())).collect();
        let answered: Vec<(String, String)> =
            ids.iter().map(|(id, i)| (streams::format_id(*id), i.to_string())).collect();
        assert_eq!(stored, answered, "each caller got the id its entry was stored under");
    }
}
