//! Getting messages back from workers that died, and keeping this worker's claims fresh.
//!
//! Consumers are named `{host}-{pid}`. A consumer on this host whose process no longer
//! exists (`/proc/PID` is gone) will never finish what it holds, so its pending messages
//! are taken over at once instead of after a whole visibility timeout, and it is removed
//! from the group once it holds nothing. Consumers on other hosts cannot be checked this
//! way; their messages are reclaimed when idle past `retry.visibility_timeout_ms`.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{InFlight, host_name, lock};
use crate::broker::{Broker, BrokerError, Delivery, StreamKind, WORKER_GROUP};

/// The pid of a consumer named `{host}-{pid}` when `host` is this host.
fn local_pid(consumer: &str, host: &str) -> Option<u32> {
    let pid = consumer.strip_prefix(host)?.strip_prefix('-')?;
    if pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    pid.parse().ok()
}

/// Whether `consumer` belonged to a process of this host that no longer runs.
pub fn is_dead_local(consumer: &str, host: &str) -> bool {
    let Some(pid) = local_pid(consumer, host) else { return false };
    // Without /proc nothing can be told; leave it to the visibility timeout.
    pid != std::process::id() && Path::new("/proc/self").exists() && !Path::new(&format!("/proc/{pid}")).exists()
}

/// Takes over up to `room` pending messages of dead consumers of this host, and removes
/// dead consumers that hold nothing.
pub async fn adopt_orphans(
    broker: &dyn Broker,
    service: &str,
    consumer: &str,
    room: usize,
) -> Result<Vec<Delivery>, BrokerError> {
    let host = host_name();
    let info = broker.stream_info(service, StreamKind::Data).await?;
    let Some(group) = info.groups.into_iter().find(|g| g.name == WORKER_GROUP) else {
        return Ok(Vec::new());
    };
    let mut adopted = Vec::new();
    for dead in group.consumers.iter().filter(|c| c.name != consumer && is_dead_local(&c.name, &host)) {
        if dead.pending == 0 {
            broker.remove_consumer(service, StreamKind::Data, WORKER_GROUP, &dead.name).await?;
            tracing::info!(service, consumer = %dead.name, "removed a dead worker with nothing pending");
            continue;
        }
        let want = room - adopted.len();
        let pending = broker.pending(service, StreamKind::Data, WORKER_GROUP, Some(&dead.name), want).await?;
        let ids: Vec<String> = pending.into_iter().map(|p| p.id).collect();
        let claimed = broker.claim(service, consumer, &dead.name, &ids).await?;
        tracing::info!(service, from = %dead.name, count = claimed.len(), "taking over messages of a dead worker");
        adopted.extend(claimed);
        if adopted.len() >= room {
            break;
        }
    }
    Ok(adopted)
}

/// Every `every`, refreshes the claim on the messages this worker holds, so they are not
/// reclaimed as abandoned while they run (long retries, a slow broker write).
pub async fn refresh_loop(
    broker: Arc<dyn Broker>,
    service: String,
    consumer: String,
    in_flight: InFlight,
    every: Duration,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = stop.cancelled() => return,
        }
        let ids: Vec<String> = lock(&in_flight).ids.iter().cloned().collect();
        if ids.is_empty() {
            continue;
        }
        match broker.refresh_claims(&service, &consumer, &ids).await {
            Ok(owned) => {
                let owned: HashSet<String> = owned.into_iter().collect();
                // Ids finished and written meanwhile are no longer in flight: not lost.
                let lost = {
                    let held = lock(&in_flight);
                    ids.iter().filter(|id| !owned.contains(*id) && held.ids.contains(*id)).count()
                };
                if lost > 0 {
                    tracing::warn!(
                        service,
                        count = lost,
                        "messages in flight were taken over by another worker; their results will not be written here"
                    );
                }
            }
            Err(err) => tracing::warn!(service, error = %err, "cannot refresh the claim on messages in flight"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_consumers_are_recognised() {
        assert_eq!(local_pid("box-1-2-42", "box-1-2"), Some(42));
        assert_eq!(local_pid("box-42-collector", "box"), None);
        assert_eq!(local_pid("other-42", "box"), None);
        assert_eq!(local_pid("box-", "box"), None);
        assert!(!is_dead_local(&format!("box-{}", std::process::id()), "box"));
        // Pid 4194304 is above Linux's pid_max, so no such process exists.
        assert!(is_dead_local("box-4194304", "box"));
        assert!(!is_dead_local("elsewhere-4194304", "box"));
    }
}
