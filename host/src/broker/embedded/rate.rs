//! The embedded broker's counters of `rate_limit:`: table `rate`, one row per bucket of a
//! service, with the message count of its current window and when that window ends. A
//! count is one write transaction, so workers in several processes share it.

use std::time::Duration;

use rusqlite::{OptionalExtension as _, params};

use super::streams::now_ms;
use super::{EmbeddedBroker, Fail};
use crate::broker::{RateCount, Result};

impl EmbeddedBroker {
    pub(super) async fn count_rate(&self, service: &str, bucket: &str, window: Duration) -> Result<RateCount> {
        let window_ms = i64::try_from(window.as_millis()).unwrap_or(i64::MAX).max(1);
        let (scope, bucket) = (format!("{}:{service}", self.inner.namespace), bucket.to_owned());
        self.write(move |tx| {
            let now = now_ms();
            // Windows that ended are gone: the table holds only live buckets.
            tx.execute("DELETE FROM rate WHERE scope = ?1 AND ends_ms <= ?2", params![scope, now])?;
            let row: Option<(i64, i64)> = tx
                .query_row(
                    "SELECT count, ends_ms FROM rate WHERE scope = ?1 AND bucket = ?2",
                    params![scope, bucket],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            let (count, ends) = match row {
                Some((count, ends)) => (count.saturating_add(1), ends),
                None => (1, now.saturating_add(window_ms)),
            };
            tx.execute(
                "INSERT INTO rate (scope, bucket, count, ends_ms) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (scope, bucket) DO UPDATE SET count = ?3",
                params![scope, bucket, count, ends],
            )?;
            Ok::<_, Fail>(RateCount {
                count: u64::try_from(count).unwrap_or(0),
                left_ms: u64::try_from(ends.saturating_sub(now)).unwrap_or(0),
            })
        })
        .await
    }
}
