//! `kind: matrix`: a Matrix account on a homeserver, through the client-server API.
//!
//! A session logs in (password, on device `cannon-SERVICE`, or a given access token),
//! joins the configured rooms, then long-polls `/sync`: each `m.text` `m.room.message` of a
//! joined room becomes a message (`channel` the room id, `thread` the thread root when the
//! message is in a thread, `message_id` its event id); an invite is joined when
//! `join_on_invite`. Replies are `m.text` messages, in the thread when the taskback has one,
//! sent with a transaction id made from the taskback's id, so a retried send posts once.
//!
//! **Resuming.** After each `/sync` the collector stores its `next_batch` in the broker
//! (kv key [`cursor_key`]) with the id of the last message it added. On start it syncs from
//! the stored token, and skips the events already added before a crash: those whose
//! `message_id` is among the data stream's entries after the stored id. No message is
//! lost or added twice across restarts. Without a stored token, the first sync only finds
//! where "now" is: history is never answered.

use std::collections::{HashMap, HashSet};

use anyhow::Context as _;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::matrix_api::{Api, ApiError, SyncAnswer, check_sync, localpart};
use super::message::{MESSAGE_ID, PLATFORM, SERVER};
use super::{Incoming, Link, Outgoing, Platform, Target};
use crate::broker::StreamKind;
use crate::config::{MatrixAuth, MatrixSettings};
use crate::text::for_terminal;

/// The longest text of one Matrix message (events are limited to 64 KiB in all).
const MAX_TEXT: usize = 32 * 1024;
/// How many data-stream entries are scanned for already-added events when resuming.
const RESUME_SCAN: usize = 10_000;

/// What is stored in the broker after each `/sync`.
#[derive(Debug, Serialize, Deserialize)]
struct Cursor {
    /// `next_batch` of the last sync whose events were all added.
    since: String,
    /// Data-stream id at that point: events added later (before a crash) are found after it.
    after: String,
}

/// The broker kv key of an account's cursor. Of the form `A:kv:B:C`, which the kv import
/// refuses to guests (an absolute kv key), so no component can move it.
pub(crate) fn cursor_key(user_id: &str) -> String {
    format!("chat:kv:matrix:{user_id}")
}

pub(crate) struct Matrix {
    settings: MatrixSettings,
    api: Api,
    device: String,
    /// Where the next `/sync` starts.
    since: Option<String>,
    /// Whether the stored cursor was read (once per process).
    resumed: bool,
    /// Event ids added before a restart that the first syncs may bring again.
    seen: HashSet<String>,
    /// Id of the last message this collector added (the cursor's `after`).
    last_added: Option<String>,
    joined: HashSet<String>,
    /// Display names seen in member events.
    names: HashMap<String, String>,
}

impl Matrix {
    pub(crate) fn new(settings: MatrixSettings, service: &str) -> anyhow::Result<Self> {
        let api = Api::new(&settings.homeserver, settings.ca_file.as_deref())?;
        Ok(Matrix {
            settings,
            api,
            device: format!("cannon-{service}"),
            since: None,
            resumed: false,
            seen: HashSet::new(),
            last_added: None,
            joined: HashSet::new(),
            names: HashMap::new(),
        })
    }

    async fn authenticate(&mut self) -> anyhow::Result<String> {
        let hs = &self.settings.homeserver;
        let user_id = match &self.settings.auth {
            MatrixAuth::Password(password) => {
                self.api.login(&self.settings.user, password.expose(), &self.device).await
            }
            MatrixAuth::AccessToken(token) => self.api.whoami(token.expose()).await,
        }
        .with_context(|| format!("cannot log in to {hs} as {}", self.settings.user))?;
        Ok(user_id)
    }

    /// Reads the stored cursor and the event ids added after it.
    async fn resume(&mut self, link: &Link, user_id: &str) -> anyhow::Result<()> {
        let ctx = link.ctx();
        let service = &ctx.service.name;
        let stored = ctx.broker.kv_get(service, &cursor_key(user_id)).await.map_err(|e| anyhow::anyhow!("{e:?}"))?;
        let Some(cursor) = stored.and_then(|bytes| serde_json::from_slice::<Cursor>(&bytes).ok()) else {
            return Ok(());
        };
        let mut after = cursor.after.clone();
        let mut scanned = 0;
        while scanned < RESUME_SCAN {
            let entries = ctx.broker.scan(service, StreamKind::Data, &after, 500).await?;
            let Some(last) = entries.last() else { break };
            after = last.id.clone();
            scanned += entries.len();
            for entry in &entries {
                let get = |key: &str| entry.fields.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str());
                if get(PLATFORM) == Some("matrix")
                    && get(SERVER) == Some(self.settings.server.as_str())
                    && let Some(id) = get(MESSAGE_ID)
                {
                    self.seen.insert(id.to_owned());
                }
            }
        }
        tracing::info!(service = %service, resumed_after = %for_terminal(&cursor.since), already_added = self.seen.len(), "matrix: resuming");
        self.last_added = Some(cursor.after);
        self.since = Some(cursor.since);
        Ok(())
    }

    async fn save_cursor(&mut self, link: &Link, user_id: &str) -> anyhow::Result<()> {
        let ctx = link.ctx();
        let service = &ctx.service.name;
        let after = match &self.last_added {
            Some(id) => id.clone(),
            None => ctx.broker.last_id(service, StreamKind::Data).await?,
        };
        self.last_added = Some(after.clone());
        let Some(since) = self.since.clone() else { return Ok(()) };
        let cursor = serde_json::to_vec(&Cursor { since, after })?;
        ctx.broker
            .kv_set(service, &cursor_key(user_id), &cursor, None, &ctx.service.kv)
            .await
            .map_err(|e| anyhow::anyhow!("cannot store the sync position: {e:?}"))
    }

    async fn join(&mut self, room: &str) -> anyhow::Result<()> {
        match self.api.join(room).await {
            Ok(id) => {
                tracing::info!(room = %for_terminal(room), room_id = %for_terminal(&id), "matrix: joined");
                self.joined.insert(id);
                Ok(())
            }
            Err(err) if err.is_transient() || matches!(err, ApiError::Unauthorized(_)) => Err(err.into()),
            Err(err) => {
                tracing::warn!(room = %for_terminal(room), error = %err, "matrix: cannot join");
                Ok(())
            }
        }
    }

    /// Handles one `/sync` answer: joins, invites, messages; then stores the cursor.
    async fn absorb(&mut self, sync: SyncAnswer, link: &Link, user_id: &str, deliver: bool) -> anyhow::Result<()> {
        check_sync(&sync)?;
        for room in sync.rooms.leave.keys() {
            self.joined.remove(room);
        }
        let mut rooms: Vec<_> = sync.rooms.join.into_iter().collect();
        rooms.sort_by(|a, b| a.0.cmp(&b.0));
        for (room_id, room) in rooms {
            self.joined.insert(room_id.clone());
            for event in room.state.events.iter().chain(&room.timeline.events) {
                if let Some((who, name)) = event.display_name() {
                    self.names.insert(who.to_owned(), name.to_owned());
                }
            }
            if !deliver {
                continue;
            }
            for event in &room.timeline.events {
                let Some(text) = event.text() else { continue };
                if event.event_id.is_empty() || self.seen.remove(&event.event_id) {
                    continue;
                }
                let user =
                    self.names.get(&event.sender).cloned().unwrap_or_else(|| localpart(&event.sender).to_owned());
                let line = Incoming {
                    user,
                    user_id: event.sender.clone(),
                    text: text.to_owned(),
                    channel: room_id.clone(),
                    thread: event.thread().map(str::to_owned),
                    message_id: Some(event.event_id.clone()),
                    direct: false,
                    server: None,
                };
                if let Some(id) = link.deliver(&line).await? {
                    self.last_added = Some(id);
                }
            }
        }
        if self.settings.join_on_invite {
            for room in sync.rooms.invite.keys() {
                self.join(room).await?;
            }
        }
        self.since = Some(sync.next_batch);
        self.save_cursor(link, user_id).await
    }

    /// Posts one reply (one message per part of at most [`MAX_TEXT`]); returns it while
    /// parts are left or when the homeserver asked to wait.
    async fn post(&mut self, out: Outgoing, link: &mut Link) -> anyhow::Result<Option<Outgoing>> {
        let (room, thread) = match &out.reply.target {
            Target::Channel { channel, thread } => (channel.clone(), thread.clone()),
            Target::User(user) => {
                let why = format!("no direct messages on matrix (to {}): name a room in `channel`", for_terminal(user));
                out.finish(Err(why));
                return Ok(None);
            }
            Target::Guild { action, .. } => {
                let why = format!("no `{action}` on matrix");
                out.finish(Err(why));
                return Ok(None);
            }
        };
        if !self.joined.contains(&room) {
            out.finish(Err(format!("not in room {}", for_terminal(&room))));
            return Ok(None);
        }
        let parts = split_text(&out.reply.text, MAX_TEXT);
        let Some(part) = parts.get(out.parts_sent()) else {
            out.finish(Ok(format!("posted to {}", for_terminal(&room))));
            return Ok(None);
        };
        let txn: String = format!("cannon.{}.{}", out.taskback_id, out.parts_sent())
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() || c == '.' { c } else { '_' })
            .collect();
        match self.api.send(&room, part, thread.as_deref(), &txn).await {
            Ok(event_id) => {
                out.part_sent();
                if out.parts_sent() < parts.len() {
                    return Ok(Some(out));
                }
                out.finish(Ok(format!("posted to {} as {}", for_terminal(&room), for_terminal(&event_id))));
                Ok(None)
            }
            Err(ApiError::RateLimited(wait)) => {
                tracing::info!(service = %link.service(), wait_ms = wait.as_millis() as u64, "matrix: rate limited; waiting");
                link.hold_until(Instant::now() + wait);
                Ok(Some(out))
            }
            // Dropping `out` queues it again for the next session.
            Err(err) if err.is_transient() || matches!(err, ApiError::Unauthorized(_)) => Err(err.into()),
            Err(err) => {
                out.finish(Err(err.to_string()));
                Ok(None)
            }
        }
    }
}

#[async_trait]
impl Platform for Matrix {
    async fn session(&mut self, link: &mut Link) -> anyhow::Result<()> {
        // Logged in anew each session: a token refused meanwhile never stalls reconnecting.
        let user_id = self.authenticate().await?;
        // Rooms joined earlier (a sync from a stored position lists only rooms with news).
        self.joined.extend(self.api.joined_rooms().await?);
        if !self.resumed {
            self.resume(link, &user_id).await?;
            self.resumed = true;
        }
        link.identity(vec![user_id.clone()], vec![localpart(&user_id).to_owned(), user_id.clone()]);
        if self.since.is_none() {
            // Where "now" is, before joining: what is said from here on is answered.
            let first = self.api.sync(None).await?;
            self.absorb(first, link, &user_id, false).await?;
        }
        for room in self.settings.rooms.clone() {
            self.join(&room).await?;
        }
        link.established();
        tracing::info!(service = %link.service(), user = %for_terminal(&user_id), homeserver = %self.settings.homeserver, "matrix: logged in");
        let mut current: Option<Outgoing> = None;
        let mut sync = Box::pin(next_sync(self.api.clone(), self.since.clone()));
        loop {
            tokio::select! {
                answer = &mut sync => {
                    let answer = answer?;
                    self.absorb(answer, link, &user_id, true).await?;
                    sync = Box::pin(next_sync(self.api.clone(), self.since.clone()));
                }
                () = outbound(link, &mut current) => {
                    if let Some(out) = current.take() {
                        current = self.post(out, link).await?;
                    }
                }
            }
        }
    }
}

async fn next_sync(api: Api, since: Option<String>) -> Result<SyncAnswer, ApiError> {
    api.sync(since.as_deref()).await
}

/// Waits for the reply to post and for the pacing. Cancel-safe.
async fn outbound(link: &mut Link, current: &mut Option<Outgoing>) {
    if current.is_none() {
        *current = Some(link.reply().await);
    }
    link.pace().await;
}

/// `text` in parts of at most `max` bytes, cut at a line break when there is one.
fn split_text(text: &str, max: usize) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut rest = text;
    while rest.len() > max {
        let mut cut = max;
        while !rest.is_char_boundary(cut) {
            cut -= 1;
        }
        if let Some(nl) = rest[..cut].rfind('\n').filter(|&i| i > 0) {
            cut = nl;
        }
        parts.push(&rest[..cut]);
        rest = rest[cut..].strip_prefix('\n').unwrap_or(&rest[cut..]);
    }
    if !rest.is_empty() || parts.is_empty() {
        parts.push(rest);
    }
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_texts_split() {
        assert_eq!(split_text("short", 10), ["short"]);
        assert_eq!(split_text("aaaa\nbbbb\ncc", 10), ["aaaa\nbbbb", "cc"]);
        assert_eq!(split_text("abcdefghijkl", 5), ["abcde", "fghij", "kl"]);
        assert!(split_text(&"é".repeat(10), 5).iter().all(|p| p.len() <= 5));
        assert_eq!(cursor_key("@bot:hs"), "chat:kv:matrix:@bot:hs");
    }
}
