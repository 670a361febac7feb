//! Reading `coffee at 10:00 for 30m until 09:30` into a [`Want`].

use example_shared::time::{self, DAY, HOUR, MINUTE};

/// Default length of the activity when `for` is not given.
pub const DEFAULT_DURATION: u64 = 30 * MINUTE;
/// Bounds on `for`.
pub const MIN_DURATION: u64 = MINUTE;
pub const MAX_DURATION: u64 = 12 * HOUR;
/// How far ahead `at` may be.
pub const MAX_AHEAD: u64 = 7 * DAY;
/// Longest activity name, in characters.
pub const MAX_ACTIVITY: usize = 40;

/// What a user wants: an activity in a window, and until when to look for company.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Want {
    /// Lowercase, single spaces (`board games`).
    pub activity: String,
    /// Unix seconds, UTC.
    pub start: u64,
    pub end: u64,
    /// Looking for company stops here (at most `start`).
    pub deadline: u64,
}

/// Parses the words after `iwant`: `ACTIVITY at TIME [for DURATION] [until TIME]`, with
/// the keywords in any order after the activity. TIME is `HH:MM`, `HH:MM:SS` (UTC; already
/// past means tomorrow), `+10m` or `now`; a deadline after the start, or already past, is
/// refused. Without `until` the deadline is the start, or the end when the start is now.
pub fn parse_want(words: &[String], now: u64) -> Result<Want, String> {
    let keyword = |w: &str| matches!(w, "at" | "for" | "until");
    let split = words.iter().position(|w| keyword(&w.to_lowercase())).unwrap_or(words.len());
    let activity = words[..split].join(" ").to_lowercase();
    if activity.is_empty() {
        return Err("what do you want to do? e.g. iwant coffee at 10:00 for 30m until 09:30".to_owned());
    }
    if activity.chars().count() > MAX_ACTIVITY || activity.chars().any(char::is_control) {
        return Err(format!("an activity is a few words, at most {MAX_ACTIVITY} characters"));
    }
    let (mut at, mut dur, mut until) = (None, None, None);
    let mut rest = words[split..].iter();
    while let Some(word) = rest.next() {
        let word = word.to_lowercase();
        let slot = match word.as_str() {
            "at" => &mut at,
            "for" => &mut dur,
            "until" => &mut until,
            _ => return Err(format!("unexpected {word:?}: after the activity come `at`, `for` and `until`")),
        };
        if slot.is_some() {
            return Err(format!("`{word}` is given twice"));
        }
        let value = rest.next().ok_or_else(|| format!("`{word}` needs a value"))?;
        *slot = Some(value.clone());
    }
    let Some(at) = at else {
        return Err(format!("when? e.g. iwant {activity} at 10:00 (or at +15m)"));
    };
    // `now` is `+0m`.
    let read = |text: &str| if text.eq_ignore_ascii_case("now") { Ok(now) } else { time::parse_time(text, now) };
    let start = read(&at)?;
    if start > now + MAX_AHEAD {
        return Err(format!("{at} is too far ahead (at most {})", time::duration(MAX_AHEAD)));
    }
    let duration = match &dur {
        Some(text) => time::parse_duration(text)?,
        None => DEFAULT_DURATION,
    };
    if !(MIN_DURATION..=MAX_DURATION).contains(&duration) {
        return Err(format!(
            "`for {}` is out of range: between {} and {}",
            dur.unwrap_or_default(),
            time::duration(MIN_DURATION),
            time::duration(MAX_DURATION)
        ));
    }
    let deadline = match &until {
        Some(text) => read(text)?,
        // Without `until`, looking for company stops at the start, or, for a start that is
        // now, at the end: the default deadline is never already past.
        None if start > now => start,
        None => start + duration,
    };
    if until.is_some() && deadline > start {
        let until = until.unwrap_or_default();
        // `until 09:30` at 09:45 for a 10:00 start was meant for today, which is over.
        if !until.starts_with('+') && (deadline - DAY) / DAY == now / DAY && deadline - DAY <= start {
            return Err(format!("the deadline {until} has already passed today"));
        }
        return Err(format!(
            "the deadline ({}) is after the start ({}): looking for company has to end by then",
            time::when(deadline, now),
            time::when(start, now)
        ));
    }
    if deadline <= now {
        return Err(format!("the deadline {} is already past", time::when(deadline, now)));
    }
    Ok(Want { activity, start, end: start + duration, deadline })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2024-05-17 09:00:00 UTC.
    const NOW: u64 = 1_715_936_400;
    const MIDNIGHT: u64 = NOW - NOW % DAY;

    fn words(text: &str) -> Vec<String> {
        text.split_whitespace().map(str::to_owned).collect()
    }

    fn want(text: &str) -> Result<Want, String> {
        parse_want(&words(text), NOW)
    }

    #[test]
    fn the_issue_example() {
        assert_eq!(
            want("coffee at 10:00 for 30m until 09:30"),
            Ok(Want {
                activity: "coffee".to_owned(),
                start: MIDNIGHT + 10 * HOUR,
                end: MIDNIGHT + 10 * HOUR + 30 * MINUTE,
                deadline: MIDNIGHT + 9 * HOUR + 30 * MINUTE,
            })
        );
    }

    #[test]
    fn defaults_order_and_relative_times() {
        let w = want("Board  Games until +10m at +1h").unwrap();
        assert_eq!(w.activity, "board games");
        assert_eq!((w.start, w.end, w.deadline), (NOW + HOUR, NOW + HOUR + DEFAULT_DURATION, NOW + 600));
        let w = want("lunch at 12:00:30 for 1h30m").unwrap();
        assert_eq!((w.start, w.end - w.start, w.deadline), (MIDNIGHT + 12 * HOUR + 30, 5400, w.start));
        // A time of day already past is tomorrow: deadline and start both move.
        let w = want("run at 08:00 until 07:00").unwrap();
        assert_eq!((w.start, w.deadline), (MIDNIGHT + DAY + 8 * HOUR, MIDNIGHT + DAY + 7 * HOUR));
    }

    #[test]
    fn now_has_a_deadline_ahead() {
        for text in ["coffee at now", "coffee at +0m", "coffee at NOW for 1h"] {
            let w = want(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(w.start, NOW, "{text}");
            assert_eq!(w.deadline, w.end, "{text}: looking for company lasts the window");
            assert!(w.deadline > NOW);
        }
        let w = want("coffee at +1m").unwrap();
        assert_eq!(w.deadline, w.start);
        // An explicit deadline of now is still refused.
        assert!(want("coffee at +10m until now").unwrap_err().contains("already past"));
    }

    #[test]
    fn friendly_refusals() {
        let refused = |text: &str, needle: &str| {
            let err = want(text).expect_err(text);
            assert!(err.contains(needle), "{text}: {err}");
        };
        refused("", "what do you want");
        refused("at 10:00", "what do you want");
        refused("coffee", "when?");
        refused("coffee for 30m", "when?");
        refused("coffee at 10:00 until 11:00", "after the start");
        refused("coffee at +1h until +2h", "after the start");
        refused("coffee at 10:00 until 08:30", "already passed today");
        refused("coffee at +10m until +0s", "already past");
        refused("coffee at 25:00", "cannot read");
        refused("coffee at 10:00 for 5", "duration");
        refused("coffee at 10:00 for 30s", "out of range");
        refused("coffee at 10:00 at 11:00", "twice");
        refused("coffee at", "needs a value");
        refused("coffee at 10:00 please", "unexpected");
        refused("coffee at +8d", "too far ahead");
        refused(&format!("{} at 10:00", "x".repeat(MAX_ACTIVITY + 1)), "at most");
    }
}
