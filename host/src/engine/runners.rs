//! Runners: how many calls of one engine run guest code at once.
//!
//! `workers.concurrency` is how many messages a worker holds in flight: broker reads,
//! writes and the pipeline's stages overlap across them. Guest code is CPU-bound and the
//! process has a thread per core, so more instances running at once than there are threads
//! buy no throughput; they only interleave (every call yields its thread at each
//! [`super::EPOCH_TICK`]), and each live instance holds a pool slot's pages. At
//! concurrency 16 a Python guest kept 16 slots of ~7 MiB mapped where two would do.
//!
//! So a call takes a *seat* before its store is made and instantiated, and keeps it until
//! the call ends, or until it
//! - has held it [`RUN_SLICE`] of wall time (checked at each epoch tick): a long call does
//!   not keep short ones waiting;
//! - waits on the network: its first kv, streams or outbound HTTP call gives the seat up;
//!   the instance lives on, but a slow broker or server does not stall other messages.
//!
//! A call that holds its seat past its slice without reaching a tick (asleep in
//! `wasi:io/poll`, or busy in the host) has it taken back: a waiting call looks for such
//! seats every [`RUN_WAIT`] and hands them to the queue, so such a call delays the others
//! by at most its slice and a wait. Waiting calls are seated in the order they asked
//! (tokio's fair semaphore) and wait as long as seats change hands: a deep queue of short
//! calls stays within the seats. No call is refused for want of a seat, and deadlines and
//! limits are the call's own, counted from when it got its seat.
//!
//! Seats: one per core unless `CANNON_RUNNERS` says otherwise (0: no turns).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::engine::metrics::METRICS;

/// How often a call waiting for a seat looks for seats held past their slice.
pub const RUN_WAIT: Duration = Duration::from_millis(10);
/// How long a call keeps its seat while it runs guest code. Wall time, so it counts the
/// time the call's thread was taken by other work too: at 10 ms a Python call of 0.5 ms on a
/// busy machine now and then ran past it, the next message started an instance of its own,
/// and up to 12 were alive at concurrency 16 (docs/performance.md, round 7).
pub const RUN_SLICE: Duration = Duration::from_millis(25);

/// How many seats an engine has, how often a waiting call looks for seats to take back and
/// how long a call keeps one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunnerOptions {
    /// Seats; `None`: `CANNON_RUNNERS` if set, else one per core. `Some(0)`: no turns.
    pub seats: Option<usize>,
    /// [`RUN_WAIT`] unless a test says otherwise.
    pub wait: Duration,
    /// [`RUN_SLICE`] unless a test says otherwise.
    pub slice: Duration,
}

impl Default for RunnerOptions {
    fn default() -> Self {
        Self { seats: None, wait: RUN_WAIT, slice: RUN_SLICE }
    }
}

/// Seats when nothing says: one per core, as the runtime has threads.
fn default_seats() -> anyhow::Result<usize> {
    let Ok(text) = std::env::var("CANNON_RUNNERS") else {
        return Ok(std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get));
    };
    text.trim().parse::<usize>().map_err(|_| {
        anyhow::anyhow!("CANNON_RUNNERS={text:?} is not a number of seats (0: calls run without taking turns)")
    })
}

/// The seats of one engine, shared with every component it loaded.
#[derive(Debug)]
pub(crate) struct Runners {
    /// `None`: no turns (0 seats).
    seats: Option<Arc<Semaphore>>,
    /// The calls holding a seat now, by [`Held::index`].
    holders: Mutex<Vec<Option<Holder>>>,
    wait: Duration,
    slice: Duration,
    /// Calls with a store right now, seated or not.
    live: AtomicUsize,
    /// Most `live` ever.
    live_peak: AtomicUsize,
}

/// A seated call, as the waiting calls see it.
#[derive(Debug, Clone, Copy)]
struct Holder {
    /// When its slice ends; `None`: never.
    slice_end: Option<Instant>,
    /// Its seat was taken back: the semaphore already has a permit in its place, so the
    /// call's own permit is forgotten when it stands up.
    taken_back: bool,
}

/// A seat held: the permit and the holder's entry (its slice end copied, so the epoch tick
/// needs no lock).
#[derive(Debug)]
struct Held {
    permit: OwnedSemaphorePermit,
    index: usize,
    slice_end: Option<Instant>,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Runners {
    pub(crate) fn new(options: &RunnerOptions) -> anyhow::Result<Self> {
        let seats = match options.seats {
            Some(n) => n,
            None => default_seats()?,
        };
        Ok(Self {
            seats: (seats > 0).then(|| Arc::new(Semaphore::new(seats))),
            holders: Mutex::new(Vec::with_capacity(seats)),
            wait: options.wait,
            slice: options.slice,
            live: AtomicUsize::new(0),
            live_peak: AtomicUsize::new(0),
        })
    }

    /// Waits for a seat (the call asked at `asked`), then counts the call as live until the
    /// returned [`Seat`] drops. The clock is read again only if the call had to wait.
    pub(crate) async fn sit(self: &Arc<Self>, asked: Instant) -> Seat {
        let (held, seated) = match &self.seats {
            Some(seats) => self.take_seat(seats, asked).await,
            None => (None, asked),
        };
        let live = self.live.fetch_add(1, Ordering::Relaxed) + 1;
        // The process-wide gauge only when this engine's peak rises, not on every call.
        if self.live_peak.fetch_max(live, Ordering::Relaxed) < live {
            METRICS.record_live(live);
        }
        Seat { held, runners: self.clone(), waited: seated.saturating_duration_since(asked), seated }
    }

    /// A free seat, or the first to come free, looking every `wait` for seats held past
    /// their slice; with when it was had. No seat only if the semaphore were closed (it
    /// never is).
    async fn take_seat(&self, seats: &Arc<Semaphore>, asked: Instant) -> (Option<Held>, Instant) {
        let (permit, seated) = match seats.clone().try_acquire_owned() {
            Ok(permit) => (permit, asked),
            Err(_) => {
                // One `acquire` for the whole wait keeps the call's place in the queue.
                let acquire = seats.clone().acquire_owned();
                tokio::pin!(acquire);
                let permit = loop {
                    tokio::select! {
                        permit = &mut acquire => break permit,
                        () = tokio::time::sleep(self.wait) => self.take_back_stale(seats),
                    }
                };
                match permit {
                    Ok(permit) => (permit, Instant::now()),
                    Err(_) => return (None, Instant::now()),
                }
            }
        };
        let holder = Holder { slice_end: seated.checked_add(self.slice), taken_back: false };
        let mut holders = lock(&self.holders);
        let index = match holders.iter().position(Option::is_none) {
            Some(free) => free,
            None => {
                holders.push(None);
                holders.len() - 1
            }
        };
        holders[index] = Some(holder);
        (Some(Held { permit, index, slice_end: holder.slice_end }), seated)
    }

    /// Hands the queue a seat for each call that holds one past its slice.
    fn take_back_stale(&self, seats: &Semaphore) {
        let now = Instant::now();
        for holder in lock(&self.holders).iter_mut().flatten() {
            if !holder.taken_back && holder.slice_end.is_some_and(|end| now >= end) {
                holder.taken_back = true;
                seats.add_permits(1);
            }
        }
    }

    /// Gives a seat back (or, if it was taken back, forgets it: its place is filled).
    fn release(&self, held: Held) {
        let mut holders = lock(&self.holders);
        let taken_back = holders.get_mut(held.index).and_then(Option::take).is_some_and(|h| h.taken_back);
        if taken_back {
            held.permit.forget();
        }
    }

    /// Most calls that were live at once.
    pub(crate) fn peak(&self) -> usize {
        self.live_peak.load(Ordering::Relaxed)
    }
}

/// One call's place: counted as live until dropped, seated until [`Seat::stand`].
#[derive(Debug)]
pub(crate) struct Seat {
    held: Option<Held>,
    runners: Arc<Runners>,
    /// How long the call waited for its seat.
    pub(crate) waited: Duration,
    /// When it had its seat (or found it needed none): the call's own time starts here.
    pub(crate) seated: Instant,
}

impl Seat {
    /// Gives the seat up for the rest of the call (idempotent).
    pub(crate) fn stand(&mut self) {
        if let Some(held) = self.held.take() {
            self.runners.release(held);
        }
    }

    /// At an epoch tick: gives the seat up once the call has run its slice.
    pub(crate) fn tick(&mut self, now: Instant) {
        if self.held.as_ref().is_some_and(|held| held.slice_end.is_some_and(|end| now >= end)) {
            self.stand();
        }
    }
}

impl Drop for Seat {
    fn drop(&mut self) {
        self.stand();
        self.runners.live.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runners(seats: usize, wait_ms: u64, slice_ms: u64) -> Arc<Runners> {
        let options = RunnerOptions {
            seats: Some(seats),
            wait: Duration::from_millis(wait_ms),
            slice: Duration::from_millis(slice_ms),
        };
        Arc::new(Runners::new(&options).expect("runners"))
    }

    fn free(runners: &Runners) -> usize {
        runners.seats.as_ref().map_or(0, |s| s.available_permits())
    }

    #[tokio::test]
    async fn a_seat_taken_back_is_not_given_back_twice() {
        let runners = runners(1, 5, 10);
        let sleeper = runners.sit(Instant::now()).await;
        assert_eq!(free(&runners), 0);
        tokio::time::sleep(Duration::from_millis(20)).await;
        // The sleeper reached no tick; the next call takes its seat back.
        let next = runners.sit(Instant::now()).await;
        assert!(next.held.is_some(), "seated by the seat taken back");
        drop(sleeper);
        assert_eq!(free(&runners), 0, "the sleeper's own permit is forgotten, not returned");
        drop(next);
        assert_eq!(free(&runners), 1, "one seat, as at the start");
        assert_eq!(runners.peak(), 2);
        assert_eq!(runners.live.load(Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn a_seat_is_given_up_at_the_first_tick_after_the_slice() {
        let runners = runners(1, 5, 10);
        let mut seat = runners.sit(Instant::now()).await;
        seat.tick(Instant::now());
        assert_eq!(free(&runners), 0, "within its slice");
        seat.tick(Instant::now() + Duration::from_millis(11));
        assert_eq!(free(&runners), 1, "slice over");
        seat.stand();
        assert_eq!(free(&runners), 1, "standing twice gives nothing back twice");
        drop(seat);
        assert_eq!(free(&runners), 1);
    }

    #[tokio::test]
    async fn without_seats_calls_are_only_counted() {
        let runners = runners(0, 5, 10);
        let (a, b) = (runners.sit(Instant::now()).await, runners.sit(Instant::now()).await);
        assert!(a.held.is_none() && b.held.is_none());
        assert_eq!(runners.peak(), 2);
    }
}
