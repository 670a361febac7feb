//! Redis: the hot path's writes. Finished messages (taskbacks plus ack) and dead letters
//! (dead entry plus ack), each written only while this consumer still holds the message,
//! checked and written in one Lua script.

use std::sync::LazyLock;

use redis::{Script, Value};

use super::claims::SCRIPT_CHUNK;
use super::parse;
use crate::broker::{DEAD_FIELDS, DeadLetter, RedisBroker, Result, WORKER_GROUP};
use crate::vocab::StreamId;

/// Writes finished messages, each only if consumer ARGV[2] of group ARGV[1] still holds it
/// in stream KEYS[1]: adds its entries to stream KEYS[2] (trimmed to `MAXLEN ~ ARGV[3]`
/// unless that is empty) and acknowledges it. ARGV[4..] is, per message: its id, its number
/// of entries, then per entry its number of field pairs and the fields; the last three are
/// the lowest and highest message id and a count (empty ids: none given). The entries the
/// consumer holds in that range are asked for in one `XPENDING` of at most that count; when
/// the answer fills it, a message not in it is asked for alone. Returns how many messages
/// were no longer held and left alone (a message given twice is written once: the second
/// finds it no longer held). The messages written are acknowledged together, in
/// one `XACK` at the end (one per message cost Redis about 1 µs each). Redis does not undo a
/// script that fails halfway, and a message written before a failure must not be written
/// again by the retry: so each `XADD` runs under `pcall`, and the first that fails ends the
/// script after acknowledging the messages written before it, with that error.
static FINISH: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local group, consumer, maxlen = ARGV[1], ARGV[2], ARGV[3]
local argc = #ARGV
local first, last, limit = ARGV[argc - 2], ARGV[argc - 1], tonumber(ARGV[argc])
argc = argc - 3
local held_ids, complete = {}, false
if first ~= '' then
  local rows = redis.call('XPENDING', KEYS[1], group, first, last, limit, consumer)
  for _, row in ipairs(rows) do held_ids[row[1]] = true end
  complete = #rows < limit
end
local written, skipped = {}, 0
local function ack()
  if #written > 0 then redis.call('XACK', KEYS[1], group, unpack(written)) end
end
local i = 4
while i <= argc do
  local id, entries = ARGV[i], tonumber(ARGV[i + 1])
  i = i + 2
  local held = held_ids[id]
  if held == nil then
    held = not complete and #redis.call('XPENDING', KEYS[1], group, id, id, 1, consumer) > 0
  end
  for _ = 1, entries do
    local n = tonumber(ARGV[i])
    if held then
      local added
      if maxlen ~= '' then
        added = redis.pcall('XADD', KEYS[2], 'MAXLEN', '~', maxlen, '*', unpack(ARGV, i + 1, i + 2 * n))
      else
        added = redis.pcall('XADD', KEYS[2], '*', unpack(ARGV, i + 1, i + 2 * n))
      end
      if type(added) == 'table' and added.err then
        ack()
        return added
      end
    end
    i = i + 1 + 2 * n
  end
  if held then
    written[#written + 1] = id
    held_ids[id] = false
  else
    skipped = skipped + 1
  end
end
ack()
return skipped
",
    )
});

/// Writes dead letters like [`FINISH`], copying each message's fields from the stored
/// entry (`XRANGE` inside the script), so a dead letter keeps the bytes the producer wrote,
/// UTF-8 or not. The layout is [`DeadLetter::entry`]'s: the `m` host pairs first, then the
/// message's fields without host-owned keys (`cannon.*`, any ASCII case). ARGV[4..] is, per
/// letter: its id, the number of message field pairs `n` (used only when the entry is gone
/// or too large to copy here; already without host-owned keys), the number of host pairs
/// `m`, the `n` pairs, the `m` pairs. Returns how many were no longer held and left alone.
static DEAD_LETTER: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r"
local group, consumer = ARGV[1], ARGV[2]
local skipped = 0
local i = 4
while i <= #ARGV do
  local id, n, m = ARGV[i], tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2])
  i = i + 3
  if #redis.call('XPENDING', KEYS[1], group, id, id, 1, consumer) > 0 then
    local cmd = {{'XADD', KEYS[2]}}
    if ARGV[3] ~= '' then
      cmd[3], cmd[4], cmd[5] = 'MAXLEN', '~', ARGV[3]
    end
    cmd[#cmd + 1] = '*'
    for j = i + 2 * n, i + 2 * (n + m) - 1 do cmd[#cmd + 1] = ARGV[j] end
    local stored = redis.call('XRANGE', KEYS[1], id, id)[1]
    if stored and stored[2] and #stored[2] <= {max_copy} then
      local f = stored[2]
      for k = 1, #f - 1, 2 do
        if string.lower(string.sub(f[k], 1, 7)) ~= 'cannon.' then
          cmd[#cmd + 1] = f[k]
          cmd[#cmd + 1] = f[k + 1]
        end
      end
    else
      for j = i, i + 2 * n - 1 do cmd[#cmd + 1] = ARGV[j] end
    end
    redis.call(unpack(cmd))
    redis.call('XACK', KEYS[1], group, id)
  else
    skipped = skipped + 1
  end
  i = i + 2 * (n + m)
end
return skipped
",
        max_copy = 2 * SCRIPT_MAX_PAIRS
    ))
});

/// Most field pairs of one entry the finish script takes: Lua's `unpack` stops at 8,000
/// values. Larger entries take the two-step path of [`RedisBroker::finish`].
const SCRIPT_MAX_PAIRS: usize = 3_000;
/// Most arguments in one finish-script call.
const SCRIPT_MAX_ARGS: usize = 100_000;
/// A finished message of at least this many bytes is written alone, on a connection of
/// its own. Redis answers a value larger than `proto-max-bulk-len` (at least 1 MiB) with
/// `Protocol error: invalid bulk length` and closes the connection: that must not break
/// the shared connection other services use.
const LARGE_WRITE: usize = 1 << 20;

/// One finished message for [`RedisBroker::finish`]: its id and the entries to add for it.
pub(super) struct Outgoing<'a> {
    pub id: &'a str,
    pub entries: Vec<&'a [(String, String)]>,
}

impl Outgoing<'_> {
    /// Bytes of its entries' keys and values.
    fn bytes(&self) -> usize {
        self.entries.iter().flat_map(|e| e.iter()).map(|(k, v)| k.len() + v.len()).sum()
    }
}

/// The lowest and highest of stream ids `ids`, as given; `None` when there are none or one
/// is not an id (the script then asks about each message alone).
fn id_range<'a>(ids: impl Iterator<Item = &'a str>) -> Option<(&'a str, &'a str)> {
    type Known<'a> = (StreamId, &'a str);
    let mut range: Option<(Known<'a>, Known<'a>)> = None;
    for text in ids {
        let id = (StreamId::parse(text).ok()?, text);
        range = Some(match range {
            None => (id, id),
            Some((low, high)) => (low.min(id), high.max(id)),
        });
    }
    range.map(|((_, low), (_, high))| (low, high))
}

impl RedisBroker {
    /// Writes finished messages to stream `out` and acknowledges them in `data`, each
    /// atomically and only if `consumer` still holds it (one Lua script per chunk); returns
    /// how many were left alone. A message with an entry too large for the script is written
    /// in two steps instead: a check that refreshes the claim, then `MULTI/EXEC`.
    pub(super) async fn finish(
        &self,
        data: &str,
        out: &str,
        maxlen: Option<u64>,
        consumer: &str,
        done: &[Outgoing<'_>],
    ) -> Result<usize> {
        let (large, small): (Vec<&Outgoing<'_>>, Vec<&Outgoing<'_>>) =
            done.iter().partition(|f| f.entries.iter().any(|e| e.len() > SCRIPT_MAX_PAIRS));
        let maxlen_arg = maxlen.map(|n| n.to_string()).unwrap_or_default();
        let mut skipped = 0;
        let mut rest = small.as_slice();
        while !rest.is_empty() {
            let mut invocation = FINISH.prepare_invoke();
            invocation.key(data).key(out).arg(WORKER_GROUP).arg(consumer).arg(&maxlen_arg);
            let mut args = 3;
            let mut taken = 0;
            // A message of LARGE_WRITE bytes or more is written alone, on its own connection.
            let mut alone = false;
            for finished in rest {
                let large = finished.bytes() >= LARGE_WRITE;
                if taken > 0 && (taken == SCRIPT_CHUNK || args >= SCRIPT_MAX_ARGS || large) {
                    break;
                }
                invocation.arg(finished.id).arg(finished.entries.len());
                for entry in &finished.entries {
                    invocation.arg(entry.len());
                    for (k, v) in entry.iter() {
                        invocation.arg(k).arg(v);
                    }
                    args += 1 + 2 * entry.len();
                }
                args += 2;
                taken += 1;
                if large {
                    alone = true;
                    break;
                }
            }
            // The range the script asks `XPENDING` about, with room for the other messages
            // this consumer holds between (in flight, read ahead).
            let (first, last) = id_range(rest[..taken].iter().map(|f| f.id)).unwrap_or_default();
            invocation.arg(first).arg(last).arg(taken.saturating_mul(4).saturating_add(256));
            rest = &rest[taken..];
            let mut con = if alone { self.dedicated().await? } else { self.manager.clone() };
            let reply: Value =
                invocation.invoke_async(&mut con).await.map_err(|e| self.script_err("finish script", e))?;
            self.wait_replicas_on(&mut con, data).await?;
            let n = parse::int(&reply).map_err(|d| self.protocol("finish script", d))?;
            skipped += usize::try_from(n).unwrap_or(0);
        }
        if !large.is_empty() {
            skipped += self.finish_large(data, out, maxlen, consumer, &large).await?;
        }
        Ok(skipped)
    }

    /// Writes dead letters to stream `out` and acknowledges them in `data`, like
    /// [`RedisBroker::finish`]; each letter's message fields are copied from the stored entry
    /// (see [`DEAD_LETTER`]). Letters with more fields than a script takes go the two-step way.
    pub(super) async fn write_dead_letters(
        &self,
        data: &str,
        out: &str,
        maxlen: u64,
        consumer: &str,
        dead: &[DeadLetter],
    ) -> Result<usize> {
        let (large, small): (Vec<&DeadLetter>, Vec<&DeadLetter>) =
            dead.iter().partition(|d| d.fields.len() + DEAD_FIELDS.len() > SCRIPT_MAX_PAIRS);
        let mut skipped = 0;
        for chunk in small.chunks(SCRIPT_CHUNK) {
            let mut invocation = DEAD_LETTER.prepare_invoke();
            invocation.key(data).key(out).arg(WORKER_GROUP).arg(consumer).arg(maxlen);
            for letter in chunk {
                let added = letter.added();
                let guest: Vec<_> =
                    letter.fields.iter().filter(|(k, _)| !crate::vocab::fields::is_host_key(k)).collect();
                invocation.arg(&letter.id).arg(guest.len()).arg(added.len());
                for (k, v) in guest.into_iter().chain(&added) {
                    invocation.arg(k).arg(v);
                }
            }
            let mut con = self.manager.clone();
            let reply: Value =
                invocation.invoke_async(&mut con).await.map_err(|e| self.script_err("bury script", e))?;
            self.wait_replicas_on(&mut con, data).await?;
            let n = parse::int(&reply).map_err(|d| self.protocol("bury script", d))?;
            skipped += usize::try_from(n).unwrap_or(0);
        }
        if !large.is_empty() {
            let entries: Vec<_> = large.iter().map(|d| d.entry()).collect();
            let outgoing: Vec<Outgoing<'_>> =
                large.iter().zip(&entries).map(|(d, e)| Outgoing { id: &d.id, entries: vec![e.as_slice()] }).collect();
            skipped += self.finish(data, out, Some(maxlen), consumer, &outgoing).await?;
        }
        Ok(skipped)
    }

    async fn finish_large(
        &self,
        data: &str,
        out: &str,
        maxlen: Option<u64>,
        consumer: &str,
        done: &[&Outgoing<'_>],
    ) -> Result<usize> {
        let ids: Vec<String> = done.iter().map(|f| f.id.to_owned()).collect();
        let held: std::collections::HashSet<String> =
            self.refresh_owned(data, consumer, &ids).await?.into_iter().collect();
        if held.is_empty() {
            return Ok(done.len());
        }
        let mut pipe = redis::pipe();
        pipe.atomic();
        for finished in done.iter().filter(|f| held.contains(f.id)) {
            for entry in &finished.entries {
                pipe.add_command(self.xadd(out, maxlen, entry)).ignore();
            }
            pipe.cmd("XACK").arg(data).arg(WORKER_GROUP).arg(finished.id).ignore();
        }
        // Entries this large go on a connection of their own (see [`LARGE_WRITE`]).
        let mut con = self.dedicated().await?;
        pipe.query_async::<()>(&mut con).await.map_err(|e| self.err(e))?;
        self.wait_replicas_on(&mut con, data).await?;
        Ok(done.len() - held.len())
    }
}

#[cfg(test)]
mod tests {
    use super::id_range;

    #[test]
    fn the_range_of_a_batch_compares_ids_as_numbers() {
        let ids = ["1700000000000-10", "1700000000000-9", "999-0", "1700000000001-0"];
        assert_eq!(id_range(ids.into_iter()), Some(("999-0", "1700000000001-0")));
        assert_eq!(id_range(["5-1"].into_iter()), Some(("5-1", "5-1")));
        assert_eq!(id_range(std::iter::empty()), None);
        assert_eq!(id_range(["5-1", "not-an-id"].into_iter()), None, "then each message is asked about alone");
    }
}
