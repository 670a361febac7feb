//! The reader: fetches batches (orphans, then reclaims, then new messages) and starts each
//! message, in stream order, on its own task as soon as a concurrency slot is free; it
//! reads the next batch while the last half of the previous one starts.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{Finished, InFlight, MAX_BROKER_BACKOFF, ORPHAN_CHECK, Streak, lock, log_failure, order, rate, recovery};
use crate::broker::{Broker, BrokerError, Delivery};
use crate::config::Workers;
use crate::service::ServiceRuntime;
use crate::time::backoff;

/// Where the reader gets its next batch from, and when.
pub(super) struct Fetcher {
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
    /// Reclaims every half visibility timeout, looks for orphans at least every
    /// [`ORPHAN_CHECK`]; both at once at the start.
    pub(super) fn new(
        broker: Arc<dyn Broker>,
        service: &str,
        consumer: &str,
        workers: &Workers,
        visibility: Duration,
    ) -> Self {
        let reclaim_every = (visibility / 2).max(Duration::from_millis(100));
        Fetcher {
            broker,
            service: service.to_owned(),
            consumer: consumer.to_owned(),
            block: Duration::from_millis(workers.block_ms),
            visibility,
            reclaim_every,
            orphan_every: reclaim_every.min(ORPHAN_CHECK),
            next_reclaim: Instant::now(),
            next_orphans: Instant::now(),
        }
    }

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
        let started = super::stages::STAGES.clock();
        let read = self.broker.read(&self.service, &self.consumer, room, self.block).await?;
        if let Some(started) = started {
            super::stages::STAGES.read(started.elapsed(), read.len());
        }
        Ok(read)
    }
}

/// What the reader needs to start messages.
pub(super) struct Reader {
    pub service: Arc<ServiceRuntime>,
    /// One permit per `workers.concurrency` slot.
    pub semaphore: Arc<Semaphore>,
    /// The running messages, waited for at the drain.
    pub tracker: TaskTracker,
    pub in_flight: InFlight,
    /// To the writer (`complete.rs`).
    pub done: mpsc::Sender<Finished>,
    pub order: Option<Arc<order::Order>>,
    pub limiter: Option<Arc<rate::Limiter>>,
    pub shutdown: CancellationToken,
    /// When the reader saw the shutdown: the drain timeout counts from there.
    pub stopped_at: Arc<OnceLock<Instant>>,
    pub drain: Duration,
}

impl Reader {
    /// Reads and starts messages until shutdown (or until the drain timeout passes with
    /// messages read ahead still unstarted).
    pub(super) async fn run(&self, mut fetcher: Fetcher) {
        // A worker holds at most `concurrency` running messages plus a batch and a half
        // (`workers.batch`) read ahead: the next read is sent once half a batch is left to
        // start, so it is back before the slots run dry. (Sent only when the whole batch had
        // started, the read waited behind the finish script in Redis while the last 16
        // messages ran out, and the machine stood idle 10-12% of a drain: docs/performance.md,
        // round 9.)
        let read_ahead = self.service.spec.workers.batch.max(1);
        let left_at_next_read = read_ahead / 2;
        let mut failing = Streak::default();
        let mut fetched = None;
        while !self.shutdown.is_cancelled() {
            let read = match fetched.take() {
                Some(read) => read,
                None => fetcher.fetch(read_ahead).await,
            };
            let mut deliveries = match read {
                Ok(deliveries) => {
                    if let Some((failed_reads, after_s)) = failing.ended() {
                        tracing::info!(service = %self.service.name(), failed_reads, after_s, "reading messages again");
                    }
                    deliveries
                }
                Err(err) => {
                    let failures = failing.failed();
                    let pause = backoff(Duration::from_millis(100), failures, MAX_BROKER_BACKOFF);
                    log_failure!(
                        failures,
                        failed_reads,
                        "cannot read messages",
                        "still cannot read messages",
                        service = %self.service.name(),
                        error = %err,
                        retry_in_ms = pause.as_millis() as u64
                    );
                    tokio::select! {
                        () = tokio::time::sleep(pause) => continue,
                        () = self.shutdown.cancelled() => break,
                    }
                }
            };
            self.hold(&mut deliveries);
            let last = deliveries.split_off(deliveries.len().saturating_sub(left_at_next_read));
            if !self.start_batch(deliveries).await {
                break;
            }
            if self.shutdown.is_cancelled() {
                self.start_batch(last).await;
                break;
            }
            // The next read runs while the last of this batch start, in read order.
            let (read, started) = tokio::join!(fetcher.fetch(read_ahead), self.start_batch(last));
            fetched = Some(read);
            if !started {
                break;
            }
        }
        // A batch read while the last one started, when the shutdown came meanwhile: started
        // like any batch read before the shutdown was seen, until the drain timeout (what is
        // left then stays pending, logged, for another worker to recover).
        if let Some(Ok(mut deliveries)) = fetched {
            self.hold(&mut deliveries);
            self.start_batch(deliveries).await;
        }
    }

    /// Marks `deliveries` as held by this worker, dropping those it already holds: a reclaim
    /// after a broker outage may hand back such a message, and running it twice at once could
    /// write its taskbacks twice. A dropped one is noted, for the writer to write it once more
    /// should its write have missed the new delivery ([`super::Held::again`]).
    fn hold(&self, deliveries: &mut Vec<Delivery>) {
        let mut held = lock(&self.in_flight);
        deliveries.retain(|d| {
            if held.ids.insert(d.id.clone()) {
                return true;
            }
            held.again.insert(d.id.clone());
            false
        });
    }

    /// Starts each message of a batch in read order, so `concurrency: 1` runs messages one
    /// by one in stream order. What was read is still started during shutdown, until the
    /// drain timeout; false when that passed with messages left (they stay pending).
    async fn start_batch(&self, deliveries: Vec<Delivery>) -> bool {
        let mut unstarted = deliveries.into_iter();
        for delivery in unstarted.by_ref() {
            let (delivery, key) = match &self.order {
                None => (delivery, None),
                Some(order) => {
                    let admitted = tokio::select! {
                        biased;
                        admitted = order.admit(delivery) => admitted,
                        () = self.drain_over() => break,
                    };
                    match admitted {
                        order::Admitted::Start { delivery, key } => (delivery, key),
                        order::Admitted::Parked => continue,
                    }
                }
            };
            let permit = tokio::select! {
                biased;
                permit = self.semaphore.clone().acquire_owned() => permit,
                () = self.drain_over() => break,
            };
            let Ok(permit) = permit else { break };
            let limits = (self.order.clone(), self.limiter.clone());
            // Boxed: the message's future is ~6 KiB (the pipeline, the call and wasmtime's
            // instantiation inline), and tokio moves a spawned future's whole size into its
            // task cell and again when it finishes; a box moves 8 bytes (docs/performance.md).
            let message =
                Box::pin(order::run_slot(self.service.clone(), delivery, key, limits, permit, self.done.clone()));
            self.tracker.spawn(message);
        }
        let left: Vec<String> = unstarted.map(|d| d.id).collect();
        if left.is_empty() {
            return true;
        }
        tracing::warn!(
            service = %self.service.name(),
            count = left.len(),
            "drain timeout passed before these messages read ahead could start; they stay pending and will be recovered"
        );
        let mut held = lock(&self.in_flight);
        for id in &left {
            held.ids.remove(id);
            held.again.remove(id);
        }
        false
    }

    /// Resolves once `shutdown` has been cancelled and `drain` has passed since.
    async fn drain_over(&self) {
        self.shutdown.cancelled().await;
        let deadline = *self.stopped_at.get_or_init(Instant::now) + self.drain;
        tokio::time::sleep_until(deadline.into()).await;
    }
}
