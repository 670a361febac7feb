//! A histogram of fixed buckets kept in atomics: observing is a short scan of the bounds
//! and three relaxed atomic adds, no lock. Exposed through `prometheus-client`'s
//! [`EncodeMetric`], and readable here for the dashboard's percentiles.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::{MetricType, TypedMetric};

/// Bucket bounds of durations, seconds.
pub const SECONDS: &[f64] =
    &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];
/// Bucket bounds of memory sizes, bytes (64 KiB to 4 GiB, times 4).
pub const BYTES: &[f64] = &[
    65_536.0,
    262_144.0,
    1_048_576.0,
    4_194_304.0,
    16_777_216.0,
    67_108_864.0,
    268_435_456.0,
    1_073_741_824.0,
    4_294_967_296.0,
];

struct Inner {
    bounds: &'static [f64],
    /// `scale` units per unit of the observed value: the sum is kept as an integer.
    scale: f64,
    /// One per bound plus the overflow bucket; not cumulative.
    counts: Box<[AtomicU64]>,
    sum: AtomicU64,
}

/// Cheap to clone: clones share the counts.
#[derive(Clone)]
pub struct Hist(Arc<Inner>);

impl std::fmt::Debug for Hist {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hist").field("count", &self.count()).finish()
    }
}

/// A copy of a histogram's buckets (not cumulative, overflow last).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Counts(pub Vec<u64>);

impl Hist {
    /// Durations in seconds; the sum is kept in microseconds.
    pub fn seconds() -> Self {
        Self::new(SECONDS, 1e6)
    }

    /// Sizes in bytes.
    pub fn bytes() -> Self {
        Self::new(BYTES, 1.0)
    }

    fn new(bounds: &'static [f64], scale: f64) -> Self {
        let counts = (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect();
        Self(Arc::new(Inner { bounds, scale, counts, sum: AtomicU64::new(0) }))
    }

    /// Counts one observation.
    pub fn observe(&self, value: f64) {
        let inner = &*self.0;
        let index = inner.bounds.iter().position(|bound| value <= *bound).unwrap_or(inner.bounds.len());
        if let Some(count) = inner.counts.get(index) {
            count.fetch_add(1, Ordering::Relaxed);
        }
        // Saturating float-to-int cast; negative and NaN values add nothing.
        inner.sum.fetch_add((value * inner.scale) as u64, Ordering::Relaxed);
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.0.counts.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }

    /// The count per bucket.
    pub fn counts(&self) -> Counts {
        Counts(self.0.counts.iter().map(|c| c.load(Ordering::Relaxed)).collect())
    }

    /// The buckets' upper bounds.
    pub fn bounds(&self) -> &'static [f64] {
        self.0.bounds
    }
}

impl Counts {
    /// Bucket by bucket `self - earlier`.
    pub fn since(&self, earlier: &Counts) -> Counts {
        Counts(
            self.0.iter().enumerate().map(|(i, n)| n.saturating_sub(earlier.0.get(i).copied().unwrap_or(0))).collect(),
        )
    }

    /// The `q` quantile (0..=1), as the upper bound of the bucket it falls in (the last
    /// bound for the overflow bucket); `None` without observations.
    pub fn quantile(&self, bounds: &[f64], q: f64) -> Option<f64> {
        let total: u64 = self.0.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = (q * total as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, n) in self.0.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return bounds.get(i).or(bounds.last()).copied();
            }
        }
        bounds.last().copied()
    }
}

impl TypedMetric for Hist {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for Hist {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let inner = &*self.0;
        // Per-bucket counts: the encoder makes them cumulative.
        let mut total = 0;
        let mut buckets = Vec::with_capacity(inner.counts.len());
        for (i, count) in inner.counts.iter().enumerate() {
            let count = count.load(Ordering::Relaxed);
            total += count;
            buckets.push((inner.bounds.get(i).copied().unwrap_or(f64::INFINITY), count));
        }
        let sum = inner.sum.load(Ordering::Relaxed) as f64 / inner.scale;
        encoder.encode_histogram::<NoLabelSet>(sum, total, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observes_into_buckets_and_reads_quantiles() {
        let h = Hist::seconds();
        for _ in 0..90 {
            h.observe(0.0007);
        }
        for _ in 0..10 {
            h.observe(0.2);
        }
        h.observe(100.0);
        assert_eq!(h.count(), 101);
        let counts = h.counts();
        assert_eq!(counts.0[1], 90);
        assert_eq!(counts.0[8], 10);
        assert_eq!(counts.0[SECONDS.len()], 1);
        assert_eq!(counts.quantile(SECONDS, 0.5), Some(0.001));
        assert_eq!(counts.quantile(SECONDS, 0.95), Some(0.25));
        assert_eq!(counts.quantile(SECONDS, 1.0), Some(30.0));
        let later = {
            h.observe(3.0);
            h.counts()
        };
        let delta = later.since(&counts);
        assert_eq!(delta.quantile(SECONDS, 0.5), Some(5.0));
        assert_eq!(Counts::default().quantile(SECONDS, 0.5), None);
    }
}
