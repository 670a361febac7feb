//! Guests in Python, JavaScript and C, built from source by `guests/build.sh`, run through
//! the same host as the Rust ones.

use std::time::Duration;

use crate::support::{Project, RedisServer, Running, component, run_host};

fn send_wait(project: &Project, redis: &RedisServer, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["send"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--wait", "--timeout-ms", "60000"]);
    let out = run_host(project, redis, &all, None);
    assert!(out.status.success(), "send {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("one JSON object")
}

fn polyglot() -> Project {
    for name in ["wordstats", "notes", "hello-js", "rot13-c"] {
        component(name);
    }
    Project::new(
        r#"services:
  words:
    tasks:
      - file: wordstats
        conf: { kwargs: { top_n: "2" } }
  notes:
    shell: { file: notes, allow: [ { streams: [notes] } ] }
    tasks: [ torch ]
  hello:
    tasks:
      - file: hello-js
        conf: { kwargs: { greeting: hi } }
  rot:
    tasks: [ { file: rot13-c } ]
"#,
    )
}

#[test]
fn python_task_sees_config_and_logs() {
    let redis = RedisServer::start();
    let project = polyglot();
    let mut host = Running::start(&project, &redis, &["words"]);
    host.wait_for_log("ready", Duration::from_secs(120));
    let json = send_wait(&project, &redis, &["words", "text=the cat and the dog and the bird"]);
    assert_eq!(json["words"], "8", "{json}");
    assert_eq!(json["chars"], "32", "{json}");
    assert_eq!(json["top"], "the:3, and:2", "config top_n=2 reached the guest: {json}");
    host.wait_for_log("wordstats: 8 words", Duration::from_secs(10));
    assert!(host.terminate().success());
}

#[test]
fn python_shell_through_torch() {
    let redis = RedisServer::start();
    let project = polyglot();
    let mut host = Running::start(&project, &redis, &["notes"]);
    host.wait_for_log("ready", Duration::from_secs(120));
    let json = send_wait(&project, &redis, &["notes", "text=count 'one two' three"]);
    assert_eq!(json["text"], "2 words, 13 chars", "{json}");
    // The SDK's `streams`: the shell reads its own service's replies (granted), not another's.
    let json = send_wait(&project, &redis, &["notes", "text=upper shout"]);
    assert_eq!(json["text"], "SHOUT", "{json}");
    let json = send_wait(&project, &redis, &["notes", "text=recent notes 2"]);
    assert_eq!(json["text"], "2 words, 13 chars\nSHOUT", "{json}");
    let json = send_wait(&project, &redis, &["notes", "text=help"]);
    let help = json["text"].as_str().expect("text");
    assert!(help.contains("echo") && help.contains("upper") && help.contains("recent"), "{help}");
    let json = send_wait(&project, &redis, &["notes", "text=recent words"]);
    assert_eq!(json["text"], "cannot read words: not-granted", "{json}");
    assert!(host.terminate().success());
}

#[test]
fn javascript_and_c_tasks() {
    let redis = RedisServer::start();
    let project = polyglot();
    let mut host = Running::start(&project, &redis, &["hello", "rot"]);
    host.wait_for_log("ready", Duration::from_secs(120));
    let json = send_wait(&project, &redis, &["hello", "user=ann", "text=héllo"]);
    assert_eq!(json["greeting"], "hi, ann", "{json}");
    assert_eq!(json["len"], "5", "{json}");
    let json = send_wait(&project, &redis, &["rot", "text=Hello, World"]);
    assert_eq!(json["rot13"], "Uryyb, Jbeyq", "{json}");
    assert!(host.terminate().success());
}

#[test]
fn compiled_components_are_cached_across_runs() {
    let redis = RedisServer::start();
    let project = polyglot();
    // The first run may compile (or find the cache warm from another test); the second must not.
    let mut first = Running::start(&project, &redis, &["words"]);
    first.wait_for_log("ready", Duration::from_secs(120));
    assert!(first.terminate().success());
    let mut second = Running::start(&project, &redis, &["words"]);
    second.wait_for_log("ready", Duration::from_secs(60));
    let log = second.log_text();
    let line = log.lines().find(|l| l.contains("component loaded") && l.contains("wordstats")).expect(&log);
    assert!(line.contains("cached=true"), "second run recompiled: {line}");
    assert!(second.terminate().success());
}
