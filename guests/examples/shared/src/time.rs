//! UTC time for the examples: Unix seconds in, Unix seconds out. Calendar conversion is
//! Howard Hinnant's `days_from_civil` / `civil_from_days`, exact for the proleptic
//! Gregorian calendar.

pub const MINUTE: u64 = 60;
pub const HOUR: u64 = 3600;
pub const DAY: u64 = 86_400;

/// Seconds since the Unix epoch, from the WASI wall clock.
pub fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// `(year, month 1..=12, day 1..=31)` of a day counted from 1970-01-01.
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// The day number (from 1970-01-01) of a civil date.
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `(year, month, day)` of the UTC date at `t`.
pub fn date(t: u64) -> (i64, u32, u32) {
    civil_from_days((t / DAY) as i64)
}

/// Days in `month` (February has 29: dates here are year-agnostic).
pub fn days_in_month(month: u32) -> u32 {
    match month {
        2 => 29,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// A duration such as `30m`, `1h`, `90s`, `3d` or `1h30m`, in seconds.
pub fn parse_duration(text: &str) -> Result<u64, String> {
    let bad = || format!("cannot read {text:?} as a duration (e.g. 30m, 1h, 1h30m, 45s, 3d)");
    if text.is_empty() {
        return Err(bad());
    }
    let mut total: u64 = 0;
    let mut number = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => MINUTE,
            'h' => HOUR,
            'd' => DAY,
            _ => return Err(bad()),
        };
        let n: u64 = number.parse().map_err(|_| bad())?;
        total = n.checked_mul(unit).and_then(|s| total.checked_add(s)).ok_or_else(bad)?;
        number.clear();
    }
    if !number.is_empty() {
        return Err(bad());
    }
    Ok(total)
}

/// A point in time after `now`: `HH:MM` or `HH:MM:SS` (UTC; a time of day already past,
/// or exactly now, means tomorrow), or `+DURATION` from now (`+30s`, `+10m`, `+1h`).
pub fn parse_time(text: &str, now: u64) -> Result<u64, String> {
    if let Some(rest) = text.strip_prefix('+') {
        return Ok(now + parse_duration(rest)?);
    }
    let secs = parse_time_of_day(text)?;
    let today = now - now % DAY + secs;
    Ok(if today > now { today } else { today + DAY })
}

/// `HH:MM` or `HH:MM:SS` as seconds since midnight.
pub fn parse_time_of_day(text: &str) -> Result<u64, String> {
    let bad = || format!("cannot read {text:?} as a time (e.g. 10:00, 09:30:15, +10m)");
    let parts: Vec<&str> = text.split(':').collect();
    if !(2..=3).contains(&parts.len()) || parts.iter().any(|p| p.is_empty() || p.len() > 2) {
        return Err(bad());
    }
    let nums: Vec<u64> = parts.iter().map(|p| p.parse().map_err(|_| bad())).collect::<Result<_, _>>()?;
    let (h, m, s) = (nums[0], nums[1], nums.get(2).copied().unwrap_or(0));
    if h > 23 || m > 59 || s > 59 {
        return Err(bad());
    }
    Ok(h * HOUR + m * MINUTE + s)
}

/// `HH:MM`, or `HH:MM:SS` when the seconds are not zero.
pub fn clock(t: u64) -> String {
    let s = t % DAY;
    let (h, m, sec) = (s / HOUR, s % HOUR / MINUTE, s % MINUTE);
    if sec == 0 {
        format!("{h:02}:{m:02}")
    } else {
        format!("{h:02}:{m:02}:{sec:02}")
    }
}

/// `t` for a person reading at `now`: `10:00 UTC`, `10:00 UTC tomorrow`, or with the
/// date when further away (`10:00 UTC on 2025-03-04`).
pub fn when(t: u64, now: u64) -> String {
    format!("{} UTC{}", clock(t), day_suffix(t, now))
}

/// `""` for today, ` tomorrow`, ` yesterday`, or ` on YYYY-MM-DD`.
fn day_suffix(t: u64, now: u64) -> String {
    match (t / DAY) as i64 - (now / DAY) as i64 {
        0 => String::new(),
        1 => " tomorrow".to_owned(),
        -1 => " yesterday".to_owned(),
        _ => {
            let (y, m, d) = date(t);
            format!(" on {y:04}-{m:02}-{d:02}")
        }
    }
}

/// A window `start..end` for a person reading at `now`: `10:00-10:30 UTC` (with the day
/// as in [`when`] when it is not today); across midnight, `23:00 UTC to 01:00 UTC tomorrow`.
pub fn window(start: u64, end: u64, now: u64) -> String {
    let same_day = start / DAY == end / DAY || end == start - start % DAY + DAY;
    if same_day {
        format!("{}-{} UTC{}", clock(start), clock(end), day_suffix(start, now))
    } else {
        format!("{} to {}", when(start, now), when(end, now))
    }
}

/// A number of seconds for a person: `30m`, `1h30m`, `45s`, `3d`.
pub fn duration(secs: u64) -> String {
    if secs == 0 {
        return "0s".to_owned();
    }
    let parts = [(secs / DAY, "d"), (secs % DAY / HOUR, "h"), (secs % HOUR / MINUTE, "m"), (secs % MINUTE, "s")];
    parts.iter().filter(|(n, _)| *n > 0).map(|(n, unit)| format!("{n}{unit}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2024-05-17 09:45:00 UTC.
    const NOW: u64 = 1_715_939_100;

    #[test]
    fn civil_dates_round_trip() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(date(NOW), (2024, 5, 17));
        assert_eq!(civil_from_days(days_from_civil(2000, 2, 29)), (2000, 2, 29));
        for d in [-1000, -1, 0, 59, 60, 11_000, 19_860, 50_000] {
            let (y, m, day) = civil_from_days(d);
            assert_eq!(days_from_civil(y, m, day), d);
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30m"), Ok(1800));
        assert_eq!(parse_duration("1h30m"), Ok(5400));
        assert_eq!(parse_duration("45s"), Ok(45));
        assert_eq!(parse_duration("3d"), Ok(3 * DAY));
        for bad in ["", "30", "m", "1x", "-5m", "99999999999999999999h"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert_eq!(duration(5400), "1h30m");
        assert_eq!(duration(45), "45s");
        assert_eq!(duration(2 * DAY + 60), "2d1m");
    }

    #[test]
    fn times_of_day_and_relative_times() {
        let midnight = NOW - NOW % DAY;
        assert_eq!(parse_time("10:00", NOW), Ok(midnight + 10 * HOUR));
        assert_eq!(parse_time("09:30", NOW), Ok(midnight + DAY + 9 * HOUR + 30 * MINUTE), "past: tomorrow");
        assert_eq!(parse_time("09:45", NOW), Ok(midnight + DAY + 9 * HOUR + 45 * MINUTE), "now: tomorrow");
        assert_eq!(parse_time("09:45:01", NOW), Ok(NOW + 1));
        assert_eq!(parse_time("+30s", NOW), Ok(NOW + 30));
        assert_eq!(parse_time("+1h", NOW), Ok(NOW + HOUR));
        for bad in ["10", "24:00", "10:60", "1:2:3:4", "+", "+5", "ten"] {
            assert!(parse_time(bad, NOW).is_err(), "{bad}");
        }
    }

    #[test]
    fn formatting() {
        let midnight = NOW - NOW % DAY;
        assert_eq!(clock(midnight + 10 * HOUR), "10:00");
        assert_eq!(clock(NOW + 5), "09:45:05");
        assert_eq!(when(midnight + 10 * HOUR, NOW), "10:00 UTC");
        assert_eq!(when(midnight + DAY + 10 * HOUR, NOW), "10:00 UTC tomorrow");
        assert_eq!(when(midnight + 3 * DAY, NOW), "00:00 UTC on 2024-05-20");
        assert_eq!(window(midnight + 10 * HOUR, midnight + 10 * HOUR + 1800, NOW), "10:00-10:30 UTC");
        assert_eq!(window(midnight + DAY + 10 * HOUR, midnight + DAY + 11 * HOUR, NOW), "10:00-11:00 UTC tomorrow");
        assert_eq!(window(midnight + 23 * HOUR, midnight + DAY, NOW), "23:00-00:00 UTC");
        assert_eq!(window(midnight + 23 * HOUR, midnight + DAY + HOUR, NOW), "23:00 UTC to 01:00 UTC tomorrow");
    }
}
