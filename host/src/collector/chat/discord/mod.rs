//! `kind: discord`: a Discord bot on the Gateway (v10, with the Message Content intent).
//! Messages in the channels (and threads) the bot can read become messages; taskbacks are
//! posted with the REST create-message call, as a reply to the message they answer.
//!
//! A session is `GET /gateway/bot` (once), then one Gateway connection (IDENTIFY the first
//! time, RESUME with session id and sequence after that); it reads dispatches and posts
//! replies side by side until the connection ends, and the chat runner connects again. A
//! message is counted as handled (its sequence number) only once it is in the stream, so a
//! RESUME replays what was not; a message seen again is recognised by its id.
//!
//! ## Layout
//! - `mod.rs`: the [`Discord`] platform (a session: dispatches in, replies out).
//! - `gateway.rs`: one Gateway connection; `rest.rs`: REST calls with rate limits;
//!   `event.rs`: which dispatches are user messages, and the threads; `branding.rs`:
//!   the branding example's icon and banner as guild changes.

mod branding;
mod event;
mod gateway;
pub(crate) mod rest;

use async_trait::async_trait;
use serde_json::Value;
use tokio::time::Instant;

use self::event::Threads;
use self::gateway::{Gateway, Next};
use self::rest::{Rest, RestError};
use super::link::Turn;
use super::{Incoming, Link, Outgoing, Platform, Target};
use crate::collector::chat::wire::{Directory, Seen, split_reply};
use crate::config::DiscordSettings;

/// Characters per message (Discord refuses longer content); a longer reply is several.
const MAX_POST: usize = 2_000;
/// Message ids remembered to recognise a message delivered again.
const SEEN: usize = 4096;

/// The Discord platform: REST client, Gateway state and what it keeps across connections.
pub(crate) struct Discord {
    settings: DiscordSettings,
    rest: Rest,
    gateway: Option<Gateway>,
    threads: Threads,
    seen: Seen,
    /// Display name to user id, for a taskback's `to`.
    users: Directory,
    /// User id to the id of the direct-message channel with them.
    dms: std::collections::HashMap<String, String>,
    /// Consecutive transient failures posting a reply (for the backoff between attempts).
    post_failures: u32,
}

impl Discord {
    pub(crate) fn new(settings: DiscordSettings) -> anyhow::Result<Self> {
        let rest = Rest::new(&settings.api_url, settings.token.clone())?;
        Ok(Discord {
            settings,
            rest,
            gateway: None,
            threads: Threads::default(),
            seen: Seen::new(SEEN),
            users: Directory::default(),
            dms: std::collections::HashMap::new(),
            post_failures: 0,
        })
    }

    /// Handles a dispatch: threads are learnt, user messages added.
    async fn dispatch(&mut self, link: &Link, me: Option<&str>, event: &str, data: &Value) -> anyhow::Result<()> {
        self.threads.learn(event, data);
        if event != "MESSAGE_CREATE" {
            return Ok(());
        }
        let (channels, guilds) = (&self.settings.channels, &self.settings.guilds);
        let message = match event::message(data, me, &self.threads, channels, guilds) {
            Ok(m) => m,
            Err(skip) => {
                tracing::trace!(service = %link.service(), ?skip, "Discord message skipped");
                return Ok(());
            }
        };
        if self.seen.contains(&message.id) {
            tracing::debug!(service = %link.service(), "Discord message delivered again; already added");
            return Ok(());
        }
        let (text, addressed) = match me.and_then(|me| event::strip_mention(&message.text, me)) {
            Some(rest) => (rest.to_owned(), true),
            None => (message.text.clone(), false),
        };
        let line = Incoming {
            user: message.user,
            user_id: message.user_id,
            text,
            channel: message.channel,
            thread: message.thread,
            message_id: Some(message.id.clone()),
            direct: addressed || message.guild.is_empty(),
            server: Some(message.guild),
        };
        self.users.learn(&line.user, &line.user_id);
        link.deliver(&line).await?;
        self.seen.insert(&message.id);
        Ok(())
    }

    /// Applies a branding action (`branding:` set): the guild's icon or banner.
    async fn brand(&mut self, link: &mut Link, out: Outgoing, action: &str, asset: &str) -> Option<Outgoing> {
        let Some(settings) = &self.settings.branding else {
            out.finish(Err(format!("`{action}` needs `branding: {{guild, assets}}` in the discord collector")));
            return None;
        };
        let changes = match branding::change(settings, action, asset) {
            Ok(changes) => changes,
            Err(why) => {
                out.finish(Err(why));
                return None;
            }
        };
        match self.rest.modify_guild(&settings.guild, &changes).await {
            Ok(()) => {
                let field = if action == "set-icon" { "icon" } else { "banner" };
                out.finish(Ok(format!("guild {field} set from {}", crate::text::for_terminal(asset))));
                None
            }
            Err(RestError::RateLimited { until, .. }) => {
                link.hold_until(until);
                Some(out)
            }
            Err(err @ RestError::Refused { .. }) => {
                out.finish(Err(err.to_string()));
                None
            }
            Err(err) => {
                tracing::warn!(service = %link.service(), error = %err, "cannot change the Discord guild; retrying");
                link.hold_until(Instant::now() + std::time::Duration::from_secs(5));
                Some(out)
            }
        }
    }

    /// The direct-message channel with the user `to` names (a name seen before or an id),
    /// opened once and remembered.
    async fn dm_channel(&mut self, to: &str) -> Result<String, RestError> {
        let is_id = |s: &str| !s.is_empty() && s.len() <= 20 && s.bytes().all(|b| b.is_ascii_digit());
        let Some(user) = self.users.resolve(to, is_id) else {
            let message = format!("no Discord user {:?} has spoken to the bot", crate::text::for_terminal(to));
            return Err(RestError::Refused { route: "direct message".to_owned(), status: 404, message });
        };
        if let Some(channel) = self.dms.get(&user) {
            return Ok(channel.clone());
        }
        let channel = self.rest.open_dm(&user).await?;
        if self.dms.len() >= 10_000 {
            self.dms.clear();
        }
        self.dms.insert(user, channel.clone());
        Ok(channel)
    }

    /// Posts the next part of `out`; the reply when parts remain (or a retry is due).
    async fn post(&mut self, link: &mut Link, out: Outgoing) -> Option<Outgoing> {
        let target = out.reply.target.clone();
        let channel = match target {
            // A thread is a channel of its own on Discord.
            Target::Channel { channel, thread } => thread.unwrap_or(channel),
            Target::Guild { action, asset } => return self.brand(link, out, &action, &asset).await,
            Target::User(to) => match self.dm_channel(&to).await {
                Ok(channel) => channel,
                Err(RestError::RateLimited { until, .. }) => {
                    link.hold_until(until);
                    return Some(out);
                }
                Err(err @ RestError::Refused { .. }) => {
                    out.finish(Err(err.to_string()));
                    return None;
                }
                // The network or a 5xx while opening the channel: the reply waits, as a
                // post that failed so would (refused only for good, never for the moment).
                Err(err) => {
                    self.failed_post(link, &err);
                    return Some(out);
                }
            },
        };
        let parts = split_reply(&out.reply.text, MAX_POST);
        let Some(part) = parts.get(out.parts_sent()) else {
            out.finish(Ok(format!("posted to {channel}")));
            return None;
        };
        // The first part answers the message it replies to (shown with a link to it).
        let reply_to = (out.parts_sent() == 0).then_some(out.reply.message_id.as_deref()).flatten();
        match self.rest.create_message(&channel, part, reply_to).await {
            Ok(_) => {
                self.post_failures = 0;
                out.part_sent();
                if out.parts_sent() >= parts.len() {
                    out.finish(Ok(format!("posted to {channel}")));
                    return None;
                }
            }
            Err(RestError::RateLimited { until, .. }) => link.hold_until(until),
            Err(err @ RestError::Refused { .. }) => {
                out.finish(Err(err.to_string()));
                return None;
            }
            Err(err) => self.failed_post(link, &err),
        }
        Some(out)
    }

    /// A post that failed for the moment: the reply waits, with backoff.
    fn failed_post(&mut self, link: &mut Link, err: &RestError) {
        self.post_failures += 1;
        let pause = crate::time::backoff(
            std::time::Duration::from_secs(1),
            self.post_failures,
            std::time::Duration::from_secs(30),
        );
        tracing::warn!(service = %link.service(), error = %err, retry_in_ms = pause.as_millis() as u64, "cannot post a Discord reply; retrying");
        link.hold_until(Instant::now() + pause);
    }
}

#[async_trait]
impl Platform for Discord {
    async fn session(&mut self, link: &mut Link) -> anyhow::Result<()> {
        let mut gateway = match self.gateway.take() {
            Some(gateway) => gateway,
            None => Gateway::new(self.rest.gateway_url().await?, self.settings.token.clone()),
        };
        let ended = self.connection(&mut gateway, link).await;
        self.gateway = Some(gateway);
        ended
    }
}

impl Discord {
    /// One Gateway connection: dispatches in, replies out, until it ends.
    async fn connection(&mut self, gateway: &mut Gateway, link: &mut Link) -> anyhow::Result<()> {
        let mut conn = gateway.connect().await?;
        let mut current: Option<Outgoing> = None;
        loop {
            match link.next_turn(&mut current, conn.next()).await {
                Turn::Frame(next) => match next? {
                    Next::Dispatch { event, data, seq } => {
                        let me = conn.me().map(str::to_owned);
                        if event == "READY" || event == "RESUMED" {
                            link.identity(me.clone().into_iter().collect(), Vec::new());
                            link.established();
                        }
                        self.dispatch(link, me.as_deref(), &event, &data).await?;
                        conn.handled(seq);
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
