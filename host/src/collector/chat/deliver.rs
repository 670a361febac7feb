//! Taskbacks to replies: reads the service's taskbacks through the collector's group, routes
//! each ([`route`]) and hands it to the platform session through the reply queue, one at a
//! time and in order. A taskback is acknowledged only once its reply was posted (or refused
//! for good, or is not this collector's): while the platform is unreachable, or when the
//! host stops, it stays pending and is taken up again after a restart. Nothing is dropped;
//! a reply cut off by a failed connection resumes from its first unsent part, and one cut
//! off by a stop is posted whole again.

use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use tokio::sync::mpsc;

use super::link::{Outcome, Outgoing};
use super::message::{Route, route};
use crate::broker::{Entry, StreamKind};
use crate::collector::Context;
use crate::text::for_terminal;
use crate::time::backoff;

/// Reads taskbacks until shutdown (or until the session side is gone).
pub(crate) async fn run(ctx: Context, platform: &'static str, server: String, queue: mpsc::Sender<Outgoing>) {
    let name = ctx.service.name.clone();
    let Some(group) = ctx.taskback_group.clone() else {
        ctx.shutdown.cancelled().await;
        return;
    };
    let mut failures = 0u32;
    let mut own_pending = true;
    while !ctx.shutdown.is_cancelled() {
        let read = if own_pending {
            ctx.broker.read_own_pending(&name, StreamKind::Taskback, &group, &ctx.consumer, 16).await
        } else {
            let block = Duration::from_millis(500);
            ctx.broker.read_group(&name, StreamKind::Taskback, &group, &ctx.consumer, 16, block).await
        };
        let entries = match read {
            Ok(entries) => entries,
            Err(err) => {
                failures += 1;
                tracing::error!(service = %name, error = %err, "cannot read taskbacks");
                let pause = backoff(Duration::from_millis(100), failures, Duration::from_secs(5));
                tokio::select! {
                    () = tokio::time::sleep(pause) => {}
                    () = ctx.shutdown.cancelled() => {}
                }
                continue;
            }
        };
        failures = 0;
        own_pending &= !entries.is_empty();
        for entry in entries {
            let Some(outcome) = handle(&ctx, platform, &server, &queue, &entry).await else {
                return; // stopping: this one and the rest stay pending
            };
            if let Some(outcome) = outcome {
                let outcome = outcome.as_deref().map_err(String::as_str);
                ctx.receipt(&entry.fields, outcome).await;
            }
            if let Err(err) = ctx.broker.ack(&name, StreamKind::Taskback, &group, std::slice::from_ref(&entry.id)).await
            {
                tracing::error!(service = %name, error = %err, "cannot acknowledge a taskback");
            }
        }
    }
}

/// Handles one taskback: `None` when stopping before it was done, `Some(None)` when it needs
/// no receipt (not ours), else the outcome for its receipt.
async fn handle(
    ctx: &Context,
    platform: &'static str,
    server: &str,
    queue: &mpsc::Sender<Outgoing>,
    entry: &Entry,
) -> Option<Option<Outcome>> {
    let service = &ctx.service.name;
    if let Some(fault) = &entry.not_utf8 {
        tracing::error!(service = %service, taskback_id = %entry.id, error = %fault, "taskback is not UTF-8; skipped (it stays in the taskback stream as written)");
        return Some(None);
    }
    let reply = match route(&entry.fields, platform, server) {
        Route::Post(reply) => reply,
        Route::NotOurs(why) => {
            tracing::debug!(service = %service, taskback_id = %entry.id, platform, why, "taskback not posted");
            return Some(None);
        }
        Route::Refused(why) => {
            tracing::warn!(service = %service, taskback_id = %entry.id, platform, error = %why, "taskback not posted");
            return Some(Some(Err(why)));
        }
    };
    let sent = Arc::new(AtomicUsize::new(0));
    loop {
        let (outgoing, done) = Outgoing::new(reply.clone(), entry.id.clone(), sent.clone());
        tokio::select! {
            queued = queue.send(outgoing) => {
                if queued.is_err() {
                    return None;
                }
            }
            () = ctx.shutdown.cancelled() => return None,
        }
        tokio::select! {
            outcome = done => match outcome {
                Ok(outcome) => {
                    if let Err(why) = &outcome {
                        tracing::warn!(service = %service, taskback_id = %entry.id, platform, error = %for_terminal(why), "reply refused");
                    }
                    return Some(Some(outcome));
                }
                // Dropped unfinished: the connection failed mid-reply; queue it again.
                Err(_) => continue,
            },
            () = ctx.shutdown.cancelled() => return None,
        }
    }
}
