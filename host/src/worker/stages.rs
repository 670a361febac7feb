//! Where a message's time goes outside the engine: process-wide totals of the broker reads
//! that delivered messages, the merge of results into taskbacks, and the broker writes of
//! taskbacks and acks. `cannon-host bench` divides them by the messages they served to show
//! a message's cost stage by stage (the engine's own [`crate::engine::metrics`] has the
//! instantiate and call times). Plain relaxed atomics: a few per batch or message, and only
//! once `bench` turned the measurement on ([`Stages::measure`]); otherwise the hot path reads
//! no clock for them and touches no shared counter.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Totals since the process started.
#[derive(Debug)]
pub struct Stages {
    on: AtomicBool,
    read_ns: AtomicU64,
    read_msgs: AtomicU64,
    merge_ns: AtomicU64,
    merge_msgs: AtomicU64,
    write_ns: AtomicU64,
    write_msgs: AtomicU64,
}

/// The process's totals.
pub static STAGES: Stages = Stages::new();

/// A copy of the totals at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StagesSnapshot {
    /// Time in broker reads that delivered at least one message.
    pub read: Duration,
    /// Messages those reads delivered.
    pub read_msgs: u64,
    /// Time merging step results and building taskbacks.
    pub merge: Duration,
    /// Messages merged.
    pub merge_msgs: u64,
    /// Time in broker writes of finished messages (taskbacks, acks, dead letters).
    pub write: Duration,
    /// Messages those writes carried.
    pub write_msgs: u64,
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl Default for Stages {
    fn default() -> Self {
        Self::new()
    }
}

impl Stages {
    /// All totals at zero.
    pub const fn new() -> Self {
        Stages {
            on: AtomicBool::new(false),
            read_ns: AtomicU64::new(0),
            read_msgs: AtomicU64::new(0),
            merge_ns: AtomicU64::new(0),
            merge_msgs: AtomicU64::new(0),
            write_ns: AtomicU64::new(0),
            write_msgs: AtomicU64::new(0),
        }
    }

    /// Turns the measurement on for the rest of the process (`bench`).
    pub fn measure(&self) {
        self.on.store(true, Ordering::Relaxed);
    }

    /// The start of a stage: a clock reading while measuring, else nothing to time.
    pub fn clock(&self) -> Option<Instant> {
        self.on.load(Ordering::Relaxed).then(Instant::now)
    }

    /// A read that took `took` and delivered `msgs` messages (empty reads are not counted:
    /// their time is waiting, not cost).
    pub fn read(&self, took: Duration, msgs: usize) {
        if msgs > 0 {
            self.read_ns.fetch_add(nanos(took), Ordering::Relaxed);
            self.read_msgs.fetch_add(msgs as u64, Ordering::Relaxed);
        }
    }

    /// Time merging one step's results into the message's (counted with the message).
    pub fn merge_step(&self, took: Duration) {
        self.merge_ns.fetch_add(nanos(took), Ordering::Relaxed);
    }

    /// One message's taskbacks built from its merged results.
    pub fn merge(&self, took: Duration) {
        self.merge_ns.fetch_add(nanos(took), Ordering::Relaxed);
        self.merge_msgs.fetch_add(1, Ordering::Relaxed);
    }

    /// A write of `msgs` finished messages that took `took`.
    pub fn write(&self, took: Duration, msgs: usize) {
        self.write_ns.fetch_add(nanos(took), Ordering::Relaxed);
        self.write_msgs.fetch_add(msgs as u64, Ordering::Relaxed);
    }

    /// The totals now (each read on its own).
    pub fn snapshot(&self) -> StagesSnapshot {
        let d = |a: &AtomicU64| Duration::from_nanos(a.load(Ordering::Relaxed));
        let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
        StagesSnapshot {
            read: d(&self.read_ns),
            read_msgs: n(&self.read_msgs),
            merge: d(&self.merge_ns),
            merge_msgs: n(&self.merge_msgs),
            write: d(&self.write_ns),
            write_msgs: n(&self.write_msgs),
        }
    }
}

impl StagesSnapshot {
    /// What happened between `earlier` and `self`.
    pub fn since(&self, earlier: &StagesSnapshot) -> StagesSnapshot {
        StagesSnapshot {
            read: self.read.saturating_sub(earlier.read),
            read_msgs: self.read_msgs.saturating_sub(earlier.read_msgs),
            merge: self.merge.saturating_sub(earlier.merge),
            merge_msgs: self.merge_msgs.saturating_sub(earlier.merge_msgs),
            write: self.write.saturating_sub(earlier.write),
            write_msgs: self.write_msgs.saturating_sub(earlier.write_msgs),
        }
    }

    /// Microseconds per message of a total (0 when no message).
    pub fn per_msg_us(total: Duration, msgs: u64) -> f64 {
        if msgs == 0 { 0.0 } else { total.as_secs_f64() * 1e6 / msgs as f64 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_and_differences() {
        let stages = Stages::new();
        let before = stages.snapshot();
        stages.read(Duration::from_micros(100), 10);
        stages.read(Duration::from_secs(1), 0); // an empty read: waiting, not counted
        stages.merge_step(Duration::from_micros(1));
        stages.merge(Duration::from_micros(2));
        stages.write(Duration::from_micros(50), 5);
        let diff = stages.snapshot().since(&before);
        assert_eq!(diff.read, Duration::from_micros(100));
        assert_eq!(diff.read_msgs, 10);
        assert_eq!(StagesSnapshot::per_msg_us(diff.read, diff.read_msgs), 10.0);
        assert_eq!((diff.merge, diff.merge_msgs, diff.write_msgs), (Duration::from_micros(3), 1, 5));
        assert_eq!(StagesSnapshot::per_msg_us(diff.write, 0), 0.0);
    }
}
