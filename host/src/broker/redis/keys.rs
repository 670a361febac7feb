//! The Redis key layout: every key of a service starts with its hash tag `{NS:SERVICE}`, so
//! all of them hash to one slot of a Redis Cluster (every Lua script and `MULTI` touches one
//! node) while different services spread over the cluster.
//!
//! | key | type | holds |
//! | --- | --- | --- |
//! | `{ns:service}:data`, `:taskback`, `:dead` | stream | the service's three streams |
//! | `{ns:service}:kv:KEY` | string | a kv value (with a real TTL when set with one) |
//! | `{ns:service}:kvmeta:index`, `:sizes`, `:expiry`, `:bytes` | zset, hash, zset, string | kv bookkeeping for the quotas |
//! | `{ns:service}:rate:BUCKET` | string | a `rate_limit:` counter, expiring with its window |
//! | `{ns:service}:component:...` | | deployed component versions (`versions.rs`) |
//!
//! Every key name the broker uses comes from a function here; [`legacy`] has the layout
//! before hash tags (`ns:service:data`, `ns:kv:service:KEY`, ...) for `migrate-keys`.

use crate::broker::StreamKind;

/// `{ns:service}`: the hash tag of a service, first part of every key of it.
pub(crate) fn tag(namespace: &str, service: &str) -> String {
    format!("{{{namespace}:{service}}}")
}

/// `{ns:service}:data` (`:taskback`, `:dead`): the key of one of a service's streams.
pub(crate) fn stream(namespace: &str, service: &str, kind: StreamKind) -> String {
    format!("{}:{}", tag(namespace, service), kind.as_str())
}

/// `{ns:service}:kv:`: the prefix of a service's kv values.
pub(crate) fn kv_prefix(namespace: &str, service: &str) -> String {
    format!("{}:kv:", tag(namespace, service))
}

/// The parts of a service's kv bookkeeping, in the order the kv scripts take them as KEYS.
pub(crate) const KV_META_PARTS: [&str; 4] = ["index", "sizes", "expiry", "bytes"];

/// `{ns:service}:kvmeta:`: the prefix of a service's kv bookkeeping.
pub(crate) fn kv_meta_prefix(namespace: &str, service: &str) -> String {
    format!("{}:kvmeta:", tag(namespace, service))
}

/// `{ns:service}:kvmeta:index` ... `:bytes` ([`KV_META_PARTS`]).
pub(crate) fn kv_meta(namespace: &str, service: &str) -> [String; 4] {
    let prefix = kv_meta_prefix(namespace, service);
    KV_META_PARTS.map(|part| format!("{prefix}{part}"))
}

/// `{ns:service}:rate:BUCKET`: a `rate_limit:` counter.
pub(crate) fn rate(namespace: &str, service: &str, bucket: &str) -> String {
    format!("{}:rate:{bucket}", tag(namespace, service))
}

/// `{ns:service}:component:`: the prefix of every deployed-version key of a service.
pub(crate) fn component_prefix(namespace: &str, service: &str) -> String {
    format!("{}:component:", tag(namespace, service))
}

/// `{ns:service}:*`: a pattern (`SCAN MATCH`, ACL `~`) of every key of one service and no
/// other (names of namespaces and services have no `{`, `}`, `*`, `?`, `[` or `\`).
pub(crate) fn service_pattern(namespace: &str, service: &str) -> String {
    format!("{}:*", tag(namespace, service))
}

/// Whether a guest's kv key is written in one of the broker's absolute forms, today's or
/// the layout before hash tags, and so is refused as out of scope: a key starting with the
/// namespace (`ns:...`, `{ns:...`) when it is known, and whatever the namespace, a kv key of
/// some service written out in full, `A:kv:B:C` or `{A:B}:...`.
pub fn names_broker_key(key: &str, namespace: Option<&str>) -> bool {
    let in_namespace = namespace.is_some_and(|ns| {
        [key, key.strip_prefix('{').unwrap_or("")]
            .iter()
            .any(|k| k.strip_prefix(ns).is_some_and(|rest| rest.starts_with(':')))
    });
    let mut parts = key.splitn(4, ':');
    let legacy_kv =
        matches!((parts.next(), parts.next(), parts.next(), parts.next()), (Some(_), Some("kv"), Some(_), Some(_)));
    // `{A:B}:...`: a hash tag of namespace A and service B, then a key of that service.
    let tagged = key
        .strip_prefix('{')
        .and_then(|rest| rest.split_once('}'))
        .is_some_and(|(tag, rest)| tag.contains(':') && rest.starts_with(':'));
    in_namespace || legacy_kv || tagged
}

/// The layout before hash tags (cannon up to issue 20), for `migrate-keys` only.
pub(crate) mod legacy {
    use crate::broker::StreamKind;

    /// `ns:service:data` (`:taskback`, `:dead`).
    pub(crate) fn stream(namespace: &str, service: &str, kind: StreamKind) -> String {
        format!("{namespace}:{service}:{}", kind.as_str())
    }

    /// `ns:kv:service:`: the prefix of a service's kv values.
    pub(crate) fn kv_prefix(namespace: &str, service: &str) -> String {
        format!("{namespace}:kv:{service}:")
    }

    /// `ns:kvmeta:service:`: the prefix of a service's kv bookkeeping.
    pub(crate) fn kv_meta_prefix(namespace: &str, service: &str) -> String {
        format!("{namespace}:kvmeta:{service}:")
    }

    /// `ns:service:rate:`: the prefix of a service's `rate_limit:` counters.
    pub(crate) fn rate_prefix(namespace: &str, service: &str) -> String {
        format!("{namespace}:{service}:rate:")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_of_a_service_carries_its_tag() {
        let keys = [
            stream("cannon", "shout", StreamKind::Data),
            stream("cannon", "shout", StreamKind::Taskback),
            stream("cannon", "shout", StreamKind::Dead),
            format!("{}x", kv_prefix("cannon", "shout")),
            rate("cannon", "shout", "user=ann"),
            format!("{}generation", component_prefix("cannon", "shout")),
        ];
        for key in keys.iter().chain(kv_meta("cannon", "shout").iter()) {
            assert!(key.starts_with("{cannon:shout}:"), "{key}");
        }
        assert_eq!(stream("cannon", "shout", StreamKind::Data), "{cannon:shout}:data");
        assert_eq!(kv_meta("ns", "s")[3], "{ns:s}:kvmeta:bytes");
        assert_eq!(legacy::stream("cannon", "shout", StreamKind::Dead), "cannon:shout:dead");
    }

    #[test]
    fn absolute_forms_old_and_new_are_broker_keys() {
        for ns in [Some("cannon"), None] {
            for key in [
                "cannon:kv:other:secret",
                "prod:kv:svc:x",
                "{cannon:other}:kv:secret",
                "{prod:svc}:kvmeta:bytes",
                "{x:y}:data",
            ] {
                assert!(names_broker_key(key, ns), "{key} with {ns:?}");
            }
        }
        assert!(names_broker_key("cannon:other:data", Some("cannon")));
        assert!(names_broker_key("{cannon:other", Some("cannon")));
        for key in ["count", "user:ann", "{user}:x", "{a:b}", "cannonball:x", "{cannonball:x}y", "x:kv"] {
            assert!(!names_broker_key(key, Some("cannon")), "{key}");
        }
    }
}
