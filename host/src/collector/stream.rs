//! `stream`: follows another service's `data` or `taskback` stream (default `taskback`)
//! through a consumer group of its own, `follow:{this service}`, so it sees every entry
//! exactly once whatever else reads that stream; each entry (plus kwargs) becomes a message
//! of this service. The group is created the first time at the end of the stream: entries
//! added before the follower first started are not replayed. An entry is acknowledged only
//! after its message was added; a broker outage is waited out, not skipped. Entries read
//! but not acknowledged when the process stopped are forwarded first at the next start.

use std::time::Duration;

use anyhow::Context as _;

use crate::broker::StreamKind;
use crate::collector::{AddError, Context, Exit, stream_name};

/// Entries read per round.
const BATCH: usize = 64;

pub async fn run(ctx: Context, from: &str, stream: StreamKind) -> anyhow::Result<Exit> {
    let name = ctx.service.name.clone();
    let group = format!("follow:{name}");
    let source = format!("{from}:{}", stream_name(stream));
    ctx.broker
        .create_group(from, stream, &group, "$")
        .await
        .with_context(|| format!("service {name:?}: cannot create consumer group {group:?} on {source}"))?;
    let taskbacks = ctx.log_taskbacks();
    tracing::info!(service = %name, from = %source, group = %group, "following stream");
    let mut failures = 0u32;
    // Entries read before a crash or restart but not yet forwarded come first (the
    // consumer name is stable), so none is lost between reading and acknowledging.
    let mut own_pending = true;
    while !ctx.shutdown.is_cancelled() {
        let read = tokio::select! {
            read = async {
                if own_pending {
                    ctx.broker.read_own_pending(from, stream, &group, &ctx.consumer, BATCH).await
                } else {
                    ctx.broker.read_group(from, stream, &group, &ctx.consumer, BATCH, Duration::from_millis(500)).await
                }
            } => read,
            () = ctx.shutdown.cancelled() => break,
        };
        let entries = match read {
            Ok(entries) => {
                failures = 0;
                own_pending &= !entries.is_empty();
                entries
            }
            Err(err) => {
                failures += 1;
                let pause = crate::time::backoff(Duration::from_millis(100), failures, Duration::from_secs(5));
                tracing::error!(service = %name, from = %source, error = %err, "cannot read the followed stream");
                tokio::select! {
                    () = tokio::time::sleep(pause) => continue,
                    () = ctx.shutdown.cancelled() => break,
                }
            }
        };
        let mut done = Vec::with_capacity(entries.len());
        for entry in entries {
            if let Some(fault) = &entry.not_utf8 {
                tracing::error!(service = %name, from = %source, entry = %entry.id, error = %fault, "entry is not UTF-8; skipped, not forwarded altered");
                done.push(entry.id);
                continue;
            }
            match ctx.add_patiently(entry.fields).await {
                Ok(_) => {}
                Err(AddError::Broker(err)) => {
                    // Only at shutdown: the rest of the batch stays pending in the group.
                    tracing::warn!(service = %name, from = %source, error = %err, "stopped before forwarding every entry");
                    break;
                }
                Err(err) => {
                    tracing::warn!(service = %name, from = %source, entry = %entry.id, error = %err, "entry skipped")
                }
            }
            done.push(entry.id);
        }
        if let Err(err) = ctx.broker.ack(from, stream, &group, &done).await {
            tracing::error!(service = %name, from = %source, error = %err, "cannot acknowledge followed entries");
        }
    }
    taskbacks.finish(&name).await;
    Ok(Exit::Stopped)
}
