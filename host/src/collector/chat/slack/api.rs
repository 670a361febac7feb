//! The Slack Web API methods the collector calls: `auth.test` (who the bot is),
//! `apps.connections.open` (a Socket Mode URL, with the app-level token), `users.info`
//! (display names) and `chat.postMessage` (replies). Every call is a form-encoded `POST`
//! with the token in the `Authorization` header; an answer is `{"ok": true, ...}` or
//! `{"ok": false, "error": "..."}`, and a rate-limited call is HTTP 429 with `Retry-After`.

use std::time::Duration;

use serde_json::Value;

use crate::collector::chat::wire::{http_client, read_body};
use crate::config::Secret;

/// Pause used when a 429 carries no usable `Retry-After`.
const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(1);
/// Longest `Retry-After` honoured as given (a larger one is capped).
const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);

/// Why a Web API call failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// HTTP 429: call again after this long.
    #[error("Slack {method}: rate limited; retry after {retry_after:?}")]
    RateLimited { method: &'static str, retry_after: Duration },
    /// `{"ok": false, "error": ...}`: the call was refused (bad token, no such channel, ...).
    #[error("Slack {method}: {error}")]
    Refused { method: &'static str, error: String },
    /// The network, a timeout, a 5xx or an answer that is not the documented JSON: worth
    /// trying again later.
    #[error("Slack {method}: {detail}")]
    Transient { method: &'static str, detail: String },
}

/// Who the bot is (`auth.test` with the bot token).
#[derive(Debug, Clone, Default)]
pub struct Identity {
    /// The bot user's id (`U...`): messages from it are the bot's own.
    pub user_id: String,
    /// The bot's id (`B...`), carried by the messages it posts.
    pub bot_id: String,
    /// The workspace's id (`T...`), the messages' `server`.
    pub team_id: String,
}

/// A Web API client holding both tokens.
#[derive(Clone)]
pub struct WebApi {
    http: reqwest::Client,
    /// Base URL without a trailing `/`, e.g. `https://slack.com/api`.
    base: String,
    /// App-level token (`xapp-...`), for `apps.connections.open` only.
    app_token: Secret,
    /// Bot token (`xoxb-...`), for everything else.
    bot_token: Secret,
}

impl WebApi {
    pub fn new(base: &str, app_token: Secret, bot_token: Secret) -> anyhow::Result<Self> {
        Ok(WebApi { http: http_client()?, base: base.trim_end_matches('/').to_owned(), app_token, bot_token })
    }

    /// Calls `method` with form `params`; the answer's JSON object when `ok` is true.
    async fn call(&self, method: &'static str, app: bool, params: &[(&str, &str)]) -> Result<Value, ApiError> {
        let token = if app { &self.app_token } else { &self.bot_token };
        let transient = |detail: String| ApiError::Transient { method, detail };
        let response = self
            .http
            .post(format!("{}/{method}", self.base))
            .bearer_auth(token.expose())
            .form(params)
            .send()
            .await
            .map_err(|e| transient(without_url(&e)))?;
        let status = response.status();
        if status.as_u16() == 429 {
            return Err(ApiError::RateLimited { method, retry_after: retry_after(response.headers()) });
        }
        if status.is_server_error() {
            return Err(transient(format!("HTTP {status}")));
        }
        let body = read_body(response, &format!("Slack {method}")).await.map_err(|e| transient(format!("{e:#}")))?;
        let value: Value = serde_json::from_slice(&body)
            .map_err(|e| transient(format!("HTTP {status}, the answer is not JSON: {e}")))?;
        match value.get("ok").and_then(Value::as_bool) {
            Some(true) => Ok(value),
            Some(false) => {
                let error = value.get("error").and_then(Value::as_str).unwrap_or("unknown error");
                Err(ApiError::Refused { method, error: crate::text::for_terminal(error).into_owned() })
            }
            None => Err(transient(format!("HTTP {status}, the answer has no `ok`"))),
        }
    }

    /// `auth.test`: the bot's user id, bot id and workspace.
    pub async fn auth_test(&self) -> Result<Identity, ApiError> {
        let v = self.call("auth.test", false, &[]).await?;
        let text = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or_default().to_owned();
        Ok(Identity { user_id: text("user_id"), bot_id: text("bot_id"), team_id: text("team_id") })
    }

    /// `apps.connections.open`: a fresh, single-use Socket Mode URL.
    pub async fn connections_open(&self) -> Result<String, ApiError> {
        let v = self.call("apps.connections.open", true, &[]).await?;
        match v.get("url").and_then(Value::as_str) {
            Some(url) if url.starts_with("wss://") || url.starts_with("ws://") => Ok(url.to_owned()),
            _ => Err(ApiError::Transient {
                method: "apps.connections.open",
                detail: "the answer has no ws:// or wss:// `url`".to_owned(),
            }),
        }
    }

    /// `users.info`: the user's display name (else real name, else handle).
    pub async fn display_name(&self, user: &str) -> Result<String, ApiError> {
        let v = self.call("users.info", false, &[("user", user)]).await?;
        let u = &v["user"];
        let name = [&u["profile"]["display_name"], &u["profile"]["real_name"], &u["real_name"], &u["name"]]
            .into_iter()
            .filter_map(Value::as_str)
            .find(|s| !s.trim().is_empty())
            .unwrap_or(user);
        Ok(name.to_owned())
    }

    /// `chat.postMessage`: posts `text` to `channel` (in the thread `thread_ts` when given);
    /// returns the new message's `ts`.
    pub async fn post_message(&self, channel: &str, text: &str, thread_ts: Option<&str>) -> Result<String, ApiError> {
        let mut params = vec![("channel", channel), ("text", text)];
        if let Some(ts) = thread_ts.filter(|t| !t.is_empty()) {
            params.push(("thread_ts", ts));
        }
        let v = self.call("chat.postMessage", false, &params).await?;
        Ok(v.get("ts").and_then(Value::as_str).unwrap_or_default().to_owned())
    }
}

/// `Retry-After` (whole seconds), defaulting to 1 s, capped at 5 minutes.
pub(crate) fn retry_after(headers: &reqwest::header::HeaderMap) -> Duration {
    headers
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map_or(DEFAULT_RETRY_AFTER, |s| Duration::from_secs_f64(s.min(MAX_RETRY_AFTER.as_secs_f64())))
}

/// A reqwest error without its URL (kept short; the base URL is in the collector's line).
pub(crate) fn without_url(err: &reqwest::Error) -> String {
    let mut text = err.to_string();
    if let Some(url) = err.url() {
        text = text.replace(&format!(" ({url})"), "").replace(url.as_str(), "");
    }
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    crate::text::for_terminal(&text).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_is_read_defaulted_and_capped() {
        let mut headers = reqwest::header::HeaderMap::new();
        assert_eq!(retry_after(&headers), DEFAULT_RETRY_AFTER);
        headers.insert(reqwest::header::RETRY_AFTER, "3".parse().unwrap());
        assert_eq!(retry_after(&headers), Duration::from_secs(3));
        headers.insert(reqwest::header::RETRY_AFTER, "99999".parse().unwrap());
        assert_eq!(retry_after(&headers), MAX_RETRY_AFTER);
        headers.insert(reqwest::header::RETRY_AFTER, "soon".parse().unwrap());
        assert_eq!(retry_after(&headers), DEFAULT_RETRY_AFTER);
    }
}
