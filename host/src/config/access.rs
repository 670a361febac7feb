//! Who may talk to a listener: an http collector's `auth:` and `tls:` (and, later, the
//! metrics listener's), and the rule that a listener reachable from other machines must
//! say how it authenticates callers.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::de::join;
use super::duration::parse_duration;
use super::error::one_of;
use super::loader::{Loader, field};
use super::yaml::{Node, Value};

/// A secret from the compose file (normally `${ENV}`): never shown by `Debug` or in errors.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself, for the one place that checks it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// How callers of an http listener prove who they are (`auth:`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpAuth {
    /// `auth: none`: open to anyone who can reach it, on purpose.
    Open,
    /// `auth: {bearer: TOKEN}`: `Authorization: Bearer TOKEN`.
    Bearer {
        /// The token.
        token: Secret,
    },
    /// `auth: {hmac_sha256: {secret: S, header: H}}`: GitHub-style `sha256=HEX`, the
    /// HMAC-SHA256 of the raw body, in header `H` (default `X-Hub-Signature-256`).
    HmacSha256 {
        /// The shared secret.
        secret: Secret,
        /// The header holding the signature.
        header: String,
    },
    /// `auth: {slack: {secret: S, window: 5m}}`: Slack-style `v0=HEX` in `X-Slack-Signature`,
    /// the HMAC-SHA256 of `v0:TIMESTAMP:BODY`, with `X-Slack-Request-Timestamp` no further
    /// than `window` from now; a signature already accepted within the window is a replay.
    Slack {
        /// The signing secret.
        secret: Secret,
        /// How far the request's timestamp may be from now.
        window: Duration,
    },
}

/// Default header of `hmac_sha256` signatures (GitHub's).
pub const HUB_SIGNATURE_HEADER: &str = "X-Hub-Signature-256";
/// Default replay window of Slack-style signatures (Slack's own advice).
pub const SLACK_WINDOW: Duration = Duration::from_secs(300);

/// `tls: {cert: FILE, key: FILE}`: PEM files, resolved against the compose file's directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// Certificate chain, leaf first.
    pub cert: PathBuf,
    /// Private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

const AUTH_KINDS: &[&str] = &["none", "bearer", "hmac_sha256", "slack"];

/// `auth:` of a listener.
pub(crate) fn auth(ctx: &mut Loader, node: &Node, path: &str) -> Option<HttpAuth> {
    if let Value::Str(s) = &node.value {
        if s == "none" {
            return Some(HttpAuth::Open);
        }
        let msg =
            format!("`{s}` is not an auth; expected `none` or a mapping with one of {}", one_of(&AUTH_KINDS[1..]));
        ctx.error(node, path, msg);
        return None;
    }
    let fields = ctx.map(node, path, &AUTH_KINDS[1..])?;
    let [(key, value)] = fields else {
        let msg = format!("give exactly one of {} (or `auth: none`)", one_of(&AUTH_KINDS[1..]));
        ctx.error(node, path, msg);
        return None;
    };
    let p = join(path, &key.text);
    match key.text.as_str() {
        "bearer" => Some(HttpAuth::Bearer { token: secret(ctx, value, &p)? }),
        "slack" => {
            let fields = ctx.map(value, &p, &["secret", "window"])?;
            let secret = required_secret(ctx, value, fields, &p)?;
            let window = match field(fields, "window") {
                Some(n) => window(ctx, n, &join(&p, "window"))?,
                None => SLACK_WINDOW,
            };
            Some(HttpAuth::Slack { secret, window })
        }
        "hmac_sha256" => {
            let fields = ctx.map(value, &p, &["secret", "header"])?;
            let secret = required_secret(ctx, value, fields, &p)?;
            let header = match field(fields, "header") {
                Some(n) => header_name(ctx, n, &join(&p, "header"))?,
                None => HUB_SIGNATURE_HEADER.to_owned(),
            };
            Some(HttpAuth::HmacSha256 { secret, header })
        }
        _ => None, // an unknown key, reported by `ctx.map`
    }
}

fn required_secret(ctx: &mut Loader, node: &Node, fields: &[(super::yaml::Key, Node)], path: &str) -> Option<Secret> {
    match field(fields, "secret") {
        Some(n) => secret(ctx, n, &join(path, "secret")),
        None => {
            ctx.error(node, path, "missing `secret:` (e.g. `secret: ${WEBHOOK_SECRET}`)");
            None
        }
    }
}

/// A secret: any scalar as text (a numeric token stays text), at least 16 bytes. Its value
/// never appears in a message.
fn secret(ctx: &mut Loader, node: &Node, path: &str) -> Option<Secret> {
    let text = match &node.value {
        Value::Str(_) | Value::Int(_) | Value::Float(_) | Value::Bool(_) => node.raw.clone(),
        Value::Invalid => return None,
        _ => {
            ctx.error(node, path, "expected a secret (a string, e.g. `${WEBHOOK_TOKEN}`)");
            return None;
        }
    };
    if text.len() < 16 {
        ctx.error(node, path, format!("a secret of {} bytes is too short to guess-proof; use at least 16", text.len()));
        return None;
    }
    Some(Secret(text))
}

fn header_name(ctx: &mut Loader, node: &Node, path: &str) -> Option<String> {
    let name = ctx.name(node, path)?;
    if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
        ctx.error(node, path, format!("`{name}` is not an HTTP header name"));
        return None;
    }
    Some(name)
}

fn window(ctx: &mut Loader, node: &Node, path: &str) -> Option<Duration> {
    let parsed = match &node.value {
        Value::Int(n) => u64::try_from(*n).ok().map(Duration::from_secs),
        Value::Str(s) => parse_duration(s),
        _ => None,
    };
    match parsed {
        Some(d) if !d.is_zero() && d <= Duration::from_secs(3600) => Some(d),
        _ => {
            ctx.error(node, path, "expected a duration between 1s and 1h (e.g. `5m`)");
            None
        }
    }
}

/// `tls: {cert: FILE, key: FILE}`; both files must exist (their content is checked when
/// the listener starts, and again on every reload).
pub(crate) fn tls(ctx: &mut Loader, node: &Node, path: &str) -> Option<TlsFiles> {
    let fields = ctx.map(node, path, &["cert", "key"])?;
    let file = |ctx: &mut Loader, key: &str| {
        let Some(n) = field(fields, key) else {
            ctx.error(node, path, format!("missing `{key}:` (a PEM file)"));
            return None;
        };
        let p = join(path, key);
        let text = ctx.name(n, &p)?;
        let file = ctx.base.join(&text);
        if !file.is_file() {
            ctx.error(n, &p, format!("`{text}`: no such file (relative to the compose file's directory)"));
            return None;
        }
        Some(file)
    };
    let cert = file(ctx, "cert");
    let key = file(ctx, "key");
    Some(TlsFiles { cert: cert?, key: key? })
}

/// Whether `HOST` of a `HOST:PORT` only accepts connections from this machine.
pub fn is_loopback(listen: &str) -> bool {
    let host = listen.rsplit_once(':').map_or(listen, |(host, _)| host);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Where `--metrics ADDR` listens: `HOST:PORT`, or a bare port on loopback.
pub fn parse_addr(text: &str) -> Result<SocketAddr, String> {
    if let Ok(port) = text.parse::<u16>() {
        return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    text.parse::<SocketAddr>()
        .map_err(|_| format!("metrics address `{text}` is not HOST:PORT or PORT (e.g. `127.0.0.1:9464`)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_addresses() {
        for yes in ["127.0.0.1:80", "127.1.2.3:0", "localhost:8080", "[::1]:80", "LOCALHOST:1"] {
            assert!(is_loopback(yes), "{yes}");
        }
        for no in ["0.0.0.0:80", "[::]:80", "10.0.0.1:80", "example.com:80", "192.168.1.2:1", ":80"] {
            assert!(!is_loopback(no), "{no}");
        }
    }

    #[test]
    fn secrets_do_not_debug_print() {
        let auth = HttpAuth::Bearer { token: Secret::new("s3cret-token-value") };
        assert!(!format!("{auth:?}").contains("s3cret"));
    }
}
