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
//! - has run for [`RUN_SLICE`], counted in the epoch ticks it saw while running guest code (at
//!   most one per tick however long its thread was held up, so a stalled process does not
//!   end every seated call's slice at once): a long call does not keep short ones waiting;
//! - waits on the network: its first kv, streams or outbound HTTP call gives the seat up;
//!   the instance lives on, but a slow broker or server does not stall other messages.
//!
//! A call that holds its seat for its slice without its ticks moving (asleep in
//! `wasi:io/poll`, or busy in the host) has it taken back: a waiting call looks for such
//! seats every [`RUN_WAIT`] and hands them to the queue, so such a call delays the others
//! by at most its slice and two looks. A look that comes long after the one before (the
//! process was held up, and the seated calls could not tick either) takes nothing back.
//! Waiting calls are seated in the order they asked (tokio's fair semaphore) and wait as
//! long as seats change hands: a deep queue of short calls stays within the seats. No call is refused for want of a seat, and deadlines and
//! limits are the call's own, counted from when it got its seat.
//!
//! Seats: one per core unless `CANNON_RUNNERS` says otherwise (0: no turns).

use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::engine::metrics::METRICS;

/// How often a call waiting for a seat looks for seats held past their slice.
pub const RUN_WAIT: Duration = Duration::from_millis(10);
/// How long a call keeps its seat while it runs guest code, counted in epoch ticks it saw.
/// Round 6 counted 10 ms of wall time from the seat: whenever the process stalled that long,
/// every seated call gave its seat up, the next messages started instances of their own, and
/// up to 12 Python instances were alive at concurrency 16 (docs/performance.md, round 7).
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
    holders: Mutex<Holders>,
    wait: Duration,
    slice: Duration,
    /// The slice in epoch ticks (at least 1).
    slice_ticks: u32,
    /// Calls with a store right now, seated or not.
    live: AtomicUsize,
    /// Most `live` ever.
    live_peak: AtomicUsize,
}

/// The seated calls and when a waiting call last looked at them.
#[derive(Debug, Default)]
struct Holders {
    /// By [`Held::index`]; a place is reused, its tick counter with it (no allocation per call).
    places: Vec<Place>,
    last_look: Option<Instant>,
}

#[derive(Debug)]
struct Place {
    /// Ticks its call has seen while seated; the call counts, the waiting calls read.
    ticks: Arc<AtomicU32>,
    holder: Option<Holder>,
}

/// A seated call, as the waiting calls see it.
#[derive(Debug, Clone, Copy)]
struct Holder {
    /// Its ticks at the last look, and when they last moved (at first: when it was seated).
    seen: u32,
    moved: Instant,
    /// Its seat was taken back: the semaphore already has a permit in its place, so the
    /// call's own permit is forgotten when it stands up.
    taken_back: bool,
}

/// A seat held: the permit, the holder's place and its tick counter (so the epoch tick
/// needs no lock).
#[derive(Debug)]
struct Held {
    permit: OwnedSemaphorePermit,
    index: usize,
    ticks: Arc<AtomicU32>,
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
        let ticks = options.slice.as_nanos() / super::EPOCH_TICK.as_nanos().max(1);
        Ok(Self {
            seats: (seats > 0).then(|| Arc::new(Semaphore::new(seats))),
            holders: Mutex::new(Holders { places: Vec::with_capacity(seats), last_look: None }),
            wait: options.wait,
            slice: options.slice,
            slice_ticks: u32::try_from(ticks).unwrap_or(u32::MAX).max(1),
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
                        () = tokio::time::sleep(self.wait) => self.take_back_stale(seats, Instant::now()),
                    }
                };
                match permit {
                    Ok(permit) => (permit, Instant::now()),
                    Err(_) => return (None, Instant::now()),
                }
            }
        };
        let mut holders = lock(&self.holders);
        let places = &mut holders.places;
        let index = match places.iter().position(|p| p.holder.is_none()) {
            Some(free) => free,
            None => {
                places.push(Place { ticks: Arc::new(AtomicU32::new(0)), holder: None });
                places.len() - 1
            }
        };
        let place = &mut places[index];
        place.ticks.store(0, Ordering::Relaxed);
        place.holder = Some(Holder { seen: 0, moved: seated, taken_back: false });
        (Some(Held { permit, index, ticks: place.ticks.clone() }), seated)
    }

    /// Hands the queue a seat for each call whose ticks have not moved for its slice
    /// (`now`: the time of this look). After a look that came more than two waits after
    /// the one before, nothing is taken back: the seated calls could not tick either.
    fn take_back_stale(&self, seats: &Semaphore, now: Instant) {
        let mut holders = lock(&self.holders);
        let stalled =
            holders.last_look.is_none_or(|at| now.saturating_duration_since(at) > self.wait.saturating_mul(2));
        holders.last_look = Some(now);
        for place in &mut holders.places {
            let Some(holder) = place.holder.as_mut().filter(|h| !h.taken_back) else { continue };
            let ticks = place.ticks.load(Ordering::Relaxed);
            if ticks != holder.seen || stalled {
                holder.seen = ticks;
                holder.moved = now;
            } else if now.saturating_duration_since(holder.moved) >= self.slice {
                holder.taken_back = true;
                seats.add_permits(1);
            }
        }
    }

    /// Gives a seat back (or, if it was taken back, forgets it: its place is filled).
    fn release(&self, held: Held) {
        let mut holders = lock(&self.holders);
        let taken_back = holders.places.get_mut(held.index).and_then(|p| p.holder.take()).is_some_and(|h| h.taken_back);
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

    /// At an epoch tick: counts it, and gives the seat up once the call has run its slice.
    pub(crate) fn tick(&mut self) {
        if let Some(held) = &self.held {
            let ticks = held.ticks.fetch_add(1, Ordering::Relaxed).saturating_add(1);
            if ticks >= self.runners.slice_ticks {
                self.stand();
            }
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
    async fn a_seat_is_given_up_at_the_tick_that_ends_the_slice() {
        let runners = runners(1, 5, 10);
        let mut seat = runners.sit(Instant::now()).await;
        // Wall time does not count: only the ticks the call saw (10 of 1 ms here).
        tokio::time::sleep(Duration::from_millis(15)).await;
        for _ in 0..9 {
            seat.tick();
        }
        assert_eq!(free(&runners), 0, "within its slice");
        seat.tick();
        assert_eq!(free(&runners), 1, "slice over");
        seat.stand();
        assert_eq!(free(&runners), 1, "standing twice gives nothing back twice");
        drop(seat);
        assert_eq!(free(&runners), 1);
    }

    #[tokio::test]
    async fn a_holder_that_ticks_or_a_late_look_keeps_its_seat() {
        let runners = runners(1, 5, 10);
        let seats = runners.seats.clone().expect("seats");
        let mut seat = runners.sit(Instant::now()).await;
        let start = Instant::now();
        let look = |ms: u64| runners.take_back_stale(&seats, start + Duration::from_millis(ms));
        look(0); // the first look only notes what it sees
        for ms in (5..=40).step_by(5) {
            seat.tick();
            look(ms);
        }
        assert_eq!(free(&runners), 0, "running (its ticks move): not taken back, 40 ms on");
        // The process held up 100 ms: the next look is late, and takes nothing back.
        look(140);
        assert_eq!(free(&runners), 0, "a late look takes nothing back");
        look(145);
        assert_eq!(free(&runners), 0, "5 ms without a tick is within the slice");
        look(150);
        assert_eq!(free(&runners), 1, "10 ms without a tick: taken back");
        drop(seat);
        assert_eq!(free(&runners), 1, "its own permit forgotten");
    }

    #[tokio::test]
    async fn without_seats_calls_are_only_counted() {
        let runners = runners(0, 5, 10);
        let (a, b) = (runners.sit(Instant::now()).await, runners.sit(Instant::now()).await);
        assert!(a.held.is_none() && b.held.is_none());
        assert_eq!(runners.peak(), 2);
    }
}
