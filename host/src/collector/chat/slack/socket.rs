//! One Socket Mode connection: `apps.connections.open` for a fresh URL, the WebSocket, then
//! envelopes until Slack sends `disconnect` (or the socket dies).
//!
//! Every envelope (`{"envelope_id", "type", "payload", "retry_attempt", ...}`) is
//! acknowledged with `{"envelope_id": ...}` once its event has been handled, i.e. added to
//! the service's stream: an envelope lost with a dropped socket is not acknowledged, and
//! Slack delivers it again (with `retry_attempt` > 0) on a later connection. Slack expects the
//! acknowledgement within 3 s; handling is one broker write, well within that. An envelope
//! delivered again is recognised by its event id (see [`super`]) and acknowledged without
//! being added twice.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

use super::api::WebApi;
use crate::collector::chat::wire::{self, Socket};

/// Silence after which the client pings the server; after three silent periods in a row
/// the connection is taken for dead and replaced.
const QUIET: Duration = Duration::from_secs(30);

/// What the connection yields next.
#[derive(Debug)]
pub enum Next {
    /// An envelope to handle, then acknowledge with [`Connection::ack`].
    Envelope(Envelope),
    /// Slack asked for a new connection (`disconnect`, reason given): open one and carry on.
    Refresh(String),
    /// Slack closed the socket.
    Ended(String),
}

/// One envelope's content.
#[derive(Debug)]
pub struct Envelope {
    pub id: String,
    /// `events_api`, `slash_commands`, `interactive`, ...
    pub kind: String,
    /// How many times Slack delivered it before (0 the first time).
    pub retry_attempt: u64,
    pub payload: Value,
}

/// One open Socket Mode connection.
pub struct Connection {
    socket: Socket,
    /// Quiet periods in a row.
    silent: u32,
}

impl Connection {
    /// `apps.connections.open`, then the WebSocket.
    pub async fn open(api: &WebApi) -> anyhow::Result<Self> {
        let url = api.connections_open().await?;
        Ok(Connection { socket: wire::connect(&url).await?, silent: 0 })
    }

    /// The next envelope. Cancel-safe (a ping being written is flushed with the next write
    /// or read).
    pub async fn next(&mut self) -> anyhow::Result<Next> {
        loop {
            let frame = match tokio::time::timeout(QUIET, self.socket.next()).await {
                Err(_) => {
                    self.silent += 1;
                    if self.silent >= 3 {
                        anyhow::bail!("Slack sent nothing for {}s", (QUIET * self.silent).as_secs());
                    }
                    self.socket.send(Message::Ping(Vec::new().into())).await?;
                    continue;
                }
                Ok(None) => return Ok(Next::Ended("the socket was closed".to_owned())),
                Ok(Some(frame)) => frame.map_err(|e| anyhow::anyhow!("Socket Mode connection: {e}"))?,
            };
            self.silent = 0;
            let text = match frame {
                Message::Text(text) => text,
                Message::Close(close) => {
                    let why = close.map_or_else(
                        || "closed by Slack".to_owned(),
                        |c| format!("closed by Slack ({} {})", c.code, c.reason),
                    );
                    return Ok(Next::Ended(crate::text::for_terminal(&why).into_owned()));
                }
                // Pings are answered by tungstenite; pongs and binary frames mean nothing here.
                _ => continue,
            };
            let mut value: Value = match serde_json::from_str(text.as_str()) {
                Ok(v) => v,
                Err(err) => {
                    tracing::warn!(error = %err, "Slack sent a frame that is not JSON; skipped");
                    continue;
                }
            };
            let kind = value.get("type").and_then(Value::as_str).unwrap_or_default().to_owned();
            match kind.as_str() {
                "hello" => tracing::debug!("Slack Socket Mode connection ready"),
                "disconnect" => {
                    let reason = value.get("reason").and_then(Value::as_str).unwrap_or("unspecified");
                    let reason = crate::text::for_terminal(reason);
                    return Ok(Next::Refresh(format!("Slack asked to reconnect ({reason})")));
                }
                _ => {
                    let Some(id) = value.get("envelope_id").and_then(Value::as_str).map(str::to_owned) else {
                        tracing::warn!(kind = %crate::text::for_terminal(&kind), "Slack sent a frame without `envelope_id`; skipped");
                        continue;
                    };
                    return Ok(Next::Envelope(Envelope {
                        id,
                        kind,
                        retry_attempt: value.get("retry_attempt").and_then(Value::as_u64).unwrap_or(0),
                        payload: value.get_mut("payload").map(Value::take).unwrap_or(Value::Null),
                    }));
                }
            }
        }
    }

    /// Acknowledges an envelope (`{"envelope_id": ...}`).
    pub async fn ack(&mut self, envelope_id: &str) -> anyhow::Result<()> {
        let ack = serde_json::json!({ "envelope_id": envelope_id }).to_string();
        self.socket.send(Message::Text(ack.into())).await?;
        Ok(())
    }

    /// Closes the socket (at shutdown).
    pub async fn close(mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(2), self.socket.close(None)).await;
    }
}
