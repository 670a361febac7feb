//! A service's `collector:`: which native source, and its options (tick schedules are
//! validated here, cron included, so a bad schedule fails at load and not at midnight).

use std::path::Path;

use super::component::conf;
use super::de::{from_node, join};
use super::duration::every;
use super::error::{did_you_mean, one_of};
use super::loader::{Loader, field};
use super::model::{CollectorKind, CollectorSpec, HttpLimits, StreamKind, TickSchedule};
use super::yaml::{Key, Node, Value};

const KINDS: &[&str] = &["stdin", "http", "tick", "stream", "exec", "irc", "matrix", "slack", "discord"];

pub(crate) fn collector(ctx: &mut Loader, node: &Node, path: &str, service: &str) -> Option<CollectorSpec> {
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
    let kwargs = field(fields, "conf").map(|n| conf(ctx, n, &join(path, "conf"))).unwrap_or_default();
    let section = Section { node, fields, path, kind: &kind };
    let kind = match kind.as_str() {
        "stdin" => CollectorKind::Stdin,
        "http" => http(ctx, &section)?,
        "tick" => tick(ctx, &section)?,
        "stream" => stream(ctx, &section, service)?,
        _ => exec(ctx, &section)?,
    };
    Some(CollectorSpec { kind, kwargs, line: node.line })
}

/// One `collector:` mapping whose kind is known.
struct Section<'n> {
    node: &'n Node,
    fields: &'n [(Key, Node)],
    path: &'n str,
    kind: &'n str,
}

impl<'n> Section<'n> {
    fn get(&self, key: &str) -> Option<&'n Node> {
        field(self.fields, key)
    }

    /// The value of a key the kind needs, or a problem naming it with an example.
    fn required(&self, ctx: &mut Loader, key: &str, example: &str) -> Option<&'n Node> {
        let found = self.get(key);
        if found.is_none() {
            let kind = self.kind;
            ctx.error(self.node, self.path, format!("a `{kind}` collector needs `{key}:` (e.g. `{key}: {example}`)"));
        }
        found
    }
}

/// `kind: http`: `listen:`, the accept loop's limits, `auth:` (required off loopback), `tls:`.
fn http(ctx: &mut Loader, section: &Section<'_>) -> Option<CollectorKind> {
    let path = section.path;
    let n = section.required(ctx, "listen", "\"127.0.0.1:8080\"")?;
    let p = join(path, "listen");
    let listen = ctx.name(n, &p)?;
    let port_ok = listen.rsplit_once(':').is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
    if !port_ok {
        ctx.error(n, &p, format!("`{listen}` is not HOST:PORT (e.g. `127.0.0.1:8080`)"));
    }
    let mut limits = HttpLimits::default();
    for (key, slot) in [
        ("header_timeout_ms", &mut limits.header_timeout_ms),
        ("body_timeout_ms", &mut limits.body_timeout_ms),
        ("idle_timeout_ms", &mut limits.idle_timeout_ms),
    ] {
        if let Some(n) = section.get(key) {
            *slot = at_least_one(ctx, n, &join(path, key)).unwrap_or(*slot);
        }
    }
    if let Some(n) = section.get("max_connections") {
        let max = at_least_one(ctx, n, &join(path, "max_connections")).unwrap_or(0);
        limits.max_connections = usize::try_from(max).unwrap_or(usize::MAX).max(1);
    }
    // Access control (issue 23): `auth:` and `tls:`, see config/access.rs.
    let auth = section.get("auth").and_then(|a| super::access::auth(ctx, a, &join(path, "auth")));
    if section.get("auth").is_none() && port_ok && !super::access::is_loopback(&listen) {
        let msg = format!(
            "an http collector on `{listen}` is reachable from other machines: give it \
             `auth:` (e.g. `auth: {{bearer: ${{WEBHOOK_TOKEN}}}}`), or write `auth: none` \
             to leave it open on purpose"
        );
        ctx.error(n, &p, msg);
    }
    let tls = section.get("tls").and_then(|t| super::access::tls(ctx, t, &join(path, "tls")));
    Some(CollectorKind::Http { listen, limits, auth, tls })
}

/// `kind: tick`: `every:` or `cron:` (checked by the one cron parser), `at_start:`.
fn tick(ctx: &mut Loader, section: &Section<'_>) -> Option<CollectorKind> {
    let (node, path) = (section.node, section.path);
    let at_start = section.get("at_start").and_then(|n| ctx.boolean(n, &join(path, "at_start"))).unwrap_or(false);
    let schedule = match (section.get("every"), section.get("cron")) {
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
            if let Err(e) = crate::time::cron::Cron::parse(&expr) {
                ctx.error(n, &p, e.to_string());
            }
            TickSchedule::Cron(expr)
        }
    };
    Some(CollectorKind::Tick { schedule, at_start })
}

/// `kind: stream`: `from:` another service of the file, `stream:` (default `taskback`).
fn stream(ctx: &mut Loader, section: &Section<'_>, service: &str) -> Option<CollectorKind> {
    let n = section.required(ctx, "from", "OTHER_SERVICE")?;
    let p = join(section.path, "from");
    let from = ctx.name(n, &p)?;
    if from == service {
        ctx.error(n, &p, format!("a service cannot follow its own stream (`{from}`)"));
    } else if !ctx.services.contains(&from) {
        let hint = did_you_mean(&from, ctx.services.iter().map(String::as_str));
        ctx.error(n, &p, format!("unknown service `{from}`{hint}"));
    }
    let stream = match section.get("stream") {
        Some(s) => from_node::<StreamKind>(s, &join(section.path, "stream"), &mut ctx.problems)?,
        None => StreamKind::Taskback,
    };
    Some(CollectorKind::Stream { service: from, stream })
}

/// `kind: exec`: `command:`, a program path with `/` resolved against the file's directory.
fn exec(ctx: &mut Loader, section: &Section<'_>) -> Option<CollectorKind> {
    let n = section.required(ctx, "command", "[\"python3\", \"bot.py\"]")?;
    let mut argv = command(ctx, n, &join(section.path, "command"))?;
    if argv[0].contains('/') && Path::new(&argv[0]).is_relative() {
        argv[0] = ctx.base.join(&argv[0]).display().to_string();
    }
    Some(CollectorKind::Exec { command: argv, dir: ctx.base.clone() })
}

/// `command: [prog, arg, ...]`, or one string split on whitespace.
fn command(ctx: &mut Loader, node: &Node, path: &str) -> Option<Vec<String>> {
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

/// A whole number of at least 1.
fn at_least_one(ctx: &mut Loader, node: &Node, path: &str) -> Option<u64> {
    match &node.value {
        Value::Int(n) if *n >= 1 => Some(u64::try_from(*n).unwrap_or(u64::MAX)),
        _ => {
            ctx.expected(node, path, "a whole number of at least 1");
            None
        }
    }
}
