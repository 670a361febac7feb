//! Five-field cron expressions evaluated in UTC: the one parser, used by the compose
//! loader to check `cron:` and by the `tick` collector to compute fire times (milliseconds
//! since the Unix epoch).
//!
//! Cron follows Vixie cron: fields `minute hour day-of-month month day-of-week`, each a
//! comma list of `*`, `N`, `N-M`, optionally `/STEP` (`N/STEP` runs from N to the field's
//! maximum); day of week 0-7 with both 0 and 7 meaning Sunday. When both day fields are
//! restricted (neither starts with `*`), a day matches if *either* matches.

use super::{DAY_MINUTES, MINUTE_MS, civil_from_days, days_from_civil, weekday};

/// How far ahead a cron expression is searched before it is declared never to fire
/// (covers leap days: `0 0 29 2 *` fires within 8 years).
pub const SEARCH_YEARS: i64 = 8;

/// Field names and ranges of a five-field cron expression, in order.
const FIELDS: [(&str, u32, u32); 5] =
    [("minute", 0, 59), ("hour", 0, 23), ("day of month", 1, 31), ("month", 1, 12), ("day of week", 0, 7)];

/// Why a cron expression does not parse; the text names the field and the part at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CronError(String);

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

impl Cron {
    /// Parses `minute hour day-of-month month day-of-week`: each field a comma list of `*`,
    /// `N` or `N-M`, each optionally with `/STEP`; numbers only (no names, no `@daily`).
    pub fn parse(expr: &str) -> Result<Self, CronError> {
        let fields: Vec<&str> = expr.split_whitespace().collect();
        let [_, _, dom, _, dow] = fields.as_slice() else {
            return Err(CronError(format!(
                "`{expr}` has {} fields; a cron expression has 5 (minute hour day-of-month month day-of-week)",
                fields.len()
            )));
        };
        let mut sets = [0u64; 5];
        for (set, (text, (name, min, max))) in sets.iter_mut().zip(fields.iter().zip(FIELDS)) {
            *set = bits(text, min, max).map_err(|e| CronError(format!("cron {name} field `{text}`: {e}")))?;
        }
        let [minutes, hours, days, months, mut weekdays] = sets;
        if weekdays & (1 << 7) != 0 {
            weekdays = (weekdays | 1) & !(1 << 7);
        }
        Ok(Self {
            expr: expr.to_owned(),
            minutes,
            hours,
            days,
            months,
            weekdays,
            days_star: dom.starts_with('*'),
            weekdays_star: dow.starts_with('*'),
        })
    }

    /// The expression as written.
    pub fn expr(&self) -> &str {
        &self.expr
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
            Err(_) => Err(format!("`{text}` is not a number (expected `*`, N, N-M, with optional /STEP)")),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::rfc3339;

    /// Milliseconds of a UTC time.
    fn at(year: i64, month: u32, day: u32, hour: i64, minute: i64) -> i64 {
        (days_from_civil(year, month, day) * DAY_MINUTES + hour * 60 + minute) * MINUTE_MS
    }

    fn next(expr: &str, from: i64) -> String {
        let cron = Cron::parse(expr).unwrap();
        rfc3339(cron.next_after(from).unwrap())
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
        assert_eq!(Cron::parse("0 0 31 2 *").map(|c| c.next_after(0)), Ok(None));
        assert!(Cron::parse("0 0 30 4,6 *").is_ok_and(|c| c.next_after(0).is_some()));
        for bad in ["* * * *", "60 * * * *", "* * 0 * *", "*/0 * * * *", "5-1 * * * *", "* * * JAN *", "a/2 * * * *"] {
            assert!(Cron::parse(bad).is_err(), "{bad} should not parse");
        }
    }

    /// The texts the compose loader shows (`tests/compose/broken/cron.expected`).
    #[test]
    fn errors_name_the_field_and_part() {
        let err = |expr: &str| Cron::parse(expr).err().map(|e| e.to_string()).unwrap_or_default();
        assert_eq!(
            err("0 0 * *"),
            "`0 0 * *` has 4 fields; a cron expression has 5 (minute hour day-of-month month day-of-week)"
        );
        assert_eq!(err("0 24 * * *"), "cron hour field `24`: 24 is out of range 0-23");
        assert_eq!(err("*/0 * * * *"), "cron minute field `*/0`: step `0` must be a positive number");
        assert_eq!(err("0 0 10-2 * *"), "cron day of month field `10-2`: range 10-2 is backwards");
        // The first field at fault is named, in field order.
        assert_eq!(err("60 0 * * 8"), "cron minute field `60`: 60 is out of range 0-59");
    }
}
