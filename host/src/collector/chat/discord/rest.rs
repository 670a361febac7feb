//! The Discord REST calls the collector makes: `GET /gateway/bot` (where to connect),
//! `POST /channels/{id}/messages` (replies), `POST /users/@me/channels` (a direct-message
//! channel, for a taskback's `to`) and `PATCH /guilds/{id}` (the branding example), with the bot token as `Authorization: Bot ...`.
//!
//! Rate limits are honoured, never worked around: after each answer the route's
//! `X-RateLimit-Remaining` and `X-RateLimit-Reset-After` say when the next call on that
//! route may go; a 429 carries `retry_after` (seconds, in the JSON body; `Retry-After` as a
//! fallback) and `global`. A call due before that time is not sent: it fails with
//! [`RestError::RateLimited`] saying when to try again (replies wait in the chat queue,
//! so the Gateway connection keeps being served), or, for the other calls, waits.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::collector::chat::slack::api::without_url;
use crate::collector::chat::wire::{http_client, read_body};
use crate::config::Secret;

/// Longest pause honoured as given (a larger one is capped).
const MAX_PAUSE: Duration = Duration::from_secs(300);

/// Why a REST call failed.
#[derive(Debug, thiserror::Error)]
pub enum RestError {
    /// The route (or every route) is held by a rate limit until this instant; nothing sent.
    #[error("Discord {route}: rate limited")]
    RateLimited { route: String, until: Instant },
    /// A 4xx other than 429: the request will never succeed as it is.
    #[error("Discord {route}: HTTP {status}: {message}")]
    Refused { route: String, status: u16, message: String },
    /// The network, a timeout, a 5xx or an answer that is not JSON.
    #[error("Discord {route}: {detail}")]
    Transient { route: String, detail: String },
}

/// A REST client with its rate-limit state.
pub struct Rest {
    http: reqwest::Client,
    base: String,
    token: Secret,
    limits: Mutex<Limits>,
}

/// When the next call may go: per route (method + path with its major parameter) and for
/// every route when Discord said the limit is global.
#[derive(Default)]
struct Limits {
    routes: HashMap<String, Instant>,
    global: Option<Instant>,
}

impl Rest {
    pub fn new(base: &str, token: Secret) -> anyhow::Result<Self> {
        Ok(Rest {
            http: http_client()?,
            base: base.trim_end_matches('/').to_owned(),
            token,
            limits: Mutex::new(Limits::default()),
        })
    }

    /// `GET /gateway/bot`: the Gateway URL.
    pub async fn gateway_url(&self) -> Result<String, RestError> {
        let v = self.call(reqwest::Method::GET, "/gateway/bot", None).await?;
        match v.get("url").and_then(Value::as_str) {
            Some(url) if url.starts_with("wss://") || url.starts_with("ws://") => Ok(url.to_owned()),
            _ => Err(RestError::Transient {
                route: "GET /gateway/bot".to_owned(),
                detail: "the answer has no ws:// or wss:// `url`".to_owned(),
            }),
        }
    }

    /// `POST /channels/{channel}/messages`: posts `content`, as a reply to `reply_to` when
    /// given (shown with a link to that message; posted anyway if it is gone). Mentions in
    /// the text ping nobody (`allowed_mentions` empty): a reply may quote a user's `@everyone`.
    /// Returns the new message's id.
    pub async fn create_message(
        &self,
        channel: &str,
        content: &str,
        reply_to: Option<&str>,
    ) -> Result<String, RestError> {
        let mut body = serde_json::json!({ "content": content, "allowed_mentions": { "parse": [] } });
        if let Some(id) = reply_to.filter(|id| !id.is_empty()) {
            body["message_reference"] = serde_json::json!({ "message_id": id, "fail_if_not_exists": false });
        }
        let path = format!("/channels/{}/messages", path_segment(channel));
        let v = self.attempt(reqwest::Method::POST, &path, Some(&body)).await?;
        Ok(v.get("id").and_then(Value::as_str).unwrap_or_default().to_owned())
    }

    /// `POST /users/@me/channels`: the direct-message channel with `user`.
    pub async fn open_dm(&self, user: &str) -> Result<String, RestError> {
        let body = serde_json::json!({ "recipient_id": user });
        let v = self.attempt(reqwest::Method::POST, "/users/@me/channels", Some(&body)).await?;
        match v.get("id").and_then(Value::as_str) {
            Some(id) => Ok(id.to_owned()),
            None => Err(RestError::Transient {
                route: "POST /users/@me/channels".to_owned(),
                detail: "the answer has no channel `id`".to_owned(),
            }),
        }
    }

    /// `PATCH /guilds/{guild}` with `changes` (e.g. `{"icon": "data:image/png;base64,..."}`).
    pub async fn modify_guild(&self, guild: &str, changes: &Value) -> Result<(), RestError> {
        let path = format!("/guilds/{}", path_segment(guild));
        self.attempt(reqwest::Method::PATCH, &path, Some(changes)).await.map(drop)
    }

    /// One call, waiting out every rate limit.
    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Result<Value, RestError> {
        loop {
            match self.attempt(method.clone(), path, body.as_ref()).await {
                Err(RestError::RateLimited { until, .. }) => tokio::time::sleep_until(until).await,
                other => return other,
            }
        }
    }

    /// One call, unless the route or every route is held by a rate limit.
    async fn attempt(&self, method: reqwest::Method, path: &str, body: Option<&Value>) -> Result<Value, RestError> {
        let route = format!("{method} {path}");
        let transient = |detail: String| RestError::Transient { route: route.clone(), detail };
        if let Some(until) = self.held(&route).await {
            return Err(RestError::RateLimited { route, until });
        }
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .header(reqwest::header::AUTHORIZATION, format!("Bot {}", self.token.expose()));
        if let Some(body) = body {
            request = request.header(reqwest::header::CONTENT_TYPE, "application/json").body(body.to_string());
        }
        let response = request.send().await.map_err(|e| transient(without_url(&e)))?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let bytes = read_body(response, &format!("Discord {route}")).await.map_err(|e| transient(format!("{e:#}")))?;
        let json: Option<Value> = serde_json::from_slice(&bytes).ok();
        self.note_headers(&route, &headers).await;
        if status == 429 {
            let (pause, global) = rate_limited(json.as_ref(), &headers);
            tracing::warn!(route = %route, retry_after_ms = pause.as_millis() as u64, global, "Discord rate limit");
            self.hold(&route, pause, global).await;
            return Err(RestError::RateLimited { route, until: Instant::now() + pause });
        }
        if (500..600).contains(&status) {
            return Err(transient(format!("HTTP {status}")));
        }
        if !(200..300).contains(&status) {
            let message = json.as_ref().and_then(|v| v.get("message")).and_then(Value::as_str).unwrap_or("");
            let message = crate::text::for_terminal(message).into_owned();
            return Err(RestError::Refused { route, status, message });
        }
        if status == 204 {
            return Ok(Value::Null);
        }
        json.ok_or_else(|| transient(format!("HTTP {status}, the answer is not JSON")))
    }

    /// Until when the route (or every route) is held, if it is.
    async fn held(&self, route: &str) -> Option<Instant> {
        let limits = self.limits.lock().await;
        let until = limits.routes.get(route).copied().into_iter().chain(limits.global).max()?;
        (until > Instant::now()).then_some(until)
    }

    /// Remembers when the route may be called again, from `X-RateLimit-Remaining: 0` and
    /// `X-RateLimit-Reset-After`.
    async fn note_headers(&self, route: &str, headers: &reqwest::header::HeaderMap) {
        let number =
            |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).and_then(|s| s.trim().parse::<f64>().ok());
        if number("x-ratelimit-remaining") == Some(0.0)
            && let Some(after) = number("x-ratelimit-reset-after").and_then(seconds)
        {
            self.hold(route, after, false).await;
        }
    }

    async fn hold(&self, route: &str, pause: Duration, global: bool) {
        let until = Instant::now() + pause;
        let mut limits = self.limits.lock().await;
        if global {
            limits.global = Some(limits.global.map_or(until, |g| g.max(until)));
        } else {
            let slot = limits.routes.entry(route.to_owned()).or_insert(until);
            *slot = (*slot).max(until);
        }
    }
}

/// The pause and scope of a 429: `retry_after` from the body (seconds, may be fractional),
/// else the `Retry-After` header, else 1 s; `global` from the body or `X-RateLimit-Global`.
fn rate_limited(json: Option<&Value>, headers: &reqwest::header::HeaderMap) -> (Duration, bool) {
    let from_body = json.and_then(|v| v.get("retry_after")).and_then(Value::as_f64).and_then(seconds);
    let pause = from_body.unwrap_or_else(|| crate::collector::chat::slack::api::retry_after(headers));
    let global = json.and_then(|v| v.get("global")).and_then(Value::as_bool).unwrap_or(false)
        || headers.get("x-ratelimit-global").is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"true"));
    (pause, global)
}

fn seconds(s: f64) -> Option<Duration> {
    (s.is_finite() && s >= 0.0).then(|| Duration::from_secs_f64(s.min(MAX_PAUSE.as_secs_f64())))
}

/// An id as one path segment: Discord ids are digits; anything else is percent-encoded so a
/// hostile `channel` cannot change the path.
fn path_segment(id: &str) -> String {
    url::form_urlencoded::byte_serialize(id.as_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_429_says_how_long_and_whether_global() {
        let mut headers = reqwest::header::HeaderMap::new();
        let body = serde_json::json!({"message": "You are being rate limited.", "retry_after": 0.25, "global": false});
        assert_eq!(rate_limited(Some(&body), &headers), (Duration::from_millis(250), false));
        headers.insert(reqwest::header::RETRY_AFTER, "2".parse().unwrap());
        headers.insert("x-ratelimit-global", "true".parse().unwrap());
        assert_eq!(rate_limited(None, &headers), (Duration::from_secs(2), true));
        let huge = serde_json::json!({"retry_after": 1e12});
        assert_eq!(rate_limited(Some(&huge), &headers).0, MAX_PAUSE);
    }

    #[test]
    fn ids_stay_one_path_segment() {
        assert_eq!(path_segment("1234"), "1234");
        assert_eq!(path_segment("../guilds/1"), "..%2Fguilds%2F1");
    }
}
