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

/// Commands added for a service whose components may read other services' streams
/// (`allow: [{streams: [...]}]`): the read-only script and the reads inside it.
pub const STREAM_READ_COMMANDS: &[&str] = &["evalsha_ro", "eval_ro", "xrange", "xrevrange"];

/// The arguments of `ACL SETUSER` for `user` serving `service` in `namespace`: every key
/// under the service's hash tag (`~{ns:service}:*`: its streams, kv, rate counters and
/// component versions, and nothing of another service), the streams it follows (`stream`
/// collectors, which read them through a consumer group and so write its state), **read
/// only** (`%R~`) the streams its components may read (`reads`), no channels beyond
/// [`WORKER_CHANNELS`], and [`WORKER_COMMANDS`] (with [`STREAM_READ_COMMANDS`] when `reads`
/// is not empty). `password_sha256` (hex) sets the password without printing it; without
/// one the user cannot log in until one is added.
pub fn acl_setuser(
    namespace: &str,
    service: &str,
    follows: &[(&str, StreamKind)],
    reads: &[(&str, StreamKind)],
    user: &str,
    password_sha256: Option<&str>,
) -> Vec<String> {
    let mut args = vec!["ACL".to_owned(), "SETUSER".to_owned(), user.to_owned(), "reset".to_owned(), "on".to_owned()];
    if let Some(hash) = password_sha256 {
        args.push(format!("#{hash}"));
    }
    args.push(format!("~{}", keys::service_pattern(namespace, service)));
    // A stream both followed and read keeps the full grant (listed first).
    let mut granted: Vec<(&str, StreamKind)> = Vec::new();
    let grants = follows.iter().map(|s| (s, "~")).chain(reads.iter().map(|s| (s, "%R~")));
    for (&(other, stream), rights) in grants {
        if other != service && !granted.contains(&(other, stream)) {
            granted.push((other, stream));
            args.push(format!("{rights}{}", keys::stream(namespace, other, stream)));
        }
    }
    args.push("resetchannels".to_owned());
    args.extend(WORKER_CHANNELS.iter().map(|c| format!("&{c}")));
    args.push("-@all".to_owned());
    args.extend(WORKER_COMMANDS.iter().map(|c| format!("+{c}")));
    if !reads.is_empty() {
        args.extend(STREAM_READ_COMMANDS.iter().map(|c| format!("+{c}")));
    }
    args
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_names_only_the_services_keys() {
        let args = acl_setuser("ns", "kv", &[("chat", StreamKind::Taskback)], &[], "cannon-kv", Some("ab12"));
        let line = args.join(" ");
        assert!(line.starts_with("ACL SETUSER cannon-kv reset on #ab12 ~{ns:kv}:* ~{ns:chat}:taskback resetchannels "));
        assert!(line.contains(" resetchannels -@all +ping +xadd"));
        assert!(!line.contains("xrange") && !line.contains("_ro"), "no reads granted: {line}");
        // Never a pattern that reaches another service's keys.
        assert!(!args.iter().any(|a| a.starts_with("~ns:") || a == "~*" || a == "~{ns:*"), "{line}");
        assert!(!line.contains("keyspace") && !line.contains("+@"), "{line}");
    }

    /// A stream only read is granted read only; one also followed keeps the full grant,
    /// and the service's own streams are already under its pattern.
    #[test]
    fn streams_only_read_are_granted_read_only() {
        let reads = [
            ("sensors", StreamKind::Data),
            ("sensors", StreamKind::Taskback),
            ("chat", StreamKind::Data),
            ("room", StreamKind::Data),
        ];
        let args = acl_setuser("ns", "room", &[("chat", StreamKind::Data)], &reads, "cannon-room", None);
        let line = args.join(" ");
        assert!(
            line.contains(" ~{ns:room}:* ~{ns:chat}:data %R~{ns:sensors}:data %R~{ns:sensors}:taskback resetchannels "),
            "{line}"
        );
        assert!(!line.contains("%R~{ns:chat}") && !line.contains("%R~{ns:room}"), "{line}");
        assert!(line.ends_with(" +evalsha_ro +eval_ro +xrange +xrevrange"), "{line}");
    }
}
