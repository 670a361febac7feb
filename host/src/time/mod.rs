//! Time, in one place: the clock (milliseconds since the Unix epoch), civil dates and
//! RFC 3339 text in UTC, retry backoff, and cron expressions (`cron.rs`).
//!
//! Hand-written rather than a date crate: the date code is Howard Hinnant's civil-date
//! algorithm (total over every `i64` day, so no input can make it panic), and only UTC is
//! ever shown; `docs/design-notes.md` says why.

pub mod cron;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Milliseconds in a minute.
pub(crate) const MINUTE_MS: i64 = 60_000;
/// Minutes in a day.
pub(crate) const DAY_MINUTES: i64 = 1440;
/// Milliseconds in a day.
const DAY_MS: u64 = 86_400_000;

/// Milliseconds since the Unix epoch; 0 when the clock is set before it.
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Milliseconds since the Unix epoch, negative when the clock is set before it (a schedule
/// still computes its next fire time).
pub fn unix_ms() -> i64 {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(before) => -i64::try_from(before.duration().as_millis()).unwrap_or(i64::MAX),
    }
}

/// Exponential backoff: `base` doubled per failure after the first (the first waits
/// `base`), capped at `cap`.
pub fn backoff(base: Duration, failures: u32, cap: Duration) -> Duration {
    base.saturating_mul(1u32 << failures.saturating_sub(1).min(16)).min(cap)
}

/// Day of the week of a day counted from 1970-01-01 (a Thursday); 0 is Sunday.
pub(crate) fn weekday(days: i64) -> u32 {
    (days + 4).rem_euclid(7) as u32
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day counted from 1970-01-01: (year, month 1-12, day 1-31).
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
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
    let (date, [h, m, s], ms) = parts(t_ms);
    if ms == 0 { format!("{date}T{h:02}:{m:02}:{s:02}Z") } else { format!("{date}T{h:02}:{m:02}:{s:02}.{ms:03}Z") }
}

/// `ms` since the Unix epoch as RFC 3339 UTC, always with milliseconds:
/// `2026-11-23T13:31:51.250Z` (for tables, where the width should not vary).
pub fn rfc3339_millis(ms: u64) -> String {
    // Whole days first: any u64 of milliseconds has a day count that fits an i64.
    let days = i64::try_from(ms / DAY_MS).unwrap_or(i64::MAX);
    let (date, [h, m, s], ms) = parts_of_day(days, (ms % DAY_MS) as i64);
    format!("{date}T{h:02}:{m:02}:{s:02}.{ms:03}Z")
}

/// The date, hour-minute-second and milliseconds of `t_ms`.
fn parts(t_ms: i64) -> (String, [i64; 3], i64) {
    parts_of_day(t_ms.div_euclid(DAY_MS as i64), t_ms.rem_euclid(DAY_MS as i64))
}

fn parts_of_day(days: i64, ms_of_day: i64) -> (String, [i64; 3], i64) {
    let (year, month, day) = civil_from_days(days);
    let hms = [ms_of_day / 3_600_000, ms_of_day / 60_000 % 60, ms_of_day / 1000 % 60];
    (format!("{year:04}-{month:02}-{day:02}"), hms, ms_of_day % 1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Milliseconds of a UTC time.
    fn at(year: i64, month: u32, day: u32, hour: i64, minute: i64) -> i64 {
        (days_from_civil(year, month, day) * DAY_MINUTES + hour * 60 + minute) * MINUTE_MS
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
    fn formats_rfc3339_with_millis() {
        assert_eq!(rfc3339_millis(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_millis(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(rfc3339_millis(1_795_440_711_000), "2026-11-23T13:31:51.000Z");
        // A stored value can be anything; it is still formatted, never a panic.
        assert!(rfc3339_millis(u64::MAX).ends_with(".615Z"));
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let base = Duration::from_millis(100);
        let cap = Duration::from_secs(1);
        assert_eq!(backoff(base, 1, cap), Duration::from_millis(100));
        assert_eq!(backoff(base, 2, cap), Duration::from_millis(200));
        assert_eq!(backoff(base, 3, cap), Duration::from_millis(400));
        assert_eq!(backoff(base, 30, cap), cap);
    }
}
