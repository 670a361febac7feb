//! The worker loop of one service: consume -> pipeline -> taskback + ack.
//!
//! A reader fetches batches from the data stream (and, every half visibility timeout,
//! reclaims entries abandoned by dead consumers). Each message runs on its own tokio task,
//! up to `workers.concurrency` at once. A failed pipeline is retried in place with
//! exponential backoff; after `retry.max_attempts` the message goes to the dead-letter
//! stream. Finished messages flow to a completer that writes taskbacks and acks in
//! batches, each message's taskbacks and ack in the same MULTI/EXEC, and retries the
//! write until the broker takes it: nothing is acked before it is done, nothing is dropped.
//!
//! Shutdown (the `shutdown` token) stops reading; messages in flight finish and are acked
//! within `workers.drain_timeout_ms`; anything left is still pending in the broker and is
//! reclaimed by another worker later.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument as _;

use crate::broker::{Broker, Completion, DeadLetter, Delivery};
use crate::engine::Message;
use crate::service::ServiceRuntime;

/// Most finished messages written to the broker in one transaction.
const COMPLETE_BATCH: usize = 512;
/// Longest pause between attempts to reach a broker that is down.
const MAX_BROKER_BACKOFF: Duration = Duration::from_secs(5);

/// A processed message on its way to the broker, holding its concurrency slot until written.
enum Finished {
    Done(Completion, OwnedSemaphorePermit),
    Dead(DeadLetter, OwnedSemaphorePermit),
}

/// A unique consumer name: host and process id (plus a suffix when several loops share a process).
pub fn consumer_name(suffix: &str) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "host".to_owned());
    if suffix.is_empty() {
        format!("{host}-{}", std::process::id())
    } else {
        format!("{host}-{}-{suffix}", std::process::id())
    }
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Doubles `base` per attempt, capped.
fn backoff(base: Duration, attempt: u32, cap: Duration) -> Duration {
    base.saturating_mul(1u32 << attempt.saturating_sub(1).min(16)).min(cap)
}

/// Runs the workers of one service until `shutdown`, then drains.
pub async fn run(
    service: Arc<ServiceRuntime>,
    broker: Arc<dyn Broker>,
    consumer: String,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let name = service.name().to_owned();
    let workers = service.spec.workers;
    let retry = service.spec.retry;
    let semaphore = Arc::new(Semaphore::new(workers.concurrency));
    let tracker = TaskTracker::new();
    let (done_tx, done_rx) = mpsc::unbounded_channel();
    let completer = tokio::spawn(complete_loop(broker.clone(), name.clone(), done_rx));
    let block = Duration::from_millis(workers.block_ms);
    let visibility = Duration::from_millis(retry.visibility_timeout_ms);
    let reclaim_every = (visibility / 2).max(Duration::from_millis(100));
    let mut next_reclaim = Instant::now();
    let mut failures = 0u32;
    tracing::info!(service = %name, consumer = %consumer, concurrency = workers.concurrency, "workers started");

    while !shutdown.is_cancelled() {
        let first = tokio::select! {
            permit = semaphore.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            () = shutdown.cancelled() => break,
        };
        let room = (semaphore.available_permits() + 1).min(workers.batch);
        let fetched = if Instant::now() >= next_reclaim {
            next_reclaim = Instant::now() + reclaim_every;
            match broker.reclaim(&name, &consumer, visibility, room).await {
                Ok(found) if !found.is_empty() => {
                    tracing::info!(service = %name, count = found.len(), "reclaimed messages abandoned by other consumers");
                    Ok(found)
                }
                Ok(_) => broker.read(&name, &consumer, room, block).await,
                Err(err) => Err(err),
            }
        } else {
            broker.read(&name, &consumer, room, block).await
        };
        let deliveries = match fetched {
            Ok(deliveries) => {
                failures = 0;
                deliveries
            }
            Err(err) => {
                failures += 1;
                let pause = backoff(Duration::from_millis(100), failures, MAX_BROKER_BACKOFF);
                tracing::error!(service = %name, error = %err, retry_in_ms = pause.as_millis() as u64, "cannot read messages");
                drop(first);
                tokio::select! {
                    () = tokio::time::sleep(pause) => continue,
                    () = shutdown.cancelled() => break,
                }
            }
        };
        let mut permits = Some(first);
        for delivery in deliveries {
            let permit = match permits.take() {
                Some(permit) => permit,
                // The reader is the only one taking permits, so `room` of them are free.
                None => match semaphore.clone().acquire_owned().await {
                    Ok(permit) => permit,
                    Err(_) => break,
                },
            };
            let span = tracing::info_span!("message", service = %name, id = %delivery.id);
            let task = process(service.clone(), delivery, permit, done_tx.clone());
            tracker.spawn(task.instrument(span));
        }
    }

    tracker.close();
    let drain = Duration::from_millis(workers.drain_timeout_ms);
    tracing::info!(service = %name, in_flight = tracker.len(), "draining");
    drop(done_tx);
    let drained = tokio::time::timeout(drain, async {
        tracker.wait().await;
        completer.await
    })
    .await;
    match drained {
        Ok(Ok(())) => tracing::info!(service = %name, "workers stopped"),
        Ok(Err(err)) => tracing::error!(service = %name, error = %err, "completer failed"),
        Err(_) => tracing::warn!(
            service = %name,
            "drain timeout of {} ms passed; unfinished messages stay pending and will be reclaimed",
            workers.drain_timeout_ms
        ),
    }
    Ok(())
}

/// Runs one message through the pipeline with retries, then hands it to the completer.
async fn process(
    service: Arc<ServiceRuntime>,
    delivery: Delivery,
    permit: OwnedSemaphorePermit,
    done: mpsc::UnboundedSender<Finished>,
) {
    let retry = service.spec.retry;
    let msg = Message { id: delivery.id, service: service.name().to_owned(), fields: delivery.fields };
    let mut attempt = delivery.deliveries.max(1);
    let finished = loop {
        if attempt > retry.max_attempts {
            // Delivered more often than allowed: earlier workers died while holding it.
            let error = format!(
                "abandoned: delivered {} times without finishing (workers crashed while running it)",
                attempt - 1
            );
            tracing::error!(attempts = attempt - 1, "{error}; moving to dead letters");
            break Finished::Dead(dead_letter(msg, error, attempt - 1), permit);
        }
        match service.pipeline.run(&msg).await {
            Ok(outcome) => {
                tracing::debug!(wall_us = outcome.stats.wall.as_micros() as u64, "processed");
                let id = msg.id.clone();
                break Finished::Done(Completion { id, taskbacks: outcome.taskbacks(&msg) }, permit);
            }
            Err(err) if attempt < retry.max_attempts => {
                let pause = backoff(Duration::from_millis(retry.backoff_ms), attempt, Duration::from_secs(60));
                tracing::warn!(attempt, max_attempts = retry.max_attempts, error = %err, "failed; retrying");
                tokio::time::sleep(pause).await;
                attempt += 1;
            }
            Err(err) => {
                tracing::error!(attempt, error = %err, "failed for the last time; moving to dead letters");
                break Finished::Dead(dead_letter(msg, err.to_string(), attempt), permit);
            }
        }
    };
    // The receiver lives until every sender is gone; a send error means shutdown raced
    // us, and the message simply stays pending for another worker.
    let _ = done.send(finished);
}

fn dead_letter(msg: Message, error: String, attempts: u32) -> DeadLetter {
    DeadLetter { id: msg.id, fields: msg.fields, error, attempts, failed_at_ms: now_ms() }
}

/// Writes finished messages to the broker in batches, retrying until it succeeds.
async fn complete_loop(broker: Arc<dyn Broker>, service: String, mut done: mpsc::UnboundedReceiver<Finished>) {
    let mut batch = Vec::with_capacity(COMPLETE_BATCH);
    while done.recv_many(&mut batch, COMPLETE_BATCH).await > 0 {
        let mut completions = Vec::new();
        let mut dead = Vec::new();
        let mut permits = Vec::with_capacity(batch.len());
        for finished in batch.drain(..) {
            match finished {
                Finished::Done(completion, permit) => {
                    completions.push(completion);
                    permits.push(permit);
                }
                Finished::Dead(letter, permit) => {
                    dead.push(letter);
                    permits.push(permit);
                }
            }
        }
        let mut failures = 0;
        while let Err(err) = broker.complete(&service, &completions).await {
            failures += 1;
            let pause = backoff(Duration::from_millis(50), failures, MAX_BROKER_BACKOFF);
            tracing::error!(service, error = %err, count = completions.len(), "cannot write taskbacks and acks; retrying");
            tokio::time::sleep(pause).await;
        }
        failures = 0;
        while let Err(err) = broker.bury(&service, &dead).await {
            failures += 1;
            let pause = backoff(Duration::from_millis(50), failures, MAX_BROKER_BACKOFF);
            tracing::error!(service, error = %err, count = dead.len(), "cannot write dead letters; retrying");
            tokio::time::sleep(pause).await;
        }
        drop(permits);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        let base = Duration::from_millis(100);
        let cap = Duration::from_secs(1);
        assert_eq!(backoff(base, 1, cap), Duration::from_millis(100));
        assert_eq!(backoff(base, 2, cap), Duration::from_millis(200));
        assert_eq!(backoff(base, 3, cap), Duration::from_millis(400));
        assert_eq!(backoff(base, 30, cap), cap);
    }
}
