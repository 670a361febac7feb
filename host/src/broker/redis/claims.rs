//! Redis: inspection (`XINFO`, `XPENDING`), claims that check ownership, trims, and replays
//! of dead letters. Where a check and a write must happen together they run as one Lua
//! script, which Redis executes atomically. Finished messages and dead letters are written
//! by `finish.rs`.

use std::sync::LazyLock;

use redis::{Script, Value};

use super::parse;
use crate::broker::{
    BrokerError, ConsumerInfo, Delivery, GroupInfo, PendingEntry, RedisBroker, Result, StreamInfo, WORKER_GROUP,
};

/// Most ids handed to one script call (Lua's `unpack` and the reply stay small).
pub(super) const SCRIPT_CHUNK: usize = 256;

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

fn number(value: &Value) -> u64 {
    parse::int(value).ok().and_then(|n| u64::try_from(n).ok()).unwrap_or(0)
}

impl RedisBroker {
    /// A Redis error of a script call as a broker error: the server's refusal, or a reply
    /// the script should not have given.
    pub(super) fn script_err(&self, what: &'static str, e: redis::RedisError) -> BrokerError {
        match e.code() {
            Some(_) => self.err(e),
            None => self.protocol(what, e.to_string()),
        }
    }

    pub(super) async fn run_script(
        &self,
        script: &Script,
        what: &'static str,
        key: &[&str],
        args: &[String],
    ) -> Result<Value> {
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

    pub(super) async fn refresh_owned(&self, key: &str, consumer: &str, ids: &[String]) -> Result<Vec<String>> {
        let mut owned = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(SCRIPT_CHUNK) {
            let mut args = vec![WORKER_GROUP.to_owned(), consumer.to_owned()];
            args.extend(chunk.iter().cloned());
            let reply = self.run_script(&KEEP, "keep script", &[key], &args).await?;
            owned.extend(parse::strings(&reply).map_err(|d| self.protocol("keep script", d))?);
        }
        Ok(owned)
    }
}
