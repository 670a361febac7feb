//! The embedded broker's deployed component versions ([`ComponentStore`]), in tables of the
//! same database: `component_bytes` (content-addressed bytes), `component_history` (one row
//! per deploy), `component_active`, `component_generation` and `component_workers` (what
//! each running worker reports). Its own connection, so the broker's hot path never waits
//! behind a large deploy; writes are `BEGIN IMMEDIATE` transactions, so several processes
//! on one data directory see one history.

use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension as _, TransactionBehavior, params};

use super::{DB_FILE, Fail, error, open_db};
use crate::broker::versions::{Active, ComponentStore, MAX_HISTORY, Version, WorkerReport, parse_report};
use crate::broker::{BrokerError, Result};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS component_bytes (
    scope TEXT NOT NULL, sha256 TEXT NOT NULL, bytes BLOB NOT NULL,
    PRIMARY KEY (scope, sha256)
);
CREATE TABLE IF NOT EXISTS component_history (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, scope TEXT NOT NULL, component TEXT NOT NULL,
    sha256 TEXT NOT NULL, size INTEGER NOT NULL, at_ms INTEGER NOT NULL,
    user TEXT NOT NULL, note TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS component_history_scope ON component_history (scope, seq);
CREATE TABLE IF NOT EXISTS component_active (
    scope TEXT NOT NULL, component TEXT NOT NULL, sha256 TEXT NOT NULL,
    PRIMARY KEY (scope, component)
);
CREATE TABLE IF NOT EXISTS component_generation (scope TEXT PRIMARY KEY, generation INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS component_workers (
    scope TEXT NOT NULL, worker TEXT NOT NULL, report TEXT NOT NULL,
    PRIMARY KEY (scope, worker)
);
";

pub struct EmbeddedVersions {
    shown: String,
    namespace: String,
    conn: Arc<Mutex<Connection>>,
}

impl EmbeddedVersions {
    /// Opens (creating when missing) the database in `data_dir` and its version tables.
    pub async fn open(data_dir: &Path, namespace: &str) -> Result<Self> {
        let path = data_dir.join(DB_FILE);
        let shown = path.display().to_string();
        let dir = data_dir.to_path_buf();
        let opened = tokio::task::spawn_blocking(move || {
            let conn = open_db(&dir, &path)?;
            conn.execute_batch(SCHEMA)?;
            Ok::<_, Fail>(conn)
        })
        .await;
        let conn = match opened {
            Ok(Ok(conn)) => conn,
            Ok(Err(fail)) => return Err(error(&shown, fail)),
            Err(join) => return Err(BrokerError::Embedded { path: shown, detail: join.to_string() }),
        };
        Ok(Self { shown, namespace: namespace.to_owned(), conn: Arc::new(Mutex::new(conn)) })
    }

    fn scope(&self, service: &str) -> String {
        format!("{}:{service}", self.namespace)
    }

    /// Runs `f` in one `BEGIN IMMEDIATE` transaction on a blocking thread.
    async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&rusqlite::Transaction<'_>) -> std::result::Result<T, Fail> + Send + 'static,
    ) -> Result<T> {
        let conn = self.conn.clone();
        let joined = tokio::task::spawn_blocking(move || {
            let mut conn = conn.lock().unwrap_or_else(PoisonError::into_inner);
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let value = f(&tx)?;
            tx.commit()?;
            Ok::<_, Fail>(value)
        })
        .await;
        let outcome = joined.unwrap_or_else(|join| Err(Fail::Invalid(format!("database call failed: {join}"))));
        outcome.map_err(|fail| error(&self.shown, fail))
    }

    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> std::result::Result<T, Fail> + Send + 'static,
    ) -> Result<T> {
        let conn = self.conn.clone();
        let joined = tokio::task::spawn_blocking(move || f(&conn.lock().unwrap_or_else(PoisonError::into_inner))).await;
        let outcome = joined.unwrap_or_else(|join| Err(Fail::Invalid(format!("database call failed: {join}"))));
        outcome.map_err(|fail| error(&self.shown, fail))
    }
}

/// Bumps and returns the scope's generation.
fn bump(tx: &rusqlite::Transaction<'_>, scope: &str) -> std::result::Result<u64, Fail> {
    tx.execute(
        "INSERT INTO component_generation (scope, generation) VALUES (?1, 1)
         ON CONFLICT (scope) DO UPDATE SET generation = generation + 1",
        params![scope],
    )?;
    let generation: i64 =
        tx.query_row("SELECT generation FROM component_generation WHERE scope = ?1", params![scope], |r| r.get(0))?;
    Ok(u64::try_from(generation).unwrap_or(0))
}

fn generation(conn: &Connection, scope: &str) -> std::result::Result<u64, Fail> {
    let generation: Option<i64> = conn
        .query_row("SELECT generation FROM component_generation WHERE scope = ?1", params![scope], |r| r.get(0))
        .optional()?;
    Ok(generation.and_then(|g| u64::try_from(g).ok()).unwrap_or(0))
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[async_trait]
impl ComponentStore for EmbeddedVersions {
    fn describe(&self) -> String {
        format!("embedded:{}", self.shown)
    }

    async fn deploy(&self, service: &str, version: &Version, bytes: &[u8]) -> Result<u64> {
        let (scope, version, bytes) = (self.scope(service), version.clone(), bytes.to_vec());
        self.write(move |tx| {
            tx.execute(
                "INSERT OR IGNORE INTO component_bytes (scope, sha256, bytes) VALUES (?1, ?2, ?3)",
                params![scope, version.sha256, bytes],
            )?;
            tx.execute(
                "INSERT INTO component_history (scope, component, sha256, size, at_ms, user, note)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    scope,
                    version.component,
                    version.sha256,
                    to_i64(version.size),
                    to_i64(version.at_ms),
                    version.user,
                    version.note
                ],
            )?;
            tx.execute(
                "DELETE FROM component_history WHERE scope = ?1 AND seq NOT IN
                 (SELECT seq FROM component_history WHERE scope = ?1 ORDER BY seq DESC LIMIT ?2)",
                params![scope, MAX_HISTORY as i64],
            )?;
            tx.execute(
                "INSERT INTO component_active (scope, component, sha256) VALUES (?1, ?2, ?3)
                 ON CONFLICT (scope, component) DO UPDATE SET sha256 = ?3",
                params![scope, version.component, version.sha256],
            )?;
            bump(tx, &scope)
        })
        .await
    }

    async fn activate(&self, service: &str, component: &str, sha256: &str) -> Result<Option<u64>> {
        let (scope, component, sha256) = (self.scope(service), component.to_owned(), sha256.to_owned());
        self.write(move |tx| {
            let stored: Option<i64> = tx
                .query_row(
                    "SELECT 1 FROM component_bytes WHERE scope = ?1 AND sha256 = ?2",
                    params![scope, sha256],
                    |r| r.get(0),
                )
                .optional()?;
            if stored.is_none() {
                return Ok(None);
            }
            tx.execute(
                "INSERT INTO component_active (scope, component, sha256) VALUES (?1, ?2, ?3)
                 ON CONFLICT (scope, component) DO UPDATE SET sha256 = ?3",
                params![scope, component, sha256],
            )?;
            bump(tx, &scope).map(Some)
        })
        .await
    }

    async fn versions(&self, service: &str) -> Result<Vec<Version>> {
        let scope = self.scope(service);
        self.read(move |conn| {
            let mut stmt = conn.prepare(
                "SELECT component, sha256, size, at_ms, user, note FROM component_history
                 WHERE scope = ?1 ORDER BY seq",
            )?;
            let rows = stmt.query_map(params![scope], |r| {
                Ok(Version {
                    component: r.get(0)?,
                    sha256: r.get(1)?,
                    size: u64::try_from(r.get::<_, i64>(2)?).unwrap_or(0),
                    at_ms: u64::try_from(r.get::<_, i64>(3)?).unwrap_or(0),
                    user: r.get(4)?,
                    note: r.get(5)?,
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn active(&self, service: &str) -> Result<Active> {
        let scope = self.scope(service);
        self.read(move |conn| {
            let generation = generation(conn, &scope)?;
            let mut stmt = conn.prepare("SELECT component, sha256 FROM component_active WHERE scope = ?1")?;
            let rows = stmt.query_map(params![scope], |r| Ok((r.get(0)?, r.get(1)?)))?;
            Ok(Active { generation, components: rows.collect::<rusqlite::Result<Vec<_>>>()? })
        })
        .await
    }

    async fn generation(&self, service: &str) -> Result<u64> {
        let scope = self.scope(service);
        self.read(move |conn| generation(conn, &scope)).await
    }

    async fn bytes(&self, service: &str, sha256: &str) -> Result<Option<Vec<u8>>> {
        let (scope, sha256) = (self.scope(service), sha256.to_owned());
        self.read(move |conn| {
            Ok(conn
                .query_row(
                    "SELECT bytes FROM component_bytes WHERE scope = ?1 AND sha256 = ?2",
                    params![scope, sha256],
                    |r| r.get(0),
                )
                .optional()?)
        })
        .await
    }

    async fn report(&self, service: &str, report: &WorkerReport) -> Result<()> {
        let (scope, worker) = (self.scope(service), report.worker.clone());
        let text = serde_json::to_string(report).unwrap_or_default();
        self.write(move |tx| {
            tx.execute(
                "INSERT INTO component_workers (scope, worker, report) VALUES (?1, ?2, ?3)
                 ON CONFLICT (scope, worker) DO UPDATE SET report = ?3",
                params![scope, worker, text],
            )?;
            Ok(())
        })
        .await
    }

    async fn forget(&self, service: &str, worker: &str) -> Result<()> {
        let (scope, worker) = (self.scope(service), worker.to_owned());
        self.write(move |tx| {
            tx.execute("DELETE FROM component_workers WHERE scope = ?1 AND worker = ?2", params![scope, worker])?;
            Ok(())
        })
        .await
    }

    async fn reports(&self, service: &str) -> Result<Vec<WorkerReport>> {
        let scope = self.scope(service);
        self.read(move |conn| {
            let mut stmt = conn.prepare("SELECT report FROM component_workers WHERE scope = ?1")?;
            let rows = stmt.query_map(params![scope], |r| r.get::<_, String>(0))?;
            let texts = rows.collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(texts.iter().filter_map(|t| parse_report(t.as_bytes())).collect())
        })
        .await
    }
}
