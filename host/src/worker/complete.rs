//! The completer: writes finished messages to the broker in batches and retries until the
//! broker takes them. The broker writes a message (its taskbacks or dead letter, and its
//! acknowledgement) only if this consumer still holds it, checked atomically with the write:
//! a write that went through although its reply was lost, or a message another worker took
//! over, is not written a second time.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::{Finished, InFlight, MAX_BROKER_BACKOFF, backoff, lock};
use crate::broker::{Broker, BrokerError, Completion, DeadLetter};

/// Most finished messages written to the broker in one transaction.
const COMPLETE_BATCH: usize = 512;
/// How often the writer trims the service's streams (`Broker::trim`).
const TRIM_EVERY: Duration = Duration::from_secs(1);

pub struct Writer {
    pub broker: Arc<dyn Broker>,
    pub service: String,
    pub consumer: String,
    pub in_flight: InFlight,
}

impl Writer {
    pub async fn run(self, mut done: mpsc::Receiver<Finished>) {
        let mut batch = Vec::with_capacity(COMPLETE_BATCH);
        let mut last_trim = Instant::now();
        while done.recv_many(&mut batch, COMPLETE_BATCH).await > 0 {
            let mut completions = Vec::new();
            let mut dead = Vec::new();
            for finished in batch.drain(..) {
                match finished {
                    Finished::Done(completion) => completions.push(completion),
                    Finished::Dead(letter) => dead.push(letter),
                }
            }
            let mut failures = 0;
            while let Err(err) = self.write(&completions, &dead, failures).await {
                failures += 1;
                let pause = backoff(Duration::from_millis(50), failures, MAX_BROKER_BACKOFF);
                tracing::error!(
                    service = %self.service,
                    error = %err,
                    count = completions.len() + dead.len(),
                    retry_in_ms = pause.as_millis() as u64,
                    "cannot write taskbacks, acks and dead letters; retrying"
                );
                tokio::time::sleep(pause).await;
            }
            {
                let mut held = lock(&self.in_flight);
                for id in completions.iter().map(|c| &c.id).chain(dead.iter().map(|d| &d.id)) {
                    held.remove(id);
                }
            }
            if last_trim.elapsed() >= TRIM_EVERY {
                last_trim = Instant::now();
                if let Err(err) = self.broker.trim(&self.service).await {
                    tracing::warn!(service = %self.service, error = %err, "cannot trim the streams");
                }
            }
        }
    }

    /// One attempt. The broker writes only what this consumer still holds, each message
    /// atomically with that check: a write that went through although its reply was lost,
    /// or a message another worker took over, is not written a second time.
    async fn write(&self, completions: &[Completion], dead: &[DeadLetter], retry: u32) -> Result<(), BrokerError> {
        let skipped = self.broker.complete(&self.service, &self.consumer, completions).await?
            + self.broker.bury(&self.service, &self.consumer, dead).await?;
        if skipped > 0 && retry == 0 {
            tracing::warn!(
                service = %self.service,
                count = skipped,
                "finished messages are no longer held by this worker (taken over after the visibility timeout); not writing them"
            );
        } else if skipped > 0 {
            tracing::info!(service = %self.service, count = skipped, "messages written before the failed attempt are not written again");
        }
        Ok(())
    }
}
