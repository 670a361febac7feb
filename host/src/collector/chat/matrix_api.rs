//! The few Matrix client-server API calls the `matrix` collector makes (login, whoami,
//! join, sync, send), over `reqwest` with rustls, each answer read up to a size bound.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{Context as _, bail};
use serde::Deserialize;
use serde_json::{Value, json};

/// The largest answer read (a `/sync` with many rooms is the big one).
const MAX_BODY: usize = 32 << 20;
/// How long a `/sync` waits on the server for something to happen.
pub(crate) const SYNC_WAIT: Duration = Duration::from_secs(30);

/// A failed call: the homeserver's `errcode` and `error` when it gave them.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ApiError {
    /// 429 `M_LIMIT_EXCEEDED`: try again after this long.
    #[error("rate limited by the homeserver (retry after {0:?})")]
    RateLimited(Duration),
    /// The access token is no longer valid (401): log in again.
    #[error("the homeserver refused the access token ({0})")]
    Unauthorized(String),
    /// Any other answer that is not 2xx.
    #[error("{what}: HTTP {status} {errcode}: {error}")]
    Refused { what: String, status: u16, errcode: String, error: String },
    /// The request did not get through (network, timeout, unreadable answer).
    #[error("{what}: {source:#}")]
    Transport {
        what: String,
        #[source]
        source: anyhow::Error,
    },
}

/// A client for one homeserver.
#[derive(Clone)]
pub(crate) struct Api {
    http: reqwest::Client,
    base: String,
    pub(crate) token: Option<String>,
}

impl Api {
    pub(crate) fn new(base: &str, ca_file: Option<&std::path::Path>) -> anyhow::Result<Self> {
        let tls = super::tls::client_config(ca_file)?;
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .connect_timeout(Duration::from_secs(30))
            .timeout(SYNC_WAIT + Duration::from_secs(30))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .context("cannot build the HTTP client")?;
        Ok(Api { http, base: base.to_owned(), token: None })
    }

    fn url(&self, path: &[&str]) -> String {
        let mut url = format!("{}/_matrix/client/v3", self.base);
        for segment in path {
            url.push('/');
            url.push_str(
                &url::form_urlencoded::byte_serialize(segment.as_bytes()).collect::<String>().replace('+', "%20"),
            );
        }
        url
    }

    async fn call(&self, what: &str, request: reqwest::RequestBuilder) -> Result<Value, ApiError> {
        let transport = |source: anyhow::Error| ApiError::Transport { what: what.to_owned(), source };
        let request = match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        };
        let mut response = request.send().await.map_err(|e| transport(e.into()))?;
        let status = response.status();
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| transport(e.into()))? {
            if body.len() + chunk.len() > MAX_BODY {
                return Err(transport(anyhow::anyhow!("answer larger than {MAX_BODY} bytes")));
            }
            body.extend_from_slice(&chunk);
        }
        let value: Value =
            if body.is_empty() { json!({}) } else { serde_json::from_slice(&body).unwrap_or(Value::Null) };
        if status.is_success() {
            return Ok(value);
        }
        let text =
            |key: &str| value.get(key).and_then(Value::as_str).map(|s| crate::text::for_terminal(s).into_owned());
        let errcode = text("errcode").unwrap_or_default();
        if status.as_u16() == 429 || errcode == "M_LIMIT_EXCEEDED" {
            let ms = value.get("retry_after_ms").and_then(Value::as_u64).unwrap_or(1000).min(600_000);
            return Err(ApiError::RateLimited(Duration::from_millis(ms)));
        }
        if status.as_u16() == 401 {
            return Err(ApiError::Unauthorized(errcode));
        }
        Err(ApiError::Refused {
            what: what.to_owned(),
            status: status.as_u16(),
            errcode,
            error: text("error").unwrap_or_default(),
        })
    }

    /// Logs in with a password (on a fixed device, so a restart does not add devices);
    /// keeps the token. Returns the full user id.
    pub(crate) async fn login(&mut self, user: &str, password: &str, device: &str) -> Result<String, ApiError> {
        self.token = None;
        let body = json!({
            "type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": user},
            "password": password,
            "device_id": device,
            "initial_device_display_name": "cannon",
        });
        let answer = self.call("login", self.http.post(self.url(&["login"])).json(&body)).await?;
        let field = |key: &str| answer.get(key).and_then(Value::as_str).map(str::to_owned);
        match (field("access_token"), field("user_id")) {
            (Some(token), Some(user_id)) => {
                self.token = Some(token);
                Ok(user_id)
            }
            _ => Err(ApiError::Transport {
                what: "login".into(),
                source: anyhow::anyhow!("no access_token in the answer"),
            }),
        }
    }

    /// Uses a given access token; returns the user id it belongs to.
    pub(crate) async fn whoami(&mut self, token: &str) -> Result<String, ApiError> {
        self.token = Some(token.to_owned());
        let answer = self.call("whoami", self.http.get(self.url(&["account", "whoami"]))).await?;
        answer.get("user_id").and_then(Value::as_str).map(str::to_owned).ok_or_else(|| ApiError::Transport {
            what: "whoami".into(),
            source: anyhow::anyhow!("no user_id in the answer"),
        })
    }

    /// The rooms the account is in.
    pub(crate) async fn joined_rooms(&self) -> Result<Vec<String>, ApiError> {
        let answer = self.call("joined_rooms", self.http.get(self.url(&["joined_rooms"]))).await?;
        let rooms = answer.get("joined_rooms").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
        Ok(rooms.iter().filter_map(Value::as_str).map(str::to_owned).collect())
    }

    /// Joins a room by id or alias; returns its id.
    pub(crate) async fn join(&self, room: &str) -> Result<String, ApiError> {
        let answer = self.call("join", self.http.post(self.url(&["join", room])).json(&json!({}))).await?;
        Ok(answer.get("room_id").and_then(Value::as_str).unwrap_or(room).to_owned())
    }

    /// One `/sync`: since `since` (waiting up to [`SYNC_WAIT`]), or a first one that only
    /// tells where "now" is. Only room messages and member events, up to 100 per room.
    pub(crate) async fn sync(&self, since: Option<&str>) -> Result<SyncAnswer, ApiError> {
        let filter = json!({
            "presence": {"not_types": ["*"]},
            "account_data": {"not_types": ["*"]},
            "room": {
                "timeline": {"types": ["m.room.message", "m.room.member"], "limit": if since.is_some() { 100 } else { 1 }},
                "state": {"types": ["m.room.member"], "lazy_load_members": true},
                "ephemeral": {"not_types": ["*"]},
                "account_data": {"not_types": ["*"]},
            },
        })
        .to_string();
        let mut query = vec![("filter", filter)];
        if let Some(since) = since {
            query.push(("since", since.to_owned()));
            query.push(("timeout", SYNC_WAIT.as_millis().to_string()));
        } else {
            query.push(("timeout", "0".to_owned()));
        }
        let answer = self.call("sync", self.http.get(self.url(&["sync"])).query(&query)).await?;
        serde_json::from_value(answer).map_err(|e| ApiError::Transport {
            what: "sync".into(),
            source: anyhow::Error::new(e).context("unexpected /sync answer"),
        })
    }

    /// Sends a text message (in a thread when `thread` is set) with transaction id `txn`:
    /// the homeserver posts a repeated transaction id once.
    pub(crate) async fn send(
        &self,
        room: &str,
        text: &str,
        thread: Option<&str>,
        txn: &str,
    ) -> Result<String, ApiError> {
        let mut content = json!({"msgtype": "m.text", "body": text});
        if let Some(root) = thread {
            content["m.relates_to"] = json!({
                "rel_type": "m.thread",
                "event_id": root,
                "is_falling_back": true,
                "m.in_reply_to": {"event_id": root},
            });
        }
        let url = self.url(&["rooms", room, "send", "m.room.message", txn]);
        let answer = self.call("send", self.http.put(url).json(&content)).await?;
        Ok(answer.get("event_id").and_then(Value::as_str).unwrap_or_default().to_owned())
    }
}

/// The parts of a `/sync` answer the collector reads.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct SyncAnswer {
    pub next_batch: String,
    pub rooms: Rooms,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct Rooms {
    pub join: HashMap<String, JoinedRoom>,
    pub invite: HashMap<String, serde::de::IgnoredAny>,
    pub leave: HashMap<String, serde::de::IgnoredAny>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct JoinedRoom {
    pub timeline: Events,
    pub state: Events,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct Events {
    pub events: Vec<Event>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct Event {
    #[serde(rename = "type")]
    pub kind: String,
    pub sender: String,
    pub event_id: String,
    pub state_key: Option<String>,
    pub content: Value,
}

impl Event {
    /// The text of an `m.room.message` of msgtype `m.text`.
    pub(crate) fn text(&self) -> Option<&str> {
        if self.kind != "m.room.message" || self.content.get("msgtype").and_then(Value::as_str) != Some("m.text") {
            return None;
        }
        self.content.get("body").and_then(Value::as_str)
    }

    /// The root of the thread this message is in (`m.relates_to` of `rel_type: m.thread`).
    pub(crate) fn thread(&self) -> Option<&str> {
        let relation = self.content.get("m.relates_to")?;
        if relation.get("rel_type").and_then(Value::as_str) != Some("m.thread") {
            return None;
        }
        relation.get("event_id").and_then(Value::as_str)
    }

    /// A member event's display name.
    pub(crate) fn display_name(&self) -> Option<(&str, &str)> {
        if self.kind != "m.room.member" {
            return None;
        }
        let name = self.content.get("displayname").and_then(Value::as_str)?;
        Some((self.state_key.as_deref()?, name))
    }
}

/// `@alice:example.org` -> `alice`.
pub(crate) fn localpart(user_id: &str) -> &str {
    let rest = user_id.strip_prefix('@').unwrap_or(user_id);
    rest.split_once(':').map_or(rest, |(local, _)| local)
}

impl ApiError {
    /// Whether the call may succeed later unchanged (network trouble, server errors, a
    /// request timeout or a rate limit however it is told).
    pub(crate) fn is_transient(&self) -> bool {
        match self {
            ApiError::Transport { .. } | ApiError::RateLimited(_) => true,
            ApiError::Refused { status, .. } => *status >= 500 || matches!(*status, 408 | 429),
            ApiError::Unauthorized(_) => false,
        }
    }
}

/// Refuses a homeserver answer that makes no sense (empty `next_batch`).
pub(crate) fn check_sync(sync: &SyncAnswer) -> anyhow::Result<()> {
    if sync.next_batch.is_empty() {
        bail!("the homeserver's /sync answer has no next_batch");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_answers_that_will_not_change_refuse_for_good() {
        let refused =
            |status| ApiError::Refused { what: "send".into(), status, errcode: "E".into(), error: "e".into() };
        for status in [408, 429, 500, 502, 503] {
            assert!(refused(status).is_transient(), "{status}");
        }
        for status in [400, 403, 404, 413] {
            assert!(!refused(status).is_transient(), "{status}");
        }
    }

    #[test]
    fn events() {
        let event: Event = serde_json::from_value(json!({
            "type": "m.room.message", "sender": "@a:hs", "event_id": "$1",
            "content": {"msgtype": "m.text", "body": "roll 2d6",
                        "m.relates_to": {"rel_type": "m.thread", "event_id": "$root"}}
        }))
        .unwrap();
        assert_eq!(event.text(), Some("roll 2d6"));
        assert_eq!(event.thread(), Some("$root"));
        let notice: Event = serde_json::from_value(json!({
            "type": "m.room.message", "content": {"msgtype": "m.notice", "body": "x"}
        }))
        .unwrap();
        assert_eq!(notice.text(), None);
        assert_eq!(localpart("@alice:example.org"), "alice");
        let api = Api { http: reqwest::Client::new(), base: "http://h".into(), token: None };
        assert_eq!(api.url(&["join", "#a b:hs"]), "http://h/_matrix/client/v3/join/%23a%20b%3Ahs");
    }
}
