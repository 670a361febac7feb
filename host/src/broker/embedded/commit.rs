//! The writer thread and group commit. One thread per broker owns the connection that
//! writes and takes jobs from a queue. The writes it finds waiting together run in one
//! `BEGIN IMMEDIATE` transaction, each inside a savepoint of its own, so one that fails
//! leaves the others intact; each caller hears back only after the commit. Nothing else
//! writes through that connection, so there is no lock to take and no hand-off to the
//! blocking pool per call: a burst of writes costs one wake-up of the thread and one commit.
//! Adds to the same stream queued in one group go further: they share one savepoint and
//! one read and write of the stream's row (a producer's burst, a collector's backlog).
//! The thread ends when the broker is dropped (the queue's last sender with it).

use std::panic::AssertUnwindSafe;
use std::sync::mpsc::{Receiver, Sender};

use rusqlite::{Connection, TransactionBehavior};

use super::streams::{self, exec, format_id, nth_after};
use super::{EmbeddedBroker, Fail, error};
use crate::broker::{Fields, Result};

/// Most writes that share one transaction: the first callers are not kept waiting for the
/// commit of an unbounded group.
const MAX_GROUP: usize = 1024;
/// The answer when the writer thread is gone (it ended, or could not be started).
pub(super) const WRITER_GONE: &str = "the database writer thread has stopped";
/// The answer when the job was lost without an answer (the writer panicked while running it).
pub(super) const WRITER_FAILED: &str = "database call failed in the writer thread";

/// What the writer thread runs.
pub(super) enum Job {
    /// A write that may share a transaction with its neighbours.
    Write(Box<dyn QueuedWrite>),
    /// An add of one entry: joins the adds to the same stream in its group.
    Add(Add),
    /// A call on the connection outside any transaction (it manages its own).
    Call(Box<dyn FnOnce(&mut Connection) + Send>),
}

/// Starts the writer thread on `conn`; returns its queue.
pub(super) fn spawn_writer(conn: Connection) -> std::io::Result<Sender<Job>> {
    let (queue, jobs) = std::sync::mpsc::channel();
    std::thread::Builder::new().name("cannon-sqlite-writer".into()).spawn(move || writer_loop(conn, &jobs))?;
    Ok(queue)
}

/// Takes the jobs waiting (up to [`MAX_GROUP`] writes), runs them in order, and so on until
/// every sender is gone.
fn writer_loop(mut conn: Connection, jobs: &Receiver<Job>) {
    let mut group: Vec<Box<dyn QueuedWrite>> = Vec::with_capacity(MAX_GROUP);
    let mut pending_call = None;
    while let Ok(first) = jobs.recv() {
        let mut next = Some(first);
        let mut taken = 0;
        // Where in `group` the adds to each stream are gathered.
        let mut adds_of: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
        while let Some(job) = next.take() {
            match job {
                Job::Write(write) => group.push(write),
                // Every write in a group was queued while the ones before it were still
                // waiting for their commit, so none of them happened before another: an add
                // may join the adds to its stream queued earlier in the group.
                Job::Add(add) => {
                    let left = match adds_of.get(&add.stream).and_then(|i| group.get_mut(*i)) {
                        Some(adds) => adds.absorb(add),
                        None => Some(add),
                    };
                    if let Some(add) = left {
                        adds_of.insert(add.stream.clone(), group.len());
                        group.push(Box::new(Adds::new(add)));
                    }
                }
                Job::Call(call) => {
                    pending_call = Some(call);
                    break;
                }
            }
            taken += 1;
            if taken >= MAX_GROUP {
                break;
            }
            next = jobs.try_recv().ok();
        }
        // A panic inside one job must not end the thread: the jobs of that round lose
        // their answer (their callers hear `WRITER_FAILED`), the transaction rolls back.
        let _ = std::panic::catch_unwind(AssertUnwindSafe(|| {
            if !group.is_empty() {
                commit_group(&mut conn, std::mem::take(&mut group));
            }
            if let Some(call) = pending_call.take() {
                call(&mut conn);
            }
        }));
        group.clear();
        pending_call = None;
    }
}

impl EmbeddedBroker {
    /// Runs `f` atomically: all of it is committed, or none of it. Writes that arrive while
    /// the writer thread is busy are grouped into one `BEGIN IMMEDIATE` transaction (group
    /// commit), each inside its own savepoint, so one that fails leaves the others intact;
    /// each caller hears back only after the commit.
    pub(super) async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&rusqlite::Transaction<'_>) -> std::result::Result<T, Fail> + Send + 'static,
    ) -> Result<T> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let job = Job::Write(Box::new(Write { f: Some(f), out: None, reply }));
        let outcome = match self.inner.writer.send(job) {
            Ok(()) => answer.await.unwrap_or_else(|_| Err(Fail::Invalid(WRITER_FAILED.to_owned()))),
            Err(_) => Err(Fail::Invalid(WRITER_GONE.to_owned())),
        };
        outcome.map_err(|fail| error(&self.inner.shown, fail))
    }

    /// Adds one entry to `stream` through the writer thread, which runs the adds to one
    /// stream queued in one group as one (`streams::add_all`). Returns its id.
    pub(super) async fn add_entry(&self, stream: String, fields: Fields) -> Result<String> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let outcome = match self.inner.writer.send(Job::Add(Add { stream, fields, reply })) {
            Ok(()) => answer.await.unwrap_or_else(|_| Err(Fail::Invalid(WRITER_FAILED.to_owned()))),
            Err(_) => Err(Fail::Invalid(WRITER_GONE.to_owned())),
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
    /// Takes `add` into this write if it can run with it (an [`Adds`] to the same stream),
    /// else gives it back.
    fn absorb(&mut self, add: Add) -> Option<Add> {
        Some(add)
    }
}

/// Runs `f` inside a savepoint: released when it succeeds, rolled back when it fails. The
/// flag is false when a failure could not be undone (the transaction must not commit).
fn in_savepoint<T>(
    tx: &rusqlite::Transaction<'_>,
    f: impl FnOnce(&rusqlite::Transaction<'_>) -> std::result::Result<T, Fail>,
) -> (std::result::Result<T, Fail>, bool) {
    if let Err(err) = exec(tx, "SAVEPOINT write", []) {
        return (Err(err.into()), false);
    }
    match f(tx) {
        Ok(value) => match exec(tx, "RELEASE write", []) {
            Ok(_) => (Ok(value), true),
            Err(err) => (Err(err.into()), false),
        },
        // Undo this write only; the transaction goes on with the others.
        Err(fail) => {
            let undone = exec(tx, "ROLLBACK TO write", []).and_then(|_| exec(tx, "RELEASE write", []));
            (Err(fail), undone.is_ok())
        }
    }
}

/// What `answer` sends a caller: the outcome if the transaction committed, else why not.
fn settled<T>(
    committed: &std::result::Result<(), String>,
    out: Option<std::result::Result<T, Fail>>,
) -> std::result::Result<T, Fail> {
    match (committed, out) {
        (Ok(()), Some(out)) => out,
        (Ok(()), None) => Err(Fail::Invalid("write was not run".to_owned())),
        (Err(why), _) => Err(Fail::Invalid(why.clone())),
    }
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
        let (out, sound) = in_savepoint(tx, f);
        self.out = Some(out);
        sound
    }

    fn answer(self: Box<Self>, committed: std::result::Result<(), String>) {
        // The caller may have gone away (its future was dropped); nothing to tell then.
        let _ = self.reply.send(settled(&committed, self.out));
    }
}

/// An add waiting for the writer thread.
pub(super) struct Add {
    stream: String,
    fields: Fields,
    reply: tokio::sync::oneshot::Sender<std::result::Result<String, Fail>>,
}

/// The adds to one stream queued in one group: one savepoint and one read and write of the
/// stream's row for all of them. If that fails, each runs on its own, so one bad add fails
/// alone, as any write would.
struct Adds {
    stream: String,
    entries: Vec<Fields>,
    replies: Vec<tokio::sync::oneshot::Sender<std::result::Result<String, Fail>>>,
    outs: Vec<std::result::Result<String, Fail>>,
}

impl Adds {
    fn new(add: Add) -> Self {
        Self { stream: add.stream, entries: vec![add.fields], replies: vec![add.reply], outs: Vec::new() }
    }
}

/// Groups of more than one add run so far (for the tests).
#[cfg(test)]
pub(super) static ADDS_GROUPED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

impl QueuedWrite for Adds {
    fn run(&mut self, tx: &rusqlite::Transaction<'_>) -> bool {
        #[cfg(test)]
        if self.entries.len() > 1 {
            ADDS_GROUPED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        let (together, sound) = in_savepoint(tx, |tx| streams::add_all(tx, &self.stream, &self.entries));
        match together {
            Ok(Some(first)) => {
                self.outs = (0..self.entries.len()).map(|n| Ok(format_id(nth_after(first, n)))).collect();
                sound
            }
            Ok(None) => {
                self.outs =
                    self.entries.iter().map(|_| Err(Fail::Invalid("an add added nothing".to_owned()))).collect();
                sound
            }
            Err(fail) if !sound || self.entries.len() == 1 => {
                self.outs = vec![Err(fail)];
                sound
            }
            Err(_) => {
                let mut all_sound = true;
                for fields in &self.entries {
                    let (out, sound) = in_savepoint(tx, |tx| streams::add(tx, &self.stream, fields));
                    self.outs.push(out);
                    all_sound &= sound;
                    if !sound {
                        break;
                    }
                }
                all_sound
            }
        }
    }

    fn answer(self: Box<Self>, committed: std::result::Result<(), String>) {
        let mut outs = self.outs.into_iter();
        for reply in self.replies {
            let _ = reply.send(settled(&committed, outs.next()));
        }
    }

    /// (At most [`MAX_GROUP`] entries: the writer takes no more jobs than that per group.)
    fn absorb(&mut self, add: Add) -> Option<Add> {
        if add.stream != self.stream {
            return Some(add);
        }
        self.entries.push(add.fields);
        self.replies.push(add.reply);
        None
    }
}

/// Runs `jobs` in one transaction and answers each.
fn commit_group(conn: &mut Connection, mut jobs: Vec<Box<dyn QueuedWrite>>) {
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
