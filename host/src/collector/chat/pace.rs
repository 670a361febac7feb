//! Outbound pacing: a token bucket (as GCRA: one "theoretical arrival time") that lets
//! `burst` messages go at once and then one per `every`, plus a hold the platform sets when
//! it is told to slow down (IRC flood, an HTTP 429 with `retry_after`). Replies wait for it;
//! none is dropped.

use std::time::Duration;

use tokio::time::Instant;

use crate::config::Pace;

#[derive(Debug)]
pub(crate) struct Pacer {
    every: Duration,
    /// How far ahead of now the schedule may run: `(burst - 1) * every`.
    tolerance: Duration,
    /// When the next message would be due if messages went out at exactly one per `every`.
    due: Instant,
    /// Nothing goes out before this (the platform asked us to wait).
    hold: Instant,
}

impl Pacer {
    pub(crate) fn new(pace: Pace) -> Self {
        let now = Instant::now();
        Pacer {
            every: pace.every,
            tolerance: pace.every.saturating_mul(pace.burst.saturating_sub(1)),
            due: now,
            hold: now,
        }
    }

    /// When the next message may go, seen at `now`.
    pub(crate) fn ready_at(&self, now: Instant) -> Instant {
        let due = self.due.max(now);
        let by_rate = due.checked_sub(self.tolerance).unwrap_or(now).max(now);
        by_rate.max(self.hold)
    }

    /// Counts one message sent at `now`.
    pub(crate) fn take(&mut self, now: Instant) {
        self.due = self.due.max(now) + self.every;
    }

    /// Sends nothing before `until`.
    pub(crate) fn hold_until(&mut self, until: Instant) {
        self.hold = self.hold.max(until);
    }

    /// Waits until a message may go, then counts it. Cancel-safe: a wait cut short counts
    /// nothing.
    pub(crate) async fn wait(&mut self) {
        loop {
            let now = Instant::now();
            let at = self.ready_at(now);
            if at <= now {
                self.take(now);
                return;
            }
            tokio::time::sleep_until(at).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bursts_then_paces() {
        let every = Duration::from_secs(2);
        let mut pacer = Pacer::new(Pace { burst: 3, every });
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(pacer.ready_at(t0), t0, "the burst goes at once");
            pacer.take(t0);
        }
        assert_eq!(pacer.ready_at(t0), t0 + every, "the fourth waits one interval");
        pacer.take(t0 + every);
        assert_eq!(pacer.ready_at(t0 + every), t0 + every * 2);
        // A quiet spell refills the bucket.
        let later = t0 + every * 20;
        for _ in 0..3 {
            assert_eq!(pacer.ready_at(later), later);
            pacer.take(later);
        }
        assert!(pacer.ready_at(later) > later);
    }

    #[test]
    fn holds_when_told() {
        let mut pacer = Pacer::new(Pace { burst: 5, every: Duration::from_millis(10) });
        let now = Instant::now();
        pacer.hold_until(now + Duration::from_secs(3));
        assert_eq!(pacer.ready_at(now), now + Duration::from_secs(3));
        pacer.hold_until(now + Duration::from_secs(1));
        assert_eq!(pacer.ready_at(now), now + Duration::from_secs(3), "a shorter hold does not shorten it");
    }
}
