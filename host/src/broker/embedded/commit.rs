//! Group commit: the writes of one process that arrive together run in one `BEGIN
//! IMMEDIATE` transaction, each inside a savepoint of its own, so one that fails leaves the
//! others intact; each caller hears back only after the commit.

use std::sync::PoisonError;

use rusqlite::TransactionBehavior;

use super::{EmbeddedBroker, Fail, Inner, error};
use crate::broker::Result;

impl EmbeddedBroker {
    /// Runs `f` atomically: all of it is committed, or none of it. Writes that arrive while
    /// the connection is busy are grouped into one `BEGIN IMMEDIATE` transaction (group
    /// commit), each inside its own savepoint, so one that fails leaves the others intact;
    /// each caller hears back only after the commit.
    pub(super) async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&rusqlite::Transaction<'_>) -> std::result::Result<T, Fail> + Send + 'static,
    ) -> Result<T> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let job: Box<dyn QueuedWrite> = Box::new(Write { f: Some(f), out: None, reply });
        self.inner.queued.lock().unwrap_or_else(PoisonError::into_inner).push(job);
        let inner = self.inner.clone();
        let ran = tokio::task::spawn_blocking(move || commit_queued(&inner)).await;
        let outcome = match answer.await {
            Ok(outcome) => outcome,
            // The blocking task that took our write panicked before answering.
            Err(_) => Err(Fail::Invalid(match ran {
                Err(join) => format!("database call failed: {join}"),
                Ok(()) => "database call failed".to_owned(),
            })),
        };
        outcome.map_err(|fail| error(&self.inner.shown, fail))
    }
}

/// A write waiting for the next group commit.
pub(super) trait QueuedWrite: Send {
    /// Runs the write inside the open transaction, in a savepoint of its own. False when a
    /// failed write could not be undone: then the whole transaction must not commit.
    fn run(&mut self, tx: &rusqlite::Transaction<'_>) -> bool;
    /// Answers the caller: the write's outcome if the transaction committed, else why not.
    fn answer(self: Box<Self>, committed: std::result::Result<(), String>);
}

struct Write<T, F> {
    f: Option<F>,
    out: Option<std::result::Result<T, Fail>>,
    reply: tokio::sync::oneshot::Sender<std::result::Result<T, Fail>>,
}

impl<T, F> QueuedWrite for Write<T, F>
where
    T: Send,
    F: FnOnce(&rusqlite::Transaction<'_>) -> std::result::Result<T, Fail> + Send,
{
    fn run(&mut self, tx: &rusqlite::Transaction<'_>) -> bool {
        let Some(f) = self.f.take() else { return true };
        if let Err(err) = tx.execute_batch("SAVEPOINT write") {
            self.out = Some(Err(err.into()));
            return false;
        }
        let (out, sound) = match f(tx) {
            Ok(value) => match tx.execute_batch("RELEASE write") {
                Ok(()) => (Ok(value), true),
                Err(err) => (Err(err.into()), false),
            },
            // Undo this write only; the transaction goes on with the others.
            Err(fail) => (Err(fail), tx.execute_batch("ROLLBACK TO write; RELEASE write").is_ok()),
        };
        self.out = Some(out);
        sound
    }

    fn answer(self: Box<Self>, committed: std::result::Result<(), String>) {
        let outcome = match (committed, self.out) {
            (Ok(()), Some(out)) => out,
            (Ok(()), None) => Err(Fail::Invalid("write was not run".to_owned())),
            (Err(why), _) => Err(Fail::Invalid(why)),
        };
        // The caller may have gone away (its future was dropped); nothing to tell then.
        let _ = self.reply.send(outcome);
    }
}

/// Runs every queued write in one transaction and answers each; does nothing when another
/// call already took them.
fn commit_queued(inner: &Inner) {
    let mut conn = inner.conn.lock().unwrap_or_else(PoisonError::into_inner);
    let mut jobs = std::mem::take(&mut *inner.queued.lock().unwrap_or_else(PoisonError::into_inner));
    if jobs.is_empty() {
        return;
    }
    let committed = (|| {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        for job in &mut jobs {
            if !job.run(&tx) {
                // Dropping the transaction rolls all of it back.
                return Ok(Err("a failed write could not be undone; nothing was written".to_owned()));
            }
        }
        tx.commit().map(Ok)
    })()
    .unwrap_or_else(|e: rusqlite::Error| Err(format!("transaction failed: {e}")));
    for job in jobs {
        job.answer(committed.clone());
    }
}
