//! Pending entries in SQL: reclaiming idle ones, claims that check the holder, refreshing
//! claims, finishing (adding taskbacks or a dead letter and acknowledging in one step),
//! acknowledging, removing a consumer, and replaying dead letters.

use rusqlite::{OptionalExtension, Transaction, params};

use super::Fail;
use super::streams::{Id, add, add_all, delete_pending, entry_fields, format_id, ids, now_ms, parse_id, seen};
use crate::broker::{DEAD_FIELDS, Delivery, Fields, WORKER_GROUP};

/// Moves `rows` (pending ids with their delivery count) to `consumer`, counting a delivery;
/// entries deleted meanwhile are acknowledged and left out.
fn take_over(
    tx: &Transaction<'_>,
    stream: &str,
    group: &str,
    consumer: &str,
    rows: Vec<(Id, u32)>,
) -> Result<Vec<Delivery>, Fail> {
    let now = now_ms();
    seen(tx, stream, group, consumer, now)?;
    let mut out = Vec::with_capacity(rows.len());
    for (id, deliveries) in rows {
        match entry_fields(tx, stream, id)? {
            Some(fields) => {
                tx.execute(
                    "UPDATE pending SET consumer = ?5, delivered_ms = ?6, deliveries = deliveries + 1
                     WHERE stream = ?1 AND grp = ?2 AND ms = ?3 AND seq = ?4",
                    params![stream, group, id.0, id.1, consumer, now],
                )?;
                out.push(Delivery {
                    id: format_id(id),
                    fields,
                    deliveries: deliveries.saturating_add(1),
                    not_utf8: None,
                });
            }
            None => {
                tracing::warn!(stream, id = %format_id(id), "acknowledging an entry deleted while pending");
                delete_pending(tx, stream, group, id)?;
            }
        }
    }
    Ok(out)
}

/// `XAUTOCLAIM`: takes over entries idle for at least `min_idle_ms`, oldest first.
pub fn reclaim(
    tx: &Transaction<'_>,
    stream: &str,
    group: &str,
    consumer: &str,
    min_idle_ms: i64,
    count: usize,
) -> Result<Vec<Delivery>, Fail> {
    let rows = {
        let mut select = tx.prepare_cached(
            "SELECT ms, seq, deliveries FROM pending WHERE stream = ?1 AND grp = ?2 AND delivered_ms <= ?3
             ORDER BY ms, seq LIMIT ?4",
        )?;
        let limit = i64::try_from(count).unwrap_or(i64::MAX);
        select
            .query_map(params![stream, group, now_ms().saturating_sub(min_idle_ms), limit], |r| {
                Ok(((r.get(0)?, r.get(1)?), r.get(2)?))
            })?
            .collect::<Result<Vec<_>, _>>()?
    };
    take_over(tx, stream, group, consumer, rows)
}

/// Takes over those of `ids` still pending with `from`.
pub fn claim(
    tx: &Transaction<'_>,
    stream: &str,
    group: &str,
    consumer: &str,
    from: &str,
    raw: &[String],
) -> Result<Vec<Delivery>, Fail> {
    let mut rows = Vec::with_capacity(raw.len());
    for id in ids(raw) {
        let found: Option<u32> = tx
            .query_row(
                "SELECT deliveries FROM pending WHERE stream = ?1 AND grp = ?2 AND ms = ?3 AND seq = ?4 AND consumer = ?5",
                params![stream, group, id.0, id.1, from],
                |r| r.get(0),
            )
            .optional()?;
        rows.extend(found.map(|n| (id, n)));
    }
    take_over(tx, stream, group, consumer, rows)
}

/// Refreshes the delivery time of those of `ids` still pending with `consumer`.
pub fn refresh_claims(
    tx: &Transaction<'_>,
    stream: &str,
    group: &str,
    consumer: &str,
    raw: &[String],
) -> Result<Vec<String>, Fail> {
    let now = now_ms();
    let mut update = tx.prepare_cached(
        "UPDATE pending SET delivered_ms = ?6 WHERE stream = ?1 AND grp = ?2 AND ms = ?3 AND seq = ?4 AND consumer = ?5",
    )?;
    let mut owned = Vec::with_capacity(raw.len());
    for id in ids(raw) {
        if update.execute(params![stream, group, id.0, id.1, consumer, now])? > 0 {
            owned.push(format_id(id));
        }
    }
    drop(update);
    seen(tx, stream, group, consumer, now)?;
    Ok(owned)
}

/// For each finished message (its id and the entries to add for it) still pending with
/// `consumer`: add its entries to stream `out` and acknowledge it. A message no longer held
/// was finished before or taken over; writing it would duplicate. Returns how many were
/// left alone.
pub fn finish(
    tx: &Transaction<'_>,
    data: &str,
    out: &str,
    consumer: &str,
    done: &[(String, Vec<Fields>)],
) -> Result<usize, Fail> {
    let mut skipped = 0;
    let mut held = Vec::with_capacity(done.len());
    for (id, entries) in done {
        if take_pending(tx, data, consumer, id)? {
            held.push(entries);
        } else {
            skipped += 1;
        }
    }
    // One transaction: the entries of all held messages are added together, in order.
    add_all(tx, out, held.into_iter().flatten())?;
    Ok(skipped)
}

/// Acknowledges data-stream entry `raw` (worker group) if `consumer` holds it; says whether it did.
fn take_pending(tx: &Transaction<'_>, data: &str, consumer: &str, raw: &str) -> Result<bool, Fail> {
    let Ok(id) = parse_id(raw) else { return Ok(false) };
    let mut delete = tx.prepare_cached(
        "DELETE FROM pending WHERE stream = ?1 AND grp = ?2 AND ms = ?3 AND seq = ?4 AND consumer = ?5",
    )?;
    Ok(delete.execute(params![data, WORKER_GROUP, id.0, id.1, consumer])? > 0)
}

pub fn ack(tx: &Transaction<'_>, stream: &str, group: &str, raw: &[String]) -> Result<(), Fail> {
    for id in ids(raw) {
        delete_pending(tx, stream, group, id)?;
    }
    Ok(())
}

/// `XGROUP DELCONSUMER`: the consumer and its pending entries go.
pub fn remove_consumer(tx: &Transaction<'_>, stream: &str, group: &str, consumer: &str) -> Result<(), Fail> {
    tx.execute("DELETE FROM pending WHERE stream = ?1 AND grp = ?2 AND consumer = ?3", [stream, group, consumer])?;
    tx.execute("DELETE FROM consumers WHERE stream = ?1 AND grp = ?2 AND name = ?3", [stream, group, consumer])?;
    Ok(())
}

/// Moves dead letters back to the data stream without the fields `dead_letter` added.
pub fn replay(tx: &Transaction<'_>, data: &str, dead: &str, raw: &[String]) -> Result<Vec<(String, String)>, Fail> {
    let mut moved = Vec::with_capacity(raw.len());
    for id in ids(raw) {
        let Some(fields) = entry_fields(tx, dead, id)? else { continue };
        let mut original: Fields = fields.iter().filter(|(k, _)| !DEAD_FIELDS.contains(&k.as_str())).cloned().collect();
        if original.is_empty() {
            original = fields;
        }
        let new_id = add(tx, data, &original)?;
        tx.execute("DELETE FROM entries WHERE stream = ?1 AND ms = ?2 AND seq = ?3", params![dead, id.0, id.1])?;
        tx.execute("UPDATE streams SET length = max(length - 1, 0) WHERE name = ?1", [dead])?;
        moved.push((format_id(id), new_id));
    }
    Ok(moved)
}
