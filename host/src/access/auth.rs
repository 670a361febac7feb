//! Checking a request against a listener's `auth:`: a bearer token or an HMAC-SHA256
//! signature of the raw body (GitHub style, or Slack style with a timestamp and a replay
//! window). Every comparison runs in constant time; a refusal says nothing to the caller
//! beyond `401`, is counted, and is logged once per burst, never with the secret.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hmac::{Hmac, Mac};
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

use crate::config::{HttpAuth, Secret};

/// Refused requests of every listener of the process, for whatever reports metrics.
static REFUSED_TOTAL: AtomicU64 = AtomicU64::new(0);
/// Refusals within this long of a logged one are only counted; the next log line says how
/// many there were.
const BURST: Duration = Duration::from_secs(10);
/// Slack-style signatures remembered to refuse replays (the oldest are forgotten first).
const REPLAY_MEMORY: usize = 65_536;

/// Requests refused by any listener since the process started.
pub fn refused_total() -> u64 {
    REFUSED_TOTAL.load(Ordering::Relaxed)
}

/// Why a request was refused: for the log only, never for the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No credentials (no `Authorization`, no signature header).
    Missing,
    /// A bearer token that is not the one configured.
    WrongToken,
    /// A signature that is malformed or does not match the body.
    BadSignature,
    /// A Slack-style timestamp missing, malformed or outside the window.
    Stale,
    /// A Slack-style signature already accepted within the window.
    Replayed,
}

impl Refusal {
    /// Short name for the log.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Missing => "missing credentials",
            Refusal::WrongToken => "wrong token",
            Refusal::BadSignature => "bad signature",
            Refusal::Stale => "timestamp outside the window",
            Refusal::Replayed => "replayed signature",
        }
    }
}

/// The gate of one listener: its `auth:`, the replay memory, and the refusal counter.
pub struct Gate {
    /// Names the listener in logs (e.g. `service "hook" http collector`).
    what: String,
    auth: HttpAuth,
    /// SHA-256 of the bearer token, so comparing takes the same time whatever the length.
    token_digest: Option<[u8; 32]>,
    /// Largest body read before a signature is checked.
    body_limit: usize,
    refused: AtomicU64,
    burst: Mutex<Burst>,
    seen: Mutex<Seen>,
}

#[derive(Default)]
struct Burst {
    logged_at: Option<Instant>,
    unlogged: u64,
}

/// Accepted Slack-style signatures and when they expire.
#[derive(Default)]
struct Seen {
    until: HashMap<[u8; 32], u64>,
    order: VecDeque<[u8; 32]>,
}

impl Gate {
    /// A gate for `auth`; `body_limit` bounds what a signature check buffers.
    pub fn new(what: impl Into<String>, auth: HttpAuth, body_limit: usize) -> Arc<Self> {
        let token_digest = match &auth {
            HttpAuth::Bearer { token } => Some(Sha256::digest(token.expose().as_bytes()).into()),
            _ => None,
        };
        Arc::new(Self {
            what: what.into(),
            auth,
            token_digest,
            body_limit,
            refused: AtomicU64::new(0),
            burst: Mutex::default(),
            seen: Mutex::default(),
        })
    }

    /// Requests this gate refused.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Whether the check needs the body (signatures do, tokens do not).
    pub fn needs_body(&self) -> bool {
        matches!(self.auth, HttpAuth::HmacSha256 { .. } | HttpAuth::Slack { .. })
    }

    /// Checks one request's headers and raw body at time `now`.
    pub fn check(&self, headers: &HeaderMap, body: &[u8], now: SystemTime) -> Result<(), Refusal> {
        match &self.auth {
            HttpAuth::Open => Ok(()),
            HttpAuth::Bearer { .. } => self.check_bearer(headers),
            HttpAuth::HmacSha256 { secret, header } => {
                let given = text(headers, header).ok_or(Refusal::Missing)?;
                let hex = given.strip_prefix("sha256=").ok_or(Refusal::BadSignature)?;
                verify(secret, &[body], hex)
            }
            HttpAuth::Slack { secret, window } => {
                let given = text(headers, "X-Slack-Signature").ok_or(Refusal::Missing)?;
                let stamp = text(headers, "X-Slack-Request-Timestamp").ok_or(Refusal::Stale)?;
                let sent: u64 = stamp.parse().map_err(|_| Refusal::Stale)?;
                let now = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
                if now.abs_diff(sent) > window.as_secs() {
                    return Err(Refusal::Stale);
                }
                let hex = given.strip_prefix("v0=").ok_or(Refusal::BadSignature)?;
                verify(secret, &[b"v0:", stamp.as_bytes(), b":", body], hex)?;
                self.first_use(hex, sent.saturating_add(window.as_secs()), now)
            }
        }
    }

    fn check_bearer(&self, headers: &HeaderMap) -> Result<(), Refusal> {
        let given = text(headers, header::AUTHORIZATION.as_str()).ok_or(Refusal::Missing)?;
        let (scheme, token) = given.split_once(' ').ok_or(Refusal::WrongToken)?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(Refusal::WrongToken);
        }
        let digest: [u8; 32] = Sha256::digest(token.trim().as_bytes()).into();
        match &self.token_digest {
            Some(want) if bool::from(want.ct_eq(&digest)) => Ok(()),
            _ => Err(Refusal::WrongToken),
        }
    }

    /// Records a Slack-style signature valid until `until` (seconds); refuses one seen before.
    fn first_use(&self, hex: &str, until: u64, now: u64) -> Result<(), Refusal> {
        let id: [u8; 32] = Sha256::digest(hex.to_ascii_lowercase().as_bytes()).into();
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        while let Some(old) = seen.order.front().copied() {
            let expired = seen.until.get(&old).is_none_or(|t| *t < now);
            if !expired && seen.order.len() < REPLAY_MEMORY {
                break;
            }
            seen.order.pop_front();
            seen.until.remove(&old);
        }
        if seen.until.get(&id).is_some_and(|t| *t >= now) {
            return Err(Refusal::Replayed);
        }
        seen.until.insert(id, until);
        seen.order.push_back(id);
        Ok(())
    }

    /// Counts a refusal and logs it, once per burst (the line says how many came since the
    /// last one); the secret and the credentials given never appear.
    pub fn refuse(&self, why: Refusal, peer: Option<&str>) -> Response {
        self.refused.fetch_add(1, Ordering::Relaxed);
        REFUSED_TOTAL.fetch_add(1, Ordering::Relaxed);
        let mut burst = self.burst.lock().unwrap_or_else(PoisonError::into_inner);
        let quiet = burst.logged_at.is_some_and(|at| at.elapsed() < BURST);
        if quiet {
            burst.unlogged += 1;
        } else {
            let also = std::mem::take(&mut burst.unlogged);
            burst.logged_at = Some(Instant::now());
            drop(burst);
            tracing::warn!(
                listener = %self.what,
                reason = why.as_str(),
                peer = peer.unwrap_or("-"),
                refused_since_last_log = also,
                refused_total = self.refused(),
                "request refused (401); further refusals in the next {}s are only counted",
                BURST.as_secs()
            );
        }
        unauthorized()
    }
}

/// `401` with nothing that would help a guesser.
pub fn unauthorized() -> Response {
    (StatusCode::UNAUTHORIZED, [(header::CONTENT_TYPE, "application/json")], "{\"error\":\"unauthorized\"}\n")
        .into_response()
}

fn text<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim).filter(|v| !v.is_empty())
}

/// Whether `hex` is the HMAC-SHA256 of the concatenated `parts` under `secret`.
fn verify(secret: &Secret, parts: &[&[u8]], hex: &str) -> Result<(), Refusal> {
    let given = decode_hex(hex).ok_or(Refusal::BadSignature)?;
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.expose().as_bytes()).map_err(|_| Refusal::BadSignature)?;
    for part in parts {
        mac.update(part);
    }
    mac.verify_slice(&given).map_err(|_| Refusal::BadSignature)
}

fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    if hex.len() != 64 {
        return None;
    }
    let digit = |b: u8| (b as char).to_digit(16);
    hex.as_bytes().chunks(2).map(|pair| Some((digit(pair[0])? * 16 + digit(pair[1])?) as u8)).collect()
}

/// Axum middleware: lets a request through only when it passes `gate`. For signatures the
/// body is read first (up to the gate's limit) and handed on unchanged.
pub async fn require(State(gate): State<Arc<Gate>>, request: Request, next: Next) -> Response {
    let peer = request
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|info| info.0.ip().to_string());
    if !gate.needs_body() {
        return match gate.check(request.headers(), b"", SystemTime::now()) {
            Ok(()) => next.run(request).await,
            Err(why) => gate.refuse(why, peer.as_deref()),
        };
    }
    let (parts, body) = request.into_parts();
    let bytes = match axum::body::to_bytes(body, gate.body_limit).await {
        Ok(bytes) => bytes,
        Err(_) => {
            let text = format!("{{\"error\":\"body is larger than {} bytes\"}}\n", gate.body_limit);
            return (StatusCode::PAYLOAD_TOO_LARGE, [(header::CONTENT_TYPE, "application/json")], text).into_response();
        }
    };
    match gate.check(&parts.headers, &bytes, SystemTime::now()) {
        Ok(()) => next.run(Request::from_parts(parts, Body::from(bytes))).await,
        Err(why) => gate.refuse(why, peer.as_deref()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sign(secret: &str, parts: &[&[u8]]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        for p in parts {
            mac.update(p);
        }
        mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect()
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.insert(*k, v.parse().unwrap());
        }
        map
    }

    const SECRET: &str = "0123456789abcdef-secret";

    #[test]
    fn bearer_tokens() {
        let gate = Gate::new("t", HttpAuth::Bearer { token: Secret::new(SECRET) }, 1024);
        let now = SystemTime::now();
        assert_eq!(gate.check(&headers(&[]), b"", now), Err(Refusal::Missing));
        let good = format!("Bearer {SECRET}");
        assert_eq!(gate.check(&headers(&[("authorization", &good)]), b"", now), Ok(()));
        let lower = format!("bearer {SECRET}");
        assert_eq!(gate.check(&headers(&[("authorization", &lower)]), b"", now), Ok(()));
        for bad in ["Bearer nope", "Basic abc", &format!("Bearer {SECRET}x"), &format!("Token {SECRET}"), "Bearer"] {
            assert_eq!(gate.check(&headers(&[("authorization", bad)]), b"", now), Err(Refusal::WrongToken), "{bad}");
        }
    }

    #[test]
    fn hub_signatures() {
        let auth = HttpAuth::HmacSha256 { secret: Secret::new(SECRET), header: "X-Hub-Signature-256".into() };
        let gate = Gate::new("t", auth, 1024);
        let now = SystemTime::now();
        let body = br#"{"text":"hi"}"#;
        let good = format!("sha256={}", sign(SECRET, &[body]));
        assert_eq!(gate.check(&headers(&[("x-hub-signature-256", &good)]), body, now), Ok(()));
        assert_eq!(gate.check(&headers(&[("x-hub-signature-256", &good)]), b"{}", now), Err(Refusal::BadSignature));
        let other = format!("sha256={}", sign("another-secret-of-16", &[body]));
        assert_eq!(gate.check(&headers(&[("x-hub-signature-256", &other)]), body, now), Err(Refusal::BadSignature));
        let bare = sign(SECRET, &[body]);
        assert_eq!(gate.check(&headers(&[("x-hub-signature-256", &bare)]), body, now), Err(Refusal::BadSignature));
        assert_eq!(
            gate.check(&headers(&[("x-hub-signature-256", "sha256=zz")]), body, now),
            Err(Refusal::BadSignature)
        );
        assert_eq!(gate.check(&headers(&[]), body, now), Err(Refusal::Missing));
    }

    #[test]
    fn slack_signatures_windows_and_replays() {
        let auth = HttpAuth::Slack { secret: Secret::new(SECRET), window: Duration::from_secs(300) };
        let gate = Gate::new("t", auth, 1024);
        let now = SystemTime::now();
        let secs = now.duration_since(UNIX_EPOCH).unwrap().as_secs();
        let body = b"token=x&text=hi";
        let signed = |stamp: u64| {
            let stamp = stamp.to_string();
            let sig = format!("v0={}", sign(SECRET, &[b"v0:", stamp.as_bytes(), b":", body]));
            headers(&[("x-slack-signature", &sig), ("x-slack-request-timestamp", &stamp)])
        };
        assert_eq!(gate.check(&signed(secs - 10), body, now), Ok(()));
        assert_eq!(gate.check(&signed(secs - 10), body, now), Err(Refusal::Replayed), "same request again");
        assert_eq!(gate.check(&signed(secs - 11), body, now), Ok(()), "another timestamp is another request");
        assert_eq!(gate.check(&signed(secs - 301), body, now), Err(Refusal::Stale));
        assert_eq!(gate.check(&signed(secs + 301), body, now), Err(Refusal::Stale));
        let mut tampered = signed(secs);
        tampered.insert("x-slack-request-timestamp", (secs - 1).to_string().parse().unwrap());
        assert_eq!(gate.check(&tampered, body, now), Err(Refusal::BadSignature));
        assert_eq!(gate.check(&signed(secs - 5), b"other body", now), Err(Refusal::BadSignature));
        // Once its window is over, a remembered signature is forgotten (and refused as stale).
        let later = now + Duration::from_secs(400);
        assert_eq!(gate.check(&signed(secs - 10), body, later), Err(Refusal::Stale));
    }

    #[test]
    fn refusals_are_counted() {
        let gate = Gate::new("t", HttpAuth::Bearer { token: Secret::new(SECRET) }, 1024);
        let before = refused_total();
        for _ in 0..3 {
            assert_eq!(gate.refuse(Refusal::Missing, None).status(), StatusCode::UNAUTHORIZED);
        }
        assert_eq!(gate.refused(), 3);
        assert!(refused_total() >= before + 3);
    }
}
