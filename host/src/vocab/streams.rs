//! Reading a service's stream without a consumer group, as the `streams` import needs it:
//! the brokers implement [`StreamReader`], the engine calls it, neither knows the other.
//!
//! Every read is bounded twice, by a count and by bytes ([`RangeRequest`]); the brokers
//! stop at whichever comes first and say so ([`RangePage::truncated`]), so a read never
//! carries more than the bound, whatever the stream holds.

use std::fmt;

use async_trait::async_trait;

use crate::vocab::fields::ENTRY_OVERHEAD;
use crate::vocab::{Fields, StreamKind};

/// Most entries one `streams` call may ask for.
pub const MAX_RANGE_COUNT: u32 = 1000;
/// Most bytes one `streams` call may answer with ([`entry_size`] summed).
pub const MAX_RANGE_BYTES: usize = 1 << 20;

/// A stream id: milliseconds since the Unix epoch when the entry was added, and a
/// sequence number among the entries of that millisecond.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct StreamId {
    /// Milliseconds since the Unix epoch.
    pub ms: u64,
    /// Sequence number within the millisecond.
    pub seq: u64,
}

impl StreamId {
    /// `MS-SEQ` or `MS` (sequence 0), decimal digits only; the reason when it is not.
    pub fn parse(text: &str) -> Result<Self, String> {
        let bad = || {
            let shown: String = text.chars().take(64).collect();
            format!("{shown:?} is not a stream id (MS-SEQ, e.g. 1732364400000-0)")
        };
        let (ms, seq) = text.split_once('-').unwrap_or((text, "0"));
        let number = |part: &str| {
            if part.is_empty() || part.len() > 20 || !part.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad());
            }
            part.parse::<u64>().map_err(|_| bad())
        };
        Ok(Self { ms: number(ms)?, seq: number(seq)? })
    }

    /// The id right after this one, `None` after the largest.
    pub fn next(self) -> Option<Self> {
        match self.seq.checked_add(1) {
            Some(seq) => Some(Self { ms: self.ms, seq }),
            None => self.ms.checked_add(1).map(|ms| Self { ms, seq: 0 }),
        }
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

/// Which entries of a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeQuery {
    /// The newest ones.
    Last,
    /// Those with an id from this one on (inclusive; `after X` asks from `X.next()`).
    From(StreamId),
    /// Those added from `from_ms` to `to_ms`, both included.
    Between {
        /// First millisecond.
        from_ms: u64,
        /// Last millisecond.
        to_ms: u64,
    },
}

/// One bounded read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RangeRequest {
    /// Which entries.
    pub query: RangeQuery,
    /// Most entries to answer with (at least 1).
    pub count: usize,
    /// Most bytes to answer with ([`entry_size`] summed).
    pub max_bytes: usize,
}

/// The answer to a [`RangeRequest`]: entries oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RangePage {
    /// `(id, fields)`, oldest first; fields as stored (a field that is not UTF-8 has each
    /// invalid byte written `\xNN`).
    pub entries: Vec<(String, Fields)>,
    /// More entries matched than the page holds (cut by the count or the bytes). For
    /// [`RangeQuery::Last`] the page holds the newest ones, else the oldest.
    pub truncated: bool,
}

/// Why a read was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RangeFailure {
    /// The first entry alone is larger than the byte bound.
    TooLarge {
        /// Its id.
        id: String,
        /// Its size ([`entry_size`]).
        bytes: usize,
    },
    /// The broker could not be reached or answered with an error.
    Unavailable(String),
}

/// What an entry costs against [`RangeRequest::max_bytes`]: its id's bytes plus each
/// field's key and value bytes plus [`ENTRY_OVERHEAD`] (the same as a message's size).
pub fn entry_size(id: &str, fields: &[(String, String)]) -> usize {
    fields.iter().fold(id.len(), |sum, (k, v)| sum.saturating_add(k.len() + v.len() + ENTRY_OVERHEAD))
}

/// Keeps entries (in the order given) while they fit in `max_bytes`; whether any was left
/// out. A first entry larger than the bound is [`RangeFailure::TooLarge`].
pub fn fit_bytes(entries: &mut Vec<(String, Fields)>, max_bytes: usize) -> Result<bool, RangeFailure> {
    let mut used = 0usize;
    for (i, (id, fields)) in entries.iter().enumerate() {
        let size = entry_size(id, fields);
        if used.saturating_add(size) > max_bytes {
            if i == 0 {
                return Err(RangeFailure::TooLarge { id: id.clone(), bytes: size });
            }
            entries.truncate(i);
            return Ok(true);
        }
        used += size;
    }
    Ok(false)
}

/// Reading a service's stream without a consumer group (the `streams` import). Read-only:
/// nothing about the stream or its groups changes.
#[async_trait]
pub trait StreamReader: Send + Sync + 'static {
    /// The entries of `service`'s `stream` that `request` asks for, within its bounds.
    async fn read_range(
        &self,
        service: &str,
        stream: StreamKind,
        request: &RangeRequest,
    ) -> Result<RangePage, RangeFailure>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_parse_strictly() {
        assert_eq!(StreamId::parse("17-3"), Ok(StreamId { ms: 17, seq: 3 }));
        assert_eq!(StreamId::parse("0"), Ok(StreamId { ms: 0, seq: 0 }));
        for bad in ["", "-", "1-", "-1", "1-2-3", "+1", " 1", "a", "99999999999999999999999", "1-x"] {
            assert!(StreamId::parse(bad).is_err(), "{bad:?}");
        }
        let max = StreamId { ms: u64::MAX, seq: u64::MAX };
        assert_eq!(StreamId::parse(&max.to_string()), Ok(max));
        assert_eq!(max.next(), None);
        assert_eq!(StreamId { ms: 1, seq: u64::MAX }.next(), Some(StreamId { ms: 2, seq: 0 }));
    }

    #[test]
    fn pages_stop_at_the_byte_bound() {
        let entry = |id: &str| (id.to_owned(), vec![("k".to_owned(), "v".repeat(10))]);
        let one = entry_size("1-0", &entry("1-0").1);
        assert_eq!(one, 3 + 1 + 10 + ENTRY_OVERHEAD);
        let mut page = vec![entry("1-0"), entry("2-0"), entry("3-0")];
        assert_eq!(fit_bytes(&mut page, one * 2), Ok(true));
        assert_eq!(page.len(), 2);
        let mut page = vec![entry("1-0")];
        assert_eq!(fit_bytes(&mut page, one), Ok(false));
        assert_eq!(fit_bytes(&mut page, one - 1), Err(RangeFailure::TooLarge { id: "1-0".into(), bytes: one }));
    }
}
