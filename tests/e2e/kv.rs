//! The `kv` import through a real guest (`kvprobe`) and a real `cannon-host`, on both
//! brokers: get/set/delete/increment/list, TTL, quotas, the out-of-scope refusal, per-service
//! scoping, and data surviving a host restart; compare-and-swap and get-many, with their
//! quota and scope refusals and a race of concurrent swaps.

use std::time::Duration;

use serde_json::Value;

use crate::conformance::Backend;
use crate::support::{Project, RedisServer, Running, component};

pub fn project() -> Project {
    component("kvprobe");
    Project::new(
        "services:
  probe:
    tasks: [ { file: kvprobe, allow: [kv] } ]
    kv: { max_keys: 4, max_bytes: 4096 }
  other:
    tasks: [ { file: kvprobe, allow: [kv] } ]
",
    )
}

/// Sends one message to `service` and returns its taskback.
fn probe(backend: &Backend, project: &Project, service: &str, fields: &[&str]) -> Value {
    let mut args = vec!["send", service];
    args.extend_from_slice(fields);
    args.push("--wait");
    let out = backend.run(project, &args);
    assert!(out.status.success(), "{fields:?}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("one JSON object")
}

fn assert_ok(answer: &Value) {
    assert_eq!(answer["ok"], "true", "{answer}");
}

fn assert_error(answer: &Value, kind: &str) {
    assert_eq!((answer["ok"].as_str(), answer["error"].as_str()), (Some("false"), Some(kind)), "{answer}");
}

pub fn kv_through_a_guest(backend: &Backend, project: &Project) {
    let mut host = Running::start_cmd(backend.host(project), project, &[]);
    host.wait_for_log("ready", Duration::from_secs(60));
    let p = |fields: &[&str]| probe(backend, project, "probe", fields);

    assert_eq!(p(&["op=get", "key=greeting"])["found"], "false");
    assert_ok(&p(&["op=set", "key=greeting", "value=hello"]));
    let got = p(&["op=get", "key=greeting"]);
    assert_eq!((got["found"].as_str(), got["value"].as_str()), (Some("true"), Some("hello")), "{got}");
    assert_eq!(p(&["op=incr", "key=hits"])["value"], "1");
    assert_eq!(p(&["op=incr", "key=hits", "delta=41"])["value"], "42");
    assert_error(&p(&["op=incr", "key=greeting"]), "not-a-number");
    assert_ok(&p(&["op=set", "key=user:b", "value=2"]));
    assert_eq!(p(&["op=list", "prefix="])["keys"], "greeting,hits,user:b", "sorted");
    assert_eq!(p(&["op=list", "prefix=user:"])["keys"], "user:b");
    assert_eq!(p(&["op=list", "prefix=", "limit=1"])["keys"], "greeting", "bounded");

    // A key written in the broker's absolute form is refused with a typed error.
    for key in ["cannon:kv:other:secret", "{cannon:other}:kv:secret"] {
        let refused = p(&["op=get", &format!("key={key}")]);
        assert_error(&refused, "out-of-scope");
        assert!(refused["detail"].as_str().is_some_and(|d| d.contains("relative to service")), "{refused}");
    }
    assert_error(&p(&["op=set", "key=", "value=x"]), "invalid-key");

    // Keys are per service.
    assert_eq!(probe(backend, project, "other", &["op=get", "key=greeting"])["found"], "false");
    assert_ok(&probe(backend, project, "other", &["op=set", "key=greeting", "value=theirs"]));
    assert_eq!(p(&["op=get", "key=greeting"])["value"], "hello");

    // Quota: max_keys = 4 (greeting, hits, user:b, + one).
    assert_ok(&p(&["op=set", "key=fourth", "value=4"]));
    let over = p(&["op=set", "key=fifth", "value=5"]);
    assert_error(&over, "quota-exceeded");
    assert!(over["detail"].as_str().is_some_and(|d| d.contains("max_keys")), "{over}");
    assert_eq!(p(&["op=delete", "key=fourth"])["existed"], "true");
    assert_eq!(p(&["op=delete", "key=fourth"])["existed"], "false");

    // TTL: gone after it passes, and no longer counted.
    assert_ok(&p(&["op=set", "key=flash", "value=x", "ttl_ms=400"]));
    assert_eq!(p(&["op=get", "key=flash"])["found"], "true");
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(p(&["op=get", "key=flash"])["found"], "false");
    assert_ok(&p(&["op=set", "key=fourth", "value=again"]));

    // Survives a restart of the host.
    assert!(host.terminate().success(), "{}", host.log_text());
    let mut host = Running::start_cmd(backend.host(project), project, &[]);
    host.wait_for_log("ready", Duration::from_secs(60));
    assert_eq!(p(&["op=get", "key=greeting"])["value"], "hello");
    assert_eq!(p(&["op=incr", "key=hits"])["value"], "43");
    assert!(host.terminate().success(), "{}", host.log_text());
}

#[test]
fn kv_through_a_guest_with_redis() {
    let project = project();
    kv_through_a_guest(&Backend::Redis(RedisServer::start()), &project);
}

#[test]
fn kv_through_a_guest_embedded() {
    let project = project();
    kv_through_a_guest(&Backend::embedded(&project), &project);
}

fn atomics_project() -> Project {
    component("kvprobe");
    Project::new(
        "services:
  atom:
    tasks: [ { file: kvprobe, allow: [kv] } ]
    kv: { max_keys: 4, max_bytes: 4096 }
    workers: { concurrency: 16 }
",
    )
}

fn kv_atomics_through_a_guest(backend: &Backend, project: &Project) {
    let mut host = Running::start_cmd(backend.host(project), project, &[]);
    host.wait_for_log("ready", Duration::from_secs(60));
    let p = |fields: &[&str]| probe(backend, project, "atom", fields);
    let swapped = |fields: &[&str]| {
        let answer = p(fields);
        assert_ok(&answer);
        answer["swapped"] == "true"
    };
    let value = |key: &str| p(&["op=get", &format!("key={key}")])["value"].as_str().map(str::to_owned);

    // Absent expected: only while the key is absent.
    assert!(swapped(&["op=cas", "key=lock", "value=a"]));
    assert!(!swapped(&["op=cas", "key=lock", "value=b"]));
    assert_eq!(value("lock").as_deref(), Some("a"));
    // A wrong expected value changes nothing; the right one swaps.
    assert!(!swapped(&["op=cas", "key=lock", "expected=x", "value=b"]));
    assert!(!swapped(&["op=cas", "key=missing", "expected=a", "value=b"]));
    assert_eq!(value("lock").as_deref(), Some("a"));
    assert!(swapped(&["op=cas", "key=lock", "expected=a", "value=b"]));
    assert_eq!(value("lock").as_deref(), Some("b"));
    // Delete if equal.
    assert!(!swapped(&["op=cas", "key=lock", "expected=a"]));
    assert!(swapped(&["op=cas", "key=lock", "expected=b"]));
    assert_eq!(p(&["op=get", "key=lock"])["found"], "false");
    // With a TTL the new value expires.
    assert!(swapped(&["op=cas", "key=flash", "value=x", "ttl_ms=300"]));
    std::thread::sleep(Duration::from_millis(700));
    assert_eq!(p(&["op=get", "key=flash"])["found"], "false");
    assert!(swapped(&["op=cas", "key=flash", "value=y"]), "an expired key is absent");
    assert!(swapped(&["op=cas", "key=flash", "expected=y"]));

    // Batch get: in order, missing keys as none.
    assert_ok(&p(&["op=set", "key=a", "value=1"]));
    assert_ok(&p(&["op=set", "key=b", "value=2"]));
    assert_eq!(p(&["op=mget", "keys=b,nope,a"])["values"], "2,<none>,1");
    assert_eq!(p(&["op=mget", "count=256"])["ok"], "true", "256 keys is the bound");
    assert_error(&p(&["op=mget", "count=257"]), "too-large");

    // Quotas, as for set: max_keys = 4 (a, b, + two).
    assert!(swapped(&["op=cas", "key=c", "value=3"]));
    assert!(swapped(&["op=cas", "key=d", "value=4"]));
    let over = p(&["op=cas", "key=e", "value=5"]);
    assert_error(&over, "quota-exceeded");
    assert!(over["detail"].as_str().is_some_and(|d| d.contains("max_keys")), "{over}");
    assert_eq!(p(&["op=get", "key=e"])["found"], "false");
    let big = format!("value={}", "x".repeat(4100));
    let over = p(&["op=cas", "key=d", "expected=4", &big]);
    assert_error(&over, "quota-exceeded");
    assert!(over["detail"].as_str().is_some_and(|d| d.contains("max_bytes")), "{over}");
    assert_eq!(value("d").as_deref(), Some("4"), "a refused swap changes nothing");
    // A mismatch is answered before the quota is looked at: false, not an error.
    assert!(!swapped(&["op=cas", "key=e", "expected=zz", "value=5"]));
    assert!(swapped(&["op=cas", "key=d", "expected=4"]), "deleting needs no room");
    assert!(swapped(&["op=cas", "key=e", "value=5"]));

    // Scope: absolute keys are refused, for both calls.
    assert_error(&p(&["op=cas", "key=cannon:kv:other:secret", "value=x"]), "out-of-scope");
    assert_error(&p(&["op=mget", "keys=a,cannon:kv:other:secret"]), "out-of-scope");
    assert_error(&p(&["op=cas", "key=", "value=x"]), "invalid-key");

    // A race: 16 messages at once each try to take `once` while it is absent; one wins.
    assert!(swapped(&["op=cas", "key=e", "expected=5"]));
    let winners: Vec<bool> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..16)
            .map(|i| {
                let value = format!("value=w{i}");
                scope.spawn(move || swapped(&["op=cas", "key=once", &value]))
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("a sender")).collect()
    });
    assert_eq!(winners.iter().filter(|w| **w).count(), 1, "{winners:?}");
    let stored = value("once").expect("once is set");
    let winner = winners.iter().position(|w| *w).expect("a winner");
    assert_eq!(stored, format!("w{winner}"));
    // 16 read-change-swap loops at once (the SDK's `kv::update`) on one key: every append
    // lands exactly once.
    assert!(swapped(&["op=cas", "key=once", &format!("expected={stored}")]));
    std::thread::scope(|scope| {
        for i in 0..16 {
            scope.spawn(move || {
                let answer = p(&["op=append", "key=log", &format!("value=a{i}")]);
                assert_eq!(answer["appended"], "true", "{answer}");
            });
        }
    });
    let log = value("log").expect("log is set");
    let mut lines: Vec<&str> = log.split(',').filter(|l| !l.is_empty()).collect();
    lines.sort_unstable();
    let mut expected: Vec<String> = (0..16).map(|i| format!("a{i}")).collect();
    expected.sort_unstable();
    assert_eq!(lines, expected, "{log}");
    assert!(host.terminate().success(), "{}", host.log_text());
}

#[test]
fn kv_atomics_through_a_guest_with_redis() {
    let project = atomics_project();
    kv_atomics_through_a_guest(&Backend::Redis(RedisServer::start()), &project);
}

#[test]
fn kv_atomics_through_a_guest_embedded() {
    let project = atomics_project();
    kv_atomics_through_a_guest(&Backend::embedded(&project), &project);
}
