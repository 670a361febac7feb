//! Durations in the compose file: `250ms`, `5s`, `2m`, `1h`, `1d`, or a number of seconds.

use std::time::Duration;

use super::loader::Loader;
use super::yaml::{Node, Value};

/// `every: 5s` (units ms, s, m, h, d) or a whole number of seconds; must be positive.
pub(crate) fn every(ctx: &mut Loader, node: &Node, path: &str) -> Option<Duration> {
    let parsed = match &node.value {
        Value::Int(n) => u64::try_from(*n).ok().map(Duration::from_secs),
        Value::Str(s) => parse_duration(s),
        _ => {
            ctx.expected(node, path, "a duration such as `250ms`, `5s`, `2m`, `1h`, `1d` or a number of seconds");
            return None;
        }
    };
    match parsed {
        Some(d) if !d.is_zero() => Some(d),
        Some(_) => {
            ctx.error(node, path, "must be longer than zero");
            None
        }
        None => {
            let msg = format!("`{}` is not a duration (use e.g. `250ms`, `5s`, `2m`, `1h`, `1d`)", node.raw);
            ctx.error(node, path, msg);
            None
        }
    }
}

/// `N` followed by a unit (`ms`, `s`, `m`, `h`, `d`); `None` when malformed or too long.
pub(crate) fn parse_duration(s: &str) -> Option<Duration> {
    let split = s.find(|c: char| !c.is_ascii_digit())?;
    let (digits, unit) = s.split_at(split);
    let n: u64 = digits.parse().ok()?;
    let ms_per = match unit {
        "ms" => 1,
        "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return None,
    };
    n.checked_mul(ms_per).map(Duration::from_millis)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
        assert_eq!(parse_duration("1d"), Some(Duration::from_secs(86_400)));
        assert_eq!(parse_duration("5"), None);
        assert_eq!(parse_duration("s"), None);
        assert_eq!(parse_duration("1.5s"), None);
        assert_eq!(parse_duration("99999999999999999999s"), None);
    }
}
