//! The backbone: a message in, a fresh instance per task, a taskback out.

use std::collections::HashSet;
use std::time::Duration;

use crate::conformance::Backend;
use crate::support::{
    Project, RedisServer, Running, add_messages, component, entries, field, key, pending, run_host, wait_len,
};

fn shout_and_counter() -> Project {
    component("shout");
    component("counter");
    Project::new(
        "services:\n  shout:\n    tasks: [ { file: shout } ]\n  counter:\n    tasks: [ { file: counter } ]\n    workers: { concurrency: 8 }\n",
    )
}

#[test]
fn send_wait_prints_the_taskback_as_json() {
    let redis = RedisServer::start();
    let project = shout_and_counter();
    let mut host = Running::start(&project, &redis, &["shout"]);
    host.wait_for_log("ready", Duration::from_secs(60));

    let out = run_host(&project, &redis, &["send", "shout", "text=hi", "user=ann", "--wait"], None);
    assert!(out.status.success(), "send failed: {}", String::from_utf8_lossy(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object on stdout");
    assert_eq!(json["text"], "HI", "{json}");
    assert_eq!(json["user"], "ann", "message fields are kept: {json}");
    assert!(json["cannon.id"].as_str().is_some_and(|id| id.contains('-')), "{json}");

    // Without --wait: the id, and the taskback arrives anyway.
    let out = run_host(&project, &redis, &["send", "shout", "text=hello"], None);
    assert!(out.status.success());
    let id = String::from_utf8(out.stdout).expect("utf8").trim().to_owned();
    let mut con = redis.con();
    wait_len(&mut con, &key("shout", "taskback"), 2, Duration::from_secs(10));
    let taskbacks = entries(&mut con, &key("shout", "taskback"));
    let answer = taskbacks.iter().find(|(_, f)| field(f, "cannon.id") == Some(id.as_str())).expect("taskback");
    assert_eq!(field(&answer.1, "text"), Some("HELLO"));
    assert!(host.terminate().success(), "{}", host.log_text());
}

#[test]
fn send_wait_times_out_clearly_without_workers() {
    let redis = RedisServer::start();
    let project = shout_and_counter();
    let out = run_host(&project, &redis, &["send", "shout", "text=hi", "--wait", "--timeout-ms", "300"], None);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no taskback for message") && stderr.contains("within 300 ms"), "{stderr}");
    assert!(out.stdout.is_empty());
}

#[test]
fn every_message_gets_a_fresh_instance() {
    let redis = RedisServer::start();
    let project = shout_and_counter();
    let mut con = redis.con();
    let messages: Vec<_> = (0..50).map(|i| vec![("n", i.to_string())]).collect();
    let ids = add_messages(&mut con, "counter", &messages);
    let mut host = Running::start(&project, &redis, &["counter"]);
    let got = wait_len(&mut con, &key("counter", "taskback"), 50, Duration::from_secs(60));
    assert_eq!(got, 50, "{}", host.log_text());
    for (_, fields) in entries(&mut con, &key("counter", "taskback")) {
        assert_eq!(field(&fields, "count"), Some("1"), "state leaked between messages: {fields:?}");
        assert!(ids.iter().any(|id| field(&fields, "cannon.id") == Some(id.as_str())));
    }
    assert!(host.terminate().success());
}

#[test]
fn a_thousand_messages_each_processed_exactly_once() {
    let redis = RedisServer::start();
    let project = shout_and_counter();
    let mut host = Running::start(&project, &redis, &["shout"]);
    host.wait_for_log("ready", Duration::from_secs(60));
    let mut con = redis.con();
    let messages: Vec<_> = (0..1000).map(|i| vec![("text", format!("message {i}"))]).collect();
    let ids = add_messages(&mut con, "shout", &messages);
    let got = wait_len(&mut con, &key("shout", "taskback"), 1000, Duration::from_secs(120));
    assert_eq!(got, 1000, "{}", host.log_text());
    // Give a duplicate the chance to show up before counting.
    std::thread::sleep(Duration::from_millis(300));
    let taskbacks = entries(&mut con, &key("shout", "taskback"));
    assert_eq!(taskbacks.len(), 1000, "duplicates");
    let answered: HashSet<&str> = taskbacks.iter().filter_map(|(_, f)| field(f, "cannon.id")).collect();
    let sent: HashSet<&str> = ids.iter().map(String::as_str).collect();
    assert_eq!(answered, sent);
    for (_, fields) in &taskbacks {
        let text = field(fields, "text").expect("text");
        assert!(text.starts_with("MESSAGE "), "{text}");
    }
    assert_eq!(pending(&mut con, "shout"), 0);
    assert!(host.terminate().success());
}

/// With `concurrency: 1` (what the kv examples rely on) messages run one at a time in stream
/// order, although the reader reads ahead.
#[test]
fn concurrency_one_runs_messages_in_stream_order() {
    component("shout");
    let project = Project::new(
        "services:\n  ordered:\n    tasks: [ { file: shout } ]\n    workers: { concurrency: 1, batch: 16 }\n",
    );
    let redis = RedisServer::start();
    let mut con = redis.con();
    let messages: Vec<_> = (0..300).map(|i| vec![("text", format!("m{i}"))]).collect();
    let ids = add_messages(&mut con, "ordered", &messages);
    let mut host = Running::start(&project, &redis, &["ordered"]);
    let got = wait_len(&mut con, &key("ordered", "taskback"), 300, Duration::from_secs(60));
    assert_eq!(got, 300, "{}", host.log_text());
    let answered: Vec<String> = entries(&mut con, &key("ordered", "taskback"))
        .iter()
        .filter_map(|(_, f)| field(f, "cannon.id").map(str::to_owned))
        .collect();
    assert_eq!(answered.len(), ids.len());
    let first_out_of_order = answered.iter().zip(&ids).position(|(got, sent)| got != sent);
    assert_eq!(first_out_of_order, None, "taskbacks out of stream order from that position on");
    assert!(host.terminate().success());
}

#[test]
fn chat_on_stdin_answers_through_torch() {
    let redis = RedisServer::start();
    component("dice");
    let project = Project::new(
        "services:\n  chat:\n    collector: { kind: stdin, conf: { kwargs: { user: ann } } }\n    shell: { file: dice }\n    tasks: [ { torch: { in_key: text, out_key: text } } ]\n",
    );
    let out = run_host(&project, &redis, &["run", "chat"], Some("roll 3d6\nflip\nroll --help\n"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines.iter().any(|l| l.contains("(total ")), "no roll in {stdout:?}\n{stderr}");
    assert!(lines.iter().any(|l| *l == "heads" || *l == "tails"), "no flip in {stdout:?}");
    assert!(stdout.contains("usage: roll NdM"), "{stdout:?}");
}

#[test]
fn torch_prefix_and_subcommand_permissions() {
    let redis = RedisServer::start();
    component("dice");
    let project = Project::new(
        r#"groups: { moderators: [alice] }
services:
  chat:
    shell:
      file: dice
      permissions: { "roll 100d6": [moderators] }
    tasks: [ { torch: { prefix: "." } } ]
"#,
    );
    let mut host = Running::start(&project, &redis, &["chat"]);
    host.wait_for_log("ready", Duration::from_secs(60));
    let mut con = redis.con();
    let lines = [("bob", ".flip"), ("bob", "just chatting"), ("bob", ".roll 100d6"), ("alice", ".roll 100d6")];
    let messages: Vec<_> =
        lines.iter().map(|(u, t)| vec![("user", (*u).to_owned()), ("text", (*t).to_owned())]).collect();
    let ids = add_messages(&mut con, "chat", &messages);
    wait_len(&mut con, &key("chat", "taskback"), 3, Duration::from_secs(20));
    std::thread::sleep(Duration::from_millis(300));
    let taskbacks = entries(&mut con, &key("chat", "taskback"));
    let reply = |i: usize| {
        taskbacks
            .iter()
            .find(|(_, f)| field(f, "cannon.id") == Some(ids[i].as_str()))
            .map(|(_, f)| field(f, "text").unwrap_or("").to_owned())
    };
    assert!(matches!(reply(0).as_deref(), Some("heads" | "tails")), "{taskbacks:?}");
    assert_eq!(reply(1), None, "a line without the prefix gets no reply");
    assert!(
        reply(2).is_some_and(|r| r.starts_with("permission denied: `roll 100d6` is for moderators only")),
        "{:?}",
        reply(2)
    );
    assert!(reply(3).is_some_and(|r| r.contains("(total ")), "{:?}", reply(3));
    assert_eq!(taskbacks.len(), 3);
    assert_eq!(pending(&mut con, "chat"), 0, "the prefix-less message was acked too");
    assert!(host.terminate().success());
}

#[test]
fn a_service_with_a_chat_and_a_timer() {
    let redis = RedisServer::start();
    component("dice");
    component("echo");
    let project = Project::new(
        r#"services:
  bot:
    collectors:
      - { kind: stdin, conf: { kwargs: { user: ann } } }
      - { kind: tick, every: 1h, at_start: true }
    shell: { file: dice }
    tasks:
      - torch
      - file: echo
        conf: { kwargs: { seen: "@tick" } }
"#,
    );
    let out = run_host(&project, &redis, &["run", "bot"], Some("roll 2d6\n"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.lines().any(|l| l.contains("(total ")), "the chat got its reply: {stdout:?}");

    let mut con = redis.con();
    let taskbacks = entries(&mut con, &key("bot", "taskback"));
    let tick = taskbacks.iter().find(|(_, f)| field(f, "tick").is_some()).expect("the tick's taskback");
    assert_eq!(field(&tick.1, "seen"), field(&tick.1, "tick"), "the timer's message went through the pipeline");
    assert_eq!(field(&tick.1, "text"), None, "torch ignores a message without `text`");
    // Only the chat reads taskbacks: the timer has no consumer group stealing them.
    let groups: Vec<redis::Value> =
        redis::cmd("XINFO").arg("GROUPS").arg(key("bot", "taskback")).query(&mut con).expect("XINFO");
    assert_eq!(groups.len(), 1, "{groups:?}");
}

#[test]
fn bench_reports_json_and_cleans_up() {
    let redis = RedisServer::start();
    let project = shout_and_counter();
    let out = run_host(&project, &redis, &["bench", "shout", "-n", "300", "--concurrency", "4", "--json"], None);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    for key in ["msgs_per_s", "p50_ms", "p99_ms", "rss_mb", "instantiate_us", "call_us"] {
        assert!(json[key].as_f64().is_some_and(|v| v > 0.0), "{key} in {json}");
    }
    assert_eq!(json["calls"], 300, "{json}");
    assert_eq!(json["failed_calls"], 0, "{json}");
    // Its scratch namespace is gone, and the service's real streams were never touched.
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut redis.con()).expect("KEYS");
    assert!(keys.is_empty(), "left behind: {keys:?}");

    // A service whose messages produce no taskback is reported, not waited on forever.
    let out = run_host(&project, &redis, &["bench", "shout", "-n", "5", "--field", "other=x"], None);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("dead letters") && stderr.contains("--field"), "{stderr}");
}

/// `bench --drain` queues every message before the workers start, answers each exactly
/// once, reports the drain fields and the per-stage costs, and leaves nothing behind: on
/// Redis and on the embedded broker (its writer thread included).
#[test]
fn bench_drain_queues_first_then_times_the_workers() {
    let project = shout_and_counter();
    for backend in [Backend::Redis(RedisServer::start()), Backend::embedded(&project)] {
        let out = backend.run(&project, &["bench", "shout", "-n", "400", "--drain", "--concurrency", "8", "--json"]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
        assert_eq!(json["drain"], true, "{json}");
        assert_eq!(json["calls"], 400, "every queued message ran once: {json}");
        assert_eq!(json["failed_calls"], 0, "{json}");
        for key in ["msgs_per_s", "enqueue_s", "read_us", "instantiate_us", "call_us", "write_us", "cpu_us"] {
            assert!(json[key].as_f64().is_some_and(|v| v > 0.0), "{key} in {json}");
        }
        assert!(json["merge_us"].as_f64().is_some_and(|v| v >= 0.0), "{json}");
        if let Backend::Redis(redis) = &backend {
            let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut redis.con()).expect("KEYS");
            assert!(keys.is_empty(), "left behind: {keys:?}");
        }
    }
    // --drain times a backlog; --rate paces the adds: they cannot go together.
    let out = Backend::embedded(&project).run(&project, &["bench", "shout", "-n", "5", "--drain", "--rate", "10"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--rate"), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn keep_resident_override_is_checked_and_used() {
    let redis = RedisServer::start();
    let project = shout_and_counter();
    // Not a number of KiB: `run` stops before it starts anything, naming the variable.
    let mut cmd = crate::support::host(&project, &redis);
    let out = cmd
        .env("CANNON_KEEP_RESIDENT_KB", "16M")
        .args(["run", "shout"])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run cannon-host");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(r#"CANNON_KEEP_RESIDENT_KB="16M" is not a number of KiB"#), "{stderr}");

    // A valid size (smaller than a slot's dirty pages, so part is decommitted) still answers.
    let mut cmd = crate::support::host(&project, &redis);
    cmd.env("CANNON_KEEP_RESIDENT_KB", "4");
    let mut host = Running::start_cmd(cmd, &project, &["shout"]);
    host.wait_for_log("ready", Duration::from_secs(60));
    let out = run_host(&project, &redis, &["send", "shout", "text=kept", "--wait"], None);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object on stdout");
    assert_eq!(json["text"], "KEPT", "{json}");
    assert!(host.terminate().success(), "{}", host.log_text());
}
