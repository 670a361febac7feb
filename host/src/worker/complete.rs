//! The completer: writes finished messages to the broker in batches and retries until the
//! broker takes them. The broker writes a message (its taskbacks or dead letter, and its
//! acknowledgement) only if this consumer still holds it, checked atomically with the write:
//! a write that went through although its reply was lost, or a message another worker took
//! over, is not written a second time. A message the broker delivered anew while its write
//! was under way (its claim lost in a failover) is written once more after it, so a write
//! that checked the claim before the new delivery does not leave it unanswered.
//!
//! Transient failures (the broker is away, slow or busy) are retried with backoff, forever.
//! A write the broker refuses for good (too large for it, say) would be refused forever, so
//! it must not block the service: when a batch fails, and the failure is permanent or the
//! broker answered other requests both before and after one of its failed tries (not only
//! once an outage was over), its messages are written one by one, and a message
//! the broker keeps refusing becomes a dead letter carrying the broker's error, then one
//! without its large fields, then one with no message fields at all.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::{Finished, InFlight, MAX_BROKER_BACKOFF, Streak, lock, log_failure};
use crate::broker::{Broker, BrokerError, Completion, DeadLetter, Fields, StreamKind};
use crate::time::{backoff, now_ms};

/// Most finished messages written to the broker in one transaction.
const COMPLETE_BATCH: usize = 512;
/// How often the writer trims the service's streams (`Broker::trim`).
const TRIM_EVERY: Duration = Duration::from_secs(1);
/// Failures of one message written alone, while the broker answers other requests, after
/// which the refusal counts as permanent although it looked transient (Redis closes the
/// connection on a request larger than `proto-max-bulk-len` or `client-query-buffer-limit`).
const REFUSALS_BEFORE_PERMANENT: u32 = 3;
/// Fields larger than this (key plus value) are left out of the last-resort dead letter.
const LARGE_FIELD: usize = 1024;

pub struct Writer {
    pub broker: Arc<dyn Broker>,
    pub service: String,
    pub consumer: String,
    pub in_flight: InFlight,
}

impl Writer {
    pub async fn run(self, mut done: mpsc::Receiver<Finished>) {
        let mut batch = Vec::with_capacity(COMPLETE_BATCH);
        let mut last_trim = Instant::now();
        while done.recv_many(&mut batch, COMPLETE_BATCH).await > 0 {
            let mut completions = Vec::new();
            let mut sources = Vec::new();
            let mut dead = Vec::new();
            for finished in batch.drain(..) {
                match finished {
                    Finished::Done(completion, fields) => {
                        completions.push(completion);
                        sources.push(fields);
                    }
                    Finished::Dead(letter) => dead.push(letter),
                }
            }
            self.write_batch(&completions, &sources, &dead, false).await;
            let again = self.release(&completions, &dead);
            if !again.is_empty() {
                // Delivered anew while being written (the broker lost this worker's claim in
                // a failover, say): the reader dropped that delivery, and the write may have
                // checked the claim before it. Written once more; where the first write came
                // after the new delivery, the check finds nothing held and writes nothing.
                tracing::info!(
                    service = %self.service,
                    count = again.len(),
                    "messages were delivered again while their results were being written; writing them once more"
                );
                let (completions, sources): (Vec<Completion>, Vec<Fields>) =
                    completions.into_iter().zip(sources).filter(|(c, _)| again.contains(&c.id)).unzip();
                dead.retain(|d| again.contains(&d.id));
                self.write_batch(&completions, &sources, &dead, true).await;
            }
            if last_trim.elapsed() >= TRIM_EVERY {
                last_trim = Instant::now();
                if let Err(err) = self.broker.trim(&self.service).await {
                    tracing::warn!(service = %self.service, error = %err, "cannot trim the streams");
                }
            }
        }
    }

    /// Writes a batch until the broker takes it; a batch it refuses is written message by
    /// message (see the module's documentation). `again`: a second write of messages
    /// delivered anew meanwhile (see [`Writer::run`]).
    async fn write_batch(&self, completions: &[Completion], sources: &[Fields], dead: &[DeadLetter], again: bool) {
        let mut failing = Streak::default();
        // Whether the broker answered a read after the previous failure.
        let mut answered = false;
        loop {
            let writing = super::stages::STAGES.clock();
            let Err(err) = self.write(completions, dead, failing.failures, again).await else {
                if let Some(writing) = writing {
                    super::stages::STAGES.write(writing.elapsed(), completions.len() + dead.len());
                }
                if let Some((failed_writes, after_s)) = failing.ended() {
                    tracing::info!(service = %self.service, failed_writes, after_s, "wrote the batch held up by failed writes");
                }
                return;
            };
            let failures = failing.failed();
            // The broker answering a read is evidence against the write only when it answered
            // before the write failed too: a check that waited out an outage answers once
            // the broker is back, and the batch's next try then goes through.
            let answers = failures > 1 && !err.is_passing_state() && self.broker_answers().await;
            if err.is_permanent() || (answers && answered) {
                // Something in the batch is refused, not the broker away: find it.
                tracing::warn!(service = %self.service, error = %err, count = completions.len() + dead.len(), "a batch write was refused; writing its messages one by one");
                let done = completions.iter().zip(sources).map(|(c, f)| Finished::Done(c.clone(), f.clone()));
                // One streak for the whole pass: an outage that starts in it logs as one.
                let mut failing = Streak::default();
                for finished in done.chain(dead.iter().cloned().map(Finished::Dead)).collect::<Vec<_>>() {
                    self.write_alone(finished, again, &mut failing).await;
                }
                return;
            }
            answered = answers;
            let pause = backoff(Duration::from_millis(50), failures, MAX_BROKER_BACKOFF);
            log_failure!(
                failures,
                failed_writes,
                "cannot write taskbacks, acks and dead letters; retrying",
                "still cannot write taskbacks, acks and dead letters",
                service = %self.service,
                error = %err,
                count = completions.len() + dead.len(),
                retry_in_ms = pause.as_millis() as u64
            );
            tokio::time::sleep(pause).await;
        }
    }

    /// Lets go of the messages of a written batch; returns those delivered again meanwhile
    /// (almost always none: then no message pays a second lookup).
    fn release(&self, completions: &[Completion], dead: &[DeadLetter]) -> HashSet<String> {
        let mut held = lock(&self.in_flight);
        let mut again = HashSet::new();
        for id in completions.iter().map(|c| &c.id).chain(dead.iter().map(|d| &d.id)) {
            held.ids.remove(id);
            if !held.again.is_empty() && held.again.remove(id) {
                again.insert(id.clone());
            }
        }
        again
    }

    /// Whether the broker answers a small read: then a failing write is about the write.
    async fn broker_answers(&self) -> bool {
        self.broker.last_id(&self.service, StreamKind::Dead).await.is_ok()
    }

    /// Writes one message alone until the broker takes it. A refusal for good turns it into
    /// the next, smaller form (see [`fallback`]); the last form is retried like any write.
    /// `failing`: the failed writes in a row of the one-by-one pass this message is in, for
    /// the log (one error, then ever fewer warnings, as for a batch).
    async fn write_alone(&self, mut finished: Finished, again: bool, failing: &mut Streak) {
        let mut failures = 0;
        loop {
            let result = match &finished {
                Finished::Done(completion, _) => {
                    self.write(std::slice::from_ref(completion), &[], failures, again).await
                }
                Finished::Dead(letter) => self.write(&[], std::slice::from_ref(letter), failures, again).await,
            };
            let Err(err) = result else {
                if let Some((failed_writes, after_s)) = failing.ended() {
                    tracing::info!(service = %self.service, id = %finished.id(), failed_writes, after_s, "wrote a finished message held up by failed writes");
                }
                return;
            };
            failures += 1;
            // Even a refusal for good must repeat before the message is changed: a lone
            // error may have been about the moment (a node failing over), not the write.
            let refused = (err.is_permanent() && failures >= 2)
                || (failures >= REFUSALS_BEFORE_PERMANENT && !err.is_passing_state() && self.broker_answers().await);
            if refused && let Some(next) = fallback(&finished, &err) {
                tracing::error!(
                    service = %self.service,
                    id = %finished.id(),
                    error = %err,
                    "the broker refused this message's write for good; writing a dead letter instead"
                );
                finished = Finished::Dead(next);
                failures = 0;
                continue;
            }
            let pause = backoff(Duration::from_millis(50), failures, MAX_BROKER_BACKOFF);
            log_failure!(
                failing.failed(),
                failed_writes,
                "cannot write a finished message; retrying",
                "still cannot write finished messages one by one",
                service = %self.service,
                id = %finished.id(),
                error = %err,
                retry_in_ms = pause.as_millis() as u64
            );
            tokio::time::sleep(pause).await;
        }
    }

    /// One attempt. The broker writes only what this consumer still holds, each message
    /// atomically with that check: a write that went through although its reply was lost,
    /// or a message another worker took over, is not written a second time.
    /// `again`: a second write of messages delivered anew meanwhile, where skipping those
    /// the first write took is expected.
    async fn write(
        &self,
        completions: &[Completion],
        dead: &[DeadLetter],
        retry: u32,
        again: bool,
    ) -> Result<(), BrokerError> {
        let mut skipped = 0;
        if !completions.is_empty() {
            skipped += self.broker.complete(&self.service, &self.consumer, completions).await?;
        }
        if !dead.is_empty() {
            skipped += self.broker.dead_letter(&self.service, &self.consumer, dead).await?;
        }
        if skipped > 0 && again {
            tracing::debug!(service = %self.service, count = skipped, "the first write had taken these");
        } else if skipped > 0 && retry == 0 {
            tracing::warn!(
                service = %self.service,
                count = skipped,
                "finished messages are no longer held by this worker (taken over after the visibility timeout); not writing them"
            );
        } else if skipped > 0 {
            tracing::info!(service = %self.service, count = skipped, "messages written before the failed attempt are not written again");
        }
        Ok(())
    }
}

impl Finished {
    fn id(&self) -> &str {
        match self {
            Finished::Done(completion, _) => &completion.id,
            Finished::Dead(letter) => &letter.id,
        }
    }
}

/// What to write instead of `finished` after the broker refused it for good with `err`:
/// taskbacks become a dead letter with the broker's error; a dead letter loses its fields
/// larger than [`LARGE_FIELD`], then all its message fields. `None` when nothing smaller
/// is left: then the refusal cannot be about size, and the write is retried.
fn fallback(finished: &Finished, err: &BrokerError) -> Option<DeadLetter> {
    match finished {
        Finished::Done(completion, fields) => Some(DeadLetter {
            id: completion.id.clone(),
            fields: fields.clone(),
            error: format!("the broker refused this message's taskbacks: {err}"),
            attempts: 0,
            failed_at_ms: now_ms(),
        }),
        Finished::Dead(letter) if letter.fields.iter().any(|(k, v)| k.len() + v.len() > LARGE_FIELD) => {
            let (kept, dropped): (Fields, Fields) =
                letter.fields.iter().cloned().partition(|(k, v)| k.len() + v.len() <= LARGE_FIELD);
            let names: Vec<String> = dropped.iter().map(|(k, v)| format!("{k:?} ({} bytes)", v.len())).collect();
            Some(DeadLetter {
                fields: kept,
                error: format!(
                    "{}; the broker refused the dead letter too ({err}), so it leaves out the fields {}",
                    letter.error,
                    names.join(", ")
                ),
                ..letter.clone()
            })
        }
        Finished::Dead(letter) if !letter.fields.is_empty() => Some(DeadLetter {
            fields: Fields::new(),
            error: format!(
                "{}; the broker refused the dead letter too ({err}), so it leaves out the message's fields",
                letter.error
            ),
            ..letter.clone()
        }),
        Finished::Dead(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::{EmbeddedBroker, WORKER_GROUP};

    async fn length(broker: &EmbeddedBroker, stream: StreamKind) -> u64 {
        broker.stream_info("s", stream).await.expect("stream info").length
    }

    /// The interleaving a failover can make: the write checks the claim on `m` after the
    /// broker lost it (and writes nothing for it), then the broker delivers `m` to this
    /// worker anew, before the writer lets go of it. The reader drops that delivery, since
    /// it holds `m`; the writer must write `m` once more, or `m` stays pending, unanswered,
    /// until the visibility timeout, and spends an attempt it never ran. The test holds the
    /// worker's `in_flight` lock across the write to make that order certain (the writer
    /// blocks on it to let go of the batch).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[allow(clippy::await_holding_lock, reason = "the lock is what orders the writer's steps here")]
    async fn a_message_delivered_anew_during_its_write_is_written_once_more() {
        let dir = tempfile::tempdir().expect("tempdir");
        let broker = Arc::new(EmbeddedBroker::open(dir.path(), "t").await.expect("open"));
        broker.prepare("s", 1000).await.expect("prepare");
        let fields = |t: &str| vec![("text".to_owned(), t.to_owned())];
        let m = broker.add("s", StreamKind::Data, &fields("m")).await.expect("add");
        let n = broker.add("s", StreamKind::Data, &fields("n")).await.expect("add");
        assert_eq!(broker.read("s", "me", 10, Duration::from_millis(10)).await.expect("read").len(), 2);
        // The claim on m is lost: another consumer holds it now.
        assert_eq!(broker.claim("s", "other", "me", std::slice::from_ref(&m)).await.expect("claim").len(), 1);

        let in_flight: InFlight = Arc::default();
        let mut held = lock(&in_flight);
        held.ids.extend([m.clone(), n.clone()]);
        let (tx, rx) = mpsc::channel(4);
        for id in [&m, &n] {
            let completion = Completion { id: id.clone(), taskbacks: vec![fields(&format!("answer to {id}"))] };
            tx.send(Finished::Done(completion, fields("x"))).await.expect("send");
        }
        let writer =
            Writer { broker: broker.clone(), service: "s".into(), consumer: "me".into(), in_flight: in_flight.clone() };
        let task = tokio::spawn(writer.run(rx));
        // The batch is written once n's taskback is there; m was skipped, not held.
        let deadline = Instant::now() + Duration::from_secs(10);
        while length(&broker, StreamKind::Taskback).await < 1 {
            assert!(Instant::now() < deadline, "n was not written");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(length(&broker, StreamKind::Taskback).await, 1, "m is not held: nothing written for it");
        // m delivered anew to this worker; the reader, holding m, drops it and notes it.
        assert_eq!(broker.claim("s", "me", "other", std::slice::from_ref(&m)).await.expect("claim").len(), 1);
        held.again.insert(m.clone());
        drop(held);

        while length(&broker, StreamKind::Taskback).await < 2 {
            assert!(Instant::now() < deadline, "m was not written once more");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let pending = broker.pending("s", StreamKind::Data, WORKER_GROUP, None, 10).await.expect("pending");
        assert!(
            pending.is_empty(),
            "answered and acknowledged: {:?}",
            pending.iter().map(|p| &p.id).collect::<Vec<_>>()
        );
        drop(tx);
        task.await.expect("the writer ends with its channel");
        assert_eq!(length(&broker, StreamKind::Taskback).await, 2, "each answered once");
        let left = lock(&in_flight);
        assert!(left.ids.is_empty() && left.again.is_empty(), "the writer let go of both");
    }

    fn refused() -> BrokerError {
        BrokerError::Embedded { path: "x".into(), detail: "too big".into() }
    }

    #[test]
    fn refused_writes_shrink_to_smaller_dead_letters_then_stop() {
        let fields = vec![("small".to_owned(), "s".to_owned()), ("big".to_owned(), "b".repeat(5000))];
        let done = Finished::Done(Completion { id: "1-0".into(), taskbacks: vec![fields.clone()] }, fields.clone());
        let Some(first) = fallback(&done, &refused()) else { panic!("taskbacks become a dead letter") };
        assert_eq!(first.fields, fields);
        assert_eq!(first.attempts, 0);
        assert!(first.error.starts_with("the broker refused this message's taskbacks: embedded broker x: too big"));
        let Some(second) = fallback(&Finished::Dead(first), &refused()) else { panic!("without the big field") };
        assert_eq!(second.fields, vec![("small".to_owned(), "s".to_owned())]);
        assert!(second.error.contains(r#"leaves out the fields "big" (5000 bytes)"#), "{}", second.error);
        let Some(third) = fallback(&Finished::Dead(second), &refused()) else { panic!("without any field") };
        assert!(third.fields.is_empty());
        assert!(fallback(&Finished::Dead(third), &refused()).is_none(), "nothing smaller is left");
    }
}
