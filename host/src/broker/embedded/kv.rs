//! The embedded broker's `kv` store: table `kv`, one row per key, scoped by
//! `{ns}:kv:{service}`. Every write is one transaction that first drops the scope's
//! expired keys, then checks the quotas on what is left, so expired keys never count.

use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{OptionalExtension, Transaction, params};

use super::streams::now_ms;
use super::{EmbeddedBroker, Fail};
use crate::broker::{KvFailure, KvStore, kv_ttl_ms};
use crate::vocab::KvQuota;
use crate::vocab::kv::KvSwap;

impl From<Fail> for KvFailure {
    fn from(fail: Fail) -> Self {
        match fail {
            Fail::Sql(err) => KvFailure::Unavailable(format!("embedded kv store: {err}")),
            Fail::Invalid(detail) => KvFailure::Unavailable(format!("embedded kv store: {detail}")),
        }
    }
}

impl From<rusqlite::Error> for KvFailure {
    fn from(err: rusqlite::Error) -> Self {
        KvFailure::from(Fail::Sql(err))
    }
}

fn purge(tx: &Transaction<'_>, scope: &str, now: i64) -> Result<(), KvFailure> {
    tx.execute("DELETE FROM kv WHERE scope = ?1 AND expires_ms IS NOT NULL AND expires_ms <= ?2", params![scope, now])?;
    Ok(())
}

/// Refuses a write that would take `key` from `old_size` (None: new key) to `new_size`.
fn check_quota(
    tx: &Transaction<'_>,
    scope: &str,
    old_size: Option<i64>,
    new_size: i64,
    quota: &KvQuota,
) -> Result<(), KvFailure> {
    let (count, bytes): (i64, i64) =
        tx.query_row("SELECT count(*), coalesce(sum(size), 0) FROM kv WHERE scope = ?1", [scope], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?;
    let (count, bytes) = (u64::try_from(count).unwrap_or(0), u64::try_from(bytes).unwrap_or(0));
    if old_size.is_none() && count + 1 > quota.max_keys {
        return Err(KvFailure::QuotaExceeded(format!("kv.max_keys = {} reached ({count} keys)", quota.max_keys)));
    }
    let after = bytes.saturating_sub(old_size.and_then(|s| u64::try_from(s).ok()).unwrap_or(0))
        + u64::try_from(new_size).unwrap_or(0);
    if after > quota.max_bytes {
        return Err(KvFailure::QuotaExceeded(format!(
            "kv.max_bytes = {} would be exceeded ({after} bytes)",
            quota.max_bytes
        )));
    }
    Ok(())
}

/// A stored key: its size (key plus value bytes), value and expiry.
type Row = (i64, Vec<u8>, Option<i64>);

/// The current row of `key`.
fn current(tx: &Transaction<'_>, scope: &str, key: &str) -> Result<Option<Row>, KvFailure> {
    Ok(tx
        .query_row("SELECT size, value, expires_ms FROM kv WHERE scope = ?1 AND key = ?2", [scope, key], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .optional()?)
}

fn put(tx: &Transaction<'_>, scope: &str, key: &str, value: &[u8], expires: Option<i64>) -> Result<(), KvFailure> {
    let size = i64::try_from(key.len() + value.len()).unwrap_or(i64::MAX);
    tx.execute(
        "INSERT INTO kv (scope, key, value, size, expires_ms) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (scope, key) DO UPDATE SET value = ?3, size = ?4, expires_ms = ?5",
        params![scope, key, value, size, expires],
    )?;
    Ok(())
}

/// A decimal integer as Redis's `INCRBY` accepts it: optional `-`, digits, nothing else.
fn integer(value: &[u8]) -> Option<i64> {
    let text = std::str::from_utf8(value).ok()?;
    let digits = text.strip_prefix('-').unwrap_or(text);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

impl EmbeddedBroker {
    async fn kv_write<T: Send + 'static>(
        &self,
        service: &str,
        f: impl FnOnce(&Transaction<'_>, &str, i64) -> Result<T, KvFailure> + Send + 'static,
    ) -> Result<T, KvFailure> {
        let scope = self.kv_scope(service);
        self.call(move |conn| {
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let now = now_ms();
            purge(&tx, &scope, now)?;
            let out = f(&tx, &scope, now)?;
            tx.commit()?;
            Ok(out)
        })
        .await
    }
}

#[async_trait]
impl KvStore for EmbeddedBroker {
    async fn kv_get(&self, service: &str, key: &str) -> Result<Option<Vec<u8>>, KvFailure> {
        let (scope, key) = (self.kv_scope(service), key.to_owned());
        self.call(move |conn| {
            Ok(conn
                .query_row(
                    "SELECT value FROM kv WHERE scope = ?1 AND key = ?2 AND (expires_ms IS NULL OR expires_ms > ?3)",
                    params![scope, key, now_ms()],
                    |r| r.get(0),
                )
                .optional()?)
        })
        .await
    }

    async fn kv_set(
        &self,
        service: &str,
        key: &str,
        value: &[u8],
        ttl: Option<Duration>,
        quota: &KvQuota,
    ) -> Result<(), KvFailure> {
        let (key, value, quota) = (key.to_owned(), value.to_vec(), *quota);
        self.kv_write(service, move |tx, scope, now| {
            let old = current(tx, scope, &key)?.map(|(size, _, _)| size);
            check_quota(tx, scope, old, i64::try_from(key.len() + value.len()).unwrap_or(i64::MAX), &quota)?;
            let expires = ttl.map(|t| now.saturating_add(i64::try_from(kv_ttl_ms(t)).unwrap_or(i64::MAX)));
            put(tx, scope, &key, &value, expires)
        })
        .await
    }

    async fn kv_delete(&self, service: &str, key: &str) -> Result<bool, KvFailure> {
        let key = key.to_owned();
        self.kv_write(service, move |tx, scope, _| {
            Ok(tx.execute("DELETE FROM kv WHERE scope = ?1 AND key = ?2", [scope, key.as_str()])? > 0)
        })
        .await
    }

    async fn kv_increment(&self, service: &str, key: &str, delta: i64, quota: &KvQuota) -> Result<i64, KvFailure> {
        let (key, quota) = (key.to_owned(), *quota);
        self.kv_write(service, move |tx, scope, _| {
            let row = current(tx, scope, &key)?;
            let (old_size, old_value, expires) = match &row {
                Some((size, value, expires)) => (Some(*size), Some(value.as_slice()), *expires),
                None => (None, None, None),
            };
            let base = match old_value {
                None => 0,
                Some(bytes) => integer(bytes)
                    .ok_or_else(|| KvFailure::NotANumber(format!("value of {key:?} is not a decimal integer")))?,
            };
            let value = base
                .checked_add(delta)
                .ok_or_else(|| KvFailure::NotANumber(format!("{base} + {delta} overflows a 64-bit integer")))?;
            let text = value.to_string();
            check_quota(tx, scope, old_size, i64::try_from(key.len() + text.len()).unwrap_or(i64::MAX), &quota)?;
            put(tx, scope, &key, text.as_bytes(), expires)?;
            Ok(value)
        })
        .await
    }

    async fn kv_list(&self, service: &str, prefix: &str, limit: u32) -> Result<Vec<String>, KvFailure> {
        let (scope, prefix) = (self.kv_scope(service), prefix.to_owned());
        self.call(move |conn| {
            let mut select = conn.prepare_cached(
                "SELECT key FROM kv WHERE scope = ?1 AND key >= ?2 AND substr(key, 1, length(?2)) = ?2
                   AND (expires_ms IS NULL OR expires_ms > ?3)
                 ORDER BY key LIMIT ?4",
            )?;
            let keys = select
                .query_map(params![scope, prefix, now_ms(), limit], |r| r.get(0))?
                .collect::<Result<Vec<String>, _>>()?;
            Ok(keys)
        })
        .await
    }

    async fn kv_compare_and_swap(&self, service: &str, swap: &KvSwap<'_>, quota: &KvQuota) -> Result<bool, KvFailure> {
        let (key, expected, new) =
            (swap.key.to_owned(), swap.expected.map(<[u8]>::to_vec), swap.new.map(<[u8]>::to_vec));
        let (ttl, quota) = (swap.ttl, *quota);
        self.kv_write(service, move |tx, scope, now| {
            let row = current(tx, scope, &key)?;
            if row.as_ref().map(|(_, value, _)| value) != expected.as_ref() {
                return Ok(false);
            }
            let Some(value) = new else {
                tx.execute("DELETE FROM kv WHERE scope = ?1 AND key = ?2", [scope, key.as_str()])?;
                return Ok(true);
            };
            let old = row.map(|(size, _, _)| size);
            check_quota(tx, scope, old, i64::try_from(key.len() + value.len()).unwrap_or(i64::MAX), &quota)?;
            let expires = ttl.map(|t| now.saturating_add(i64::try_from(kv_ttl_ms(t)).unwrap_or(i64::MAX)));
            put(tx, scope, &key, &value, expires)?;
            Ok(true)
        })
        .await
    }

    async fn kv_get_many(&self, service: &str, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, KvFailure> {
        let (scope, keys) = (self.kv_scope(service), keys.to_vec());
        self.call(move |conn| {
            // One read transaction: every value from the same moment.
            let tx = conn.transaction()?;
            let now = now_ms();
            let mut values = Vec::with_capacity(keys.len());
            {
                let mut select = tx.prepare_cached(
                    "SELECT value FROM kv WHERE scope = ?1 AND key = ?2 AND (expires_ms IS NULL OR expires_ms > ?3)",
                )?;
                for key in &keys {
                    values.push(select.query_row(params![scope, key, now], |r| r.get(0)).optional()?);
                }
            }
            tx.commit()?;
            Ok(values)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::integer;

    #[test]
    fn integers_are_strict() {
        assert_eq!(integer(b"42"), Some(42));
        assert_eq!(integer(b"-7"), Some(-7));
        assert_eq!(integer(b"+7"), None);
        assert_eq!(integer(b" 7"), None);
        assert_eq!(integer(b""), None);
        assert_eq!(integer(b"9223372036854775808"), None);
    }
}
