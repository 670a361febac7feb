//! Host faults: the host ran short of its own resources (file descriptors, memory maps)
//! while setting a call up. The message is not at fault, so the attempt does not count: the
//! message waits with a backoff and runs again, as often as it takes, until the resource
//! returns. The cause is logged once per burst (the first fault after a success), and the
//! end of the burst once, with how many calls it hit.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::engine::CallError;
use crate::pipeline::StepError;
use crate::time::backoff;

/// First pause after a host fault; doubles per fault of the same message.
const FIRST_PAUSE: Duration = Duration::from_millis(50);
/// Longest pause between two tries of a message held up by host faults.
const MAX_PAUSE: Duration = Duration::from_secs(2);

/// Host faults since the last success, process-wide: the faults are the host's, not one
/// service's.
static BURST: AtomicU64 = AtomicU64::new(0);

/// Records one fault of a message (its `nth` in a row), logs the burst's first, and waits.
pub(super) async fn wait(err: &StepError, nth: u32) {
    if BURST.fetch_add(1, Ordering::Relaxed) == 0 {
        let cause = match &err.error {
            CallError::HostFault(cause) => format!("{}: {cause}", err.step),
            other => format!("{}: {other}", err.step),
        };
        tracing::error!(
            cause = %cause,
            "host fault: the host is short of a resource; messages wait and retry, spending no attempt, until it returns"
        );
    }
    tokio::time::sleep(backoff(FIRST_PAUSE, nth, MAX_PAUSE)).await;
}

/// A call succeeded: a burst in progress is over.
pub(super) fn recovered() {
    // One load on the hot path; the swap only while a burst is on.
    if BURST.load(Ordering::Relaxed) > 0 {
        let faults = BURST.swap(0, Ordering::Relaxed);
        if faults > 0 {
            tracing::info!(faults, "host resources are back; messages run again");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_burst_is_counted_until_a_success() {
        let err = StepError { step: "t".into(), error: CallError::HostFault("EMFILE: too many open files".into()) };
        wait(&err, 1).await;
        wait(&err, 2).await;
        assert_eq!(BURST.load(Ordering::Relaxed), 2);
        recovered();
        assert_eq!(BURST.load(Ordering::Relaxed), 0);
    }
}
