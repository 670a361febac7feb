//! Least privilege on a shared Redis: the `ACL SETUSER` rule that lets `cannon-host run
//! SERVICE` (its workers and collectors) touch only that service's keys, with exactly the
//! commands they send. Built from the same key functions the broker uses, so the rule
//! follows the key layout.

use super::keys;
use crate::broker::StreamKind;

/// Commands `run` sends: streams and consumer groups, the Lua scripts (whose own calls
/// Redis checks against the same rule), and the kv store's commands inside them.
pub const WORKER_COMMANDS: &[&str] = &[
    // connection
    "ping",
    // streams and groups (worker, collector, recovery, trimming)
    "xadd",
    "xreadgroup",
    "xack",
    "xautoclaim",
    "xclaim",
    "xpending",
    "xgroup|create",
    "xgroup|delconsumer",
    "xinfo|stream",
    "xinfo|groups",
    "xinfo|consumers",
    "xlen",
    "xtrim",
    // scripts: completion, dead letters, claims, trimming, kv quotas
    "evalsha",
    "eval",
    "script|load",
    // kv (inside the scripts, and plain GET)
    "get",
    "set",
    "del",
    "incrby",
    "decrby",
    "hget",
    "hset",
    "hdel",
    "hlen",
    "zadd",
    "zrem",
    "zrangebyscore",
    "zrangebylex",
    "time",
    // deployed component versions (the deploy watcher: generation, active map, bytes, reports)
    "hgetall",
];

/// Pub/sub channels `run` uses (none yet: the rule says `resetchannels`).
pub const WORKER_CHANNELS: &[&str] = &[];

/// The arguments of `ACL SETUSER` for `user` serving `service` in `namespace`: every key
/// under the service's hash tag (`~{ns:service}:*`: its streams, kv, rate counters and
/// component versions, and nothing of another service), the streams it follows (`stream` collectors), no channels beyond
/// [`WORKER_CHANNELS`], and [`WORKER_COMMANDS`]. `password_sha256` (hex) sets the password
/// without printing it; without one the user cannot log in until one is added.
pub fn acl_setuser(
    namespace: &str,
    service: &str,
    follows: &[(&str, StreamKind)],
    user: &str,
    password_sha256: Option<&str>,
) -> Vec<String> {
    let mut args = vec!["ACL".to_owned(), "SETUSER".to_owned(), user.to_owned(), "reset".to_owned(), "on".to_owned()];
    if let Some(hash) = password_sha256 {
        args.push(format!("#{hash}"));
    }
    args.push(format!("~{}", keys::service_pattern(namespace, service)));
    for (other, stream) in follows {
        let key = format!("~{}", keys::stream(namespace, other, *stream));
        if *other != service && !args.contains(&key) {
            args.push(key);
        }
    }
    args.push("resetchannels".to_owned());
    args.extend(WORKER_CHANNELS.iter().map(|c| format!("&{c}")));
    args.push("-@all".to_owned());
    args.extend(WORKER_COMMANDS.iter().map(|c| format!("+{c}")));
    args
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_names_only_the_services_keys() {
        let args = acl_setuser("ns", "kv", &[("chat", StreamKind::Taskback)], "cannon-kv", Some("ab12"));
        let line = args.join(" ");
        assert!(line.starts_with("ACL SETUSER cannon-kv reset on #ab12 ~{ns:kv}:* ~{ns:chat}:taskback resetchannels "));
        assert!(line.contains(" resetchannels -@all +ping +xadd"));
        // Never a pattern that reaches another service's keys.
        assert!(!args.iter().any(|a| a.starts_with("~ns:") || a == "~*" || a == "~{ns:*"), "{line}");
        assert!(!line.contains("keyspace") && !line.contains("+@"), "{line}");
    }
}
