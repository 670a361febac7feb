//! Process-wide call counters: how many component calls ran, how many failed and why,
//! and what they cost. Plain atomics, updated once per call; [`snapshot`] reads them for
//! whoever reports metrics.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::engine::CallStats;
use crate::engine::error::FailureKind;

/// The counters. One static instance, [`METRICS`].
#[derive(Debug)]
pub struct Metrics {
    calls: AtomicU64,
    /// Indexed like [`FailureKind::ALL`].
    failures: [AtomicU64; FailureKind::ALL.len()],
    wall_us: AtomicU64,
    instantiate_us: AtomicU64,
    fuel: AtomicU64,
    memory_peak_max: AtomicU64,
    waited_us: AtomicU64,
    live_peak: AtomicU64,
}

/// Counters of every call in this process.
pub static METRICS: Metrics = Metrics::new();

/// A copy of the counters at one moment.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MetricsSnapshot {
    /// Calls finished, successful or not.
    pub calls: u64,
    /// Failed calls by kind, in the order of [`FailureKind::ALL`].
    pub failures: Vec<(FailureKind, u64)>,
    /// Wall time of all calls, instantiation included.
    pub wall: Duration,
    /// Instantiation time of all calls.
    pub instantiate: Duration,
    /// Fuel consumed by all calls (0 unless some component sets `limits.fuel`).
    pub fuel: u64,
    /// Largest linear memory (all memories of one call together) any call reached, bytes.
    pub memory_peak_max: u64,
    /// Time all calls waited for a seat (`engine/runners.rs`), outside their `wall`.
    pub waited: Duration,
    /// Most calls alive at once (each holds a pool slot) in any one engine.
    pub live_peak: u64,
}

impl MetricsSnapshot {
    /// Failed calls of all kinds.
    pub fn failed(&self) -> u64 {
        self.failures.iter().map(|(_, n)| n).sum()
    }

    /// Failed calls of one kind.
    pub fn failures_of(&self, kind: FailureKind) -> u64 {
        self.failures.iter().find(|(k, _)| *k == kind).map_or(0, |(_, n)| *n)
    }
}

fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

impl Metrics {
    const fn new() -> Self {
        Self {
            calls: AtomicU64::new(0),
            failures: [const { AtomicU64::new(0) }; FailureKind::ALL.len()],
            wall_us: AtomicU64::new(0),
            instantiate_us: AtomicU64::new(0),
            fuel: AtomicU64::new(0),
            memory_peak_max: AtomicU64::new(0),
            waited_us: AtomicU64::new(0),
            live_peak: AtomicU64::new(0),
        }
    }

    /// Counts one finished call.
    pub fn record(&self, stats: &CallStats, failure: Option<FailureKind>) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        if let Some(kind) = failure
            && let Some(index) = FailureKind::ALL.iter().position(|k| *k == kind)
        {
            self.failures[index].fetch_add(1, Ordering::Relaxed);
        }
        self.wall_us.fetch_add(micros(stats.wall), Ordering::Relaxed);
        self.instantiate_us.fetch_add(micros(stats.instantiate), Ordering::Relaxed);
        self.waited_us.fetch_add(micros(stats.waited), Ordering::Relaxed);
        if let Some(fuel) = stats.fuel {
            self.fuel.fetch_add(fuel, Ordering::Relaxed);
        }
        self.memory_peak_max.fetch_max(stats.memory_peak as u64, Ordering::Relaxed);
    }

    /// Notes that `live` calls of one engine are alive at once.
    pub fn record_live(&self, live: usize) {
        self.live_peak.fetch_max(live as u64, Ordering::Relaxed);
    }

    /// The counters now (each read on its own; they may be a call apart).
    pub fn snapshot(&self) -> MetricsSnapshot {
        MetricsSnapshot {
            calls: self.calls.load(Ordering::Relaxed),
            failures: FailureKind::ALL
                .iter()
                .zip(&self.failures)
                .map(|(kind, n)| (*kind, n.load(Ordering::Relaxed)))
                .collect(),
            wall: Duration::from_micros(self.wall_us.load(Ordering::Relaxed)),
            instantiate: Duration::from_micros(self.instantiate_us.load(Ordering::Relaxed)),
            fuel: self.fuel.load(Ordering::Relaxed),
            memory_peak_max: self.memory_peak_max.load(Ordering::Relaxed),
            waited: Duration::from_micros(self.waited_us.load(Ordering::Relaxed)),
            live_peak: self.live_peak.load(Ordering::Relaxed),
        }
    }
}

/// The process-wide counters now.
pub fn snapshot() -> MetricsSnapshot {
    METRICS.snapshot()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_calls_failures_and_costs() {
        let metrics = Metrics::new();
        let stats = CallStats {
            instantiate: Duration::from_micros(10),
            wall: Duration::from_micros(100),
            waited: Duration::from_micros(5),
            fuel: Some(7),
            memory_peak: 1 << 20,
        };
        metrics.record(&stats, None);
        metrics.record(&CallStats { memory_peak: 2 << 20, fuel: None, ..stats }, Some(FailureKind::Deadline));
        metrics.record(&stats, Some(FailureKind::Deadline));
        let snap = metrics.snapshot();
        assert_eq!(snap.calls, 3);
        assert_eq!(snap.failed(), 2);
        assert_eq!(snap.failures_of(FailureKind::Deadline), 2);
        assert_eq!(snap.failures_of(FailureKind::Memory), 0);
        assert_eq!(snap.wall, Duration::from_micros(300));
        assert_eq!(snap.instantiate, Duration::from_micros(30));
        assert_eq!(snap.fuel, 14);
        assert_eq!(snap.memory_peak_max, 2 << 20);
        assert_eq!(snap.waited, Duration::from_micros(15));
        metrics.record_live(3);
        metrics.record_live(2);
        assert_eq!(metrics.snapshot().live_peak, 3);
    }
}
