//! The worker loop of one service: consume -> pipeline -> taskback + ack.
//!
//! A reader fetches batches from the data stream and starts each message, in stream order,
//! on its own tokio task as soon as one of the `workers.concurrency` slots is free; it reads
//! the next batch while the last messages of the previous one run. A failed pipeline is
//! retried in place with exponential backoff; after `retry.max_attempts` the message goes to
//! the dead-letter stream. A host fault (the host short of fds or memory maps) spends no
//! attempt: the message waits and runs again when the resource returns. A message with more
//! than `limits.max_fields` fields or larger than `limits.message_kb` is dead-lettered at
//! once, never run.
//! Finished messages flow to a completer that writes taskbacks and acks in batches, each
//! message's taskbacks and ack in one transaction, and retries the write until the broker
//! takes it: nothing is acked before it is done, nothing is dropped. The broker writes only
//! the messages this consumer still holds, checked atomically with the write, so a write
//! whose reply was lost (or a message another worker took over) is never written twice.
//!
//! Recovery (`recovery.rs`): at start and every few seconds, pending messages of consumers on
//! this host whose process is gone are taken over at once; every half visibility timeout,
//! messages idle longer than `retry.visibility_timeout_ms` are reclaimed from any consumer.
//! Meanwhile a keeper refreshes the claim on every message this worker holds, so a message
//! whose retries outlive the visibility timeout is not reclaimed while it still runs.
//!
//! Shutdown (the `shutdown` token) stops reading; messages in flight finish and are acked
//! within `workers.drain_timeout_ms`; anything left is still pending in the broker and is
//! recovered by another worker.
//!
//! ## Layout
//! - `mod.rs`: the reader loop and one message's processing.
//! - `recovery.rs`: adopting orphans, reclaiming, keeping claims fresh.
//! - `complete.rs`: the batched writer of taskbacks, acks and dead letters.
//! - `host_fault.rs`: waiting out host faults (fds, memory maps), which spend no attempt.
//! - `order.rs`: `workers.order_by`, one message at a time per value of a field.
//! - `rate.rs`: `rate_limit:`, counted in the broker before a message runs.

mod complete;
mod host_fault;
mod order;
mod rate;
mod recovery;

use std::collections::HashSet;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::broker::{Broker, BrokerError, Completion, DeadLetter, Delivery, Fields};
use crate::engine::Message;
use crate::service::ServiceRuntime;
use crate::text::for_terminal;
use crate::time::{backoff, now_ms};

/// Longest pause between attempts to reach a broker that is down.
const MAX_BROKER_BACKOFF: Duration = Duration::from_secs(5);
/// Longest pause between looks for orphans of dead local consumers.
const ORPHAN_CHECK: Duration = Duration::from_secs(2);

/// A processed message on its way to the broker. Its concurrency slot is free again as
/// soon as its pipeline finished and the bounded channel to the writer has room for it: that
/// channel is what holds back the reader when the broker writes slowly.
enum Finished {
    /// Its taskbacks, and the message's own fields (for a dead letter should the broker
    /// refuse the taskbacks for good).
    Done(Completion, Fields),
    Dead(DeadLetter),
}

/// Finished messages waiting for the writer, per unit of `workers.concurrency`.
const UNWRITTEN_PER_SLOT: usize = 4;

/// Ids of the messages this worker holds: read or claimed, not yet written.
type InFlight = Arc<Mutex<HashSet<String>>>;

fn lock(set: &InFlight) -> std::sync::MutexGuard<'_, HashSet<String>> {
    set.lock().unwrap_or_else(PoisonError::into_inner)
}

/// This machine's host name.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "host".to_owned())
}

/// A unique consumer name: host and process id (plus a suffix when several loops share a process).
pub fn consumer_name(suffix: &str) -> String {
    let host = host_name();
    if suffix.is_empty() {
        format!("{host}-{}", std::process::id())
    } else {
        format!("{host}-{}-{suffix}", std::process::id())
    }
}

/// Where the reader gets its next batch from, and when.
struct Fetcher {
    broker: Arc<dyn Broker>,
    service: String,
    consumer: String,
    block: Duration,
    visibility: Duration,
    reclaim_every: Duration,
    orphan_every: Duration,
    next_reclaim: Instant,
    next_orphans: Instant,
}

impl Fetcher {
    /// Orphans of dead local consumers first, then messages idle past the visibility
    /// timeout, then new messages.
    async fn fetch(&mut self, room: usize) -> Result<Vec<Delivery>, BrokerError> {
        let now = Instant::now();
        if now >= self.next_orphans {
            self.next_orphans = now + self.orphan_every;
            let found = recovery::adopt_orphans(&*self.broker, &self.service, &self.consumer, room).await?;
            if !found.is_empty() {
                tracing::info!(service = %self.service, count = found.len(), "took over messages of a dead worker on this host");
                return Ok(found);
            }
        }
        if now >= self.next_reclaim {
            self.next_reclaim = now + self.reclaim_every;
            let found = self.broker.reclaim(&self.service, &self.consumer, self.visibility, room).await?;
            if !found.is_empty() {
                tracing::info!(service = %self.service, count = found.len(), "reclaimed messages idle past the visibility timeout");
                return Ok(found);
            }
        }
        self.broker.read(&self.service, &self.consumer, room, self.block).await
    }
}

/// Runs the workers of one service until `shutdown`, then drains.
pub async fn run(
    service: Arc<ServiceRuntime>,
    broker: Arc<dyn Broker>,
    consumer: String,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let name = service.name().to_owned();
    let workers = &service.spec.workers;
    let retry = service.spec.retry;
    let semaphore = Arc::new(Semaphore::new(workers.concurrency));
    let tracker = TaskTracker::new();
    let in_flight: InFlight = Arc::default();
    let (done_tx, done_rx) = mpsc::channel(workers.concurrency.saturating_mul(UNWRITTEN_PER_SLOT).max(1));
    let writer = complete::Writer {
        broker: broker.clone(),
        service: name.clone(),
        consumer: consumer.clone(),
        in_flight: in_flight.clone(),
    };
    let completer = tokio::spawn(writer.run(done_rx));
    let visibility = Duration::from_millis(retry.visibility_timeout_ms);
    let keeper_stop = CancellationToken::new();
    let keeper = tokio::spawn(recovery::refresh_loop(
        broker.clone(),
        name.clone(),
        consumer.clone(),
        in_flight.clone(),
        (visibility / 3).max(Duration::from_millis(50)),
        keeper_stop.clone(),
    ));
    let reclaim_every = (visibility / 2).max(Duration::from_millis(100));
    let mut fetcher = Fetcher {
        broker: broker.clone(),
        service: name.clone(),
        consumer: consumer.clone(),
        block: Duration::from_millis(workers.block_ms),
        visibility,
        reclaim_every,
        orphan_every: reclaim_every.min(ORPHAN_CHECK),
        next_reclaim: Instant::now(),
        next_orphans: Instant::now(),
    };
    let mut failures = 0u32;
    let drain = Duration::from_millis(workers.drain_timeout_ms);
    // When this loop saw the shutdown: the drain timeout counts from there.
    let stopped_at = OnceLock::new();
    tracing::info!(service = %name, consumer = %consumer, concurrency = workers.concurrency, "workers started");

    // The reader reads a batch, then starts its messages in order as slots free up, and
    // reads the next batch while the last ones run: a freed slot does not wait for a broker
    // round trip. So a worker holds at most `concurrency` running messages plus one batch
    // (`workers.batch`) read ahead.
    let read_ahead = workers.batch.max(1);
    let limiter = rate::Limiter::new(&service.spec, broker.clone());
    let order =
        workers.order_by.clone().map(|field| Arc::new(order::Order::new(field, read_ahead.max(workers.concurrency))));
    while !shutdown.is_cancelled() {
        let mut deliveries = match fetcher.fetch(read_ahead).await {
            Ok(deliveries) => {
                failures = 0;
                deliveries
            }
            Err(err) => {
                failures += 1;
                let pause = backoff(Duration::from_millis(100), failures, MAX_BROKER_BACKOFF);
                tracing::error!(service = %name, error = %err, retry_in_ms = pause.as_millis() as u64, "cannot read messages");
                tokio::select! {
                    () = tokio::time::sleep(pause) => continue,
                    () = shutdown.cancelled() => break,
                }
            }
        };
        {
            // A reclaim after a broker outage may hand back a message this worker still
            // runs; running it twice at once could write its taskbacks twice.
            let mut held = lock(&in_flight);
            deliveries.retain(|d| held.insert(d.id.clone()));
        }
        let mut unstarted = deliveries.into_iter();
        for delivery in unstarted.by_ref() {
            // In read order, so `concurrency: 1` runs messages one by one in stream order.
            // What was read is still started during shutdown, until the drain timeout.
            let (delivery, key) = match &order {
                None => (delivery, None),
                Some(order) => {
                    let admitted = tokio::select! {
                        biased;
                        admitted = order.admit(delivery) => admitted,
                        () = drain_over(&shutdown, &stopped_at, drain) => break,
                    };
                    match admitted {
                        order::Admitted::Start { delivery, key } => (delivery, key),
                        order::Admitted::Parked => continue,
                    }
                }
            };
            let permit = tokio::select! {
                biased;
                permit = semaphore.clone().acquire_owned() => permit,
                () = drain_over(&shutdown, &stopped_at, drain) => break,
            };
            let Ok(permit) = permit else { break };
            let limits = (order.clone(), limiter.clone());
            tracker.spawn(order::run_slot(service.clone(), delivery, key, limits, permit, done_tx.clone()));
        }
        let left: Vec<String> = unstarted.map(|d| d.id).collect();
        if !left.is_empty() {
            tracing::warn!(
                service = %name,
                count = left.len(),
                "drain timeout passed before these messages read ahead could start; they stay pending and will be recovered"
            );
            let mut held = lock(&in_flight);
            for id in &left {
                held.remove(id);
            }
            break;
        }
    }

    tracker.close();
    tracing::info!(service = %name, in_flight = tracker.len(), "draining");
    drop(done_tx);
    let deadline = *stopped_at.get_or_init(Instant::now) + drain;
    let drained = tokio::time::timeout_at(deadline.into(), async {
        tracker.wait().await;
        completer.await
    })
    .await;
    keeper_stop.cancel();
    let _ = keeper.await;
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

/// Resolves once `shutdown` has been cancelled and `drain` has passed since.
async fn drain_over(shutdown: &CancellationToken, stopped_at: &OnceLock<Instant>, drain: Duration) {
    shutdown.cancelled().await;
    let deadline = *stopped_at.get_or_init(Instant::now) + drain;
    tokio::time::sleep_until(deadline.into()).await;
}

/// Runs one message through the pipeline with retries, then hands it to the completer;
/// false when the completer is gone (shutdown). The caller frees the message's slot after.
async fn process(service: Arc<ServiceRuntime>, delivery: Delivery, done: mpsc::Sender<Finished>) -> bool {
    let retry = service.spec.retry;
    let msg = Message { id: delivery.id, service: service.name().to_owned(), fields: delivery.fields };
    let mut attempt = delivery.deliveries.max(1);
    let mut host_faults = 0;
    let limits = service.spec.limits;
    let bytes = crate::fields::size(&msg.fields);
    // observe: in flight until counted as done or dead below.
    let observed = service.observe.start();
    let finished = if let Some(fault) = delivery.not_utf8 {
        // Another producer wrote bytes that are not text: never run on an altered copy. The
        // dead letter is copied from the stored entry, so its bytes survive.
        let error = format!("message is not UTF-8: {fault}; not run");
        tracing::error!("{error}; moving to dead letters");
        Finished::Dead(dead_letter(msg, error, 0))
    } else if msg.fields.len() > limits.max_fields {
        // Not ours to run: another producer bypassed the collector's field cap.
        let error = format!(
            "message of {} fields exceeds limits.max_fields = {} of service {:?}; not run",
            msg.fields.len(),
            limits.max_fields,
            service.name()
        );
        tracing::error!("{error}; moving to dead letters");
        Finished::Dead(dead_letter(msg, error, 0))
    } else if bytes as u64 > limits.message_kb.saturating_mul(1024) {
        // Not ours to run: another producer bypassed the collector's size check.
        let error = format!(
            "message of {bytes} bytes exceeds limits.message_kb = {} of service {:?}; not run",
            limits.message_kb,
            service.name()
        );
        tracing::error!("{error}; moving to dead letters");
        Finished::Dead(dead_letter(msg, error, 0))
    } else {
        loop {
            if attempt > retry.max_attempts {
                // Delivered more often than allowed: earlier workers died while holding it.
                let error = format!(
                    "abandoned: delivered {} times without finishing (workers crashed while running it)",
                    attempt - 1
                );
                tracing::error!(attempts = attempt - 1, "{error}; moving to dead letters");
                break Finished::Dead(dead_letter(msg, error, attempt - 1));
            }
            match service.pipeline.run(&msg).await {
                Ok(outcome) => {
                    host_fault::recovered();
                    tracing::debug!(wall_us = outcome.stats.wall.as_micros() as u64, attempt, "processed");
                    let completion = Completion { id: msg.id.clone(), taskbacks: outcome.taskbacks(&msg) };
                    break Finished::Done(completion, msg.fields);
                }
                Err(err) if err.error.is_host_fault() => {
                    host_faults += 1;
                    host_fault::wait(&err, host_faults).await;
                }
                Err(err) if attempt < retry.max_attempts => {
                    let pause = backoff(Duration::from_millis(retry.backoff_ms), attempt, Duration::from_secs(60));
                    // The error holds guest text: escaped, so it cannot forge a log record.
                    let error = for_terminal(&err.to_string()).into_owned();
                    tracing::warn!(attempt, max_attempts = retry.max_attempts, %error, "failed; retrying");
                    service.observe.retried(); // observe
                    tokio::time::sleep(pause).await;
                    attempt += 1;
                }
                Err(err) => {
                    let error = for_terminal(&err.to_string()).into_owned();
                    tracing::error!(attempt, %error, "failed for the last time; moving to dead letters");
                    break Finished::Dead(dead_letter(msg, err.to_string(), attempt));
                }
            }
        }
    };
    // Wait for room in the writer's queue while still holding the slot: that is what holds
    // the reader back when the broker writes slowly. The receiver lives until every sender
    // is gone; an error means shutdown raced us, and the message stays pending for another
    // worker. The slot is freed only after the send: the queue is ordered by send, not by
    // reservation, so a thread preempted between the two would otherwise let the next
    // message overtake this one (with `concurrency: 1`, out of stream order).
    // observe: the message's outcome and duration.
    match &finished {
        Finished::Done(completion, _) => observed.done(completion.taskbacks.len()),
        Finished::Dead(dead) => observed.dead(&dead.id, &dead.error, dead.attempts, dead.failed_at_ms),
    }
    let Ok(queued) = done.reserve().await else { return false };
    queued.send(finished);
    true
}

fn dead_letter(msg: Message, error: String, attempts: u32) -> DeadLetter {
    DeadLetter { id: msg.id, fields: msg.fields, error, attempts, failed_at_ms: now_ms() }
}
