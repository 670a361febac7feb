//! Redis: `cannon-host migrate-keys`, which moves a namespace's keys from the layout before
//! hash tags (`ns:service:data`, `ns:kv:service:KEY`, `ns:kvmeta:service:index`,
//! `ns:service:rate:BUCKET`) to today's (`{ns:service}:...`, see `keys.rs`). Each key is
//! moved with `RENAME`, so a stream keeps its entries, consumer groups and pending entries,
//! and a kv value its TTL. It runs on one Redis (the old layout never ran on a cluster)
//! while no worker of the service is active.

use std::sync::LazyLock;

use redis::{Script, Value};

use super::keys::{self, legacy};
use crate::broker::{BrokerError, RedisBroker, StreamKind};

/// A consumer of an old stream seen this recently counts as a running worker or collector.
pub const ACTIVE_MS: u64 = 60_000;

/// Moves KEYS[1] to KEYS[2]. A stream at KEYS[2] that is empty and has nothing pending is
/// what a newer `cannon-host` made at start (`prepare`), and is replaced; anything else
/// there is left alone. Returns `moved`, `missing` or `exists`.
static MOVE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('EXISTS', KEYS[1]) == 0 then return 'missing' end
if redis.call('EXISTS', KEYS[2]) == 1 then
  local kind = redis.call('TYPE', KEYS[2])
  if type(kind) == 'table' then kind = kind['ok'] end
  if kind ~= 'stream' or redis.call('XLEN', KEYS[2]) > 0 then return 'exists' end
  for _, g in ipairs(redis.call('XINFO', 'GROUPS', KEYS[2])) do
    for i = 1, #g, 2 do
      if g[i] == 'pending' and tonumber(g[i + 1]) > 0 then return 'exists' end
    end
  end
  redis.call('DEL', KEYS[2])
end
redis.call('RENAME', KEYS[1], KEYS[2])
return 'moved'
",
    )
});

/// Why `migrate-keys` did not run.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    /// It would be unsafe or cannot work here.
    #[error("migrate-keys refused: {0}")]
    Refused(String),
    /// The broker failed.
    #[error(transparent)]
    Broker(#[from] BrokerError),
}

type Result<T> = std::result::Result<T, MigrateError>;

/// What `migrate-keys` did (or, with `dry_run`, would do) for one service.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Migration {
    /// `(old, new)` of each key moved.
    pub moved: Vec<(String, String)>,
    /// `(old, new)` of each key left in place because the new name holds data already.
    pub conflicts: Vec<(String, String)>,
}

impl RedisBroker {
    /// Moves `service`'s keys from the layout before hash tags to today's. Refuses on a
    /// cluster, and (unless `force`) while a consumer of the service's old streams was
    /// active within [`ACTIVE_MS`]. With `dry_run`, only lists the keys it would move.
    pub async fn migrate_keys(&self, service: &str, force: bool, dry_run: bool) -> Result<Migration> {
        if self.is_cluster() {
            return Err(MigrateError::Refused(
                "it runs on one Redis: the layout before hash tags never ran on a cluster; \
                 migrate before moving the data to the cluster"
                    .to_owned(),
            ));
        }
        let ns = self.namespace.clone();
        if !force {
            for kind in [StreamKind::Data, StreamKind::Taskback] {
                let old = legacy::stream(&ns, service, kind);
                for group in self.info(&old).await?.groups {
                    if let Some(c) = group.consumers.iter().find(|c| c.idle_ms < ACTIVE_MS) {
                        return Err(MigrateError::Refused(format!(
                            "consumer {:?} of group {:?} on {old} was active {} ms ago: stop the \
                             service's workers and collectors first (or pass --force)",
                            c.name, group.name, c.idle_ms
                        )));
                    }
                }
            }
        }
        let mut pairs: Vec<(String, String)> = [StreamKind::Data, StreamKind::Taskback, StreamKind::Dead]
            .into_iter()
            .map(|kind| (legacy::stream(&ns, service, kind), keys::stream(&ns, service, kind)))
            .collect();
        let old_meta = legacy::kv_meta_prefix(&ns, service);
        pairs.extend(
            keys::KV_META_PARTS.iter().zip(keys::kv_meta(&ns, service)).map(|(p, new)| (format!("{old_meta}{p}"), new)),
        );
        let new_kv = keys::kv_prefix(&ns, service);
        let old_kv = legacy::kv_prefix(&ns, service);
        for old in self.scan_prefix(&old_kv).await? {
            let new = format!("{new_kv}{}", &old[old_kv.len()..]);
            pairs.push((old, new));
        }
        let old_rate = legacy::rate_prefix(&ns, service);
        for old in self.scan_prefix(&old_rate).await? {
            let new = keys::rate(&ns, service, &old[old_rate.len()..]);
            pairs.push((old, new));
        }
        let mut done = Migration::default();
        for (old, new) in pairs {
            if dry_run {
                let mut exists = redis::cmd("EXISTS");
                exists.arg(&old);
                if parse_count(&self.query(&exists).await?) > 0 {
                    done.moved.push((old, new));
                }
                continue;
            }
            let reply = self.run_script(&MOVE, "migrate script", &[&old, &new], &[]).await?;
            match super::parse::string(&reply).map_err(|d| self.protocol("migrate script", d))?.as_str() {
                "moved" => done.moved.push((old, new)),
                "exists" => done.conflicts.push((old, new)),
                _ => {}
            }
        }
        Ok(done)
    }

    /// Every key starting with `prefix` (names of namespaces and services hold no glob
    /// characters), by `SCAN`.
    async fn scan_prefix(&self, prefix: &str) -> crate::broker::Result<Vec<String>> {
        let pattern = format!("{prefix}*");
        let mut found = Vec::new();
        let mut cursor = 0u64;
        loop {
            let mut scan = redis::cmd("SCAN");
            scan.arg(cursor).arg("MATCH").arg(&pattern).arg("COUNT").arg(1000);
            let reply = self.query(&scan).await?;
            let (next, keys): (u64, Vec<String>) =
                redis::from_redis_value(reply).map_err(|e| self.protocol("SCAN", e.to_string()))?;
            found.extend(keys);
            if next == 0 {
                return Ok(found);
            }
            cursor = next;
        }
    }
}

fn parse_count(value: &Value) -> i64 {
    super::parse::int(value).unwrap_or(0)
}
