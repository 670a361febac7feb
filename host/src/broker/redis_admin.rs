//! Redis: inspection (`XINFO`, `XPENDING`), claims that check ownership, and replays of
//! dead letters. Where a check and a write must happen together they run as one Lua
//! script, which Redis executes atomically.

use std::sync::LazyLock;

use redis::{Script, Value};

use crate::broker::parse;
use crate::broker::{
    BrokerError, ConsumerInfo, DEAD_FIELDS, DeadLetter, Delivery, GroupInfo, PendingEntry, RedisBroker, Result,
    StreamInfo, WORKER_GROUP,
};

/// Most ids handed to one script call (Lua's `unpack` and the reply stay small).
const SCRIPT_CHUNK: usize = 256;

/// `XTRIM` that keeps every entry a consumer group still needs. KEYS[1] stream, ARGV[1]
/// maxlen. Without groups: `MAXLEN ~`. With groups: `MINID ~` the oldest id any group still
/// needs (its oldest pending entry, else the entry after the last it was handed).
static TRIM: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local maxlen = tonumber(ARGV[1])
if redis.call('XLEN', KEYS[1]) <= maxlen then return 0 end
local groups = redis.call('XINFO', 'GROUPS', KEYS[1])
if #groups == 0 then return redis.call('XTRIM', KEYS[1], 'MAXLEN', '~', maxlen) end
local function parse(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end
local safe_ms, safe_seq = nil, nil
for _, g in ipairs(groups) do
  local info = {}
  for i = 1, #g, 2 do info[g[i]] = g[i + 1] end
  local ms, seq
  if tonumber(info['pending']) > 0 then
    ms, seq = parse(redis.call('XPENDING', KEYS[1], info['name'])[2])
  else
    ms, seq = parse(info['last-delivered-id'])
    seq = seq + 1
  end
  if safe_ms == nil or ms < safe_ms or (ms == safe_ms and seq < safe_seq) then
    safe_ms, safe_seq = ms, seq
  end
end
return redis.call('XTRIM', KEYS[1], 'MINID', '~', string.format('%.0f-%.0f', safe_ms, safe_seq))
",
    )
});

/// Refreshes the idle time of the ids (ARGV[3..]) still pending with consumer ARGV[2] in
/// group ARGV[1] of stream KEYS[1] (`XCLAIM ... JUSTID` does not count a delivery), and
/// returns them.
static KEEP: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local owned = {}
for i = 3, #ARGV do
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1, ARGV[2])
  if #p > 0 then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'JUSTID')
    owned[#owned + 1] = ARGV[i]
  end
end
return owned
",
    )
});

/// Writes finished messages, each only if consumer ARGV[2] of group ARGV[1] still holds it
/// in stream KEYS[1]: adds its entries to stream KEYS[2] (trimmed to `MAXLEN ~ ARGV[3]`
/// unless that is empty) and acknowledges it. ARGV[4..] is, per message: its id, its number
/// of entries, then per entry its number of field pairs and the fields. Returns how many
/// messages were no longer held and left alone. Each message is acknowledged right after
/// its entries: Redis does not undo a script that fails halfway, and a message written
/// before the failure must not be written again by the retry.
static FINISH: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local group, consumer = ARGV[1], ARGV[2]
local skipped = 0
local i = 4
while i <= #ARGV do
  local id, entries = ARGV[i], tonumber(ARGV[i + 1])
  i = i + 2
  local held = #redis.call('XPENDING', KEYS[1], group, id, id, 1, consumer) > 0
  for _ = 1, entries do
    local n = tonumber(ARGV[i])
    if held then
      local cmd = {'XADD', KEYS[2]}
      if ARGV[3] ~= '' then
        cmd[3], cmd[4], cmd[5] = 'MAXLEN', '~', ARGV[3]
      end
      cmd[#cmd + 1] = '*'
      for j = i + 1, i + 2 * n do cmd[#cmd + 1] = ARGV[j] end
      redis.call(unpack(cmd))
    end
    i = i + 1 + 2 * n
  end
  if held then redis.call('XACK', KEYS[1], group, id) else skipped = skipped + 1 end
end
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
static BURY: LazyLock<Script> = LazyLock::new(|| {
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

/// Moves the ids (ARGV[4..]) pending with consumer ARGV[3] to consumer ARGV[2] (group
/// ARGV[1], stream KEYS[1]), counting a delivery; returns `[id, fields, deliveries]` of each.
/// An entry deleted meanwhile is acknowledged and left out.
static CLAIM: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local out = {}
for i = 4, #ARGV do
  local id = ARGV[i]
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], id, id, 1, ARGV[3])
  if #p > 0 then
    local claimed = redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, id)
    local entry = claimed[1]
    if entry and entry[2] then
      out[#out + 1] = {id, entry[2], p[1][4] + 1}
    else
      redis.call('XACK', KEYS[1], ARGV[1], id)
    end
  end
end
return out
",
    )
});

/// Moves dead letters (ids ARGV[1..] of KEYS[2]) to the data stream KEYS[1] without the
/// fields the dead-letter writer added; returns `[dead id, new id]`.
static REPLAY: LazyLock<Script> = LazyLock::new(|| {
    let strip: Vec<String> = DEAD_FIELDS.iter().map(|f| format!("['{f}'] = true")).collect();
    Script::new(&format!(
        r"
local strip = {{ {} }}
local out = {{}}
for i = 1, #ARGV do
  local found = redis.call('XRANGE', KEYS[2], ARGV[i], ARGV[i])
  if #found > 0 then
    local flat = found[1][2]
    local args = {{KEYS[1], '*'}}
    for j = 1, #flat, 2 do
      if not strip[flat[j]] then
        args[#args + 1] = flat[j]
        args[#args + 1] = flat[j + 1]
      end
    end
    if #args == 2 then
      for j = 1, #flat do args[#args + 1] = flat[j] end
    end
    local new = redis.call('XADD', unpack(args))
    redis.call('XDEL', KEYS[2], ARGV[i])
    out[#out + 1] = {{ARGV[i], new}}
  end
end
return out
",
        strip.join(", ")
    ))
});

fn number(value: &Value) -> u64 {
    parse::int(value).ok().and_then(|n| u64::try_from(n).ok()).unwrap_or(0)
}

impl RedisBroker {
    /// A Redis error of a script call as a broker error: the server's refusal, or a reply
    /// the script should not have given.
    fn script_err(&self, what: &'static str, e: redis::RedisError) -> BrokerError {
        match e.code() {
            Some(_) => self.err(e),
            None => self.protocol(what, e.to_string()),
        }
    }

    async fn run_script(&self, script: &Script, what: &'static str, key: &[&str], args: &[String]) -> Result<Value> {
        let mut invocation = script.prepare_invoke();
        for k in key {
            invocation.key(*k);
        }
        for a in args {
            invocation.arg(a);
        }
        let mut con = self.manager.clone();
        invocation.invoke_async(&mut con).await.map_err(|e| self.script_err(what, e))
    }

    /// Trims one stream without losing what a group still needs (see [`TRIM`]).
    pub(super) async fn trim_stream(&self, key: &str, maxlen: u64) -> Result<()> {
        self.run_script(&TRIM, "XTRIM", &[key], &[maxlen.to_string()]).await.map(drop)
    }

    pub(super) async fn info(&self, key: &str) -> Result<StreamInfo> {
        let mut cmd = redis::cmd("XINFO");
        cmd.arg("STREAM").arg(key);
        let reply = match self.query(&cmd).await {
            Ok(reply) => reply,
            Err(BrokerError::Redis { source, .. }) if source.to_string().contains("no such key") => {
                return Ok(StreamInfo { last_id: "0-0".to_owned(), ..StreamInfo::default() });
            }
            Err(err) => return Err(err),
        };
        let pairs = parse::info_pairs(&reply).map_err(|d| self.protocol("XINFO STREAM", d))?;
        let length = parse::info_field(&pairs, "length").map(number).map_err(|d| self.protocol("XINFO STREAM", d))?;
        let last_id = match (length, parse::info_field(&pairs, "last-entry")) {
            (0, _) | (_, Err(_)) => "0-0".to_owned(),
            (_, Ok(entry)) => match parse::entries(&Value::Array(vec![entry.clone()])) {
                Ok(mut found) if !found.is_empty() => found.remove(0).id,
                _ => "0-0".to_owned(),
            },
        };
        let mut groups_cmd = redis::cmd("XINFO");
        groups_cmd.arg("GROUPS").arg(key);
        let reply = self.query(&groups_cmd).await?;
        let mut groups = Vec::new();
        for group in parse::info_list(&reply).map_err(|d| self.protocol("XINFO GROUPS", d))? {
            let field = |name| parse::info_field(&group, name).map_err(|d| self.protocol("XINFO GROUPS", d));
            let name = parse::string(field("name")?).map_err(|d| self.protocol("XINFO GROUPS", d))?;
            let last_delivered = parse::string(field("last-delivered-id")?).unwrap_or_default();
            let mut consumers_cmd = redis::cmd("XINFO");
            consumers_cmd.arg("CONSUMERS").arg(key).arg(&name);
            let reply = self.query(&consumers_cmd).await?;
            let mut consumers = Vec::new();
            for consumer in parse::info_list(&reply).map_err(|d| self.protocol("XINFO CONSUMERS", d))? {
                let field = |n| parse::info_field(&consumer, n).map_err(|d| self.protocol("XINFO CONSUMERS", d));
                consumers.push(ConsumerInfo {
                    name: parse::string(field("name")?).map_err(|d| self.protocol("XINFO CONSUMERS", d))?,
                    pending: number(field("pending")?),
                    idle_ms: number(field("idle")?),
                });
            }
            groups.push(GroupInfo { name, pending: number(field("pending")?), last_delivered, consumers });
        }
        Ok(StreamInfo { length, last_id, groups })
    }

    pub(super) async fn pending_entries(
        &self,
        key: &str,
        group: &str,
        consumer: Option<&str>,
        count: usize,
    ) -> Result<Vec<PendingEntry>> {
        let mut cmd = redis::cmd("XPENDING");
        cmd.arg(key).arg(group).arg("-").arg("+").arg(count.max(1));
        if let Some(consumer) = consumer {
            cmd.arg(consumer);
        }
        let reply = match self.query(&cmd).await {
            Ok(reply) => reply,
            Err(BrokerError::Redis { source, .. }) if source.code() == Some("NOGROUP") => return Ok(Vec::new()),
            Err(err) => return Err(err),
        };
        let rows = parse::pending_reply(&reply).map_err(|d| self.protocol("XPENDING", d))?;
        Ok(rows
            .into_iter()
            .map(|(id, consumer, idle_ms, deliveries)| PendingEntry { id, consumer, idle_ms, deliveries })
            .collect())
    }

    pub(super) async fn claim_from(
        &self,
        key: &str,
        consumer: &str,
        from: &str,
        ids: &[String],
    ) -> Result<Vec<Delivery>> {
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(SCRIPT_CHUNK) {
            let mut args = vec![WORKER_GROUP.to_owned(), consumer.to_owned(), from.to_owned()];
            args.extend(chunk.iter().cloned());
            let reply = self.run_script(&CLAIM, "claim script", &[key], &args).await?;
            let rows = parse::claimed_reply(&reply).map_err(|d| self.protocol("claim script", d))?;
            out.extend(rows.into_iter().map(|(id, decoded, deliveries)| Delivery {
                id,
                fields: decoded.fields,
                deliveries,
                not_utf8: decoded.not_utf8,
            }));
        }
        Ok(out)
    }

    pub(super) async fn keep_owned(&self, key: &str, consumer: &str, ids: &[String]) -> Result<Vec<String>> {
        let mut owned = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(SCRIPT_CHUNK) {
            let mut args = vec![WORKER_GROUP.to_owned(), consumer.to_owned()];
            args.extend(chunk.iter().cloned());
            let reply = self.run_script(&KEEP, "keep script", &[key], &args).await?;
            owned.extend(parse::strings(&reply).map_err(|d| self.protocol("keep script", d))?);
        }
        Ok(owned)
    }

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
            rest = &rest[taken..];
            let reply: Value = if alone {
                let mut con = self.dedicated().await?;
                invocation.invoke_async(&mut con).await
            } else {
                let mut con = self.manager.clone();
                invocation.invoke_async(&mut con).await
            }
            .map_err(|e| self.script_err("finish script", e))?;
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
    /// (see [`BURY`]). Letters with more fields than a script takes go the two-step way.
    pub(super) async fn bury_letters(
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
            let mut invocation = BURY.prepare_invoke();
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
            self.keep_owned(data, consumer, &ids).await?.into_iter().collect();
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
        Ok(done.len() - held.len())
    }

    pub(super) async fn replay_dead(&self, data: &str, dead: &str, ids: &[String]) -> Result<Vec<(String, String)>> {
        let mut moved = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(SCRIPT_CHUNK) {
            let reply = self.run_script(&REPLAY, "replay script", &[data, dead], chunk).await?;
            moved.extend(parse::string_pairs(&reply).map_err(|d| self.protocol("replay script", d))?);
        }
        Ok(moved)
    }
}
