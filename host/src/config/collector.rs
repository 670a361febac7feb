//! A service's `collector:`: which native source, and its options (tick schedules are
//! validated here, cron included, so a bad schedule fails at load and not at midnight).

use std::path::Path;
use std::time::Duration;

use super::component::conf;
use super::ctx::{Ctx, field};
use super::de::{from_node, join};
use super::error::{did_you_mean, one_of};
use super::model::{CollectorKind, CollectorSpec, HttpLimits, StreamKind, TickSchedule};
use super::yaml::{Node, Value};

const KINDS: &[&str] = &["stdin", "http", "tick", "stream", "exec", "irc", "matrix", "slack", "discord"];

pub(crate) fn collector(ctx: &mut Ctx, node: &Node, path: &str, service: &str) -> Option<CollectorSpec> {
    let kind_node = match &node.value {
        Value::Map(_) | Value::Null => node.get("kind"),
        _ => {
            ctx.expected(node, path, "a mapping with a `kind:`");
            return None;
        }
    };
    let Some(kind_node) = kind_node else {
        ctx.error(node, path, format!("missing `kind:` (one of {})", one_of(KINDS)));
        return None;
    };
    let kind_path = join(path, "kind");
    let kind = ctx.string(kind_node, &kind_path)?;
    // Chat platforms (issue 16): their keys and settings live in config/chat.rs.
    if let Some(keys) = super::chat::keys(&kind) {
        let allowed: Vec<&str> = ["kind", "conf"].iter().copied().chain(keys).collect();
        let fields = ctx.map(node, path, &allowed)?;
        let kwargs = field(fields, "conf").map(|n| conf(ctx, n, &join(path, "conf"))).unwrap_or_default();
        let spec = super::chat::chat(ctx, node, path, &kind, fields)?;
        return Some(CollectorSpec { kind: CollectorKind::Chat(Box::new(spec)), kwargs, line: node.line });
    }
    let extra: &[&str] = match kind.as_str() {
        "stdin" => &[],
        "http" => {
            &["listen", "header_timeout_ms", "body_timeout_ms", "idle_timeout_ms", "max_connections", "auth", "tls"]
        }
        "tick" => &["every", "cron", "at_start"],
        "stream" => &["from", "stream"],
        "exec" => &["command"],
        _ => {
            let hint = did_you_mean(&kind, KINDS.iter().copied());
            let msg = format!("unknown collector kind `{kind}`{hint}; expected one of {}", one_of(KINDS));
            ctx.error(kind_node, &kind_path, msg);
            return None;
        }
    };
    let allowed: Vec<&str> = ["kind", "conf"].iter().chain(extra).copied().collect();
    let fields = ctx.map(node, path, &allowed)?;
    let get = |k: &str| field(fields, k);
    let kwargs = get("conf").map(|n| conf(ctx, n, &join(path, "conf"))).unwrap_or_default();
    let required = |ctx: &mut Ctx, key: &str, example: &str| {
        let found = get(key);
        if found.is_none() {
            ctx.error(node, path, format!("a `{kind}` collector needs `{key}:` (e.g. `{key}: {example}`)"));
        }
        found
    };

    let kind = match kind.as_str() {
        "stdin" => CollectorKind::Stdin,
        "http" => {
            let n = required(ctx, "listen", "\"127.0.0.1:8080\"")?;
            let p = join(path, "listen");
            let listen = ctx.name(n, &p)?;
            let port_ok =
                listen.rsplit_once(':').is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
            if !port_ok {
                ctx.error(n, &p, format!("`{listen}` is not HOST:PORT (e.g. `127.0.0.1:8080`)"));
            }
            let mut limits = HttpLimits::default();
            for (key, slot) in [
                ("header_timeout_ms", &mut limits.header_timeout_ms),
                ("body_timeout_ms", &mut limits.body_timeout_ms),
                ("idle_timeout_ms", &mut limits.idle_timeout_ms),
            ] {
                if let Some(n) = get(key) {
                    *slot = at_least_one(ctx, n, &join(path, key)).unwrap_or(*slot);
                }
            }
            if let Some(n) = get("max_connections") {
                let max = at_least_one(ctx, n, &join(path, "max_connections")).unwrap_or(0);
                limits.max_connections = usize::try_from(max).unwrap_or(usize::MAX).max(1);
            }
            // Access control (issue 23): `auth:` and `tls:`, see config/access.rs.
            let auth = get("auth").and_then(|a| super::access::auth(ctx, a, &join(path, "auth")));
            if get("auth").is_none() && port_ok && !super::access::is_loopback(&listen) {
                let msg = format!(
                    "an http collector on `{listen}` is reachable from other machines: give it \
                     `auth:` (e.g. `auth: {{bearer: ${{WEBHOOK_TOKEN}}}}`), or write `auth: none` \
                     to leave it open on purpose"
                );
                ctx.error(n, &p, msg);
            }
            let tls = get("tls").and_then(|t| super::access::tls(ctx, t, &join(path, "tls")));
            CollectorKind::Http { listen, limits, auth, tls }
        }
        "tick" => {
            let at_start = get("at_start").and_then(|n| ctx.boolean(n, &join(path, "at_start"))).unwrap_or(false);
            let schedule = match (get("every"), get("cron")) {
                (Some(_), Some(_)) => {
                    ctx.error(node, path, "give either `every:` or `cron:`, not both");
                    return None;
                }
                (None, None) => {
                    ctx.error(node, path, "a `tick` collector needs `every:` (e.g. `every: 5s`) or `cron:`");
                    return None;
                }
                (Some(n), None) => TickSchedule::Every(every(ctx, n, &join(path, "every"))?),
                (None, Some(n)) => {
                    let p = join(path, "cron");
                    let expr = ctx.name(n, &p)?;
                    if let Err(e) = check_cron(&expr) {
                        ctx.error(n, &p, e);
                    }
                    TickSchedule::Cron(expr)
                }
            };
            CollectorKind::Tick { schedule, at_start }
        }
        "stream" => {
            let n = required(ctx, "from", "OTHER_SERVICE")?;
            let p = join(path, "from");
            let from = ctx.name(n, &p)?;
            if from == service {
                ctx.error(n, &p, format!("a service cannot follow its own stream (`{from}`)"));
            } else if !ctx.services.contains(&from) {
                let hint = did_you_mean(&from, ctx.services.iter().map(String::as_str));
                ctx.error(n, &p, format!("unknown service `{from}`{hint}"));
            }
            let stream = match get("stream") {
                Some(s) => from_node::<StreamKind>(s, &join(path, "stream"), &mut ctx.problems)?,
                None => StreamKind::Taskback,
            };
            CollectorKind::Stream { service: from, stream }
        }
        _ => {
            let n = required(ctx, "command", "[\"python3\", \"bot.py\"]")?;
            let mut argv = command(ctx, n, &join(path, "command"))?;
            if argv[0].contains('/') && Path::new(&argv[0]).is_relative() {
                argv[0] = ctx.base.join(&argv[0]).display().to_string();
            }
            CollectorKind::Exec { command: argv, dir: ctx.base.clone() }
        }
    };
    Some(CollectorSpec { kind, kwargs, line: node.line })
}

/// `command: [prog, arg, ...]`, or one string split on whitespace.
fn command(ctx: &mut Ctx, node: &Node, path: &str) -> Option<Vec<String>> {
    let argv: Vec<String> = match &node.value {
        Value::Str(s) => s.split_whitespace().map(str::to_owned).collect(),
        Value::Seq(items) => {
            let mut argv = Vec::new();
            for (i, item) in items.iter().enumerate() {
                argv.push(ctx.string(item, &format!("{path}[{i}]"))?);
            }
            argv
        }
        _ => {
            ctx.expected(node, path, "a list of strings or a string");
            return None;
        }
    };
    if argv.first().is_none_or(String::is_empty) {
        ctx.error(node, path, "must name a program to run");
        return None;
    }
    Some(argv)
}

/// `every: 5s` (units ms, s, m, h, d) or a whole number of seconds; must be positive.
/// A whole number of at least 1.
fn at_least_one(ctx: &mut Ctx, node: &Node, path: &str) -> Option<u64> {
    match &node.value {
        Value::Int(n) if *n >= 1 => Some(u64::try_from(*n).unwrap_or(u64::MAX)),
        _ => {
            ctx.expected(node, path, "a whole number of at least 1");
            None
        }
    }
}

pub(crate) fn every(ctx: &mut Ctx, node: &Node, path: &str) -> Option<Duration> {
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

/// Field names and ranges of a five-field cron expression.
const CRON_FIELDS: [(&str, u32, u32); 5] =
    [("minute", 0, 59), ("hour", 0, 23), ("day of month", 1, 31), ("month", 1, 12), ("day of week", 0, 7)];

/// Checks a standard five-field cron expression: each field a comma list of `*`, `N` or
/// `N-M`, each optionally with `/STEP`; numbers only (no names, no `@daily`).
pub(crate) fn check_cron(expr: &str) -> Result<(), String> {
    let fields: Vec<&str> = expr.split_whitespace().collect();
    if fields.len() != 5 {
        return Err(format!(
            "`{expr}` has {} fields; a cron expression has 5 (minute hour day-of-month month day-of-week)",
            fields.len()
        ));
    }
    for (text, (name, min, max)) in fields.iter().zip(CRON_FIELDS) {
        for part in text.split(',') {
            cron_part(part, min, max).map_err(|e| format!("cron {name} field `{text}`: {e}"))?;
        }
    }
    Ok(())
}

fn cron_part(part: &str, min: u32, max: u32) -> Result<(), String> {
    let (range, step) = match part.split_once('/') {
        Some((r, s)) => (r, Some(s)),
        None => (part, None),
    };
    if let Some(step) = step {
        match step.parse::<u32>() {
            Ok(s) if s >= 1 => {}
            _ => return Err(format!("step `{step}` must be a positive number")),
        }
    }
    if range == "*" {
        return Ok(());
    }
    let number = |t: &str| match t.parse::<u32>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        Ok(n) => Err(format!("{n} is out of range {min}-{max}")),
        Err(_) => Err(format!("`{t}` is not a number (expected `*`, N, N-M, with optional /STEP)")),
    };
    match range.split_once('-') {
        Some((a, b)) => {
            let (a, b) = (number(a)?, number(b)?);
            if a > b {
                return Err(format!("range {a}-{b} is backwards"));
            }
        }
        None => {
            number(range)?;
        }
    }
    Ok(())
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

    #[test]
    fn cron() {
        assert!(check_cron("0 0 * * *").is_ok());
        assert!(check_cron("*/15 9-17 1,15 1-12/2 0-7").is_ok());
        assert!(check_cron("0 0 * *").is_err());
        assert!(check_cron("60 0 * * *").is_err());
        assert!(check_cron("0 0 0 * *").is_err());
        assert!(check_cron("*/0 * * * *").is_err());
        assert!(check_cron("5-1 * * * *").is_err());
        assert!(check_cron("0 0 * JAN *").is_err());
    }
}
