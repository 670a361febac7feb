//! Fire times of a `tick` collector: a fixed interval, or a cron expression evaluated in UTC
//! ([`crate::time::cron`]). Times are milliseconds since the Unix epoch; the next fire time
//! is always computed from the schedule (never "now + interval"), so ticks do not drift.

use crate::config::TickSchedule;

use crate::time::cron::{Cron, CronError, SEARCH_YEARS};

/// Why a schedule cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    /// The expression does not parse (the compose loader refuses such a file first).
    #[error(transparent)]
    Cron(#[from] CronError),
    /// The expression parses but names no date that exists (`0 0 31 2 *`).
    #[error("cron `{0}` never fires (no such date in the next {SEARCH_YEARS} years)")]
    Never(String),
    /// `every:` below one millisecond.
    #[error("interval must be at least 1 ms")]
    ZeroInterval,
}

/// A parsed schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Schedule {
    /// Every `period` ms, at multiples of the period since the Unix epoch (`every: 5s`
    /// fires at :00, :05, :10, ... whenever the collector started).
    Every {
        /// The period in milliseconds, at least 1.
        period_ms: i64,
    },
    /// On a cron schedule, in UTC.
    Cron(Cron),
}

impl Schedule {
    /// The schedule of a `tick` collector's `every:` or `cron:`.
    pub fn new(spec: &TickSchedule) -> Result<Self, ScheduleError> {
        match spec {
            TickSchedule::Every(period) => {
                let period_ms = i64::try_from(period.as_millis()).unwrap_or(i64::MAX);
                if period_ms < 1 {
                    return Err(ScheduleError::ZeroInterval);
                }
                Ok(Self::Every { period_ms })
            }
            TickSchedule::Cron(expr) => {
                let cron = Cron::parse(expr)?;
                // An expression such as `0 0 31 2 *` parses but never fires.
                if cron.next_after(0).is_none() {
                    return Err(ScheduleError::Never(expr.clone()));
                }
                Ok(Self::Cron(cron))
            }
        }
    }

    /// The first fire time strictly after `t_ms`; `None` when there is none within the
    /// search horizon (a cron day that does not exist).
    pub fn next_after(&self, t_ms: i64) -> Option<i64> {
        match self {
            Self::Every { period_ms } => t_ms.div_euclid(*period_ms).checked_add(1)?.checked_mul(*period_ms),
            Self::Cron(cron) => cron.next_after(t_ms),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_are_aligned_and_strictly_after() {
        let every = Schedule::Every { period_ms: 5000 };
        assert_eq!(every.next_after(0), Some(5000));
        assert_eq!(every.next_after(4999), Some(5000));
        assert_eq!(every.next_after(5000), Some(10_000));
        // From the previous fire time, not from "now": no drift however late the work ran.
        let mut t = 1_000;
        for _ in 0..1000 {
            t = every.next_after(t).unwrap();
        }
        assert_eq!(t, 5_000_000);
    }

    #[test]
    fn impossible_schedules() {
        let never = TickSchedule::Cron("0 0 31 2 *".into());
        assert_eq!(Schedule::new(&never), Err(ScheduleError::Never("0 0 31 2 *".into())));
        assert!(Schedule::new(&TickSchedule::Cron("0 0 30 4,6 *".into())).is_ok());
        assert!(matches!(Schedule::new(&TickSchedule::Cron("* * *".into())), Err(ScheduleError::Cron(_))));
    }
}
