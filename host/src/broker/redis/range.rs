//! Redis: bounded, group-less reads of a service's stream for the `streams` import
//! ([`StreamReader`]). One Lua script per read runs `XRANGE` (or `XREVRANGE` for the newest
//! entries) and keeps entries while they fit in the byte bound, so Redis never sends more
//! than the bound (plus what decoding adds), whatever the stream holds. The host checks the
//! bound again on the decoded entries.
//!
//! The script runs with `EVALSHA_RO` (`EVAL_RO` the first time a Redis sees it): Redis
//! refuses it any write, and a service's ACL user needs only read rights (`%R~`) on the
//! streams its components read (`cannon-host acl`). Redis 6.2 has no `EVALSHA_RO`, and a
//! rule printed by an older `cannon-host acl` does not grant it: then the script runs with
//! `EVALSHA`, as before, from that read on.

use std::sync::LazyLock;
use std::sync::atomic::Ordering;

use async_trait::async_trait;
use redis::{Cmd, ErrorKind, RedisError, Script, ServerErrorKind, Value};

use super::parse;
use crate::broker::{RangeFailure, RangePage, RangeQuery, RangeRequest, RedisBroker, StreamKind, StreamReader};
use crate::vocab::fields::ENTRY_OVERHEAD;
use crate::vocab::streams::fit_bytes;

/// KEYS[1] = the stream. ARGV = `last` or `range`, start id, end id, count, max bytes.
/// Returns `{'all' | 'more', entries}` (`more`: some matching entries were left out), or
/// `{'big', id, size}` when the first entry alone exceeds the byte bound. `last` reads
/// newest first. Sizes count the id plus each field's key, value and the overhead.
static RANGE_CODE: LazyLock<String> = LazyLock::new(|| {
    format!(
        r"
local n = tonumber(ARGV[4])
local rows
if ARGV[1] == 'last' then
  rows = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', n + 1)
else
  rows = redis.call('XRANGE', KEYS[1], ARGV[2], ARGV[3], 'COUNT', n + 1)
end
local max = tonumber(ARGV[5])
local out, used = {{}}, 0
local more = #rows > n
for i = 1, math.min(#rows, n) do
  local id, flat = rows[i][1], rows[i][2]
  local size = #id
  for j = 1, #flat, 2 do size = size + #flat[j] + #flat[j + 1] + {ENTRY_OVERHEAD} end
  if used + size > max then
    if i == 1 then return {{'big', id, size}} end
    more = true
    break
  end
  used = used + size
  out[#out + 1] = rows[i]
end
if more then return {{'more', out}} end
return {{'all', out}}
"
    )
});
static RANGE: LazyLock<Script> = LazyLock::new(|| Script::new(&RANGE_CODE));

/// `NAME script 1 key args...`: `EVALSHA_RO` with the range script's hash, or `EVAL_RO` with
/// its source (which also caches it, so the next `EVALSHA_RO` finds it).
fn read_only(name: &str, script: &str, key: &str, args: &[String]) -> Cmd {
    let mut cmd = redis::cmd(name);
    cmd.arg(script).arg(1).arg(key).arg(args);
    cmd
}

/// This Redis (before 7.0) or this ACL user (a rule printed before reads ran read-only)
/// cannot run `EVALSHA_RO`.
fn no_read_only_scripts(err: &RedisError) -> bool {
    err.kind() == ErrorKind::Server(ServerErrorKind::NoPerm)
        || err.to_string().to_ascii_lowercase().contains("unknown command")
}

impl RedisBroker {
    fn range_failure(&self, detail: String) -> RangeFailure {
        RangeFailure::Unavailable(self.protocol("streams range script", detail).to_string())
    }

    /// Decodes the script's reply into a page, oldest first.
    fn range_page(&self, reply: &Value, newest_first: bool, max_bytes: usize) -> Result<RangePage, RangeFailure> {
        let Value::Array(parts) = reply else { return Err(self.range_failure(format!("{reply:?}"))) };
        let status = parts.first().map(parse::string).transpose().map_err(|d| self.range_failure(d))?;
        match (status.as_deref(), parts.as_slice()) {
            (Some("big"), [_, id, size]) => {
                let id = parse::string(id).map_err(|d| self.range_failure(d))?;
                let size = parse::int(size).map_err(|d| self.range_failure(d))?;
                Err(RangeFailure::TooLarge { id, bytes: usize::try_from(size).unwrap_or(usize::MAX) })
            }
            (Some(status @ ("all" | "more")), [_, rows]) => {
                let raw = parse::entries(rows).map_err(|d| self.range_failure(d))?;
                let mut entries: Vec<_> =
                    raw.into_iter().filter_map(|e| e.fields.map(|decoded| (e.id, decoded.fields))).collect();
                // Bytes that are not UTF-8 come back written `\xNN`: longer than Redis counted.
                let cut = fit_bytes(&mut entries, max_bytes)?;
                if newest_first {
                    entries.reverse();
                }
                Ok(RangePage { entries, truncated: status == "more" || cut })
            }
            _ => Err(self.range_failure(format!("{reply:?}"))),
        }
    }
}

#[async_trait]
impl StreamReader for RedisBroker {
    async fn read_range(
        &self,
        service: &str,
        stream: StreamKind,
        request: &RangeRequest,
    ) -> Result<RangePage, RangeFailure> {
        let (mode, start, end) = match request.query {
            RangeQuery::Last => ("last", "+".to_owned(), "-".to_owned()),
            RangeQuery::From(id) => ("range", id.to_string(), "+".to_owned()),
            // A bare millisecond means `MS-0` as a start and `MS-<max>` as an end.
            RangeQuery::Between { from_ms, to_ms } => ("range", from_ms.to_string(), to_ms.to_string()),
        };
        let newest_first = request.query == RangeQuery::Last;
        let key = self.key(service, stream);
        let args = [mode.to_owned(), start, end, request.count.max(1).to_string(), request.max_bytes.to_string()];
        let mut con = self.manager.clone();
        let unavailable = |e: RedisError| RangeFailure::Unavailable(self.err(e).to_string());
        if self.read_only_scripts.load(Ordering::Relaxed) {
            // Sent to the node owning the key's slot: a cluster client routes only EVAL and
            // EVALSHA by their key.
            let mut reply = con.on_slot_of(&key, &read_only("EVALSHA_RO", RANGE.get_hash(), &key, &args)).await;
            if matches!(&reply, Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript)) {
                reply = con.on_slot_of(&key, &read_only("EVAL_RO", &RANGE_CODE, &key, &args)).await;
            }
            match reply {
                Err(e) if no_read_only_scripts(&e) => self.read_only_scripts.store(false, Ordering::Relaxed),
                reply => return self.range_page(&reply.map_err(unavailable)?, newest_first, request.max_bytes),
            }
        }
        let reply: Value = RANGE.key(key).arg(&args).invoke_async(&mut con).await.map_err(unavailable)?;
        self.range_page(&reply, newest_first, request.max_bytes)
    }
}
