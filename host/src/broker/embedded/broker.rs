//! The embedded broker's [`Broker`] implementation: each operation as a read on the
//! connection or a write through the group-commit queue (`commit.rs`); blocking reads
//! wait for this process's adds or poll for other processes' every [`POLL`].

use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::{EmbeddedBroker, POLL, claims, inspect, streams};
use crate::broker::{
    Broker, Completion, DeadLetter, Delivery, Entry, PendingEntry, Result, StreamInfo, StreamKind, WORKER_GROUP,
};

impl EmbeddedBroker {
    /// [`claims::finish`] for [`Broker::complete`] and [`Broker::dead_letter`].
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
        let skipped = self.write(move |tx| claims::finish(tx, &data, &out, &consumer, &done)).await?;
        self.inner.added.notify_waiters();
        Ok(skipped)
    }

    /// Waits until `block` passed or something may have been added.
    pub(super) async fn wait(&self, until: Instant) -> bool {
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
        let id = self.add_entry(self.key(service, stream), fields.to_vec()).await?;
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
        self.write(move |tx| claims::reclaim(tx, &key, WORKER_GROUP, &consumer, min_idle, count.max(1))).await
    }

    async fn complete(&self, service: &str, consumer: &str, done: &[Completion]) -> Result<usize> {
        let done = done.iter().map(|c| (c.id.clone(), c.taskbacks.clone())).collect();
        self.finish(service, StreamKind::Taskback, consumer, done).await
    }

    async fn dead_letter(&self, service: &str, consumer: &str, dead: &[DeadLetter]) -> Result<usize> {
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

    async fn ack(&self, service: &str, stream: StreamKind, group: &str, ids: &[String]) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let (key, group, ids) = (self.key(service, stream), group.to_owned(), ids.to_vec());
        self.write(move |tx| claims::ack(tx, &key, &group, &ids)).await
    }

    async fn last_id(&self, service: &str, stream: StreamKind) -> Result<String> {
        let key = self.key(service, stream);
        self.read(move |conn| inspect::last_id(conn, &key)).await
    }

    async fn scan(&self, service: &str, stream: StreamKind, after: &str, count: usize) -> Result<Vec<Entry>> {
        crate::broker::BrokerAdmin::tail(self, service, stream, after, count, Duration::ZERO).await
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
        self.write(move |tx| claims::claim(tx, &key, WORKER_GROUP, &consumer, &from, &ids)).await
    }

    async fn refresh_claims(&self, service: &str, consumer: &str, ids: &[String]) -> Result<Vec<String>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let (key, consumer, ids) = (self.key(service, StreamKind::Data), consumer.to_owned(), ids.to_vec());
        self.write(move |tx| claims::refresh_claims(tx, &key, WORKER_GROUP, &consumer, &ids)).await
    }

    async fn remove_consumer(&self, service: &str, stream: StreamKind, group: &str, consumer: &str) -> Result<()> {
        let (key, group, consumer) = (self.key(service, stream), group.to_owned(), consumer.to_owned());
        self.write(move |tx| claims::remove_consumer(tx, &key, &group, &consumer)).await
    }
}
