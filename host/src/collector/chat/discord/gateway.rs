//! One Discord Gateway (v10, JSON) connection: HELLO, IDENTIFY or RESUME, heartbeats,
//! dispatches until the connection ends.
//!
//! - **Heartbeats:** the first after `heartbeat_interval × jitter` (jitter uniform in
//!   [0, 1)), then every `heartbeat_interval`, each carrying the last handled sequence
//!   number. A heartbeat falling due while the previous one was not acknowledged (op 11)
//!   marks the connection dead (a zombie): it is closed with a non-1000 code, so the
//!   session stays resumable, and resumed. An op 1 from Discord is answered at once.
//! - **Sequence:** the `s` of a dispatch is taken as handled only once the collector has
//!   handled it (added the message to the stream), so a RESUME after a dropped connection
//!   replays everything not yet handled: nothing is lost; what is replayed twice is
//!   recognised by its message id (see [`super`]).
//! - **Ends:** op 7 RECONNECT, a dropped socket or a zombie connection -> resume (at the
//!   `resume_gateway_url` of READY, with session id and sequence); op 9 INVALID_SESSION
//!   `false`, close codes 4007 and 4009 -> a new session after 1-5 s; the close codes
//!   Discord documents as final (4004 authentication failed, 4010-4014 shard and intent
//!   errors) are errors naming the cause.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use crate::collector::chat::wire::{self, Socket};
use crate::config::Secret;

/// GUILDS | GUILD_MESSAGES | DIRECT_MESSAGES | MESSAGE_CONTENT.
pub const INTENTS: u64 = (1 << 0) | (1 << 9) | (1 << 12) | (1 << 15);
/// Time allowed for HELLO after connecting.
const HELLO_TIMEOUT: Duration = Duration::from_secs(30);

/// A session that can be resumed.
#[derive(Debug, Clone)]
pub struct Session {
    pub id: String,
    /// The last sequence number handled.
    pub seq: Option<u64>,
    /// Where to resume (READY's `resume_gateway_url`).
    pub resume_url: String,
}

/// What the connection yields next.
#[derive(Debug)]
pub enum Next {
    /// A dispatch (op 0) to handle; call [`Connection::handled`] with its `seq` afterwards.
    Dispatch { event: String, data: Value, seq: Option<u64> },
    /// The connection ended; connect again (RESUME when a session is kept, else IDENTIFY).
    Ended(String),
}

/// The Gateway client's state across connections.
pub struct Gateway {
    /// The Gateway URL from `GET /gateway/bot`.
    pub url: String,
    pub token: Secret,
    pub session: Option<Session>,
    /// The bot's own user id, from READY.
    pub me: Option<String>,
}

/// One open connection.
pub struct Connection<'g> {
    gateway: &'g mut Gateway,
    socket: Socket,
    interval: Duration,
    next_beat: Instant,
    /// The last heartbeat was acknowledged (op 11).
    acked: bool,
}

impl Gateway {
    pub fn new(url: String, token: Secret) -> Self {
        Gateway { url, token, session: None, me: None }
    }

    /// Connects (to the session's `resume_gateway_url` when there is one), waits for HELLO
    /// and sends RESUME or IDENTIFY.
    pub async fn connect(&mut self) -> anyhow::Result<Connection<'_>> {
        let base = self.session.as_ref().map_or(self.url.as_str(), |s| s.resume_url.as_str());
        let mut socket = wire::connect(&gateway_query(base)).await?;
        let interval = hello(&mut socket).await?;
        let opening = match &self.session {
            Some(s) => json!({"op": 6, "d": {"token": self.token.expose(), "session_id": s.id, "seq": s.seq}}),
            None => json!({"op": 2, "d": {
                "token": self.token.expose(),
                "intents": INTENTS,
                "properties": {"os": std::env::consts::OS, "browser": "cannon", "device": "cannon"},
            }}),
        };
        socket.send(Message::Text(opening.to_string().into())).await?;
        let next_beat = Instant::now() + interval.mul_f64(fastrand::f64());
        Ok(Connection { gateway: self, socket, interval, next_beat, acked: true })
    }
}

impl Connection<'_> {
    /// The bot's own user id (known after READY).
    pub fn me(&self) -> Option<&str> {
        self.gateway.me.as_deref()
    }

    /// The next dispatch, heartbeating meanwhile. Cancel-safe: a heartbeat being written
    /// when it is cancelled is flushed with the next write or read.
    pub async fn next(&mut self) -> anyhow::Result<Next> {
        loop {
            let frame = tokio::select! {
                frame = self.socket.next() => frame,
                () = tokio::time::sleep_until(self.next_beat) => {
                    if !self.acked {
                        self.close_for_resume().await;
                        return Ok(Next::Ended("no heartbeat ACK since the last heartbeat".to_owned()));
                    }
                    self.acked = false;
                    self.next_beat = Instant::now() + self.interval;
                    self.beat().await?;
                    continue;
                }
            };
            let text = match frame {
                None => return Ok(Next::Ended("the connection was closed".to_owned())),
                Some(Err(err)) => return Ok(Next::Ended(format!("the connection failed: {err}"))),
                Some(Ok(Message::Text(text))) => text,
                Some(Ok(Message::Close(frame))) => return self.closed(frame.as_ref()).map(Next::Ended),
                Some(Ok(_)) => continue,
            };
            let Ok(mut payload) = serde_json::from_str::<Value>(text.as_str()) else {
                tracing::warn!("Discord sent a frame that is not JSON; skipped");
                continue;
            };
            match payload.get("op").and_then(Value::as_u64) {
                Some(0) => {
                    let seq = payload.get("s").and_then(Value::as_u64);
                    let event = payload.get("t").and_then(Value::as_str).unwrap_or_default().to_owned();
                    let data = payload.get_mut("d").map(Value::take).unwrap_or(Value::Null);
                    if self.opened(&event, &data, seq)? {
                        return Ok(Next::Dispatch { event, data, seq });
                    }
                }
                Some(1) => self.beat().await?,
                Some(7) => {
                    self.close_for_resume().await;
                    return Ok(Next::Ended("Discord asked to reconnect (op 7)".to_owned()));
                }
                Some(9) => return Ok(Next::Ended(self.invalid_session(&payload).await)),
                Some(11) => self.acked = true,
                _ => {}
            }
        }
    }

    /// Records that the dispatch with `seq` was handled: a RESUME starts after it.
    pub fn handled(&mut self, seq: Option<u64>) {
        if let (Some(session), Some(seq)) = (self.gateway.session.as_mut(), seq) {
            session.seq = Some(session.seq.map_or(seq, |s| s.max(seq)));
        }
    }

    /// Closes with code 1000, which ends the session (at shutdown).
    pub async fn close(mut self) {
        let frame = CloseFrame { code: CloseCode::Normal, reason: "".into() };
        let _ = tokio::time::timeout(Duration::from_secs(2), self.socket.close(Some(frame))).await;
    }

    /// READY opens a session (and says who the bot is); RESUMED reopens one. Whether the
    /// dispatch is for the caller (every one is, today).
    fn opened(&mut self, event: &str, data: &Value, seq: Option<u64>) -> anyhow::Result<bool> {
        match event {
            "READY" => {
                let text = |v: &Value| v.as_str().map(str::to_owned);
                let (Some(id), Some(resume_url)) = (text(&data["session_id"]), text(&data["resume_gateway_url"]))
                else {
                    anyhow::bail!("Discord's READY has no session_id or resume_gateway_url");
                };
                self.gateway.me = text(&data["user"]["id"]);
                self.gateway.session = Some(Session { id, seq, resume_url });
                tracing::info!(guilds = data["guilds"].as_array().map_or(0, Vec::len), "Discord session ready");
                Ok(true)
            }
            "RESUMED" => {
                tracing::info!("Discord session resumed");
                Ok(true)
            }
            _ => Ok(true),
        }
    }

    async fn beat(&mut self) -> anyhow::Result<()> {
        let seq = self.gateway.session.as_ref().and_then(|s| s.seq);
        self.socket.send(Message::Text(json!({"op": 1, "d": seq}).to_string().into())).await?;
        Ok(())
    }

    async fn invalid_session(&mut self, payload: &Value) -> String {
        if payload.get("d").and_then(Value::as_bool) == Some(true) && self.gateway.session.is_some() {
            return "Discord said the session is invalid but resumable (op 9)".to_owned();
        }
        self.gateway.session = None;
        // Discord asks for a random 1-5 s pause before identifying again.
        tokio::time::sleep(Duration::from_millis(1000 + fastrand::u64(0..4000))).await;
        "Discord invalidated the session (op 9)".to_owned()
    }

    fn closed(&mut self, frame: Option<&CloseFrame>) -> anyhow::Result<String> {
        let code = frame.map_or(1005, |f| u16::from(f.code));
        let reason = frame.map(|f| crate::text::for_terminal(f.reason.as_str()).into_owned()).unwrap_or_default();
        match code {
            4004 => anyhow::bail!("Discord refused the token (close 4004 {reason}): check the collector's `token:`"),
            4010..=4012 => anyhow::bail!("Discord closed the Gateway with {code} {reason}"),
            4013 | 4014 => anyhow::bail!(
                "Discord refused the intents (close {code} {reason}): enable the Message Content intent for the bot \
                 in the Developer Portal"
            ),
            4007 | 4009 => {
                self.gateway.session = None;
                Ok(format!("Discord closed the session ({code} {reason})"))
            }
            _ => Ok(format!("Discord closed the connection ({code} {reason})")),
        }
    }

    /// Closes without code 1000 (which would end the session on Discord's side).
    async fn close_for_resume(&mut self) {
        let frame = CloseFrame { code: CloseCode::Library(4000), reason: "reconnecting".into() };
        let _ = tokio::time::timeout(Duration::from_secs(2), self.socket.close(Some(frame))).await;
    }
}

/// Waits for HELLO (op 10); its `heartbeat_interval`.
async fn hello(socket: &mut Socket) -> anyhow::Result<Duration> {
    let deadline = Instant::now() + HELLO_TIMEOUT;
    loop {
        let frame = tokio::time::timeout_at(deadline, socket.next())
            .await
            .map_err(|_| anyhow::anyhow!("Discord sent no HELLO within {}s", HELLO_TIMEOUT.as_secs()))?;
        let text = match frame {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Close(_))) | None => anyhow::bail!("Discord closed the connection before HELLO"),
            Some(Err(err)) => anyhow::bail!("the Gateway connection failed before HELLO: {err}"),
            Some(Ok(_)) => continue,
        };
        let payload: Value =
            serde_json::from_str(text.as_str()).map_err(|e| anyhow::anyhow!("Discord's HELLO: {e}"))?;
        if payload.get("op").and_then(Value::as_u64) != Some(10) {
            anyhow::bail!("Discord sent op {} before HELLO", payload["op"]);
        }
        let ms = payload["d"]["heartbeat_interval"].as_u64().filter(|ms| *ms > 0);
        let ms = ms.ok_or_else(|| anyhow::anyhow!("Discord's HELLO has no heartbeat_interval"))?;
        return Ok(Duration::from_millis(ms));
    }
}

/// `url` with `v=10&encoding=json` as its query.
fn gateway_query(url: &str) -> String {
    let base = url.split_once('?').map_or(url, |(b, _)| b);
    let base = base.trim_end_matches('/');
    format!("{base}/?v=10&encoding=json")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateway_urls_get_version_and_encoding() {
        assert_eq!(gateway_query("wss://gateway.discord.gg"), "wss://gateway.discord.gg/?v=10&encoding=json");
        assert_eq!(gateway_query("ws://127.0.0.1:9/?v=9"), "ws://127.0.0.1:9/?v=10&encoding=json");
        assert_eq!(INTENTS, 37377);
    }
}
