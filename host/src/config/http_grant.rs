//! A component's `allow:` list with its outbound HTTP grant and the services whose streams
//! it may read (`{streams: [SERVICE...]}`), and its `secrets:`.
//!
//! `allow: [kv, taskback, {http: ["https://api.example.com", "http://127.0.0.1:*",
//! "https://*.github.com"]}]`. A pattern is a scheme (`http` or `https`), a host (a name,
//! `*.` and a domain for any name under it, or an IP address, `[...]` for IPv6) and an
//! optional port (`:8080`, or `:*` for any; absent means the scheme's default). Nothing
//! else: no path, query, user or bare `*`, so a grant always names whom it lets the
//! component reach. The engine checks every request and every resolved address against it
//! (`engine/http.rs`).

use std::net::IpAddr;

use indexmap::IndexMap;

use super::de::join;
use super::error::{did_you_mean, one_of};
use super::loader::{Loader, field, is_identifier};
use super::model::{Capability, Kwargs};
use super::yaml::{Node, Value};
use crate::vocab::Secret;
use crate::vocab::http::{HostPattern, HttpGrant, HttpPattern, HttpScheme, PortPattern, canonical};

/// The plain capabilities, as written in `allow:`.
const CAPABILITIES: &[(&str, Capability)] = &[("kv", Capability::Kv), ("taskback", Capability::Taskback)];
/// Every kind of `allow:` entry, for messages.
const ENTRY_KINDS: &[&str] = &["kv", "taskback", "{http: [PATTERN...]}", "{streams: [SERVICE...]}"];
/// Most patterns of one grant: a grant is a short list written by hand.
const MAX_PATTERNS: usize = 256;
/// Shortest secret: the host masks secrets in a component's output, which would garble
/// text for a value of a few letters.
const MIN_SECRET: usize = 8;
/// Longest host name (RFC 1035).
const MAX_HOST: usize = 253;

/// Parses `scheme://host[:port]` (a trailing `/` is accepted), or says what is wrong.
pub fn parse_pattern(text: &str) -> Result<HttpPattern, String> {
    let (scheme, rest) =
        text.split_once("://").ok_or("expected `scheme://host[:port]`, e.g. `https://api.example.com`")?;
    let scheme = HttpScheme::parse(scheme).ok_or_else(|| format!("scheme `{scheme}` is not `http` or `https`"))?;
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.contains(['/', '?', '#']) {
        return Err("a pattern names a host, not a path or query: remove everything after the host and port".into());
    }
    if rest.contains('@') {
        return Err("a pattern must not hold a user or password".into());
    }
    let (host, port) = split_port(rest)?;
    let port = match port {
        None => PortPattern::Default,
        Some("*") => PortPattern::Any,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 => PortPattern::Exact(n),
            _ => return Err(format!("port `{p}` is not a number from 1 to 65535 or `*`")),
        },
    };
    Ok(HttpPattern { scheme, host: host_pattern(host)?, port, text: text.to_owned() })
}

/// `host[:port]` and `[v6][:port]`.
fn split_port(rest: &str) -> Result<(&str, Option<&str>), String> {
    if let Some(v6) = rest.strip_prefix('[') {
        let (host, after) = v6.split_once(']').ok_or("`[` without `]` around an IPv6 address")?;
        return match after {
            "" => Ok((host, None)),
            _ => after
                .strip_prefix(':')
                .map(|p| (host, Some(p)))
                .ok_or_else(|| format!("unexpected `{after}` after `]`")),
        };
    }
    Ok(match rest.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (rest, None),
    })
}

fn host_pattern(host: &str) -> Result<HostPattern, String> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(HostPattern::Ip(canonical(ip)));
    }
    let lower = host.to_ascii_lowercase();
    let lower = lower.strip_suffix('.').unwrap_or(&lower);
    let (under, name) = match lower.strip_prefix("*.") {
        Some(domain) => (true, domain),
        None => (false, lower),
    };
    if name.is_empty() || name == "*" {
        return Err("a pattern must name a host (`*` alone would grant the whole network)".into());
    }
    let label_ok = |l: &str| !l.is_empty() && l.len() <= 63 && is_identifier(l, &['-']);
    if name.len() > MAX_HOST || !name.split('.').all(label_ok) {
        return Err(format!("`{host}` is not a host name (letters, digits, `-` and `.`; `*.` only in front)"));
    }
    Ok(if under { HostPattern::Under(name.to_owned()) } else { HostPattern::Name(name.to_owned()) })
}

/// What `allow:` grants: the plain capabilities, the HTTP grant, the streams it may read.
#[derive(Debug, Default)]
pub(crate) struct Allow {
    /// `kv`, `taskback` (duplicates dropped).
    pub caps: Vec<Capability>,
    /// `{http: [...]}`, if any.
    pub http: Option<HttpGrant>,
    /// `{streams: [...]}`: services of the file, each once.
    pub streams: Vec<String>,
}

/// `allow:`: the plain capabilities (duplicates dropped), the HTTP grant, if any, and the
/// services whose streams the component may read.
pub(crate) fn allow(ctx: &mut Loader, node: &Node, path: &str) -> Allow {
    let mut caps = Vec::new();
    let mut http: Option<HttpGrant> = None;
    let mut streams = Vec::new();
    let items = match &node.value {
        Value::Null | Value::Invalid => return Allow::default(),
        Value::Seq(items) => items,
        _ => {
            ctx.expected(node, path, "a sequence");
            return Allow::default();
        }
    };
    for (i, item) in items.iter().enumerate() {
        let p = format!("{path}[{i}]");
        match &item.value {
            Value::Str(s) if s == "http" => {
                ctx.error(item, &p, "`http` needs the hosts it may reach: `{http: [\"https://api.example.com\"]}`");
            }
            Value::Str(s) if s == "streams" => {
                ctx.error(item, &p, "`streams` needs the services it may read: `{streams: [SERVICE]}`");
            }
            Value::Str(s) => match CAPABILITIES.iter().find(|(name, _)| name == s) {
                Some((_, cap)) if !caps.contains(cap) => caps.push(*cap),
                Some(_) => {}
                None => {
                    let hint = did_you_mean(s, ENTRY_KINDS.iter().copied());
                    ctx.error(item, &p, format!("unknown value `{s}`{hint}; expected one of {}", one_of(ENTRY_KINDS)));
                }
            },
            Value::Map(_) => {
                let Some(fields) = ctx.map(item, &p, &["http", "streams"]) else { continue };
                if let Some(list) = field(fields, "http") {
                    let grant = http.get_or_insert_with(HttpGrant::default);
                    patterns(ctx, list, &join(&p, "http"), grant);
                }
                if let Some(list) = field(fields, "streams") {
                    readable(ctx, list, &join(&p, "streams"), &mut streams);
                }
            }
            Value::Invalid => {}
            _ => ctx.expected(item, &p, &format!("one of {}", one_of(ENTRY_KINDS))),
        }
    }
    Allow { caps, http, streams }
}

/// `streams: [SERVICE...]`: each a service of this file (checked here, so a grant never
/// names a stream nobody defines), each once; an empty list grants nothing and is refused.
fn readable(ctx: &mut Loader, node: &Node, path: &str, out: &mut Vec<String>) {
    match &node.value {
        Value::Seq(items) if items.is_empty() => {
            ctx.error(node, path, "an empty list grants nothing: name the services it may read, e.g. [sensors]");
            return;
        }
        Value::Seq(_) => {}
        _ => {
            ctx.expected(node, path, "a list of services, e.g. [sensors]");
            return;
        }
    }
    for (name, item) in ctx.texts(node, path) {
        if !ctx.services.contains(&name) {
            let hint = did_you_mean(&name, ctx.services.iter().map(String::as_str));
            ctx.error(item, path, format!("unknown service `{name}`{hint}"));
        } else if !out.contains(&name) {
            out.push(name);
        }
    }
}

fn patterns(ctx: &mut Loader, node: &Node, path: &str, grant: &mut HttpGrant) {
    if !matches!(node.value, Value::Seq(_)) {
        ctx.expected(node, path, "a list of patterns such as [\"https://api.example.com\"]");
        return;
    }
    for (text, item) in ctx.texts(node, path) {
        match parse_pattern(&text) {
            Ok(_) if grant.patterns.len() >= MAX_PATTERNS => {
                ctx.error(item, path, format!("more than {MAX_PATTERNS} patterns"));
                return;
            }
            Ok(pattern) if !grant.patterns.contains(&pattern) => grant.patterns.push(pattern),
            Ok(_) => {}
            Err(why) => ctx.error(item, path, format!("`{text}`: {why}")),
        }
    }
}

/// `secrets: {NAME: ${ENV}}`: values the component reads through `config.get(NAME)`, never
/// printed. A name must not also be a `conf` key (the component could not tell them apart).
pub(crate) fn secrets(ctx: &mut Loader, node: &Node, path: &str, conf: &Kwargs) -> IndexMap<String, Secret> {
    let mut out = IndexMap::new();
    for (key, value) in ctx.named(node, path) {
        let p = join(path, &key.text);
        if !is_identifier(&key.text, &['_', '-', '.']) {
            ctx.error_at(
                key.line,
                key.column,
                path,
                format!("secret name `{}` must be letters, digits, `_`, `-`, `.`", key.text),
            );
            continue;
        }
        if conf.contains_key(&key.text) {
            ctx.error_at(
                key.line,
                key.column,
                path,
                format!("`{}` is both a conf key and a secret; rename one", key.text),
            );
            continue;
        }
        // Never echo the value: a mistake here must not print the secret. A value of digits
        // (`${PIN}` = 12345678) resolves to a number: its text as written is the secret.
        let text = match &value.value {
            Value::Str(s) => s.clone(),
            Value::Int(_) | Value::Float(_) => value.raw.clone(),
            Value::Invalid => continue,
            Value::Null => {
                ctx.error(value, &p, "is empty (e.g. `NAME: ${NAME}` with NAME set)");
                continue;
            }
            _ => {
                ctx.error(value, &p, "expected a string, e.g. `NAME: \"${NAME}\"`");
                continue;
            }
        };
        if text.len() < MIN_SECRET {
            ctx.error(value, &p, format!("is shorter than {MIN_SECRET} bytes (too short to mask in output)"));
        } else {
            out.insert(key.text.clone(), Secret::new(text));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vocab::http::Destination;

    fn to(scheme: HttpScheme, host: &str, port: u16) -> Destination<'_> {
        Destination { scheme, host, port }
    }

    #[test]
    fn patterns_parse_and_match() {
        use HttpScheme::{Http, Https};
        let api = parse_pattern("https://API.example.com/").unwrap();
        assert!(api.allows(&to(Https, "api.example.com", 443)));
        assert!(!api.allows(&to(Https, "api.example.com", 8443)));
        assert!(!api.allows(&to(Http, "api.example.com", 443)));
        assert!(!api.allows(&to(Https, "evil.api.example.com", 443)));
        let any_port = parse_pattern("http://127.0.0.1:*").unwrap();
        assert!(any_port.allows(&to(Http, "127.0.0.1", 9)));
        assert!(any_port.allows(&to(Http, "::ffff:127.0.0.1", 9)));
        assert!(!any_port.allows(&to(Http, "127.0.0.2", 9)));
        assert!(!any_port.allows(&to(Http, "localhost", 9)));
        let under = parse_pattern("https://*.github.com").unwrap();
        assert!(under.allows(&to(Https, "api.github.com", 443)));
        assert!(!under.allows(&to(Https, "github.com", 443)));
        assert!(!under.allows(&to(Https, "evilgithub.com", 443)));
        let v6 = parse_pattern("http://[::1]:8080").unwrap();
        assert!(v6.allows(&to(Http, "::1", 8080)));
    }

    #[test]
    fn bad_patterns_say_why() {
        for (text, why) in [
            ("api.example.com", "expected `scheme://host[:port]`"),
            ("ftp://x.org", "scheme `ftp`"),
            ("https://x.org/path", "not a path"),
            ("https://u:p@x.org", "user or password"),
            ("https://*", "must name a host"),
            ("https://x.org:0", "port `0`"),
            ("https://x.org:http", "port `http`"),
            ("https://a.*.org", "is not a host name"),
            ("http://[::1", "without `]`"),
        ] {
            let err = parse_pattern(text).unwrap_err();
            assert!(err.contains(why), "{text}: {err}");
        }
    }
}
