//! The `kv` import through a real guest (`kvprobe`) and a real `cannon-host`, on both
//! brokers: get/set/delete/increment/list, TTL, quotas, the out-of-scope refusal, per-service
//! scoping, and data surviving a host restart.

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
