//! One message: the checks that keep it from running at all, the pipeline with retries and
//! backoff, and the hand-over to the writer (`complete.rs`).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::{Finished, host_fault};
use crate::broker::{Completion, DeadLetter, Delivery};
use crate::engine::Message;
use crate::observe::trace::{self, MessageSpan};
use crate::service::ServiceRuntime;
use crate::text::for_terminal;
use crate::time::{backoff, now_ms};

/// Runs one message through the pipeline with retries, then hands it to the completer;
/// false when the completer is gone (shutdown). The caller frees the message's slot after.
pub(super) async fn process(service: Arc<ServiceRuntime>, delivery: Delivery, done: mpsc::Sender<Finished>) -> bool {
    let msg = Message { id: delivery.id, service: service.name().to_owned(), fields: delivery.fields };
    // observe: in flight until counted as done or dead below; the trace's span.
    let observed = service.observe.start();
    let span = MessageSpan::start(service.name(), &msg.id, &msg.fields);
    let finished = match unrunnable(&service, &msg, delivery.not_utf8) {
        Some(error) => {
            tracing::error!(service = %service.name(), id = %msg.id, "{error}; moving to dead letters");
            Finished::Dead(dead_letter(msg, error, 0))
        }
        None => run_with_retries(&service, msg, delivery.deliveries.max(1), span.as_ref()).await,
    };
    // Wait for room in the writer's queue while still holding the slot: that is what holds
    // the reader back when the broker writes slowly. The receiver lives until every sender
    // is gone; an error means shutdown raced us, and the message stays pending for another
    // worker. The slot is freed only after the send: the queue is ordered by send, not by
    // reservation, so a thread preempted between the two would otherwise let the next
    // message overtake this one (with `concurrency: 1`, out of stream order).
    // observe: the message's outcome and duration.
    match &finished {
        Finished::Done(completion, _) => observed.done(completion.taskbacks.len()),
        Finished::Dead(dead) => observed.dead(&dead.id, &dead.error, dead.attempts, dead.failed_at_ms),
    }
    if let Some(span) = span {
        match &finished {
            Finished::Done(completion, _) => {
                span.taskbacks(completion.taskbacks.len());
                span.end(Ok(()));
            }
            Finished::Dead(dead) => span.end(Err(&dead.error)),
        }
    }
    let Ok(queued) = done.reserve().await else { return false };
    queued.send(finished);
    true
}

/// The dead letter of `msg`, failed now.
fn dead_letter(msg: Message, error: String, attempts: u32) -> DeadLetter {
    DeadLetter { id: msg.id, fields: msg.fields, error, attempts, failed_at_ms: now_ms() }
}

/// Why a message must not run at all, if so: its bytes are not text, or another producer
/// bypassed the collector's field or size cap. Such a message is dead-lettered unrun.
fn unrunnable(service: &ServiceRuntime, msg: &Message, not_utf8: Option<String>) -> Option<String> {
    let limits = service.spec.limits;
    if let Some(fault) = not_utf8 {
        // Never run on an altered copy. The dead letter is copied from the stored entry, so
        // its bytes survive.
        return Some(format!("message is not UTF-8: {fault}; not run"));
    }
    if msg.fields.len() > limits.max_fields {
        return Some(format!(
            "message of {} fields exceeds limits.max_fields = {} of service {:?}; not run",
            msg.fields.len(),
            limits.max_fields,
            service.name()
        ));
    }
    let bytes = crate::fields::size(&msg.fields);
    if bytes as u64 > limits.message_kb.saturating_mul(1024) {
        return Some(format!(
            "message of {bytes} bytes exceeds limits.message_kb = {} of service {:?}; not run",
            limits.message_kb,
            service.name()
        ));
    }
    None
}

/// Runs the pipeline from delivery number `attempt` until it succeeds or the attempts are
/// spent; host faults wait and spend none. Each attempt runs inside the message's trace span
/// (OTLP, when on).
async fn run_with_retries(
    service: &ServiceRuntime,
    msg: Message,
    mut attempt: u32,
    span: Option<&MessageSpan>,
) -> Finished {
    let retry = service.spec.retry;
    let mut host_faults = 0;
    loop {
        if attempt > retry.max_attempts {
            // Delivered more often than allowed: earlier workers died while holding it.
            let error = format!(
                "abandoned: delivered {} times without finishing (workers crashed while running it)",
                attempt - 1
            );
            tracing::error!(service = %service.name(), id = %msg.id, attempts = attempt - 1, "{error}; moving to dead letters");
            break Finished::Dead(dead_letter(msg, error, attempt - 1));
        }
        match trace::within(span, service.pipeline.run(&msg)).await {
            Ok(outcome) => {
                host_fault::recovered();
                tracing::debug!(
                    service = %service.name(),
                    id = %msg.id,
                    wall_us = outcome.stats.wall.as_micros() as u64,
                    attempt,
                    "processed"
                );
                let merging = super::stages::STAGES.clock();
                let completion = Completion { id: msg.id.clone(), taskbacks: outcome.taskbacks(&msg) };
                if let Some(merging) = merging {
                    super::stages::STAGES.merge(merging.elapsed());
                }
                break Finished::Done(completion, msg.fields);
            }
            Err(err) if err.error.is_host_fault() => {
                host_faults += 1;
                host_fault::wait(&err, host_faults).await;
            }
            Err(err) if attempt < retry.max_attempts => {
                let pause = backoff(Duration::from_millis(retry.backoff_ms), attempt, Duration::from_secs(60));
                // The error holds guest text: escaped, so it cannot forge a log record.
                let error = for_terminal(&err.to_string()).into_owned();
                tracing::warn!(
                    service = %service.name(),
                    id = %msg.id,
                    attempt,
                    max_attempts = retry.max_attempts,
                    %error,
                    "failed; retrying"
                );
                service.observe.retried(); // observe
                if let Some(span) = span {
                    span.retried(attempt, &error);
                }
                tokio::time::sleep(pause).await;
                attempt += 1;
            }
            Err(err) => {
                let error = for_terminal(&err.to_string()).into_owned();
                tracing::error!(
                    service = %service.name(),
                    id = %msg.id,
                    attempt,
                    %error,
                    "failed for the last time; moving to dead letters"
                );
                break Finished::Dead(dead_letter(msg, err.to_string(), attempt));
            }
        }
    }
}
