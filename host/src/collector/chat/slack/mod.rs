//! `kind: slack`: a Slack app in Socket Mode. Messages in the channels the bot is in become
//! messages; taskbacks are posted with `chat.postMessage` (in the message's thread when it
//! was in one).
//!
//! A session is `auth.test` (once: who the bot is), `apps.connections.open` and the
//! WebSocket; it reads envelopes and posts replies side by side until Slack asks for a new
//! connection (`disconnect`) or the socket fails, and the chat runner connects again.
//! An envelope is acknowledged only after its message is in the stream; one Slack delivers
//! again is recognised by its event id and acknowledged without being added twice.
//!
//! ## Layout
//! - `mod.rs`: the [`Slack`] platform (a session: envelopes in, replies out).
//! - `api.rs`: the Web API calls; `socket.rs`: one Socket Mode connection;
//!   `event.rs`: which events are user messages.

pub(crate) mod api;
mod event;
mod socket;

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

use self::api::{ApiError, Identity, WebApi};
use self::socket::{Connection, Envelope, Next};
use super::link::Turn;
use super::{Incoming, Link, Outgoing, Platform, Target};
use crate::collector::chat::wire::{Directory, Seen, split_reply};
use crate::config::SlackSettings;
use crate::text::for_terminal;

/// Characters per posted message: Slack advises at most 4,000 (it cuts at 40,000); a
/// longer reply is posted as several messages.
const MAX_POST: usize = 4_000;
/// Event ids remembered to recognise a delivery of the same event again.
const SEEN: usize = 4096;
/// Display names remembered.
const NAMES: usize = 10_000;

/// The Slack platform: its Web API client and what it keeps across connections.
pub(crate) struct Slack {
    settings: SlackSettings,
    api: WebApi,
    me: Option<Identity>,
    seen: Seen,
    names: HashMap<String, String>,
    /// Display name to user id, for a taskback's `to`.
    users: Directory,
    /// Consecutive transient failures posting a reply (for the backoff between attempts).
    post_failures: u32,
}

impl Slack {
    pub(crate) fn new(settings: SlackSettings) -> anyhow::Result<Self> {
        let api = WebApi::new(&settings.api_url, settings.app_token.clone(), settings.bot_token.clone())?;
        Ok(Slack {
            settings,
            api,
            me: None,
            seen: Seen::new(SEEN),
            names: HashMap::new(),
            users: Directory::default(),
            post_failures: 0,
        })
    }

    async fn identity(&mut self) -> anyhow::Result<Identity> {
        if let Some(me) = &self.me {
            return Ok(me.clone());
        }
        let me = self.api.auth_test().await.map_err(|e| match e {
            ApiError::Refused { error, .. } => {
                anyhow::anyhow!("Slack refused the bot token (auth.test: {error}): check `bot_token:`")
            }
            other => other.into(),
        })?;
        tracing::info!(bot_user = %for_terminal(&me.user_id), team = %for_terminal(&me.team_id), "Slack bot identified");
        self.me = Some(me.clone());
        Ok(me)
    }

    /// Handles one envelope: a user message is added (unless seen before); every envelope is
    /// acknowledged once handled.
    async fn envelope(&mut self, link: &Link, me: &Identity, envelope: &Envelope) -> anyhow::Result<()> {
        if envelope.kind != "events_api" {
            return Ok(());
        }
        let message = match event::message(&envelope.payload, me, &self.settings.channels) {
            Ok(m) => m,
            Err(skip) => {
                tracing::trace!(service = %link.service(), ?skip, "Slack event skipped");
                return Ok(());
            }
        };
        if self.seen.contains(&message.event_id) {
            tracing::debug!(service = %link.service(), retry_attempt = envelope.retry_attempt, "Slack event delivered again; already added");
            return Ok(());
        }
        let text = event::unescape(&message.text);
        let (text, addressed) = match event::strip_mention(&text, &me.user_id) {
            Some(rest) => (rest.to_owned(), true),
            None => (text, false),
        };
        let line = Incoming {
            user: self.display_name(&message.user_id).await,
            user_id: message.user_id.clone(),
            text,
            channel: message.channel.clone(),
            thread: message.thread_ts.clone(),
            message_id: Some(message.ts.clone()),
            direct: addressed || message.channel.starts_with('D'),
            server: Some(message.team.clone()),
        };
        self.users.learn(&line.user, &line.user_id);
        link.deliver(&line).await?;
        self.seen.insert(&message.event_id);
        Ok(())
    }

    /// The user's display name (`users.info`, remembered); the id when Slack will not say.
    async fn display_name(&mut self, user: &str) -> String {
        if let Some(name) = self.names.get(user) {
            return name.clone();
        }
        // Bounded: the envelope waiting for this is to be acknowledged within 3 s.
        let asked = tokio::time::timeout(Duration::from_secs(2), self.api.display_name(user)).await;
        match asked
            .unwrap_or_else(|_| Err(ApiError::Transient { method: "users.info", detail: "timed out".to_owned() }))
        {
            Ok(name) => {
                if self.names.len() >= NAMES {
                    self.names.clear();
                }
                self.names.insert(user.to_owned(), name.clone());
                name
            }
            Err(err) => {
                tracing::warn!(error = %err, user = %for_terminal(user), "cannot read a Slack user's name; using the id");
                user.to_owned()
            }
        }
    }

    /// Posts the next part of `out`; the reply when parts remain (or a retry is due).
    async fn post(&mut self, link: &mut Link, out: Outgoing) -> Option<Outgoing> {
        let (channel, thread) = match &out.reply.target {
            Target::Channel { channel, thread } => (channel.clone(), thread.clone()),
            // A user id as the channel posts to the bot's direct messages with them.
            Target::Guild { action, .. } => {
                let why = format!("no `{action}` on slack");
                out.finish(Err(why));
                return None;
            }
            Target::User(to) => match self.users.resolve(to, is_user_id) {
                Some(id) => (id, None),
                None => {
                    let why = format!("no Slack user {:?} has spoken to the bot", for_terminal(to));
                    out.finish(Err(why));
                    return None;
                }
            },
        };
        let parts = split_reply(&event::escape(&out.reply.text), MAX_POST);
        let Some(part) = parts.get(out.parts_sent()) else {
            out.finish(Ok(format!("posted to {channel}")));
            return None;
        };
        match self.api.post_message(&channel, part, thread.as_deref()).await {
            Ok(_) => {
                self.post_failures = 0;
                out.part_sent();
                if out.parts_sent() >= parts.len() {
                    out.finish(Ok(format!("posted to {channel}")));
                    return None;
                }
            }
            Err(ApiError::RateLimited { retry_after, .. }) => {
                tracing::warn!(service = %link.service(), retry_after_ms = retry_after.as_millis() as u64, "Slack rate limit; the reply waits");
                link.hold_until(Instant::now() + retry_after);
            }
            Err(err @ ApiError::Refused { .. }) => {
                out.finish(Err(err.to_string()));
                return None;
            }
            Err(err) => {
                self.post_failures += 1;
                let pause = crate::time::backoff(Duration::from_secs(1), self.post_failures, Duration::from_secs(30));
                tracing::warn!(service = %link.service(), error = %err, retry_in_ms = pause.as_millis() as u64, "cannot post a Slack reply; retrying");
                link.hold_until(Instant::now() + pause);
            }
        }
        Some(out)
    }
}

/// Whether `text` is a Slack user id (`U0123ABCD`, `W...` on Enterprise Grid).
fn is_user_id(text: &str) -> bool {
    text.len() >= 9
        && text.starts_with(['U', 'W'])
        && text.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
}

#[async_trait]
impl Platform for Slack {
    async fn session(&mut self, link: &mut Link) -> anyhow::Result<()> {
        let me = self.identity().await?;
        link.identity(vec![me.user_id.clone()], Vec::new());
        let mut conn = Connection::open(&self.api).await?;
        link.established();
        let mut current: Option<Outgoing> = None;
        loop {
            match link.next_turn(&mut current, conn.next()).await {
                Turn::Frame(next) => match next? {
                    Next::Envelope(envelope) => {
                        self.envelope(link, &me, &envelope).await?;
                        conn.ack(&envelope.id).await?;
                    }
                    Next::Refresh(why) => {
                        tracing::info!(service = %link.service(), reason = %why, "Slack Socket Mode: new connection");
                        let fresh = Connection::open(&self.api).await?;
                        std::mem::replace(&mut conn, fresh).close().await;
                    }
                    Next::Ended(why) => anyhow::bail!("{why}"),
                },
                Turn::Post(out) => current = self.post(link, out).await,
                Turn::Shutdown => {
                    conn.close().await;
                    return Ok(());
                }
            }
        }
    }
}
