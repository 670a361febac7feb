//! The `streams` import: bounded, read-only reads of another service's `data` or
//! `taskback` stream, for components granted that service (`allow: [{streams: [...]}]`).
//!
//! Each call checks, in order: the service name (one that cannot name a service is
//! `unknown-service`), the grant (`not-granted`, whether or not such a service exists, so
//! a component cannot probe which services there are), the count (above
//! [`MAX_RANGE_COUNT`] is `too-large`) and the id (`invalid-id`); only then does the broker
//! read, bounded by the count and by [`MAX_RANGE_BYTES`]. Entries come back as stored.

use std::sync::Arc;

use crate::engine::bindings::StreamsError;
use crate::engine::bindings::task::cannon::platform::streams::{Host, Page, StreamKind as WitKind};
use crate::engine::bindings::task::cannon::platform::types::Message;
use crate::engine::state::HostState;
use crate::vocab::streams::{MAX_RANGE_BYTES, MAX_RANGE_COUNT};
use crate::vocab::{RangeFailure, RangeQuery, RangeRequest, StreamId, StreamKind, StreamReader};

/// Longest service name the import accepts (the compose loader's names are far shorter).
const MAX_SERVICE_BYTES: usize = 256;

/// One call's view of the `streams` import.
pub(crate) struct CallStreams {
    /// Services the component may read (empty: not granted; such a component is refused at
    /// load when it imports `streams`, so this only matters for one that does not).
    granted: Arc<[String]>,
    /// The broker, when one is attached.
    reader: Option<Arc<dyn StreamReader>>,
}

impl CallStreams {
    pub(crate) fn new(granted: Arc<[String]>, reader: Option<Arc<dyn StreamReader>>) -> Self {
        // A component without a grant never gets the broker, whatever the caller passed.
        let reader = if granted.is_empty() { None } else { reader };
        Self { granted, reader }
    }

    /// The broker to read `service` with, after the name, grant and count checks.
    fn check(&self, service: &str, count: u32) -> Result<&Arc<dyn StreamReader>, StreamsError> {
        let valid = !service.is_empty()
            && service.len() <= MAX_SERVICE_BYTES
            && service.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !valid {
            let shown: String = service.chars().take(64).collect();
            return Err(StreamsError::UnknownService(format!(
                "{shown:?} cannot name a service (letters, digits, `_` and `-`)"
            )));
        }
        if !self.granted.iter().any(|s| s == service) {
            return Err(StreamsError::NotGranted(format!(
                "service {service:?} is not in this component's grant (allow: [{{streams: [{service}]}}])"
            )));
        }
        if count > MAX_RANGE_COUNT {
            return Err(StreamsError::TooLarge(format!(
                "count {count} is above the host's bound of {MAX_RANGE_COUNT} entries per call"
            )));
        }
        self.reader.as_ref().ok_or_else(|| StreamsError::Unavailable("no broker is attached to this call".into()))
    }
}

fn kind(kind: WitKind) -> StreamKind {
    match kind {
        WitKind::Data => StreamKind::Data,
        WitKind::Taskback => StreamKind::Taskback,
    }
}

/// One read by `reader` (already checked): the broker's page as WIT messages. A free
/// function holding only the `Arc`, so the call's future does not borrow the store data.
async fn read(
    reader: Arc<dyn StreamReader>,
    service: String,
    stream: WitKind,
    query: RangeQuery,
    count: u32,
) -> Result<Page, StreamsError> {
    if count == 0 {
        return Ok(Page { entries: Vec::new(), truncated: false });
    }
    let request = RangeRequest { query, count: count as usize, max_bytes: MAX_RANGE_BYTES };
    let page = reader.read_range(&service, kind(stream), &request).await.map_err(|failure| match failure {
        RangeFailure::TooLarge { id, bytes } => StreamsError::TooLarge(format!(
            "entry {id} of {bytes} bytes is larger than the host's bound of {MAX_RANGE_BYTES} bytes per call; \
             read on with `after` {id}"
        )),
        RangeFailure::Unavailable(why) => StreamsError::Unavailable(why),
    })?;
    let entries =
        page.entries.into_iter().map(|(id, fields)| Message { id, service: service.clone(), fields }).collect();
    Ok(Page { entries, truncated: page.truncated })
}

// Each read waits on the broker: the call gives its seat to another (`engine/runners.rs`).
impl Host for HostState {
    async fn last(&mut self, service: String, stream: WitKind, count: u32) -> Result<Page, StreamsError> {
        self.seat.stand();
        let reader = self.streams.check(&service, count)?.clone();
        read(reader, service, stream, RangeQuery::Last, count).await
    }

    async fn after(&mut self, service: String, stream: WitKind, id: String, count: u32) -> Result<Page, StreamsError> {
        // The grant first: a component learns nothing from a stream it may not read.
        self.seat.stand();
        let reader = self.streams.check(&service, count)?.clone();
        let after = StreamId::parse(&id).map_err(StreamsError::InvalidId)?;
        match after.next() {
            Some(from) => read(reader, service, stream, RangeQuery::From(from), count).await,
            None => Ok(Page { entries: Vec::new(), truncated: false }),
        }
    }

    async fn between(
        &mut self,
        service: String,
        stream: WitKind,
        from_ms: u64,
        to_ms: u64,
        count: u32,
    ) -> Result<Page, StreamsError> {
        self.seat.stand();
        let reader = self.streams.check(&service, count)?.clone();
        if from_ms > to_ms {
            return Ok(Page { entries: Vec::new(), truncated: false });
        }
        read(reader, service, stream, RangeQuery::Between { from_ms, to_ms }, count).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(granted: &[&str]) -> CallStreams {
        CallStreams { granted: granted.iter().map(|s| (*s).to_owned()).collect(), reader: None }
    }

    #[test]
    fn names_grants_and_counts_are_checked_in_order() {
        let streams = call(&["sensors"]);
        for bad in ["", "a:b", "x y", "ns:sensors:data", &"s".repeat(MAX_SERVICE_BYTES + 1)] {
            assert!(matches!(streams.check(bad, 1), Err(StreamsError::UnknownService(_))), "{bad:?}");
        }
        assert!(matches!(streams.check("room", 1), Err(StreamsError::NotGranted(_))));
        assert!(matches!(streams.check("sensors", MAX_RANGE_COUNT + 1), Err(StreamsError::TooLarge(_))));
        assert!(matches!(streams.check("sensors", MAX_RANGE_COUNT), Err(StreamsError::Unavailable(_))));
        // Not granted at all: nothing is readable, even with a broker offered.
        assert!(CallStreams::new(Arc::from(Vec::new()), None).reader.is_none());
    }
}
