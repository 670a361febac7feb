//! Redis: the broker URL and the connections it opens, to one Redis or to a Redis Cluster.
//!
//! - `redis://HOST:PORT`, `rediss://...` (TLS): one Redis (or a Sentinel-managed primary
//!   behind one address).
//! - `redis+cluster://HOST:PORT,HOST:PORT,...`, `rediss+cluster://...`: a Redis Cluster,
//!   found from any of the seed nodes; the client follows `MOVED`/`ASK` redirections and
//!   a failover (the slots are looked up again when a node stops answering). User and
//!   password, when given, are written once before the first host and apply to every node.
//! - Options after `?` (any scheme): `wait_replicas=N` makes each write that must survive a
//!   failover (an added message, a finished message, a dead letter) wait for `N` replicas
//!   to acknowledge it (`WAIT N T`); `wait_timeout_ms=T` (default 1000, at most 4000)
//!   bounds that wait. A cluster client then retries nothing itself (the caller does), so
//!   a `WAIT` is never answered by another node than the one that took the write.
//!   Other options (`protocol=resp3`, ...) go to the redis crate.

use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::cluster::{ClusterClient, ClusterConfig};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
use redis::{AsyncConnectionConfig, Client, Cmd, Pipeline, RedisError, RedisFuture, Value};

/// How long a short command may take before the connection is considered broken.
pub(super) const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long connecting to a node may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default bound of `WAIT`, in milliseconds.
const DEFAULT_WAIT_TIMEOUT_MS: u64 = 1000;
/// Largest bound of `WAIT`: below [`RESPONSE_TIMEOUT`], so the connection does not give up
/// on the `WAIT` first.
const MAX_WAIT_TIMEOUT_MS: u64 = 4000;
/// Most replicas `wait_replicas` may ask for, and most seed nodes in a cluster URL.
const MAX_REPLICAS: u32 = 16;
const MAX_SEEDS: usize = 64;

/// `WAIT` after writes: how many replicas, and for how long at most.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct WaitReplicas {
    /// Replicas that must acknowledge a write.
    pub replicas: u32,
    /// How long to wait for them.
    pub timeout_ms: u64,
}

/// A broker URL taken apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Target {
    /// One node URL (`redis://...`) per seed; one for a single Redis.
    pub nodes: Vec<String>,
    /// Whether the nodes are seeds of a Redis Cluster.
    pub cluster: bool,
    /// `wait_replicas` / `wait_timeout_ms`.
    pub wait: Option<WaitReplicas>,
}

/// Takes a broker URL apart (see the module docs); the error says what is wrong with it.
pub(super) fn parse_target(url: &str) -> std::result::Result<Target, String> {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let mut wait_replicas = None;
    let mut wait_timeout_ms = None;
    let mut passed = Vec::new();
    for pair in query.into_iter().flat_map(|q| q.split('&')).filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        match name {
            "wait_replicas" => {
                let n: u32 = value.parse().map_err(|_| format!("wait_replicas={value:?} is not a number"))?;
                if n > MAX_REPLICAS {
                    return Err(format!("wait_replicas={n} is more than {MAX_REPLICAS}"));
                }
                wait_replicas = Some(n);
            }
            "wait_timeout_ms" => {
                let ms: u64 = value.parse().map_err(|_| format!("wait_timeout_ms={value:?} is not a number"))?;
                if !(1..=MAX_WAIT_TIMEOUT_MS).contains(&ms) {
                    return Err(format!("wait_timeout_ms={ms} is not between 1 and {MAX_WAIT_TIMEOUT_MS}"));
                }
                wait_timeout_ms = Some(ms);
            }
            _ => passed.push(pair),
        }
    }
    if wait_timeout_ms.is_some() && wait_replicas.is_none() {
        return Err("wait_timeout_ms without wait_replicas".to_owned());
    }
    let wait = wait_replicas
        .filter(|n| *n > 0)
        .map(|replicas| WaitReplicas { replicas, timeout_ms: wait_timeout_ms.unwrap_or(DEFAULT_WAIT_TIMEOUT_MS) });
    let query = if passed.is_empty() { String::new() } else { format!("?{}", passed.join("&")) };
    let (scheme, rest) = base.split_once("://").ok_or("no scheme (redis://, rediss://, redis+cluster://)")?;
    let (node_scheme, cluster) = match scheme {
        "redis" | "rediss" => return Ok(Target { nodes: vec![format!("{base}{query}")], cluster: false, wait }),
        "redis+cluster" => ("redis", true),
        "rediss+cluster" => ("rediss", true),
        other => return Err(format!("unknown scheme {other:?} (redis, rediss, redis+cluster, rediss+cluster)")),
    };
    let (userinfo, hosts) = match rest.rfind('@') {
        Some(at) => (&rest[..=at], &rest[at + 1..]),
        None => ("", rest),
    };
    let hosts = hosts.trim_end_matches('/');
    let seeds: Vec<&str> = hosts.split(',').map(str::trim).collect();
    if seeds.len() > MAX_SEEDS {
        return Err(format!("{} seed nodes; at most {MAX_SEEDS}", seeds.len()));
    }
    if let Some(bad) = seeds.iter().find(|s| s.is_empty() || s.contains('/')) {
        return Err(format!("seed {bad:?} is not HOST:PORT (a cluster has no database number)"));
    }
    let nodes = seeds.iter().map(|seed| format!("{node_scheme}://{userinfo}{seed}{query}")).collect();
    Ok(Target { nodes, cluster, wait })
}

/// What new connections are opened from.
#[allow(clippy::large_enum_variant, reason = "one per broker, never moved around")]
pub(super) enum Nodes {
    /// One Redis.
    Single(Client),
    /// A Redis Cluster.
    Cluster(ClusterClient),
}

impl Nodes {
    /// A client for `target` (no connection yet).
    pub(super) fn open(target: &Target) -> std::result::Result<Self, RedisError> {
        if target.cluster {
            // A few retries of its own (redirections, a node that stopped answering); the
            // worker's loop backs off and retries beyond that. With `wait_replicas`, none:
            // the client would send a `WAIT` whose node died to the promoted replica, where
            // it answers for writes of that node, not for the write made on the dead one.
            let retries = if target.wait.is_some() { 0 } else { 4 };
            let client = ClusterClient::builder(target.nodes.clone()).retries(retries).build()?;
            Ok(Nodes::Cluster(client))
        } else {
            let url = target.nodes.first().map(String::as_str).unwrap_or_default();
            Ok(Nodes::Single(Client::open(url)?))
        }
    }

    /// The shared connection for short commands: reconnects by itself.
    pub(super) async fn shared(&self) -> std::result::Result<Con, RedisError> {
        match self {
            Nodes::Single(client) => {
                let config = ConnectionManagerConfig::new()
                    .set_response_timeout(Some(RESPONSE_TIMEOUT))
                    .set_connection_timeout(Some(CONNECT_TIMEOUT))
                    .set_number_of_retries(3);
                Ok(Con::Manager(client.get_connection_manager_with_config(config).await?))
            }
            Nodes::Cluster(_) => self.own(Some(RESPONSE_TIMEOUT)).await,
        }
    }

    /// A connection of its own, with `response_timeout` (`None`: for blocking reads).
    pub(super) async fn own(&self, response_timeout: Option<Duration>) -> std::result::Result<Con, RedisError> {
        match self {
            Nodes::Single(client) => {
                let config = AsyncConnectionConfig::new()
                    .set_response_timeout(response_timeout)
                    .set_connection_timeout(Some(CONNECT_TIMEOUT));
                Ok(Con::Multiplexed(client.get_multiplexed_async_connection_with_config(&config).await?))
            }
            Nodes::Cluster(client) => {
                let mut config = ClusterConfig::new().set_connection_timeout(CONNECT_TIMEOUT);
                if let Some(timeout) = response_timeout {
                    config = config.set_response_timeout(timeout);
                }
                Ok(Con::Cluster(client.get_async_connection_with_config(config).await?))
            }
        }
    }
}

/// A connection to one Redis or to a cluster; commands of a cluster go to the node that
/// owns their keys' slot.
#[derive(Clone)]
pub(crate) enum Con {
    /// One Redis, reconnecting by itself.
    Manager(ConnectionManager),
    /// One Redis, a connection of its own.
    Multiplexed(MultiplexedConnection),
    /// A Redis Cluster.
    Cluster(ClusterConnection),
}

impl Con {
    /// Runs `cmd` on the primary that owns `key`'s slot (for a command whose key a cluster
    /// client would not find); on one Redis, just runs it. An error reply is an `Err`
    /// either way (a routed command hands it back as a value).
    pub(super) async fn on_slot_of(&mut self, key: &str, cmd: &Cmd) -> std::result::Result<Value, RedisError> {
        let reply = match self {
            Con::Cluster(con) => {
                let route = SingleNodeRoutingInfo::SpecificNode(Route::with_key(key, SlotAddr::Master));
                con.route_command(cmd.clone(), RoutingInfo::SingleNode(route)).await?
            }
            other => cmd.query_async(other).await?,
        };
        match reply {
            Value::ServerError(err) => Err(err.into()),
            reply => Ok(reply),
        }
    }

    /// Whether this is a cluster connection.
    pub(super) fn is_cluster(&self) -> bool {
        matches!(self, Con::Cluster(_))
    }
}

impl ConnectionLike for Con {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Con::Manager(con) => con.req_packed_command(cmd),
            Con::Multiplexed(con) => con.req_packed_command(cmd),
            Con::Cluster(con) => con.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Con::Manager(con) => con.req_packed_commands(pipeline, offset, count),
            Con::Multiplexed(con) => con.req_packed_commands(pipeline, offset, count),
            Con::Cluster(con) => con.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Con::Manager(con) => con.get_db(),
            Con::Multiplexed(con) => con.get_db(),
            Con::Cluster(con) => con.get_db(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_urls_pass_through() {
        let t = parse_target("redis://u:pw@h:1/0").expect("valid");
        assert_eq!((t.nodes, t.cluster, t.wait), (vec!["redis://u:pw@h:1/0".to_owned()], false, None));
        let t = parse_target("rediss://h:1?protocol=resp3&wait_replicas=1").expect("valid");
        assert_eq!(t.nodes, vec!["rediss://h:1?protocol=resp3".to_owned()]);
        assert_eq!(t.wait, Some(WaitReplicas { replicas: 1, timeout_ms: 1000 }));
    }

    #[test]
    fn cluster_urls_name_every_seed() {
        let t = parse_target("redis+cluster://u:p@a:1,b:2/?wait_replicas=2&wait_timeout_ms=50").expect("valid");
        assert!(t.cluster);
        assert_eq!(t.nodes, vec!["redis://u:p@a:1".to_owned(), "redis://u:p@b:2".to_owned()]);
        assert_eq!(t.wait, Some(WaitReplicas { replicas: 2, timeout_ms: 50 }));
        let t = parse_target("rediss+cluster://a:1").expect("valid");
        assert_eq!(t.nodes, vec!["rediss://a:1".to_owned()]);
        assert_eq!(parse_target("redis://h?wait_replicas=0").expect("valid").wait, None);
    }

    #[test]
    fn bad_urls_say_why() {
        for (url, why) in [
            ("h:1", "no scheme"),
            ("http://h", "unknown scheme"),
            ("redis+cluster://a:1,,b:2", "not HOST:PORT"),
            ("redis+cluster://a:1/2", "database"),
            ("redis://h?wait_replicas=x", "not a number"),
            ("redis://h?wait_replicas=99", "more than"),
            ("redis://h?wait_timeout_ms=5", "without wait_replicas"),
            ("redis://h?wait_replicas=1&wait_timeout_ms=0", "between"),
        ] {
            let err = parse_target(url).expect_err(url);
            assert!(err.contains(why), "{url}: {err}");
        }
    }
}
