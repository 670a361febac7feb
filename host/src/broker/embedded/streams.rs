//! Streams, consumer groups and pending entries in SQL, mirroring Redis streams.
//!
//! Entry ids are Redis-style `ms-seq`, stored as two integers so they sort and compare as
//! row values. Each stream keeps its newest id (ids never go back, even after trimming),
//! its length and its `maxlen`. A group remembers the last id it handed out; `pending`
//! holds what its consumers have not acknowledged, with the consumer, the time of the last
//! delivery (or keep-alive) and the delivery count.
//!
//! Also the `streams` import's bounded, group-less reads ([`range`], [`StreamReader`]).

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, Transaction, params};

use super::{EmbeddedBroker, Fail};
use crate::broker::{Fields, RangeFailure, RangePage, RangeQuery, RangeRequest, StreamKind, StreamReader};
use crate::vocab::streams::entry_size;

/// An entry id: milliseconds and sequence number.
pub type Id = (i64, i64);

/// Default approximate stream length when a service was not prepared.
const DEFAULT_MAXLEN: i64 = 100_000;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS streams (
    name TEXT PRIMARY KEY,
    last_ms INTEGER NOT NULL DEFAULT 0,
    last_seq INTEGER NOT NULL DEFAULT 0,
    length INTEGER NOT NULL DEFAULT 0,
    maxlen INTEGER NOT NULL DEFAULT 100000
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS entries (
    stream TEXT NOT NULL,
    ms INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    fields TEXT NOT NULL,
    PRIMARY KEY (stream, ms, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS groups (
    stream TEXT NOT NULL,
    name TEXT NOT NULL,
    last_ms INTEGER NOT NULL,
    last_seq INTEGER NOT NULL,
    PRIMARY KEY (stream, name)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS consumers (
    stream TEXT NOT NULL,
    grp TEXT NOT NULL,
    name TEXT NOT NULL,
    seen_ms INTEGER NOT NULL,
    PRIMARY KEY (stream, grp, name)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS pending (
    stream TEXT NOT NULL,
    grp TEXT NOT NULL,
    ms INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    consumer TEXT NOT NULL,
    delivered_ms INTEGER NOT NULL,
    deliveries INTEGER NOT NULL,
    PRIMARY KEY (stream, grp, ms, seq)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS pending_by_consumer ON pending (stream, grp, consumer);
CREATE TABLE IF NOT EXISTS kv (
    scope TEXT NOT NULL,
    key TEXT NOT NULL,
    value BLOB NOT NULL,
    size INTEGER NOT NULL,
    expires_ms INTEGER,
    PRIMARY KEY (scope, key)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS kv_expiry ON kv (scope, expires_ms) WHERE expires_ms IS NOT NULL;
CREATE TABLE IF NOT EXISTS rate (
    scope TEXT NOT NULL,
    bucket TEXT NOT NULL,
    count INTEGER NOT NULL,
    ends_ms INTEGER NOT NULL,
    PRIMARY KEY (scope, bucket)
) WITHOUT ROWID;
PRAGMA user_version = 1;
";

/// Creates the tables when missing.
pub fn migrate(conn: &Connection) -> Result<(), Fail> {
    let version: i64 = conn.query_row("PRAGMA user_version", [], |row| row.get(0))?;
    if version > 1 {
        return Err(Fail::Invalid(format!("database schema version {version} is newer than this cannon-host (1)")));
    }
    conn.execute_batch(&format!("BEGIN IMMEDIATE; {SCHEMA} COMMIT;"))?;
    Ok(())
}

/// [`crate::time::unix_ms`], never before the epoch: the time stored in rows and ids.
pub fn now_ms() -> i64 {
    crate::time::unix_ms().max(0)
}

/// `ms-seq`, `ms` (sequence 0) or `0`.
pub fn parse_id(text: &str) -> Result<Id, String> {
    let bad = || format!("{text:?} is not a stream id (MS-SEQ)");
    let (ms, seq) = text.split_once('-').unwrap_or((text, "0"));
    Ok((ms.parse().map_err(|_| bad())?, seq.parse().map_err(|_| bad())?))
}

pub fn format_id((ms, seq): Id) -> String {
    format!("{ms}-{seq}")
}

pub(super) fn encode(fields: &Fields) -> Result<String, Fail> {
    serde_json::to_string(fields).map_err(|e| Fail::Invalid(format!("cannot encode fields: {e}")))
}

pub(super) fn decode(text: &str) -> Result<Fields, Fail> {
    serde_json::from_str(text).map_err(|e| Fail::Invalid(format!("corrupt entry fields: {e}")))
}

pub(super) fn ids(raw: &[String]) -> Vec<Id> {
    raw.iter().filter_map(|id| parse_id(id).ok()).collect()
}

/// `execute` through the connection's statement cache (for statements on the hot path).
pub(super) fn exec(conn: &Connection, sql: &str, params: impl rusqlite::Params) -> rusqlite::Result<usize> {
    conn.prepare_cached(sql)?.execute(params)
}

/// `query_row` through the connection's statement cache.
pub(super) fn row<T>(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
    f: impl FnOnce(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
) -> rusqlite::Result<T> {
    conn.prepare_cached(sql)?.query_row(params, f)
}

/// Records the approximate maximum length of a stream.
pub fn set_maxlen(tx: &Transaction<'_>, stream: &str, maxlen: u64) -> Result<(), Fail> {
    let maxlen = i64::try_from(maxlen).unwrap_or(i64::MAX);
    tx.execute(
        "INSERT INTO streams (name, maxlen) VALUES (?1, ?2) ON CONFLICT (name) DO UPDATE SET maxlen = ?2",
        params![stream, maxlen],
    )?;
    Ok(())
}

/// Appends an entry with the next id and trims the stream to about its `maxlen`.
pub fn add(tx: &Transaction<'_>, stream: &str, fields: &Fields) -> Result<String, Fail> {
    let id = add_all(tx, stream, std::iter::once(fields))?;
    id.map(format_id).ok_or_else(|| Fail::Invalid("an add of one entry added none".to_owned()))
}

/// Appends entries with the next ids, in order, and trims the stream to about its `maxlen`
/// once: the stream's row is read and written once for all of them. Returns the first id
/// (`None` when there were no entries); the others follow it in the same millisecond, their
/// sequence numbers one apart ([`nth_after`]).
pub fn add_all<'a>(
    tx: &Transaction<'_>,
    stream: &str,
    entries: impl IntoIterator<Item = &'a Fields>,
) -> Result<Option<Id>, Fail> {
    let mut entries = entries.into_iter().peekable();
    if entries.peek().is_none() {
        return Ok(None);
    }
    // A SELECT and an UPDATE: cheaper than one `UPDATE ... RETURNING` (which SQLite runs
    // through a temporary table), measured.
    let known = row(tx, "SELECT last_ms, last_seq, length, maxlen FROM streams WHERE name = ?1", [stream], |r| {
        Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
    })
    .optional()?;
    let (mut last, mut length, maxlen): (Id, i64, i64) = match known {
        Some((ms, seq, length, maxlen)) => ((ms, seq), length, maxlen),
        None => {
            exec(tx, "INSERT INTO streams (name, maxlen) VALUES (?1, ?2)", params![stream, DEFAULT_MAXLEN])?;
            ((0, 0), 0, DEFAULT_MAXLEN)
        }
    };
    let now = now_ms();
    // The next id after the stream's last; the entries after the first share its millisecond.
    let first = if now > last.0 { (now, 0) } else { (last.0, last.1 + 1) };
    for (n, fields) in entries.enumerate() {
        last = nth_after(first, n);
        exec(
            tx,
            "INSERT INTO entries (stream, ms, seq, fields) VALUES (?1, ?2, ?3, ?4)",
            params![stream, last.0, last.1, encode(fields)?],
        )?;
        length += 1;
    }
    // `MAXLEN ~`: trim in steps, not on every add, and never past what a group still needs.
    let slack = (maxlen / 64).clamp(1, 1000);
    if length >= maxlen.saturating_add(slack) {
        let excess = length - maxlen;
        let below = oldest_needed(tx, stream)?.unwrap_or((i64::MAX, i64::MAX));
        let removed = exec(
            tx,
            "DELETE FROM entries WHERE stream = ?1 AND (ms, seq) IN
                (SELECT ms, seq FROM entries WHERE stream = ?1 AND (ms, seq) < (?3, ?4) ORDER BY ms, seq LIMIT ?2)",
            params![stream, excess, below.0, below.1],
        )?;
        length -= i64::try_from(removed).unwrap_or(0);
    }
    exec(
        tx,
        "UPDATE streams SET last_ms = ?2, last_seq = ?3, length = ?4 WHERE name = ?1",
        params![stream, last.0, last.1, length],
    )?;
    Ok(Some(first))
}

/// The id of the `n`th entry after `first` in one [`add_all`].
pub fn nth_after(first: Id, n: usize) -> Id {
    (first.0, first.1.saturating_add(i64::try_from(n).unwrap_or(i64::MAX)))
}

/// The oldest id some consumer group of `stream` still needs: its oldest pending entry, or
/// else the entry after the last one it was handed. `None` when the stream has no groups.
fn oldest_needed(conn: &Connection, stream: &str) -> Result<Option<Id>, Fail> {
    let mut groups = conn.prepare_cached("SELECT name, last_ms, last_seq FROM groups WHERE stream = ?1")?;
    let groups = groups
        .query_map([stream], |r| Ok((r.get::<_, String>(0)?, (r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))))?
        .collect::<Result<Vec<(String, Id)>, _>>()?;
    let mut oldest: Option<Id> = None;
    for (group, (last_ms, last_seq)) in groups {
        let pending: Option<Id> = conn
            .query_row(
                "SELECT ms, seq FROM pending WHERE stream = ?1 AND grp = ?2 ORDER BY ms, seq LIMIT 1",
                params![stream, group],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        let needed = pending.unwrap_or((last_ms, last_seq.saturating_add(1)));
        oldest = Some(oldest.map_or(needed, |o| o.min(needed)));
    }
    Ok(oldest)
}

fn last_generated(conn: &Connection, stream: &str) -> Result<Id, Fail> {
    Ok(conn
        .query_row("SELECT last_ms, last_seq FROM streams WHERE name = ?1", [stream], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?
        .unwrap_or((0, 0)))
}

/// Creates a group when missing, starting after `start` (`0`: everything, `$`: new only).
pub fn create_group(tx: &Transaction<'_>, stream: &str, group: &str, start: &str) -> Result<(), Fail> {
    let after = match start {
        "$" => last_generated(tx, stream)?,
        other => parse_id(other).map_err(Fail::Invalid)?,
    };
    tx.execute(
        "INSERT INTO groups (stream, name, last_ms, last_seq) VALUES (?1, ?2, ?3, ?4) ON CONFLICT DO NOTHING",
        params![stream, group, after.0, after.1],
    )?;
    Ok(())
}

fn group_last(conn: &Connection, stream: &str, group: &str) -> Result<Id, Fail> {
    row(conn, "SELECT last_ms, last_seq FROM groups WHERE stream = ?1 AND name = ?2", [stream, group], |r| {
        Ok((r.get(0)?, r.get(1)?))
    })
    .optional()?
    .ok_or_else(|| Fail::Invalid(format!("NOGROUP: no consumer group {group:?} on stream {stream:?}")))
}

/// Whether the group has entries it has not handed out yet (read-only).
pub fn has_new(conn: &Connection, stream: &str, group: &str) -> Result<bool, Fail> {
    let last = group_last(conn, stream, group)?;
    Ok(row(
        conn,
        "SELECT 1 FROM entries WHERE stream = ?1 AND (ms, seq) > (?2, ?3) LIMIT 1",
        params![stream, last.0, last.1],
        |_| Ok(()),
    )
    .optional()?
    .is_some())
}

pub(super) fn seen(tx: &Transaction<'_>, stream: &str, group: &str, consumer: &str, now: i64) -> Result<(), Fail> {
    exec(
        tx,
        "INSERT INTO consumers (stream, grp, name, seen_ms) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT DO UPDATE SET seen_ms = ?4",
        params![stream, group, consumer, now],
    )?;
    Ok(())
}

/// Hands up to `count` new entries to `consumer`, recording them as pending.
pub fn read_group(
    tx: &Transaction<'_>,
    stream: &str,
    group: &str,
    consumer: &str,
    count: usize,
) -> Result<Vec<(String, Fields)>, Fail> {
    let now = now_ms();
    let last = group_last(tx, stream, group)?;
    seen(tx, stream, group, consumer, now)?;
    let mut select = tx.prepare_cached(
        "SELECT ms, seq, fields FROM entries WHERE stream = ?1 AND (ms, seq) > (?2, ?3) ORDER BY ms, seq LIMIT ?4",
    )?;
    let limit = i64::try_from(count).unwrap_or(i64::MAX);
    let rows = select
        .query_map(params![stream, last.0, last.1, limit], |r| Ok(((r.get(0)?, r.get(1)?), r.get::<_, String>(2)?)))?
        .collect::<Result<Vec<(Id, String)>, _>>()?;
    let Some(&(newest, _)) = rows.last() else {
        return Ok(Vec::new());
    };
    let mut insert = tx.prepare_cached(
        "INSERT INTO pending (stream, grp, ms, seq, consumer, delivered_ms, deliveries)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, 1)
         ON CONFLICT DO UPDATE SET consumer = ?5, delivered_ms = ?6, deliveries = deliveries + 1",
    )?;
    let mut out = Vec::with_capacity(rows.len());
    for (id, fields) in rows {
        insert.execute(params![stream, group, id.0, id.1, consumer, now])?;
        out.push((format_id(id), decode(&fields)?));
    }
    exec(
        tx,
        "UPDATE groups SET last_ms = ?3, last_seq = ?4 WHERE stream = ?1 AND name = ?2",
        params![stream, group, newest.0, newest.1],
    )?;
    Ok(out)
}

/// Entries pending with `consumer` in `group`, oldest first, counted as delivered again.
/// Pending entries whose entry was trimmed away are acknowledged and skipped.
pub fn read_own_pending(
    tx: &Transaction<'_>,
    stream: &str,
    group: &str,
    consumer: &str,
    count: usize,
) -> Result<Vec<(String, Fields)>, Fail> {
    let now = now_ms();
    let mut select = tx.prepare_cached(
        "SELECT ms, seq FROM pending WHERE stream = ?1 AND grp = ?2 AND consumer = ?3 ORDER BY ms, seq LIMIT ?4",
    )?;
    let limit = i64::try_from(count).unwrap_or(i64::MAX);
    let ids = select
        .query_map(params![stream, group, consumer, limit], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<Vec<Id>, _>>()?;
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        match entry_fields(tx, stream, id)? {
            Some(fields) => {
                tx.execute(
                    "UPDATE pending SET delivered_ms = ?5, deliveries = deliveries + 1
                     WHERE stream = ?1 AND grp = ?2 AND ms = ?3 AND seq = ?4",
                    params![stream, group, id.0, id.1, now],
                )?;
                out.push((format_id(id), fields));
            }
            None => {
                delete_pending(tx, stream, group, id)?;
            }
        }
    }
    Ok(out)
}

/// Deletes streams with their entries, groups, consumers and pending entries, and a kv scope.
pub fn drop_streams(tx: &Transaction<'_>, streams: &[String], kv_scope: &str) -> Result<(), Fail> {
    for stream in streams {
        for table in ["entries", "groups", "consumers", "pending", "streams"] {
            let column = if table == "streams" { "name" } else { "stream" };
            tx.execute(&format!("DELETE FROM {table} WHERE {column} = ?1"), params![stream])?;
        }
    }
    tx.execute("DELETE FROM kv WHERE scope = ?1", params![kv_scope])?;
    Ok(())
}

pub(super) fn entry_fields(conn: &Connection, stream: &str, id: Id) -> Result<Option<Fields>, Fail> {
    let text: Option<String> = conn
        .query_row(
            "SELECT fields FROM entries WHERE stream = ?1 AND ms = ?2 AND seq = ?3",
            params![stream, id.0, id.1],
            |r| r.get(0),
        )
        .optional()?;
    text.as_deref().map(decode).transpose()
}

pub(super) fn delete_pending(tx: &Transaction<'_>, stream: &str, group: &str, id: Id) -> Result<bool, Fail> {
    Ok(tx.execute(
        "DELETE FROM pending WHERE stream = ?1 AND grp = ?2 AND ms = ?3 AND seq = ?4",
        params![stream, group, id.0, id.1],
    )? > 0)
}

/// Entries of `stream` for a `streams` read, oldest first, within the request's count and
/// bytes: rows are decoded one at a time and the read stops at the first that does not fit,
/// so it never holds more than the bounds (plus one entry). Read-only.
pub fn range(conn: &Connection, stream: &str, request: &RangeRequest) -> Result<RangePage, RangeFailure> {
    // Stored ids are `i64`s: a bound above them all matches nothing, or everything.
    let clamp = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    let limit = i64::try_from(request.count.saturating_add(1)).unwrap_or(i64::MAX);
    let (sql, args): (&str, Vec<i64>) = match request.query {
        RangeQuery::Last => {
            ("SELECT ms, seq, fields FROM entries WHERE stream = ?1 ORDER BY ms DESC, seq DESC LIMIT ?2", vec![limit])
        }
        RangeQuery::From(id) if i64::try_from(id.ms).is_err() => return Ok(RangePage::default()),
        RangeQuery::From(id) => (
            "SELECT ms, seq, fields FROM entries WHERE stream = ?1 AND (ms, seq) >= (?2, ?3) ORDER BY ms, seq LIMIT ?4",
            vec![clamp(id.ms), clamp(id.seq), limit],
        ),
        RangeQuery::Between { from_ms, .. } if i64::try_from(from_ms).is_err() => return Ok(RangePage::default()),
        RangeQuery::Between { from_ms, to_ms } => (
            "SELECT ms, seq, fields FROM entries WHERE stream = ?1 AND ms >= ?2 AND ms <= ?3 ORDER BY ms, seq LIMIT ?4",
            vec![clamp(from_ms), clamp(to_ms), limit],
        ),
    };
    let mut select = conn.prepare_cached(sql).map_err(Fail::from)?;
    let mut params: Vec<&dyn rusqlite::ToSql> = vec![&stream];
    params.extend(args.iter().map(|a| a as &dyn rusqlite::ToSql));
    let mut rows = select.query(params.as_slice()).map_err(Fail::from)?;
    let mut page = RangePage::default();
    let mut used = 0usize;
    while let Some(row) = rows.next().map_err(Fail::from)? {
        if page.entries.len() == request.count {
            page.truncated = true;
            break;
        }
        let id = format_id((row.get(0).map_err(Fail::from)?, row.get(1).map_err(Fail::from)?));
        let fields = decode(&row.get::<_, String>(2).map_err(Fail::from)?)?;
        let size = entry_size(&id, &fields);
        if used.saturating_add(size) > request.max_bytes {
            if page.entries.is_empty() {
                return Err(RangeFailure::TooLarge { id, bytes: size });
            }
            page.truncated = true;
            break;
        }
        used += size;
        page.entries.push((id, fields));
    }
    if request.query == RangeQuery::Last {
        page.entries.reverse();
    }
    Ok(page)
}

impl From<Fail> for RangeFailure {
    fn from(fail: Fail) -> Self {
        match fail {
            Fail::Sql(err) => RangeFailure::Unavailable(format!("embedded broker: {err}")),
            Fail::Invalid(detail) => RangeFailure::Unavailable(format!("embedded broker: {detail}")),
        }
    }
}

#[async_trait]
impl StreamReader for EmbeddedBroker {
    async fn read_range(
        &self,
        service: &str,
        stream: StreamKind,
        request: &RangeRequest,
    ) -> Result<RangePage, RangeFailure> {
        let key = self.key(service, stream);
        let request = *request;
        self.call(move |conn| range(conn, &key, &request)).await
    }
}
