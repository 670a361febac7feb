//! Chat collectors (`irc`, `matrix`, `slack`, `discord`; issue 16): channel messages in, taskbacks posted back.
//!
//! Every platform has the same shape. A [`Platform`] runs one *session* (connect,
//! authenticate, join, then read lines and post replies until the connection fails); [`run`]
//! runs sessions one after another with an exponential backoff (1 s doubling to 60 s; a
//! session that was up for a minute starts it over) and, beside them, the taskback reader
//! that feeds the reply queue. The session talks to a [`Link`], which outlives it:
//!
//! - inbound, [`Link::deliver`] ignores the bot's own lines, applies `prefix` and
//!   `mention_only`, and adds the message `{user, user_id, text, server, channel, [thread],
//!   platform, [message_id]}` plus the collector's kwargs;
//! - outbound, [`Link::reply`] hands out the next reply (a taskback's `text` for its
//!   `channel` and `thread`, or for user `to`) and [`Link::pace`] paces every message sent
//!   for it (`replies: {burst, every}`, plus holds the platform asks for). A reply is
//!   acknowledged only when posted, so none is lost while a platform is down.
//!
//! ## Layout
//! - `mod.rs`: [`Platform`], [`run`] (sessions with backoff, the taskback reader).
//! - `message.rs`: [`Incoming`] lines, the filter, message fields; taskback routing.
//! - `link.rs`: [`Link`] and [`Outgoing`] (one reply in flight, resumable).
//! - `deliver.rs`: the taskback reader (ack after posting; receipts).
//! - `pace.rs`: the token bucket behind `replies:`.
//! - `tls.rs`: the TLS client configuration (system roots plus `ca_file`).
//! - `irc.rs`: `kind: irc` (registration, SASL, nick fallback, PING, channels, replies);
//!   `irc_wire.rs`: its bounded line reader, line splitting and nick fallbacks.
//! - `matrix.rs`: `kind: matrix` (login, `/sync` with a stored cursor, invites, threads);
//!   `matrix_api.rs`: the client-server API calls it makes.
//! - `slack/`: `kind: slack` (Socket Mode); `discord/`: `kind: discord` (Gateway + REST);
//!   `wire.rs`: their shared HTTP/WebSocket plumbing (bounded reads, seen ids, splitting).

mod deliver;
mod discord;
mod irc;
mod irc_wire;
mod link;
mod matrix;
mod matrix_api;
mod message;
mod pace;
mod slack;
mod tls;
mod wire;

use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::mpsc;

pub(crate) use link::{Link, Outgoing};
pub(crate) use message::{Incoming, Target};

use crate::collector::{Context, Exit, HEALTHY_RUN};
use crate::config::{ChatPlatform, ChatSpec};
use crate::text::for_terminal;
use crate::time::backoff;

/// First pause before reconnecting; doubles per failed session.
const RECONNECT_BASE: Duration = Duration::from_secs(1);
/// Longest pause before reconnecting.
const RECONNECT_CAP: Duration = Duration::from_secs(60);

/// One chat platform's protocol.
#[async_trait]
pub(crate) trait Platform: Send {
    /// One connection from start to end: connect, authenticate and join (then call
    /// [`Link::established`] and [`Link::identity`]); then until the connection fails,
    /// [`Link::deliver`] each line said and post each [`Link::reply`] (one
    /// [`Link::pace`] per message sent, [`Outgoing::finish`] when done). Returns the
    /// reason the connection ended; [`run`] reconnects. Cancelled at shutdown.
    async fn session(&mut self, link: &mut Link) -> anyhow::Result<()>;
}

/// Runs a chat collector until shutdown.
pub(crate) async fn run(ctx: Context, spec: ChatSpec) -> anyhow::Result<Exit> {
    let mut platform: Box<dyn Platform> = match &spec.platform {
        ChatPlatform::Irc(settings) => Box::new(irc::Irc::new(settings.clone())?),
        ChatPlatform::Matrix(settings) => Box::new(matrix::Matrix::new(settings.clone(), &ctx.service.name)?),
        ChatPlatform::Slack(settings) => Box::new(slack::Slack::new(settings.clone())?),
        ChatPlatform::Discord(settings) => Box::new(discord::Discord::new(settings.clone())?),
    };
    let name = spec.platform.name();
    // One reply in flight at a time: the reader waits for it to be posted before the next.
    let (queue, replies) = mpsc::channel(1);
    let reader = tokio::spawn(deliver::run(ctx.clone(), name, spec.platform.server().to_owned(), queue));
    let mut link = Link::new(ctx.clone(), &spec, replies);
    let mut failures = 0u32;
    loop {
        link.established = None;
        let ended = tokio::select! {
            ended = platform.session(&mut link) => ended,
            () = ctx.shutdown.cancelled() => break,
        };
        if link.established.is_some_and(|at| at.elapsed() >= HEALTHY_RUN) {
            failures = 0;
        }
        failures += 1;
        let pause = backoff(RECONNECT_BASE, failures, RECONNECT_CAP);
        let why = match ended {
            Ok(()) => "the server closed the connection".to_owned(),
            Err(err) => format!("{err:#}"),
        };
        tracing::error!(
            service = %ctx.service.name,
            platform = name,
            error = %for_terminal(&why),
            reconnect_in_ms = pause.as_millis() as u64,
            "chat connection lost; reconnecting"
        );
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            () = ctx.shutdown.cancelled() => break,
        }
    }
    if let Err(err) = reader.await {
        tracing::error!(service = %ctx.service.name, error = %err, "chat taskback reader failed");
    }
    Ok(Exit::Stopped)
}
