//! Redis: the counters of `rate_limit:`. A bucket's count lives at
//! `{ns:service}:rate:{bucket}`, an integer that expires when its window ends; one Lua
//! script counts a message and reads the time left, so every worker shares the count.

use std::sync::LazyLock;
use std::time::Duration;

use redis::Script;

use super::parse;
use crate::broker::{RateCount, RedisBroker, Result};

/// KEYS[1] = the bucket's counter, ARGV[1] = the window in ms. Returns {count, ms left}.
static COUNT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local n = redis.call('INCR', KEYS[1])
local left = redis.call('PTTL', KEYS[1])
if n == 1 or left < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  left = tonumber(ARGV[1])
end
return {n, left}
",
    )
});

impl RedisBroker {
    /// `{ns:service}:rate:{bucket}`.
    pub(super) fn rate_key(&self, service: &str, bucket: &str) -> String {
        super::keys::rate(&self.namespace, service, bucket)
    }

    pub(super) async fn count_rate(&self, service: &str, bucket: &str, window: Duration) -> Result<RateCount> {
        let window_ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX).max(1);
        let mut invocation = COUNT.prepare_invoke();
        invocation.key(self.rate_key(service, bucket)).arg(window_ms);
        let mut con = self.manager.clone();
        let value: redis::Value = invocation.invoke_async(&mut con).await.map_err(|e| self.err(e))?;
        let bad = |detail: String| self.protocol("rate limit script", detail);
        let redis::Value::Array(parts) = &value else { return Err(bad(format!("{value:?}"))) };
        let [count, left] = parts.as_slice() else { return Err(bad(format!("{value:?}"))) };
        let count = parse::int(count).map_err(bad)?;
        let left = parse::int(left).map_err(bad)?;
        Ok(RateCount { count: u64::try_from(count).unwrap_or(0), left_ms: u64::try_from(left).unwrap_or(0) })
    }
}
