//! [`Link`]: what a platform session talks to. Inbound, [`Link::deliver`] filters a line
//! (own messages, `prefix`, `mention_only`) and adds it as a message; outbound,
//! [`Link::reply`] hands out the next reply to post and [`Link::pace`] paces each message
//! the platform sends for it. The link outlives sessions: a reconnect keeps the queue.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::message::{Incoming, Reply, admit, fields};
use super::pace::Pacer;
use crate::collector::{AddError, Context};
use crate::config::{ChatFilter, ChatSpec};
use crate::text::for_terminal;

/// What a platform did with a reply: `Ok(detail)` posted, `Err(why)` refused for good (the
/// bot is not in that channel, the platform rejected it). Becomes the receipt.
pub(crate) type Outcome = Result<String, String>;

/// One reply being posted. Dropping it unfinished (the connection failed) puts it back in
/// the queue: it is posted again, from the first part not yet sent.
#[derive(Debug)]
pub(crate) struct Outgoing {
    pub reply: Reply,
    /// The taskback's entry id: a stable key for the platform's idempotent sends (Matrix
    /// transaction ids), the same on every attempt.
    pub taskback_id: String,
    /// Parts (lines) already sent; shared with the queue, so a retry resumes after them.
    sent: Arc<AtomicUsize>,
    done: Option<oneshot::Sender<Outcome>>,
}

impl Outgoing {
    pub(crate) fn new(reply: Reply, taskback_id: String, sent: Arc<AtomicUsize>) -> (Self, oneshot::Receiver<Outcome>) {
        let (tx, rx) = oneshot::channel();
        (Outgoing { reply, taskback_id, sent, done: Some(tx) }, rx)
    }

    /// How many parts of this reply were sent already (by an earlier attempt too).
    pub(crate) fn parts_sent(&self) -> usize {
        self.sent.load(Ordering::SeqCst)
    }

    /// Records that one more part was sent.
    pub(crate) fn part_sent(&self) {
        self.sent.fetch_add(1, Ordering::SeqCst);
    }

    /// Finishes the reply: posted (`Ok`) or refused for good (`Err`).
    pub(crate) fn finish(mut self, outcome: Outcome) {
        if let Some(done) = self.done.take() {
            let _ = done.send(outcome);
        }
    }
}

/// The platform-independent side of a chat connection.
pub(crate) struct Link {
    ctx: Context,
    platform: &'static str,
    server: String,
    filter: ChatFilter,
    replies: mpsc::Receiver<Outgoing>,
    pacer: Pacer,
    /// The bot's own ids: lines from them are ignored.
    own_ids: Vec<String>,
    /// Names a line may address the bot by (for `mention_only`).
    names: Vec<String>,
    /// When the current session was established (registered, logged in); `None` before.
    pub(crate) established: Option<Instant>,
}

impl Link {
    pub(crate) fn new(ctx: Context, spec: &ChatSpec, replies: mpsc::Receiver<Outgoing>) -> Self {
        Link {
            ctx,
            platform: spec.platform.name(),
            server: spec.platform.server().to_owned(),
            filter: spec.filter.clone(),
            replies,
            pacer: Pacer::new(spec.pace),
            own_ids: Vec::new(),
            names: Vec::new(),
            established: None,
        }
    }

    /// The collector's context (service, broker, shutdown).
    pub(crate) fn ctx(&self) -> &Context {
        &self.ctx
    }

    pub(crate) fn service(&self) -> &str {
        &self.ctx.service.name
    }

    /// The session is up (registered, logged in): a session that stays up long enough
    /// resets the reconnect backoff.
    pub(crate) fn established(&mut self) {
        self.established = Some(Instant::now());
    }

    /// Who the bot is on this connection: its ids (its own lines are ignored) and the
    /// names a line may address it by.
    pub(crate) fn identity(&mut self, own_ids: Vec<String>, names: Vec<String>) {
        self.own_ids = own_ids;
        self.names = names;
    }

    /// Adds `line` as a message unless it is the bot's own or the filter ignores it; a
    /// broker failure is retried until it succeeds or the collector stops. Returns the
    /// message's id when one was added.
    pub(crate) async fn deliver(&self, line: &Incoming) -> Result<Option<String>, AddError> {
        if self.own_ids.contains(&line.user_id) {
            return Ok(None);
        }
        let Some(text) = admit(&self.filter, line, &self.names) else {
            return Ok(None);
        };
        match self.ctx.add_patiently(fields(line, text, self.platform, &self.server)).await {
            Ok(id) => Ok(Some(id)),
            Err(err @ (AddError::TooLarge { .. } | AddError::TooManyFields { .. } | AddError::Empty)) => {
                tracing::warn!(
                    service = %self.service(),
                    platform = self.platform,
                    channel = %for_terminal(&line.channel),
                    user = %for_terminal(&line.user),
                    error = %err,
                    "chat line skipped"
                );
                Ok(None)
            }
            Err(err) => Err(err),
        }
    }

    /// The next reply to post, waiting for one. Cancel-safe.
    pub(crate) async fn reply(&mut self) -> Outgoing {
        match self.replies.recv().await {
            Some(out) => out,
            // The taskback reader is gone (the collector is stopping): nothing more to post.
            None => std::future::pending().await,
        }
    }

    /// Waits until one more message may be sent (the `replies:` pacing and any hold), and
    /// counts it. Cancel-safe.
    pub(crate) async fn pace(&mut self) {
        self.pacer.wait().await;
    }

    /// The platform asked to slow down: nothing is sent before `until`.
    pub(crate) fn hold_until(&mut self, until: Instant) {
        self.pacer.hold_until(until);
    }

    /// What a WebSocket session (Slack, Discord) does next: handle the connection's next
    /// frame (`frame`, a cancel-safe read), post the reply in hand (`current`) once its pace
    /// allows, or stop on shutdown. A reply that arrives meanwhile becomes `current`; the
    /// frame read keeps waiting across it.
    pub(crate) async fn next_turn<F>(
        &mut self,
        current: &mut Option<Outgoing>,
        frame: impl std::future::Future<Output = F>,
    ) -> Turn<F> {
        let shutdown = self.ctx().shutdown.clone();
        tokio::pin!(frame);
        loop {
            let reply = tokio::select! {
                next = &mut frame => return Turn::Frame(next),
                reply = async {
                    if current.is_none() { Some(self.reply().await) } else { self.pace().await; None }
                } => reply,
                () = shutdown.cancelled() => return Turn::Shutdown,
            };
            match reply {
                Some(out) => *current = Some(out),
                None => {
                    if let Some(out) = current.take() {
                        return Turn::Post(out);
                    }
                }
            }
        }
    }
}

/// See [`Link::next_turn`].
pub(crate) enum Turn<F> {
    /// The connection's next frame (or its end).
    Frame(F),
    /// The reply in hand, paced: post it now.
    Post(Outgoing),
    /// The collector is stopping: close the connection.
    Shutdown,
}
