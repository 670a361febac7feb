//! Fire times of a `tick` collector: a fixed interval, or a five-field cron expression
//! evaluated in UTC. Times are milliseconds since the Unix epoch; the next fire time is
//! always computed from the schedule (never "now + interval"), so ticks do not drift.
//!
//! Cron follows Vixie cron: fields `minute hour day-of-month month day-of-week`, each a
//! comma list of `*`, `N`, `N-M`, optionally `/STEP` (`N/STEP` runs from N to the field's
//! maximum); day of week 0-7 with both 0 and 7 meaning Sunday. When both day fields are
//! restricted (neither starts with `*`), a day matches if *either* matches.

use crate::config::TickSchedule;

const MINUTE_MS: i64 = 60_000;
const DAY_MINUTES: i64 = 1440;
/// How far ahead a cron expression is searched before it is declared never to fire
/// (covers leap days: `0 0 29 2 *` fires within 8 years).
const SEARCH_YEARS: i64 = 8;

/// Why a schedule cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    #[error("cron `{expr}`: {reason}")]
    Cron { expr: String, reason: String },
    #[error("cron `{0}` never fires (no such date in the next {SEARCH_YEARS} years)")]
    Never(String),
    #[error("interval must be at least 1 ms")]
    ZeroInterval,
}

/// A parsed schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Schedule {
    /// Every `period` ms, at multiples of the period since the Unix epoch (`every: 5s`
    /// fires at :00, :05, :10, ... whenever the collector started).
    Every {
        period_ms: i64,
    },
    Cron(Cron),
}

/// A parsed cron expression: one bit per allowed value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cron {
    expr: String,
    minutes: u64,
    hours: u64,
    days: u64,
    months: u64,
    /// Bit 0 is Sunday (7 is folded into 0).
    weekdays: u64,
    /// Whether the day-of-month field starts with `*` (then the two day fields are ANDed).
    days_star: bool,
    weekdays_star: bool,
}

impl Schedule {
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

impl Cron {
    pub fn parse(expr: &str) -> Result<Self, ScheduleError> {
        let err = |reason: String| ScheduleError::Cron { expr: expr.to_owned(), reason };
        let fields: Vec<&str> = expr.split_whitespace().collect();
        let [minute, hour, dom, month, dow] = fields.as_slice() else {
            return Err(err(format!(
                "has {} fields; expected 5 (minute hour day-of-month month day-of-week)",
                fields.len()
            )));
        };
        let mut weekdays = bits(dow, 0, 7).map_err(|e| err(format!("day of week: {e}")))?;
        if weekdays & (1 << 7) != 0 {
            weekdays = (weekdays | 1) & !(1 << 7);
        }
        Ok(Self {
            expr: expr.to_owned(),
            minutes: bits(minute, 0, 59).map_err(|e| err(format!("minute: {e}")))?,
            hours: bits(hour, 0, 23).map_err(|e| err(format!("hour: {e}")))?,
            days: bits(dom, 1, 31).map_err(|e| err(format!("day of month: {e}")))?,
            months: bits(month, 1, 12).map_err(|e| err(format!("month: {e}")))?,
            weekdays,
            days_star: dom.starts_with('*'),
            weekdays_star: dow.starts_with('*'),
        })
    }

    fn day_matches(&self, day: u32, weekday: u32) -> bool {
        let dom = has(self.days, day);
        let dow = has(self.weekdays, weekday);
        if self.days_star || self.weekdays_star { dom && dow } else { dom || dow }
    }

    /// The first matching minute strictly after `t_ms`.
    pub fn next_after(&self, t_ms: i64) -> Option<i64> {
        let mut minute = t_ms.div_euclid(MINUTE_MS).checked_add(1)?;
        let horizon = minute.checked_add(SEARCH_YEARS * 366 * DAY_MINUTES)?;
        while minute <= horizon {
            let days = minute.div_euclid(DAY_MINUTES);
            let of_day = minute.rem_euclid(DAY_MINUTES);
            let (year, month, day) = civil_from_days(days);
            if !has(self.months, month) {
                let (y, m) = if month == 12 { (year + 1, 1) } else { (year, month + 1) };
                minute = days_from_civil(y, m, 1) * DAY_MINUTES;
                continue;
            }
            if !self.day_matches(day, weekday(days)) {
                minute = (days + 1) * DAY_MINUTES;
                continue;
            }
            let hour = (of_day / 60) as u32;
            if !has(self.hours, hour) {
                minute = days * DAY_MINUTES + i64::from(hour + 1) * 60;
                continue;
            }
            if !has(self.minutes, (of_day % 60) as u32) {
                minute += 1;
                continue;
            }
            return minute.checked_mul(MINUTE_MS);
        }
        None
    }
}

fn has(set: u64, value: u32) -> bool {
    value < 64 && set & (1 << value) != 0
}

/// The values one cron field allows, as bits.
fn bits(field: &str, min: u32, max: u32) -> Result<u64, String> {
    let mut set = 0u64;
    for part in field.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((range, step)) => match step.parse::<u32>() {
                Ok(step) if step >= 1 => (range, step),
                _ => return Err(format!("step `{step}` must be a positive number")),
            },
            None => (part, 1),
        };
        let number = |text: &str| match text.parse::<u32>() {
            Ok(n) if (min..=max).contains(&n) => Ok(n),
            Ok(n) => Err(format!("{n} is out of range {min}-{max}")),
            Err(_) => Err(format!("`{text}` is not a number")),
        };
        let (from, to) = match range {
            "*" => (min, max),
            _ => match range.split_once('-') {
                Some((a, b)) => (number(a)?, number(b)?),
                None if part.contains('/') => (number(range)?, max),
                None => {
                    let n = number(range)?;
                    (n, n)
                }
            },
        };
        if from > to {
            return Err(format!("range {from}-{to} is backwards"));
        }
        for value in (from..=to).step_by(step as usize) {
            set |= 1 << value;
        }
    }
    Ok(set)
}

/// Day of the week of a day counted from 1970-01-01 (a Thursday); 0 is Sunday.
fn weekday(days: i64) -> u32 {
    (days + 4).rem_euclid(7) as u32
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
pub(crate) fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day counted from 1970-01-01: (year, month 1-12, day 1-31).
pub(crate) fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = (if mp < 10 { mp + 3 } else { mp - 9 }) as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// `t_ms` as an RFC 3339 UTC time: `2024-02-29T12:00:00Z`, with `.mmm` when the
/// milliseconds are not zero.
pub fn rfc3339(t_ms: i64) -> String {
    let (days, ms_of_day) = (t_ms.div_euclid(86_400_000), t_ms.rem_euclid(86_400_000));
    let (year, month, day) = civil_from_days(days);
    let (h, m, s, ms) = (ms_of_day / 3_600_000, ms_of_day / 60_000 % 60, ms_of_day / 1000 % 60, ms_of_day % 1000);
    if ms == 0 {
        format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}Z")
    } else {
        format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}.{ms:03}Z")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Milliseconds of a UTC time.
    fn at(year: i64, month: u32, day: u32, hour: i64, minute: i64) -> i64 {
        (days_from_civil(year, month, day) * DAY_MINUTES + hour * 60 + minute) * MINUTE_MS
    }

    fn next(expr: &str, from: i64) -> String {
        let cron = Cron::parse(expr).unwrap();
        rfc3339(cron.next_after(from).unwrap())
    }

    #[test]
    fn dates_round_trip() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        for days in (-800_000..800_000).step_by(997) {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days, "{y}-{m}-{d}");
        }
        assert_eq!(weekday(0), 4, "1970-01-01 was a Thursday");
        assert_eq!(weekday(days_from_civil(2024, 2, 29)), 4);
        assert_eq!(weekday(days_from_civil(2023, 12, 31)), 0);
    }

    #[test]
    fn formats_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(at(2024, 2, 29, 23, 59) + 59_250), "2024-02-29T23:59:59.250Z");
        assert_eq!(rfc3339(-1000), "1969-12-31T23:59:59Z");
    }

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
    fn cron_basic_fields() {
        let t = at(2024, 1, 15, 10, 7);
        assert_eq!(next("* * * * *", t), "2024-01-15T10:08:00Z");
        assert_eq!(next("* * * * *", t + 30_000), "2024-01-15T10:08:00Z");
        assert_eq!(next("*/15 * * * *", t), "2024-01-15T10:15:00Z");
        assert_eq!(next("0 9-17 * * *", t), "2024-01-15T11:00:00Z");
        assert_eq!(next("0 0 * * *", t), "2024-01-16T00:00:00Z");
        assert_eq!(next("5,10 3 * * *", t), "2024-01-16T03:05:00Z");
        assert_eq!(next("30 2/6 * * *", t), "2024-01-15T14:30:00Z");
        assert_eq!(next("0 0 1 1 *", t), "2025-01-01T00:00:00Z");
    }

    #[test]
    fn cron_month_ends_and_leap_years() {
        assert_eq!(next("0 0 31 * *", at(2024, 4, 1, 0, 0)), "2024-05-31T00:00:00Z");
        assert_eq!(next("0 12 30 * *", at(2024, 1, 30, 12, 0)), "2024-03-30T12:00:00Z");
        assert_eq!(next("0 0 29 2 *", at(2024, 3, 1, 0, 0)), "2028-02-29T00:00:00Z");
        assert_eq!(next("0 0 29 2 *", at(2099, 1, 1, 0, 0)), "2104-02-29T00:00:00Z", "2100 is not a leap year");
        assert_eq!(next("59 23 31 12 *", at(2023, 12, 31, 23, 59)), "2024-12-31T23:59:00Z");
        assert_eq!(next("0 0 1 * *", at(2023, 12, 31, 23, 59)), "2024-01-01T00:00:00Z");
    }

    #[test]
    fn cron_day_of_week_and_the_or_rule() {
        // 2024-01-15 is a Monday.
        let monday = at(2024, 1, 15, 10, 0);
        assert_eq!(next("0 0 * * 0", monday), "2024-01-21T00:00:00Z");
        assert_eq!(next("0 0 * * 7", monday), "2024-01-21T00:00:00Z", "7 is Sunday too");
        assert_eq!(next("0 0 * * 5-7", monday), "2024-01-19T00:00:00Z");
        // Both day fields restricted: the 20th OR any Wednesday, whichever comes first.
        assert_eq!(next("0 0 20 * 3", monday), "2024-01-17T00:00:00Z");
        assert_eq!(next("0 0 16 * 3", monday), "2024-01-16T00:00:00Z");
        // A field starting with `*` is unrestricted: AND (odd days that are Fridays).
        assert_eq!(next("0 0 */2 * 5", monday), "2024-01-19T00:00:00Z");
        assert_eq!(next("0 0 */2 * 6", monday), "2024-01-27T00:00:00Z", "the 20th is even");
    }

    #[test]
    fn impossible_and_invalid_expressions() {
        let never = TickSchedule::Cron("0 0 31 2 *".into());
        assert_eq!(Schedule::new(&never), Err(ScheduleError::Never("0 0 31 2 *".into())));
        assert!(Schedule::new(&TickSchedule::Cron("0 0 30 4,6 *".into())).is_ok());
        for bad in ["* * * *", "60 * * * *", "* * 0 * *", "*/0 * * * *", "5-1 * * * *", "* * * JAN *", "a/2 * * * *"] {
            assert!(Cron::parse(bad).is_err(), "{bad} should not parse");
        }
    }
}
