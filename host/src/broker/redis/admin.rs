//! Redis: what the command-line tools add ([`BrokerAdmin`]): reading a stream from any
//! point, replaying dead letters (one Lua script, atomic per letter), deleting a service.

use std::sync::LazyLock;
use std::time::Duration;

use async_trait::async_trait;
use redis::Script;

use super::claims::SCRIPT_CHUNK;
use super::parse::{self, RawEntry};
use crate::broker::{BrokerAdmin, DEAD_FIELDS, Entry, RedisBroker, Result, StreamKind};

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

#[async_trait]
impl BrokerAdmin for RedisBroker {
    fn stream_name(&self, service: &str, stream: StreamKind) -> String {
        self.key(service, stream)
    }

    async fn tail(
        &self,
        service: &str,
        stream: StreamKind,
        after: &str,
        count: usize,
        block: Duration,
    ) -> Result<Vec<Entry>> {
        let mut cmd = redis::cmd("XREAD");
        cmd.arg("COUNT").arg(count.max(1));
        if !block.is_zero() {
            cmd.arg("BLOCK").arg(block.as_millis().max(1) as u64);
        }
        cmd.arg("STREAMS").arg(self.key(service, stream)).arg(after);
        let reply = if block.is_zero() { self.query(&cmd).await? } else { self.query_blocking(&cmd).await? };
        let raw = parse::read_reply(&reply).map_err(|d| self.protocol("XREAD", d))?;
        Ok(raw
            .into_iter()
            .filter_map(|RawEntry { id, fields }| fields.map(|d| Entry { id, fields: d.fields, not_utf8: d.not_utf8 }))
            .collect())
    }

    async fn drop_service(&self, service: &str) -> Result<()> {
        let mut keys: Vec<String> =
            [StreamKind::Data, StreamKind::Taskback, StreamKind::Dead].iter().map(|s| self.key(service, *s)).collect();
        keys.extend(self.kv_keys(service));
        let pattern = format!("{}*", self.kv_prefix(service));
        let mut cursor = 0u64;
        loop {
            let mut scan = redis::cmd("SCAN");
            scan.arg(cursor).arg("MATCH").arg(&pattern).arg("COUNT").arg(1000);
            // On a cluster, SCAN goes to the node owning the service's slot: every key
            // matched carries the service's hash tag.
            let reply = self.manager.clone().on_slot_of(&pattern, &scan).await.map_err(|e| self.err(e))?;
            let (next, found): (u64, Vec<String>) =
                redis::from_redis_value(reply).map_err(|e| self.protocol("SCAN", e.to_string()))?;
            keys.extend(found);
            if next == 0 {
                break;
            }
            cursor = next;
        }
        for chunk in keys.chunks(500) {
            let mut del = redis::cmd("UNLINK");
            del.arg(chunk);
            self.query(&del).await?;
        }
        Ok(())
    }

    async fn replay(&self, service: &str, dead_ids: &[String]) -> Result<Vec<(String, String)>> {
        let data = self.key(service, StreamKind::Data);
        let dead = self.key(service, StreamKind::Dead);
        self.replay_dead(&data, &dead, dead_ids).await
    }
}

impl RedisBroker {
    async fn replay_dead(&self, data: &str, dead: &str, ids: &[String]) -> Result<Vec<(String, String)>> {
        let mut moved = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(SCRIPT_CHUNK) {
            let reply = self.run_script(&REPLAY, "replay script", &[data, dead], chunk).await?;
            moved.extend(parse::string_pairs(&reply).map_err(|d| self.protocol("replay script", d))?);
        }
        Ok(moved)
    }
}
