//! A local Slack: the Web API methods a Socket Mode bot uses and the Socket Mode WebSocket.
//!
//! - `POST /api/auth.test`, `/api/users.info`, `/api/chat.postMessage` with the bot token,
//!   `/api/apps.connections.open` with the app-level token (any other token:
//!   `{"ok": false, "error": "invalid_auth"}`); form-encoded bodies, JSON answers.
//! - `apps.connections.open` returns a single-use `ws://.../link?ticket=N` URL.
//! - The socket opens with `hello`; each user message is an `events_api` envelope with an
//!   `envelope_id`; an envelope not acknowledged (`{"envelope_id": ...}`) is delivered again on
//!   the next connection with `retry_attempt` + 1, as Slack retries unacknowledged events.
//! - What the bot posts comes back as a `message` event from the bot user (`bot_id` set), as
//!   in a real workspace.
//! - `chat.postMessage` can be told to answer HTTP 429 with `Retry-After`; a post made
//!   before that time has passed is counted as a violation (and refused again).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::post;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::handshake::server as handshake;

use super::{Background, Control, Live, Shared, form, form_get, json_response, wait_until};

pub const APP_TOKEN: &str = "xapp-1-test";
pub const BOT_TOKEN: &str = "xoxb-test";
pub const BOT_USER: &str = "UBOT";
pub const BOT_ID: &str = "BBOT";
pub const TEAM: &str = "T0TEAM";

/// A message the bot posted.
#[derive(Debug, Clone)]
pub struct Post {
    pub channel: String,
    pub text: String,
    pub thread_ts: Option<String>,
}

#[derive(Default, Debug)]
pub struct SlackState {
    pub posts: Vec<Post>,
    /// Envelopes sent and not acknowledged yet, with how often each was sent.
    pub unacked: Vec<(Value, u64)>,
    pub acks: Vec<String>,
    pub connections: usize,
    tickets: Vec<String>,
    /// How many of the next `chat.postMessage` calls get a 429, and with which Retry-After.
    pub limit_next: usize,
    pub retry_after_secs: u64,
    blocked_until: Option<Instant>,
    /// Posts made while a Retry-After was still running.
    pub violations: usize,
    pub rate_limited: usize,
    /// Drop the socket right after sending the next envelope (before its ack can arrive).
    pub drop_after_next: bool,
    next: u64,
    #[doc(hidden)]
    pub live: Live,
    users: HashMap<String, String>,
}

pub struct FakeSlack {
    bg: Background,
    pub state: Shared<SlackState>,
    pub api_url: String,
}

impl FakeSlack {
    pub fn start() -> Self {
        let bg = Background::new();
        let state = Shared::new(SlackState::default());
        state.lock().users.insert("U1".into(), "Alice".into());
        state.lock().users.insert("U2".into(), "Bob".into());
        let (http, http_port) = bg.listen();
        let (ws, ws_port) = bg.listen();
        let router = Router::new()
            .route("/api/{method}", post(api))
            .with_state((state.clone(), format!("ws://127.0.0.1:{ws_port}/link")));
        bg.serve_http(http, router);
        let accept_state = state.clone();
        bg.runtime.spawn(async move {
            while let Ok((tcp, _)) = ws.accept().await {
                tokio::spawn(connection(tcp, accept_state.clone()));
            }
        });
        FakeSlack { bg, state, api_url: format!("http://127.0.0.1:{http_port}/api") }
    }

    /// A user message in `channel` (in the thread `thread_ts` when given); returns its ts.
    pub fn say(&self, user: &str, channel: &str, text: &str, thread_ts: Option<&str>) -> String {
        let mut st = self.state.lock();
        st.next += 1;
        let n = st.next;
        let ts = format!("1700000000.{n:06}");
        let mut event = json!({
            "type": "message", "channel": channel, "user": user, "text": text, "ts": ts,
            "event_ts": ts, "channel_type": "channel", "team": TEAM,
        });
        if let Some(thread) = thread_ts {
            event["thread_ts"] = json!(thread);
        }
        push_event(&mut st, event);
        ts
    }

    /// Sends `disconnect` (reason `refresh_requested`), as Slack does before it rotates a
    /// connection.
    pub fn disconnect(&self) {
        let msg = json!({"type": "disconnect", "reason": "refresh_requested", "debug_info": {"host": "fake"}});
        if let Some(live) = &self.state.lock().live {
            let _ = live.send(Control::Send(msg.to_string()));
        }
    }

    /// Sends `text` as it is on the live connection (hostile or broken frames).
    pub fn send_raw(&self, text: &str) {
        if let Some(live) = &self.state.lock().live {
            let _ = live.send(Control::Send(text.to_owned()));
        }
    }

    /// Drops the live connection without a close frame.
    pub fn drop_connection(&self) {
        if let Some(live) = self.state.lock().live.take() {
            let _ = live.send(Control::Drop);
        }
    }

    pub fn posts(&self) -> Vec<Post> {
        self.state.lock().posts.clone()
    }

    /// Waits for at least `n` posts; returns them all.
    pub fn wait_posts(&self, n: usize, timeout: Duration) -> Vec<Post> {
        wait_until(timeout, &format!("{n} Slack posts"), || {
            let posts = self.posts();
            (posts.len() >= n, posts)
        })
    }

    /// Waits until a connection is open and greeted.
    pub fn wait_connected(&self, connections: usize, timeout: Duration) {
        wait_until(timeout, &format!("Socket Mode connection #{connections}"), || {
            let st = self.state.lock();
            (st.connections >= connections && st.live.is_some(), st.connections)
        });
    }
}

impl SlackState {
    /// Adds a user `users.info` knows.
    pub fn users_insert(&mut self, id: &str, name: &str) {
        self.users.insert(id.to_owned(), name.to_owned());
    }
}

/// Adds an envelope for `event` and sends it on the live connection, if any.
fn push_event(st: &mut SlackState, event: Value) {
    st.next += 1;
    let n = st.next;
    let envelope = json!({
        "envelope_id": format!("env-{n}"),
        "type": "events_api",
        "accepts_response_payload": false,
        "retry_attempt": 0,
        "retry_reason": "",
        "payload": {
            "token": "verification", "team_id": TEAM, "api_app_id": "A0APP", "type": "event_callback",
            "event_id": format!("Ev{n:08}"), "event_time": 1_700_000_000 + n, "event": event,
        },
    });
    st.unacked.push((envelope.clone(), 1));
    if let Some(live) = &st.live {
        let _ = live.send(Control::Send(envelope.to_string()));
        if st.drop_after_next {
            st.drop_after_next = false;
            let _ = live.send(Control::Drop);
            st.live = None;
        }
    }
}

async fn api(
    State((state, ws_url)): State<(Shared<SlackState>, String)>,
    axum::extract::Path(method): axum::extract::Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let token = headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or("");
    let want = if method == "apps.connections.open" { APP_TOKEN } else { BOT_TOKEN };
    if token != format!("Bearer {want}") {
        return json_response(StatusCode::OK, json!({"ok": false, "error": "invalid_auth"}));
    }
    let form = form(&body);
    let mut st = state.lock();
    let answer = match method.as_str() {
        "auth.test" => json!({"ok": true, "url": "https://fake.slack.com/", "team": "Fake", "user": "cannon",
            "team_id": TEAM, "user_id": BOT_USER, "bot_id": BOT_ID}),
        "apps.connections.open" => {
            st.next += 1;
            let ticket = format!("t{}", st.next);
            st.tickets.push(ticket.clone());
            json!({"ok": true, "url": format!("{ws_url}?ticket={ticket}")})
        }
        "users.info" => match form_get(&form, "user").and_then(|u| st.users.get(u)) {
            Some(name) => json!({"ok": true, "user": {"id": form_get(&form, "user"), "name": name.to_lowercase(),
                "profile": {"display_name": name, "real_name": format!("{name} Example")}}}),
            None => json!({"ok": false, "error": "user_not_found"}),
        },
        "chat.postMessage" => return post_message(&mut st, &form),
        _ => json!({"ok": false, "error": "unknown_method"}),
    };
    json_response(StatusCode::OK, answer)
}

fn post_message(st: &mut SlackState, form: &[(String, String)]) -> Response {
    let now = Instant::now();
    if st.blocked_until.is_some_and(|t| now < t) {
        st.violations += 1;
        return too_many(st.retry_after_secs);
    }
    if st.limit_next > 0 {
        st.limit_next -= 1;
        st.rate_limited += 1;
        st.blocked_until = Some(now + Duration::from_secs(st.retry_after_secs));
        return too_many(st.retry_after_secs);
    }
    let (Some(channel), Some(text)) = (form_get(form, "channel"), form_get(form, "text")) else {
        return json_response(StatusCode::OK, json!({"ok": false, "error": "no_text"}));
    };
    let thread_ts = form_get(form, "thread_ts").map(str::to_owned);
    st.posts.push(Post { channel: channel.to_owned(), text: text.to_owned(), thread_ts: thread_ts.clone() });
    st.next += 1;
    let ts = format!("1700000001.{:06}", st.next);
    // The bot's own message comes back as an event, as in a real workspace.
    let mut event = json!({"type": "message", "channel": channel, "user": BOT_USER, "bot_id": BOT_ID,
        "text": text, "ts": ts, "event_ts": ts, "channel_type": "channel", "team": TEAM});
    if let Some(thread) = &thread_ts {
        event["thread_ts"] = json!(thread);
    }
    push_event(st, event);
    json_response(
        StatusCode::OK,
        json!({"ok": true, "channel": channel, "ts": ts, "message": {"text": text, "ts": ts}}),
    )
}

fn too_many(retry_after: u64) -> Response {
    let mut response = json_response(StatusCode::OK, json!({"ok": false, "error": "ratelimited"}));
    *response.status_mut() = StatusCode::TOO_MANY_REQUESTS;
    response.headers_mut().insert("retry-after", retry_after.into());
    response
}

/// One Socket Mode connection: checks the single-use ticket, says `hello`, sends every
/// unacknowledged envelope again, then relays what the test asks and records acks.
async fn connection(tcp: tokio::net::TcpStream, state: Shared<SlackState>) {
    let mut ticket = String::new();
    let Ok(mut socket) = tokio_tungstenite::accept_hdr_async(tcp, Ticket(&mut ticket)).await else { return };
    let (tx, mut rx) = mpsc::unbounded_channel();
    if !admit(&state, &ticket, &tx) {
        let _ = socket.close(None).await;
        return;
    }
    super::relay(&mut socket, &mut rx, |ack| {
        let Some(id) = ack["envelope_id"].as_str() else { return };
        let mut st = state.lock();
        st.unacked.retain(|(e, _)| e["envelope_id"].as_str() != Some(id));
        st.acks.push(id.to_owned());
    })
    .await;
    let mut st = state.lock();
    if st.live.as_ref().is_some_and(|live| live.same_channel(&tx)) {
        st.live = None;
    }
}

/// Reads the `ticket` query parameter of the WebSocket handshake.
struct Ticket<'a>(&'a mut String);

impl handshake::Callback for Ticket<'_> {
    fn on_request(
        self,
        request: &handshake::Request,
        response: handshake::Response,
    ) -> Result<handshake::Response, handshake::ErrorResponse> {
        *self.0 = request.uri().query().unwrap_or("").trim_start_matches("ticket=").to_owned();
        Ok(response)
    }
}

/// Takes a connection with a valid ticket: `hello`, then every unacknowledged envelope again.
fn admit(state: &Shared<SlackState>, ticket: &str, tx: &mpsc::UnboundedSender<Control>) -> bool {
    let mut st = state.lock();
    let Some(at) = st.tickets.iter().position(|t| t == ticket) else { return false };
    {
        st.tickets.remove(at);
        st.connections += 1;
        let hello = json!({"type": "hello", "num_connections": 1, "debug_info": {"host": "fake",
            "approximate_connection_time": 18060}, "connection_info": {"app_id": "A0APP"}});
        let _ = tx.send(Control::Send(hello.to_string()));
        for (envelope, sent) in st.unacked.iter_mut() {
            envelope["retry_attempt"] = json!(*sent);
            envelope["retry_reason"] = json!("timeout");
            *sent += 1;
            let _ = tx.send(Control::Send(envelope.to_string()));
        }
        st.live = Some(tx.clone());
    }
    true
}
