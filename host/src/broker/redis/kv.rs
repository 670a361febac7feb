//! Redis: the `kv` store. A service's key `k` lives at `{ns:service}:kv:k` as a plain
//! string (with a real Redis TTL when set with one). Quotas need the service's key count
//! and bytes, so each write runs as one Lua script that also maintains, under
//! `{ns:service}:kvmeta:`, `index` (sorted set of keys, for sorted listing), `sizes`
//! (hash key -> bytes), `expiry` (sorted set key -> expiry ms) and `bytes` (the total).
//! Each script first purges expired keys from that bookkeeping, so expired keys stop
//! counting against the quota.

use std::sync::LazyLock;
use std::time::Duration;

use async_trait::async_trait;
use redis::{Script, Value};

use super::{keys, parse};
use crate::broker::{KvFailure, KvStore, RedisBroker, kv_ttl_ms};
use crate::vocab::KvQuota;
use crate::vocab::kv::KvSwap;

/// Shared by every script: KEYS = [index, sizes, expiry, bytes], ARGV[1] = value key prefix.
const PRELUDE: &str = r"
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function purge(now)
  repeat
    local gone = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now, 'LIMIT', 0, 500)
    for _, k in ipairs(gone) do
      redis.call('DEL', ARGV[1] .. k)
      local size = redis.call('HGET', KEYS[2], k)
      if size then redis.call('DECRBY', KEYS[4], size) end
      redis.call('HDEL', KEYS[2], k)
      redis.call('ZREM', KEYS[1], k)
      redis.call('ZREM', KEYS[3], k)
    end
  until #gone < 500
end
local function over_quota(k, old_size, new_size, max_keys, max_bytes)
  if not old_size then
    local count = redis.call('HLEN', KEYS[2])
    if count + 1 > tonumber(max_keys) then
      return 'kv.max_keys = ' .. max_keys .. ' reached (' .. count .. ' keys)'
    end
  end
  local bytes = tonumber(redis.call('GET', KEYS[4]) or '0')
  local after = bytes - tonumber(old_size or '0') + new_size
  if after > tonumber(max_bytes) then
    return 'kv.max_bytes = ' .. max_bytes .. ' would be exceeded (' .. after .. ' bytes)'
  end
  return nil
end
local function account(k, old_size, new_size)
  redis.call('HSET', KEYS[2], k, new_size)
  redis.call('ZADD', KEYS[1], 0, k)
  redis.call('INCRBY', KEYS[4], new_size - tonumber(old_size or '0'))
end
";

/// ARGV: prefix, key, value, ttl ms ('' = none), max keys, max bytes.
static SET: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r"{PRELUDE}
local now = now_ms()
purge(now)
local k, full = ARGV[2], ARGV[1] .. ARGV[2]
local old = redis.call('HGET', KEYS[2], k)
local new_size = #k + #ARGV[3]
local refused = over_quota(k, old, new_size, ARGV[5], ARGV[6])
if refused then return {{'quota', refused}} end
if ARGV[4] ~= '' then
  local at = now + tonumber(ARGV[4])
  redis.call('SET', full, ARGV[3], 'PXAT', string.format('%d', at))
  redis.call('ZADD', KEYS[3], string.format('%d', at), k)
else
  redis.call('SET', full, ARGV[3])
  redis.call('ZREM', KEYS[3], k)
end
account(k, old, new_size)
return {{'ok'}}
"
    ))
});

/// ARGV: prefix, key, delta, max keys, max bytes. Keeps the key's TTL, like INCRBY.
static INCREMENT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r"{PRELUDE}
purge(now_ms())
local k, full = ARGV[2], ARGV[1] .. ARGV[2]
local old = redis.call('HGET', KEYS[2], k)
local prev = redis.call('GET', full)
local r = redis.pcall('INCRBY', full, ARGV[3])
if type(r) == 'table' and r.err then return {{'nan', r.err}} end
local value = redis.call('GET', full)
local new_size = #k + #value
local refused = over_quota(k, old, new_size, ARGV[4], ARGV[5])
if refused then
  if prev then redis.call('SET', full, prev, 'KEEPTTL') else redis.call('DEL', full) end
  return {{'quota', refused}}
end
account(k, old, new_size)
return {{'ok', value}}
"
    ))
});

/// ARGV: prefix, key. Returns whether the key existed.
static DELETE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r"{PRELUDE}
purge(now_ms())
local k, full = ARGV[2], ARGV[1] .. ARGV[2]
local existed = redis.call('DEL', full)
local size = redis.call('HGET', KEYS[2], k)
if size then redis.call('DECRBY', KEYS[4], size) end
redis.call('HDEL', KEYS[2], k)
redis.call('ZREM', KEYS[1], k)
redis.call('ZREM', KEYS[3], k)
return {{'ok', tostring(existed)}}
"
    ))
});

/// ARGV: prefix, key prefix, limit. Keys in byte order.
static LIST: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r"{PRELUDE}
purge(now_ms())
local min, max = '-', '+'
if ARGV[2] ~= '' then
  min, max = '[' .. ARGV[2], '(' .. ARGV[2] .. '\255'
end
return redis.call('ZRANGEBYLEX', KEYS[1], min, max, 'LIMIT', 0, tonumber(ARGV[3]))
"
    ))
});

/// ARGV: prefix, key, '1' + expected value ('' = must be absent), '1' + new value ('' =
/// delete), ttl ms ('' = none), max keys, max bytes. Returns `ok` with '1' when swapped.
static COMPARE_AND_SWAP: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r"{PRELUDE}
local now = now_ms()
purge(now)
local k, full = ARGV[2], ARGV[1] .. ARGV[2]
local cur = redis.call('GET', full)
if ARGV[3] == '' then
  if cur then return {{'ok', '0'}} end
elseif (not cur) or ('1' .. cur) ~= ARGV[3] then
  return {{'ok', '0'}}
end
local old = redis.call('HGET', KEYS[2], k)
if ARGV[4] == '' then
  redis.call('DEL', full)
  if old then redis.call('DECRBY', KEYS[4], old) end
  redis.call('HDEL', KEYS[2], k)
  redis.call('ZREM', KEYS[1], k)
  redis.call('ZREM', KEYS[3], k)
  return {{'ok', '1'}}
end
local value = string.sub(ARGV[4], 2)
local new_size = #k + #value
local refused = over_quota(k, old, new_size, ARGV[6], ARGV[7])
if refused then return {{'quota', refused}} end
if ARGV[5] ~= '' then
  local at = now + tonumber(ARGV[5])
  redis.call('SET', full, value, 'PXAT', string.format('%d', at))
  redis.call('ZADD', KEYS[3], string.format('%d', at), k)
else
  redis.call('SET', full, value)
  redis.call('ZREM', KEYS[3], k)
end
account(k, old, new_size)
return {{'ok', '1'}}
"
    ))
});

/// `Some(v)` as `1v`, `None` as the empty string: how the script tells them apart.
fn tagged(value: Option<&[u8]>) -> Vec<u8> {
    value.map(|v| [b"1", v].concat()).unwrap_or_default()
}

/// One stored value as `GET` or `MGET` answers it (`nil`: no such key).
fn kv_value(reply: Value, command: &str) -> Result<Option<Vec<u8>>, KvFailure> {
    match reply {
        Value::Nil => Ok(None),
        Value::BulkString(bytes) => Ok(Some(bytes)),
        Value::SimpleString(text) => Ok(Some(text.into_bytes())),
        other => Err(KvFailure::Unavailable(format!("unexpected reply to {command}: {other:?}"))),
    }
}

/// A script's `[status, detail]` reply.
fn status(value: &Value) -> Result<(String, Option<String>), KvFailure> {
    let parts = parse::strings(value).map_err(|d| KvFailure::Unavailable(format!("unexpected kv reply: {d}")))?;
    let mut parts = parts.into_iter();
    let head = parts.next().unwrap_or_default();
    Ok((head, parts.next()))
}

impl RedisBroker {
    pub(super) fn kv_keys(&self, service: &str) -> [String; 4] {
        keys::kv_meta(&self.namespace, service)
    }

    pub(super) fn kv_prefix(&self, service: &str) -> String {
        keys::kv_prefix(&self.namespace, service)
    }

    async fn kv_script(&self, script: &Script, service: &str, args: &[&[u8]]) -> Result<Value, KvFailure> {
        let mut invocation = script.prepare_invoke();
        for key in self.kv_keys(service) {
            invocation.key(key);
        }
        invocation.arg(self.kv_prefix(service));
        for arg in args {
            invocation.arg(*arg);
        }
        let mut con = self.manager.clone();
        invocation.invoke_async(&mut con).await.map_err(|e| KvFailure::Unavailable(self.err(e).to_string()))
    }
}

fn quota_or(reply: (String, Option<String>)) -> Result<Option<String>, KvFailure> {
    match reply {
        (status, detail) if status == "ok" => Ok(detail),
        (status, detail) if status == "quota" => Err(KvFailure::QuotaExceeded(detail.unwrap_or_default())),
        (status, detail) if status == "nan" => Err(KvFailure::NotANumber(detail.unwrap_or_default())),
        (status, detail) => Err(KvFailure::Unavailable(format!("unexpected kv reply {status:?} {detail:?}"))),
    }
}

#[async_trait]
impl KvStore for RedisBroker {
    async fn kv_get(&self, service: &str, key: &str) -> Result<Option<Vec<u8>>, KvFailure> {
        let mut cmd = redis::cmd("GET");
        cmd.arg(format!("{}{key}", self.kv_prefix(service)));
        kv_value(self.query(&cmd).await.map_err(|e| KvFailure::Unavailable(e.to_string()))?, "GET")
    }

    async fn kv_set(
        &self,
        service: &str,
        key: &str,
        value: &[u8],
        ttl: Option<Duration>,
        quota: &KvQuota,
    ) -> Result<(), KvFailure> {
        let ttl = ttl.map(|t| kv_ttl_ms(t).to_string()).unwrap_or_default();
        let (keys, bytes) = (quota.max_keys.to_string(), quota.max_bytes.to_string());
        let args: [&[u8]; 5] = [key.as_bytes(), value, ttl.as_bytes(), keys.as_bytes(), bytes.as_bytes()];
        let reply = self.kv_script(&SET, service, &args).await?;
        quota_or(status(&reply)?).map(drop)
    }

    async fn kv_delete(&self, service: &str, key: &str) -> Result<bool, KvFailure> {
        let reply = self.kv_script(&DELETE, service, &[key.as_bytes()]).await?;
        Ok(quota_or(status(&reply)?)?.as_deref() == Some("1"))
    }

    async fn kv_increment(&self, service: &str, key: &str, delta: i64, quota: &KvQuota) -> Result<i64, KvFailure> {
        let (delta, keys, bytes) = (delta.to_string(), quota.max_keys.to_string(), quota.max_bytes.to_string());
        let args: [&[u8]; 4] = [key.as_bytes(), delta.as_bytes(), keys.as_bytes(), bytes.as_bytes()];
        let reply = self.kv_script(&INCREMENT, service, &args).await?;
        let value = quota_or(status(&reply)?)?.unwrap_or_default();
        value.parse().map_err(|_| KvFailure::NotANumber(format!("value {value:?} of {key:?} is not an integer")))
    }

    async fn kv_list(&self, service: &str, prefix: &str, limit: u32) -> Result<Vec<String>, KvFailure> {
        let limit = limit.to_string();
        let reply = self.kv_script(&LIST, service, &[prefix.as_bytes(), limit.as_bytes()]).await?;
        parse::strings(&reply).map_err(|d| KvFailure::Unavailable(format!("unexpected kv reply: {d}")))
    }

    async fn kv_compare_and_swap(&self, service: &str, swap: &KvSwap<'_>, quota: &KvQuota) -> Result<bool, KvFailure> {
        let (expected, new) = (tagged(swap.expected), tagged(swap.new));
        let ttl = swap.ttl.map(|t| kv_ttl_ms(t).to_string()).unwrap_or_default();
        let (keys, bytes) = (quota.max_keys.to_string(), quota.max_bytes.to_string());
        let args: [&[u8]; 6] =
            [swap.key.as_bytes(), &expected, &new, ttl.as_bytes(), keys.as_bytes(), bytes.as_bytes()];
        let reply = self.kv_script(&COMPARE_AND_SWAP, service, &args).await?;
        Ok(quota_or(status(&reply)?)?.as_deref() == Some("1"))
    }

    async fn kv_get_many(&self, service: &str, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, KvFailure> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let prefix = self.kv_prefix(service);
        let mut cmd = redis::cmd("MGET");
        for key in keys {
            cmd.arg(format!("{prefix}{key}"));
        }
        let reply = self.query(&cmd).await.map_err(|e| KvFailure::Unavailable(e.to_string()))?;
        let Value::Array(items) = reply else {
            return Err(KvFailure::Unavailable(format!("unexpected reply to MGET: {reply:?}")));
        };
        if items.len() != keys.len() {
            return Err(KvFailure::Unavailable(format!("MGET of {} keys answered {} values", keys.len(), items.len())));
        }
        items.into_iter().map(|item| kv_value(item, "MGET")).collect()
    }
}
