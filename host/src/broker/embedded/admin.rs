//! The embedded broker's [`BrokerAdmin`] side: tails, dead-letter replays, deleting a
//! service's streams and kv data.

use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::{EmbeddedBroker, claims, inspect, streams};
use crate::broker::{BrokerAdmin, BrokerError, Entry, Result, StreamKind};

#[async_trait]
impl BrokerAdmin for EmbeddedBroker {
    fn stream_name(&self, service: &str, stream: StreamKind) -> String {
        self.key(service, stream)
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

    async fn drop_service(&self, service: &str) -> Result<()> {
        let keys: Vec<String> =
            [StreamKind::Data, StreamKind::Taskback, StreamKind::Dead].iter().map(|s| self.key(service, *s)).collect();
        let scope = self.kv_scope(service);
        self.write(move |tx| streams::drop_streams(tx, &keys, &scope)).await
    }

    async fn replay(&self, service: &str, dead_ids: &[String]) -> Result<Vec<(String, String)>> {
        let (data, dead) = (self.key(service, StreamKind::Data), self.key(service, StreamKind::Dead));
        let ids = dead_ids.to_vec();
        let moved = self.write(move |tx| claims::replay(tx, &data, &dead, &ids)).await?;
        self.inner.added.notify_waiters();
        Ok(moved)
    }
}
