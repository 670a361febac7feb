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
//! Meanwhile a refresher renews the claim on every message this worker holds, so a message
//! whose retries outlive the visibility timeout is not reclaimed while it still runs.
//!
//! Shutdown (the `shutdown` token) stops reading; messages in flight finish and are acked
//! within `workers.drain_timeout_ms`; anything left is still pending in the broker and is
//! recovered by another worker.
//!
//! ## Layout
//! - `mod.rs`: [`run`], which wires the reader, the writer and the claim refresher.
//! - `reader.rs`: fetching batches and starting each message in a concurrency slot.
//! - `message.rs`: one message's processing: unrunnable checks, retries, hand-over.
//! - `recovery.rs`: adopting orphans, reclaiming, keeping claims fresh.
//! - `complete.rs`: the batched writer of taskbacks, acks and dead letters.
//! - `host_fault.rs`: waiting out host faults (fds, memory maps), which spend no attempt.
//! - `order.rs`: `workers.order_by`, one message at a time per value of a field.
//! - `rate.rs`: `rate_limit:`, counted in the broker before a message runs.
//! - `stages.rs`: time spent reading, merging and writing, for `cannon-host bench`.

mod complete;
mod host_fault;
mod message;
mod order;
mod rate;
mod reader;
mod recovery;
pub mod stages;

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::broker::{Broker, Completion, DeadLetter, Fields};
use crate::service::ServiceRuntime;

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

/// The messages this worker holds: read or claimed, not yet written.
#[derive(Default)]
struct Held {
    ids: HashSet<String>,
    /// Held ids the broker delivered again meanwhile, which the reader dropped rather than
    /// run twice at once. After a failover the broker may have lost this worker's claim on
    /// a message and hand it out anew while its write is under way; should that write have
    /// checked the claim before the new delivery, it wrote nothing, so the writer writes
    /// such a message once more once done (`complete.rs`).
    again: HashSet<String>,
}

type InFlight = Arc<Mutex<Held>>;

/// How loudly the `nth` failure in a row of a broker request is logged: the first as an
/// error, the 2nd, 4th, 8th... as warnings, the rest at debug. A broker outage then makes a
/// few lines instead of one per retry; the request that works again says how many failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Loudness {
    Error,
    Warn,
    Debug,
}

fn loudness(nth: u32) -> Loudness {
    match nth {
        0 | 1 => Loudness::Error,
        n if n.is_power_of_two() => Loudness::Warn,
        _ => Loudness::Debug,
    }
}

/// Failures in a row of one broker request (the reader's read, the writer's batch), and
/// since when.
#[derive(Default)]
struct Streak {
    failures: u32,
    since: Option<Instant>,
}

impl Streak {
    /// Counts a failure; returns how many are in the streak now.
    fn failed(&mut self) -> u32 {
        self.failures += 1;
        self.since.get_or_insert_with(Instant::now);
        self.failures
    }

    /// The request worked: how many failed before it and for how many seconds, if any did.
    fn ended(&mut self) -> Option<(u32, u64)> {
        let since = self.since.take()?;
        Some((std::mem::take(&mut self.failures), since.elapsed().as_secs()))
    }
}

/// Logs the `$nth` failure of a streak as loudly as [`loudness`] says: the first with
/// `$first` and the fields, later ones with `$again`, the fields and `$count = $nth`.
macro_rules! log_failure {
    ($nth:expr, $count:ident, $first:literal, $again:literal, $($field:tt)+) => {{
        let nth: u32 = $nth;
        match $crate::worker::loudness(nth) {
            $crate::worker::Loudness::Error => tracing::error!($($field)+, $first),
            $crate::worker::Loudness::Warn => tracing::warn!($($field)+, $count = nth, $again),
            $crate::worker::Loudness::Debug => tracing::debug!($($field)+, $count = nth, $again),
        }
    }};
}
use log_failure;

fn lock(held: &InFlight) -> std::sync::MutexGuard<'_, Held> {
    held.lock().unwrap_or_else(PoisonError::into_inner)
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

/// Runs the workers of one service until `shutdown`, then drains.
pub async fn run(
    service: Arc<ServiceRuntime>,
    broker: Arc<dyn Broker>,
    consumer: String,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let name = service.name().to_owned();
    let workers = &service.spec.workers;
    let in_flight: InFlight = Arc::default();
    let (done_tx, done_rx) = mpsc::channel(workers.concurrency.saturating_mul(UNWRITTEN_PER_SLOT).max(1));
    let writer = complete::Writer {
        broker: broker.clone(),
        service: name.clone(),
        consumer: consumer.clone(),
        in_flight: in_flight.clone(),
    };
    let completer = tokio::spawn(writer.run(done_rx));
    let visibility = Duration::from_millis(service.spec.retry.visibility_timeout_ms);
    let refresher_stop = CancellationToken::new();
    let refresher = tokio::spawn(recovery::refresh_loop(
        broker.clone(),
        name.clone(),
        consumer.clone(),
        in_flight.clone(),
        (visibility / 3).max(Duration::from_millis(50)),
        refresher_stop.clone(),
    ));
    let fetcher = reader::Fetcher::new(broker.clone(), &name, &consumer, workers, visibility);
    tracing::info!(service = %name, consumer = %consumer, concurrency = workers.concurrency, "workers started");
    let read_ahead = workers.batch.max(1);
    let reader = reader::Reader {
        service: service.clone(),
        semaphore: Arc::new(Semaphore::new(workers.concurrency)),
        tracker: TaskTracker::new(),
        in_flight,
        done: done_tx,
        order: workers
            .order_by
            .clone()
            .map(|field| Arc::new(order::Order::new(field, read_ahead.max(workers.concurrency)))),
        limiter: rate::Limiter::new(&service.spec, broker.clone()),
        shutdown,
        stopped_at: Arc::default(),
        drain: Duration::from_millis(workers.drain_timeout_ms),
    };
    reader.run(fetcher).await;

    let reader::Reader { tracker, done, stopped_at, drain, .. } = reader;
    tracker.close();
    tracing::info!(service = %name, in_flight = tracker.len(), "draining");
    drop(done);
    let deadline = *stopped_at.get_or_init(Instant::now) + drain;
    let drained = tokio::time::timeout_at(deadline.into(), async {
        tracker.wait().await;
        completer.await
    })
    .await;
    refresher_stop.cancel();
    let _ = refresher.await;
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

#[cfg(test)]
mod tests {
    use super::{Loudness, Streak, loudness};

    #[test]
    fn failures_in_a_row_are_logged_ever_more_quietly() {
        let levels: Vec<Loudness> = (1..=9).map(loudness).collect();
        use Loudness::{Debug, Error, Warn};
        assert_eq!(levels, [Error, Warn, Debug, Warn, Debug, Debug, Debug, Warn, Debug]);
        assert_eq!(loudness(1 << 20), Warn);
    }

    #[test]
    fn a_streak_counts_its_failures_until_it_ends() {
        let mut streak = Streak::default();
        assert_eq!(streak.ended(), None, "no failure, no streak");
        assert_eq!((streak.failed(), streak.failed()), (1, 2));
        assert_eq!(streak.ended(), Some((2, 0)));
        assert_eq!((streak.ended(), streak.failures), (None, 0), "a new streak starts from nothing");
    }
}
