//! Redis: deployed component versions ([`ComponentStore`]). Every key of a service carries
//! its hash tag, so on a cluster they share one slot:
//!
//! | key | type | holds |
//! | --- | --- | --- |
//! | `{ns:service}:component:bytes:SHA256` | string | a component's bytes |
//! | `{ns:service}:component:history` | list | one JSON [`Version`] per deploy, oldest first |
//! | `{ns:service}:component:active` | hash | component -> SHA-256 of its active version |
//! | `{ns:service}:component:generation` | string | counter bumped by each deploy and rollback |
//! | `{ns:service}:component:workers` | hash | worker -> JSON [`WorkerReport`] |
//!
//! A deploy is one `MULTI`/`EXEC`; an activation is a Lua script that checks the bytes
//! exist before it writes.

use std::sync::LazyLock;

use async_trait::async_trait;
use redis::{Script, Value};

use crate::broker::versions::{
    Active, ComponentStore, MAX_HISTORY, Version, WorkerReport, parse_report, parse_version,
};
use crate::broker::{BrokerError, Result, parse};

/// KEYS: bytes, active, generation; ARGV: component, sha256. Returns the new generation,
/// or -1 when no bytes are stored under the SHA-256.
static ACTIVATE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
return redis.call('INCR', KEYS[3])
",
    )
});

pub struct RedisVersions {
    url: String,
    namespace: String,
    manager: super::Con,
}

impl RedisVersions {
    pub async fn connect(url: &str, namespace: &str) -> Result<Self> {
        let broker = crate::broker::RedisBroker::connect(url, namespace).await?;
        let url = crate::broker::Broker::describe(&broker);
        Ok(Self { url, namespace: namespace.to_owned(), manager: broker.manager.clone() })
    }

    fn key(&self, service: &str, rest: &str) -> String {
        format!("{}{rest}", super::keys::component_prefix(&self.namespace, service))
    }

    fn err(&self, source: redis::RedisError) -> BrokerError {
        BrokerError::Redis { url: self.url.clone(), source }
    }

    fn bad(&self, command: &'static str, value: &Value) -> BrokerError {
        BrokerError::Protocol { url: self.url.clone(), command, detail: format!("{value:?}") }
    }

    async fn query(&self, cmd: &redis::Cmd) -> Result<Value> {
        let mut con = self.manager.clone();
        cmd.query_async(&mut con).await.map_err(|e| self.err(e))
    }
}

/// A bulk string's bytes (nil: none).
fn bulk(value: Value) -> Option<Vec<u8>> {
    match value {
        Value::BulkString(bytes) => Some(bytes),
        _ => None,
    }
}

/// The values of an `HGETALL`/`LRANGE` reply, as (key, value) byte pairs or plain items.
fn items(value: Value) -> Vec<Vec<u8>> {
    match value {
        Value::Array(items) => items.into_iter().filter_map(bulk).collect(),
        Value::Map(pairs) => pairs.into_iter().flat_map(|(k, v)| [bulk(k), bulk(v)]).flatten().collect(),
        _ => Vec::new(),
    }
}

#[async_trait]
impl ComponentStore for RedisVersions {
    fn describe(&self) -> String {
        self.url.clone()
    }

    async fn deploy(&self, service: &str, version: &Version, bytes: &[u8]) -> Result<u64> {
        let entry = serde_json::to_string(version).unwrap_or_default();
        let history = self.key(service, "history");
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("SET")
            .arg(self.key(service, &format!("bytes:{}", version.sha256)))
            .arg(bytes)
            .ignore()
            .cmd("RPUSH")
            .arg(&history)
            .arg(entry)
            .ignore()
            .cmd("LTRIM")
            .arg(&history)
            .arg(-(MAX_HISTORY as i64))
            .arg(-1)
            .ignore()
            .cmd("HSET")
            .arg(self.key(service, "active"))
            .arg(&version.component)
            .arg(&version.sha256)
            .ignore()
            .cmd("INCR")
            .arg(self.key(service, "generation"));
        let mut con = self.manager.clone();
        let value: Value = pipe.query_async(&mut con).await.map_err(|e| self.err(e))?;
        let generation = match &value {
            Value::Array(parts) => parts.first().and_then(|v| parse::int(v).ok()),
            _ => None,
        };
        generation.and_then(|g| u64::try_from(g).ok()).ok_or_else(|| self.bad("deploy", &value))
    }

    async fn activate(&self, service: &str, component: &str, sha256: &str) -> Result<Option<u64>> {
        let mut invocation = ACTIVATE.prepare_invoke();
        invocation
            .key(self.key(service, &format!("bytes:{sha256}")))
            .key(self.key(service, "active"))
            .key(self.key(service, "generation"))
            .arg(component)
            .arg(sha256);
        let mut con = self.manager.clone();
        let value: Value = invocation.invoke_async(&mut con).await.map_err(|e| self.err(e))?;
        let generation = parse::int(&value).map_err(|_| self.bad("activate script", &value))?;
        Ok(u64::try_from(generation).ok())
    }

    async fn versions(&self, service: &str) -> Result<Vec<Version>> {
        let value = self.query(redis::cmd("LRANGE").arg(self.key(service, "history")).arg(0).arg(-1)).await?;
        Ok(items(value).iter().filter_map(|text| parse_version(text)).collect())
    }

    async fn active(&self, service: &str) -> Result<Active> {
        // The generation first: a deploy in between bumps it again, so the watcher looks again.
        let generation = self.generation(service).await?;
        let flat = items(self.query(redis::cmd("HGETALL").arg(self.key(service, "active"))).await?);
        let components = flat
            .chunks(2)
            .filter_map(|pair| match pair {
                [k, v] => Some((String::from_utf8(k.clone()).ok()?, String::from_utf8(v.clone()).ok()?)),
                _ => None,
            })
            .collect();
        Ok(Active { generation, components })
    }

    async fn generation(&self, service: &str) -> Result<u64> {
        let value = self.query(redis::cmd("GET").arg(self.key(service, "generation"))).await?;
        generation(&value).map_err(|_| self.bad("GET generation", &value))
    }

    async fn bytes(&self, service: &str, sha256: &str) -> Result<Option<Vec<u8>>> {
        let value = self.query(redis::cmd("GET").arg(self.key(service, &format!("bytes:{sha256}")))).await?;
        Ok(bulk(value))
    }

    async fn report(&self, service: &str, report: &WorkerReport) -> Result<()> {
        let text = serde_json::to_string(report).unwrap_or_default();
        self.query(redis::cmd("HSET").arg(self.key(service, "workers")).arg(&report.worker).arg(text)).await?;
        Ok(())
    }

    async fn forget(&self, service: &str, worker: &str) -> Result<()> {
        self.query(redis::cmd("HDEL").arg(self.key(service, "workers")).arg(worker)).await?;
        Ok(())
    }

    async fn reports(&self, service: &str) -> Result<Vec<WorkerReport>> {
        let value = self.query(redis::cmd("HGETALL").arg(self.key(service, "workers"))).await?;
        let flat = items(value);
        Ok(flat.chunks(2).filter_map(|pair| pair.get(1).and_then(|text| parse_report(text))).collect())
    }
}

/// A generation counter's value: nil is 0.
fn generation(value: &Value) -> std::result::Result<u64, String> {
    match value {
        Value::Nil => Ok(0),
        other => parse::int(other).and_then(|g| u64::try_from(g).map_err(|e| e.to_string())),
    }
}
