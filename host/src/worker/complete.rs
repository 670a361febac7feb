//! The completer: writes finished messages to the broker in batches and retries until the
//! broker takes them. The broker writes a message (its taskbacks or dead letter, and its
//! acknowledgement) only if this consumer still holds it, checked atomically with the write:
//! a write that went through although its reply was lost, or a message another worker took
//! over, is not written a second time.
//!
//! Transient failures (the broker is away, slow or busy) are retried with backoff, forever.
//! A write the broker refuses for good (too large for it, say) would be refused forever, so
//! it must not block the service: when a batch fails, and the failure is permanent or the
//! broker still answers other requests, its messages are written one by one, and a message
//! the broker keeps refusing becomes a dead letter carrying the broker's error, then one
//! without its large fields, then one with no message fields at all.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::{Finished, InFlight, MAX_BROKER_BACKOFF, lock};
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
            let ids: Vec<String> = batch.iter().map(|f| f.id().to_owned()).collect();
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
            let mut failures = 0;
            loop {
                let writing = super::stages::STAGES.clock();
                let Err(err) = self.write(&completions, &dead, failures).await else {
                    if let Some(writing) = writing {
                        super::stages::STAGES.write(writing.elapsed(), completions.len() + dead.len());
                    }
                    break;
                };
                failures += 1;
                if err.is_permanent() || (failures > 1 && !err.is_passing_state() && self.broker_answers().await) {
                    // Something in the batch is refused, not the broker away: find it.
                    tracing::warn!(service = %self.service, error = %err, count = ids.len(), "a batch write was refused; writing its messages one by one");
                    let done = completions.drain(..).zip(sources.drain(..)).map(|(c, f)| Finished::Done(c, f));
                    for finished in done.chain(dead.drain(..).map(Finished::Dead)).collect::<Vec<_>>() {
                        self.write_alone(finished).await;
                    }
                    break;
                }
                let pause = backoff(Duration::from_millis(50), failures, MAX_BROKER_BACKOFF);
                tracing::error!(
                    service = %self.service,
                    error = %err,
                    count = completions.len() + dead.len(),
                    retry_in_ms = pause.as_millis() as u64,
                    "cannot write taskbacks, acks and dead letters; retrying"
                );
                tokio::time::sleep(pause).await;
            }
            {
                let mut held = lock(&self.in_flight);
                for id in &ids {
                    held.remove(id);
                }
            }
            if last_trim.elapsed() >= TRIM_EVERY {
                last_trim = Instant::now();
                if let Err(err) = self.broker.trim(&self.service).await {
                    tracing::warn!(service = %self.service, error = %err, "cannot trim the streams");
                }
            }
        }
    }

    /// Whether the broker answers a small read: then a failing write is about the write.
    async fn broker_answers(&self) -> bool {
        self.broker.last_id(&self.service, StreamKind::Dead).await.is_ok()
    }

    /// Writes one message alone until the broker takes it. A refusal for good turns it into
    /// the next, smaller form (see [`fallback`]); the last form is retried like any write.
    async fn write_alone(&self, mut finished: Finished) {
        let mut failures = 0;
        loop {
            let result = match &finished {
                Finished::Done(completion, _) => self.write(std::slice::from_ref(completion), &[], failures).await,
                Finished::Dead(letter) => self.write(&[], std::slice::from_ref(letter), failures).await,
            };
            let Err(err) = result else { return };
            failures += 1;
            let refused = err.is_permanent()
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
            tracing::error!(
                service = %self.service,
                id = %finished.id(),
                error = %err,
                retry_in_ms = pause.as_millis() as u64,
                "cannot write a finished message; retrying"
            );
            tokio::time::sleep(pause).await;
        }
    }

    /// One attempt. The broker writes only what this consumer still holds, each message
    /// atomically with that check: a write that went through although its reply was lost,
    /// or a message another worker took over, is not written a second time.
    async fn write(&self, completions: &[Completion], dead: &[DeadLetter], retry: u32) -> Result<(), BrokerError> {
        let mut skipped = 0;
        if !completions.is_empty() {
            skipped += self.broker.complete(&self.service, &self.consumer, completions).await?;
        }
        if !dead.is_empty() {
            skipped += self.broker.dead_letter(&self.service, &self.consumer, dead).await?;
        }
        if skipped > 0 && retry == 0 {
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
