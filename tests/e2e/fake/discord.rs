//! A local Discord: the REST routes a bot uses and the Gateway (v10, JSON encoding).
//!
//! - `GET /api/v10/gateway/bot`, `POST /api/v10/channels/{id}/messages` and
//!   `POST /api/v10/users/@me/channels` (a DM channel `dm-{user}`; the test can ask for
//!   502s first), `PATCH /api/v10/guilds/{id}`
//!   (icon and banner as image data URIs) with
//!   `Authorization: Bot TOKEN` (else 401). Each channel's create-message route is a bucket of
//!   [`BUCKET`] calls per second, announced with `X-RateLimit-Limit`, `-Remaining`, `-Reset`,
//!   `-Reset-After` and `-Bucket`; a call on an exhausted bucket, or during a 429's
//!   `retry_after`, is a violation and gets a 429 again. The test can ask for 429s
//!   (`{"message", "retry_after": seconds, "global": false}` + `Retry-After`).
//! - Gateway: HELLO (op 10) on connect; IDENTIFY (op 2) starts a session (READY, then a
//!   GUILD_CREATE with one text channel and one thread); RESUME (op 6) with a known session id
//!   replays every dispatch after the given sequence, then RESUMED, else INVALID_SESSION
//!   (op 9, `false`); heartbeats (op 1) are acknowledged (op 11). Without the
//!   MESSAGE_CONTENT intent, messages arrive with empty `content`, as on Discord.
//! - What the bot posts comes back as a MESSAGE_CREATE from the bot user.
//! - A message said while no connection is live is kept in the session's log, so a RESUME
//!   gets it; a fresh IDENTIFY does not.

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use futures_util::SinkExt;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

use super::{Background, Control, Live, Shared, json_response, wait_until};

pub const TOKEN: &str = "discord-bot-token";
pub const BOT: &str = "900000000000000001";
pub const GUILD: &str = "800000000000000001";
pub const CHANNEL: &str = "700000000000000001";
pub const THREAD: &str = "700000000000000002";
/// Calls per channel per second on the create-message route.
pub const BUCKET: u32 = 3;

#[derive(Debug, Clone)]
pub struct Post {
    pub channel: String,
    pub content: String,
    pub reply_to: Option<String>,
    /// `allowed_mentions.parse` was an empty list.
    pub mentions_off: bool,
}

#[derive(Default, Debug)]
pub struct DiscordState {
    pub posts: Vec<Post>,
    /// `PATCH /guilds/{id}`: (guild, field, value) per field changed.
    pub guild_changes: Vec<(String, String, String)>,
    pub identifies: usize,
    pub resumes: usize,
    pub heartbeats: usize,
    /// `heartbeat_interval` sent in HELLO (ms).
    pub heartbeat_ms: u64,
    /// Leave heartbeats unacknowledged (a zombie connection, as the client sees it).
    pub skip_acks: bool,
    /// Dispatch log of each session: (seq, payload).
    sessions: HashMap<String, Vec<(u64, Value)>>,
    /// The session messages go to (the last one started).
    current: Option<String>,
    pub live: Live,
    pub limit_next: usize,
    pub retry_after: f64,
    blocked_until: Option<Instant>,
    buckets: HashMap<String, (u32, Instant)>,
    pub violations: usize,
    pub rate_limited: usize,
    /// Calls of the DM-channel route, and how many more to answer with a 502.
    pub dm_opens: usize,
    pub fail_dm_opens: usize,
    /// The client asked for the MESSAGE_CONTENT intent.
    content_intent: bool,
    next: u64,
}

pub struct FakeDiscord {
    bg: Background,
    pub state: Shared<DiscordState>,
    pub api_url: String,
}

impl FakeDiscord {
    pub fn start() -> Self {
        let bg = Background::new();
        let state = Shared::new(DiscordState { heartbeat_ms: 41_250, retry_after: 0.5, ..Default::default() });
        let (http, http_port) = bg.listen();
        let (ws, ws_port) = bg.listen();
        let router = Router::new()
            .route("/api/v10/gateway/bot", get(gateway_bot))
            .route("/api/v10/channels/{channel}/messages", post(create_message))
            .route("/api/v10/users/@me/channels", post(open_dm))
            .route("/api/v10/guilds/{guild}", axum::routing::patch(modify_guild))
            .with_state((state.clone(), ws_port));
        bg.serve_http(http, router);
        let accept_state = state.clone();
        bg.runtime.spawn(async move {
            while let Ok((tcp, _)) = ws.accept().await {
                tokio::spawn(connection(tcp, accept_state.clone(), ws_port));
            }
        });
        FakeDiscord { bg, state, api_url: format!("http://127.0.0.1:{http_port}/api/v10") }
    }

    /// A user message in `channel` (a thread's id for a message in a thread); its id.
    pub fn say(&self, user: &str, name: &str, channel: &str, text: &str) -> String {
        let mut st = self.state.lock();
        st.next += 1;
        let id = format!("{}", 600_000_000_000_000_000u64 + st.next);
        let text = if st.content_intent { text } else { "" };
        let message = json!({
            "id": id, "channel_id": channel, "guild_id": GUILD, "content": text, "type": 0,
            "author": {"id": user, "username": name.to_lowercase(), "global_name": name, "discriminator": "0"},
            "member": {"nick": null, "roles": []}, "timestamp": "2026-11-30T12:00:00.000000+00:00",
            "tts": false, "mention_everyone": false, "mentions": [], "attachments": [], "embeds": [],
        });
        dispatch(&mut st, "MESSAGE_CREATE", message);
        id
    }

    /// Sends `text` as it is on the live connection (hostile or broken frames).
    pub fn send_raw(&self, text: &str) {
        if let Some(live) = &self.state.lock().live {
            let _ = live.send(Control::Send(text.to_owned()));
        }
    }

    pub fn drop_connection(&self) {
        if let Some(live) = self.state.lock().live.take() {
            let _ = live.send(Control::Drop);
        }
    }

    /// Sends op 7 RECONNECT on the live connection.
    pub fn ask_reconnect(&self) {
        if let Some(live) = self.state.lock().live.take() {
            let _ = live.send(Control::Send(json!({"op": 7, "d": null}).to_string()));
        }
    }

    pub fn posts(&self) -> Vec<Post> {
        self.state.lock().posts.clone()
    }

    pub fn wait_posts(&self, n: usize, timeout: Duration) -> Vec<Post> {
        wait_until(timeout, &format!("{n} Discord posts"), || {
            let posts = self.posts();
            (posts.len() >= n, posts)
        })
    }

    /// Waits until a session is live after `identifies` IDENTIFYs and `resumes` RESUMEs.
    pub fn wait_live(&self, identifies: usize, resumes: usize, timeout: Duration) {
        wait_until(timeout, &format!("{identifies} IDENTIFY and {resumes} RESUME"), || {
            let st = self.state.lock();
            (st.identifies >= identifies && st.resumes >= resumes && st.live.is_some(), (st.identifies, st.resumes))
        });
    }
}

/// Appends a dispatch to the current session's log and sends it when a connection is live.
fn dispatch(st: &mut DiscordState, event: &str, data: Value) {
    let Some(session) = st.current.clone() else { return };
    let log = st.sessions.entry(session).or_default();
    let seq = log.last().map_or(1, |(s, _)| s + 1);
    let payload = json!({"op": 0, "t": event, "s": seq, "d": data});
    log.push((seq, payload.clone()));
    if let Some(live) = &st.live {
        let _ = live.send(Control::Send(payload.to_string()));
    }
}

fn authorized(headers: &HeaderMap) -> bool {
    headers.get("authorization").and_then(|v| v.to_str().ok()) == Some(&format!("Bot {TOKEN}"))
}

fn unauthorized() -> Response {
    json_response(StatusCode::UNAUTHORIZED, json!({"message": "401: Unauthorized", "code": 0}))
}

async fn gateway_bot(State((_, ws_port)): State<(Shared<DiscordState>, u16)>, headers: HeaderMap) -> Response {
    if !authorized(&headers) {
        return unauthorized();
    }
    json_response(
        StatusCode::OK,
        json!({"url": format!("ws://127.0.0.1:{ws_port}"), "shards": 1, "session_start_limit":
        {"total": 1000, "remaining": 999, "reset_after": 14_400_000, "max_concurrency": 1}}),
    )
}

/// `PATCH /guilds/{id}`: `icon` and `banner` must be image data URIs (as Discord checks).
async fn modify_guild(
    State((state, _)): State<(Shared<DiscordState>, u16)>,
    Path(guild): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !authorized(&headers) {
        return unauthorized();
    }
    let Ok(Value::Object(changes)) = serde_json::from_slice::<Value>(&body) else {
        return json_response(StatusCode::BAD_REQUEST, json!({"message": "400: Bad Request", "code": 0}));
    };
    let mut st = state.lock();
    for (field, value) in changes {
        let value = value.as_str().unwrap_or_default().to_owned();
        if !value.starts_with("data:image/") || !value.contains(";base64,") {
            return json_response(StatusCode::BAD_REQUEST, json!({"message": "Invalid Form Body", "code": 50035}));
        }
        st.guild_changes.push((guild.clone(), field, value));
    }
    json_response(StatusCode::OK, json!({"id": guild, "name": "Fake Guild"}))
}

/// `POST /users/@me/channels {"recipient_id"}`: the DM channel `dm-{recipient}`.
async fn open_dm(State((state, _)): State<(Shared<DiscordState>, u16)>, headers: HeaderMap, body: Bytes) -> Response {
    if !authorized(&headers) {
        return unauthorized();
    }
    {
        let mut st = state.lock();
        st.dm_opens += 1;
        if st.fail_dm_opens > 0 {
            st.fail_dm_opens -= 1;
            return json_response(StatusCode::BAD_GATEWAY, json!({"message": "upstream failed", "code": 0}));
        }
    }
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let Some(user) = body["recipient_id"].as_str() else {
        return json_response(StatusCode::BAD_REQUEST, json!({"message": "Invalid Form Body", "code": 50035}));
    };
    json_response(StatusCode::OK, json!({"id": format!("dm-{user}"), "type": 1, "recipients": [{"id": user}]}))
}

async fn create_message(
    State((state, _)): State<(Shared<DiscordState>, u16)>,
    Path(channel): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !authorized(&headers) {
        return unauthorized();
    }
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return json_response(StatusCode::BAD_REQUEST, json!({"message": "400: Bad Request", "code": 0}));
    };
    let mut st = state.lock();
    let now = Instant::now();
    let (used, reset) = *st.buckets.entry(channel.clone()).or_insert((0, now + Duration::from_secs(1)));
    let (used, reset) = if now >= reset { (0, now + Duration::from_secs(1)) } else { (used, reset) };
    if st.blocked_until.is_some_and(|t| now < t) || used >= BUCKET {
        st.violations += 1;
        let wait = st.blocked_until.map_or(reset, |b| b.max(reset)).saturating_duration_since(now);
        return too_many(wait.as_secs_f64());
    }
    if st.limit_next > 0 {
        st.limit_next -= 1;
        st.rate_limited += 1;
        st.blocked_until = Some(now + Duration::from_secs_f64(st.retry_after));
        return too_many(st.retry_after);
    }
    let content = body["content"].as_str().unwrap_or("").to_owned();
    if content.is_empty() || content.chars().count() > 2000 {
        let error = json!({"message": "Invalid Form Body", "code": 50035});
        return json_response(StatusCode::BAD_REQUEST, error);
    }
    st.buckets.insert(channel.clone(), (used + 1, reset));
    let reply_to = body["message_reference"]["message_id"].as_str().map(str::to_owned);
    let mentions_off = body["allowed_mentions"]["parse"].as_array().is_some_and(Vec::is_empty);
    st.posts.push(Post { channel: channel.clone(), content: content.clone(), reply_to, mentions_off });
    st.next += 1;
    let id = format!("{}", 500_000_000_000_000_000u64 + st.next);
    let message = json!({"id": id, "channel_id": channel, "guild_id": GUILD, "content": content, "type": 0,
        "author": {"id": BOT, "username": "cannon", "bot": true, "discriminator": "0"}});
    dispatch(&mut st, "MESSAGE_CREATE", message.clone());
    let mut response = json_response(StatusCode::OK, message);
    let left = BUCKET - used - 1;
    let after = reset.saturating_duration_since(now).as_secs_f64();
    let epoch = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64()) + after;
    let h = response.headers_mut();
    for (name, value) in [
        ("x-ratelimit-limit", BUCKET.to_string()),
        ("x-ratelimit-remaining", left.to_string()),
        ("x-ratelimit-reset", format!("{epoch:.3}")),
        ("x-ratelimit-reset-after", format!("{:.3}", (after * 1000.0).ceil() / 1000.0)),
        ("x-ratelimit-bucket", format!("messages-{channel}")),
    ] {
        h.insert(name, value.parse().expect("header value"));
    }
    response
}

fn too_many(retry_after: f64) -> Response {
    let retry_after = (retry_after * 1000.0).ceil() / 1000.0;
    let body = json!({"message": "You are being rate limited.", "retry_after": retry_after, "global": false});
    let mut response = json_response(StatusCode::TOO_MANY_REQUESTS, body);
    let h = response.headers_mut();
    h.insert("retry-after", (retry_after.ceil() as u64).into());
    h.insert("x-ratelimit-scope", "user".parse().expect("header value"));
    response
}

/// One Gateway connection.
async fn connection(tcp: tokio::net::TcpStream, state: Shared<DiscordState>, port: u16) {
    let Ok(mut socket) = tokio_tungstenite::accept_async(tcp).await else { return };
    let (tx, mut rx) = mpsc::unbounded_channel();
    let hello = json!({"op": 10, "d": {"heartbeat_interval": state.lock().heartbeat_ms}});
    if socket.send(Message::Text(hello.to_string().into())).await.is_err() {
        return;
    }
    super::relay(&mut socket, &mut rx, |payload| opcode(&state, &tx, &payload, port)).await;
    let mut st = state.lock();
    if st.live.as_ref().is_some_and(|live| live.same_channel(&tx)) {
        st.live = None;
    }
}

fn opcode(state: &Shared<DiscordState>, tx: &mpsc::UnboundedSender<Control>, payload: &Value, port: u16) {
    let mut st = state.lock();
    let d = &payload["d"];
    match payload["op"].as_u64() {
        Some(1) => {
            st.heartbeats += 1;
            if !st.skip_acks {
                let _ = tx.send(Control::Send(json!({"op": 11}).to_string()));
            }
        }
        Some(2) => {
            if d["token"].as_str() != Some(TOKEN) {
                let _ = tx.send(Control::Close(4004));
                return;
            }
            st.identifies += 1;
            st.next += 1;
            let session = format!("session-{}", st.next);
            st.current = Some(session.clone());
            st.live = Some(tx.clone());
            st.content_intent = d["intents"].as_u64().is_some_and(|i| i & (1 << 15) != 0);
            let ready = json!({"v": 10, "user": {"id": BOT, "username": "cannon", "bot": true, "discriminator": "0"},
                "guilds": [{"id": GUILD, "unavailable": true}], "session_id": session,
                "resume_gateway_url": format!("ws://127.0.0.1:{port}/resume"), "shard": [0, 1],
                "application": {"id": "APP", "flags": 0}});
            dispatch(&mut st, "READY", ready);
            let guild = json!({"id": GUILD, "name": "Fake Guild", "unavailable": false,
                "channels": [{"id": CHANNEL, "type": 0, "name": "general"}],
                "threads": [{"id": THREAD, "type": 11, "parent_id": CHANNEL, "name": "dice"}]});
            dispatch(&mut st, "GUILD_CREATE", guild);
        }
        Some(6) => {
            let known = d["session_id"].as_str().filter(|s| st.sessions.contains_key(*s)).map(str::to_owned);
            let (Some(session), Some(TOKEN)) = (known, d["token"].as_str()) else {
                let _ = tx.send(Control::Send(json!({"op": 9, "d": false}).to_string()));
                return;
            };
            st.resumes += 1;
            let after = d["seq"].as_u64().unwrap_or(0);
            for (_, payload) in st.sessions[&session].iter().filter(|(s, _)| *s > after) {
                let _ = tx.send(Control::Send(payload.to_string()));
            }
            st.current = Some(session);
            st.live = Some(tx.clone());
            dispatch(&mut st, "RESUMED", json!({}));
        }
        _ => {}
    }
}
