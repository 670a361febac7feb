//! Read-only views of the embedded streams: newest id, ranges, group and consumer
//! summaries, pending entries.

use std::collections::HashMap;

use rusqlite::{Connection, OptionalExtension, params};

use super::Fail;
use super::streams::{Id, decode, format_id, now_ms};
use crate::broker::{ConsumerInfo, Entry, GroupInfo, PendingEntry, StreamInfo};

/// Id of the newest entry, `0-0` when empty.
pub fn last_id(conn: &Connection, stream: &str) -> Result<String, Fail> {
    let newest: Option<Id> = conn
        .query_row("SELECT ms, seq FROM entries WHERE stream = ?1 ORDER BY ms DESC, seq DESC LIMIT 1", [stream], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .optional()?;
    Ok(format_id(newest.unwrap_or((0, 0))))
}

/// Up to `count` entries after `after`.
pub fn range_after(conn: &Connection, stream: &str, after: Id, count: usize) -> Result<Vec<Entry>, Fail> {
    let mut select = conn.prepare_cached(
        "SELECT ms, seq, fields FROM entries WHERE stream = ?1 AND (ms, seq) > (?2, ?3) ORDER BY ms, seq LIMIT ?4",
    )?;
    let limit = i64::try_from(count).unwrap_or(i64::MAX);
    let rows = select
        .query_map(params![stream, after.0, after.1, limit], |r| Ok(((r.get(0)?, r.get(1)?), r.get::<_, String>(2)?)))?
        .collect::<Result<Vec<(Id, String)>, _>>()?;
    rows.into_iter()
        .map(|(id, fields)| Ok(Entry { id: format_id(id), fields: decode(&fields)?, not_utf8: None }))
        .collect()
}

pub fn info(conn: &Connection, stream: &str) -> Result<StreamInfo, Fail> {
    let length: i64 =
        conn.query_row("SELECT length FROM streams WHERE name = ?1", [stream], |r| r.get(0)).optional()?.unwrap_or(0);
    let now = now_ms();
    let mut groups = Vec::new();
    let mut select = conn.prepare("SELECT name, last_ms, last_seq FROM groups WHERE stream = ?1 ORDER BY name")?;
    let rows = select
        .query_map([stream], |r| Ok((r.get::<_, String>(0)?, (r.get(1)?, r.get(2)?))))?
        .collect::<Result<Vec<(String, Id)>, _>>()?;
    for (name, last) in rows {
        let mut counts: HashMap<String, u64> = HashMap::new();
        let mut by_consumer =
            conn.prepare("SELECT consumer, count(*) FROM pending WHERE stream = ?1 AND grp = ?2 GROUP BY consumer")?;
        for row in
            by_consumer.query_map([stream, name.as_str()], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?
        {
            let (consumer, n) = row?;
            counts.insert(consumer, u64::try_from(n).unwrap_or(0));
        }
        let mut select_consumers =
            conn.prepare("SELECT name, seen_ms FROM consumers WHERE stream = ?1 AND grp = ?2 ORDER BY name")?;
        let mut consumers = select_consumers
            .query_map([stream, name.as_str()], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?
            .map(|row| {
                let (consumer, seen) = row?;
                let pending = counts.remove(&consumer).unwrap_or(0);
                let idle_ms = u64::try_from(now.saturating_sub(seen)).unwrap_or(0);
                Ok(ConsumerInfo { name: consumer, pending, idle_ms })
            })
            .collect::<Result<Vec<_>, rusqlite::Error>>()?;
        // Pending entries of a consumer that was never recorded (should not happen) still show.
        consumers.extend(counts.into_iter().map(|(name, pending)| ConsumerInfo { name, pending, idle_ms: 0 }));
        let pending = consumers.iter().map(|c| c.pending).sum();
        groups.push(GroupInfo { name, pending, last_delivered: format_id(last), consumers });
    }
    Ok(StreamInfo { length: u64::try_from(length).unwrap_or(0), last_id: last_id(conn, stream)?, groups })
}

pub fn pending(
    conn: &Connection,
    stream: &str,
    group: &str,
    consumer: Option<&str>,
    count: usize,
) -> Result<Vec<PendingEntry>, Fail> {
    let mut select = conn.prepare_cached(
        "SELECT ms, seq, consumer, delivered_ms, deliveries FROM pending
         WHERE stream = ?1 AND grp = ?2 AND (?3 IS NULL OR consumer = ?3) ORDER BY ms, seq LIMIT ?4",
    )?;
    let now = now_ms();
    let limit = i64::try_from(count).unwrap_or(i64::MAX);
    let rows = select
        .query_map(params![stream, group, consumer, limit], |r| {
            Ok(PendingEntry {
                id: format_id((r.get(0)?, r.get(1)?)),
                consumer: r.get(2)?,
                idle_ms: u64::try_from(now.saturating_sub(r.get::<_, i64>(3)?)).unwrap_or(0),
                deliveries: r.get(4)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}
