//! Reliable delivery with real `cannon-host` processes: a worker killed with `kill -9`,
//! Redis restarted mid-run, retries and dead letters with replay, graceful and immediate
//! shutdown, and the embedded broker surviving restarts.

use std::collections::{HashMap, HashSet};
use std::process::Command;
use std::time::{Duration, Instant};

use cannon_host::broker::{Entry, StreamKind};

use crate::conformance::Backend;
use crate::support::{Project, RedisServer, Running, add_messages, component, entries, field, key, wait_len};

pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").expect("hostname").trim().to_owned()
}

/// Entries pending with one consumer of the workers' group.
pub fn pending_of(con: &mut impl redis::ConnectionLike, service: &str, consumer: &str) -> usize {
    let rows: Vec<redis::Value> = redis::cmd("XPENDING")
        .arg(key(service, "data"))
        .arg("cannon")
        .arg("-")
        .arg("+")
        .arg(100_000)
        .arg(consumer)
        .query(con)
        .expect("XPENDING");
    rows.len()
}

/// Messages pending in the workers' group; 0 while the group does not exist yet.
pub fn pending(con: &mut impl redis::ConnectionLike, service: &str) -> usize {
    let reply: redis::RedisResult<redis::Value> =
        redis::cmd("XPENDING").arg(key(service, "data")).arg("cannon").query(con);
    match reply {
        Ok(redis::Value::Array(parts)) => redis::from_redis_value(parts[0].clone()).unwrap_or(0),
        _ => 0,
    }
}

/// Asserts every id in `sent` has exactly one taskback on `service`'s taskback stream.
pub fn assert_exactly_once(con: &mut impl redis::ConnectionLike, service: &str, sent: &[String]) {
    let taskbacks = entries(con, &key(service, "taskback"));
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (_, fields) in &taskbacks {
        *seen.entry(field(fields, "cannon.id").expect("cannon.id")).or_default() += 1;
    }
    let duplicates: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(duplicates.is_empty(), "{} duplicated taskbacks, e.g. {:?}", duplicates.len(), duplicates.first());
    let answered: HashSet<&str> = seen.keys().copied().collect();
    let expected: HashSet<&str> = sent.iter().map(String::as_str).collect();
    assert_eq!(answered.len(), expected.len(), "taskbacks for {} of {} messages", answered.len(), expected.len());
    assert_eq!(answered, expected);
}

pub fn wait_until(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn slow_project(ms: u64, extra: &str) -> Project {
    component("slow");
    Project::new(&format!(
        "services:\n  work:\n    tasks: [ {{ file: slow, conf: {{ kwargs: {{ ms: \"{ms}\" }} }} }} ]\n    limits: {{ timeout_ms: 60000 }}\n{extra}"
    ))
}

#[test]
fn a_worker_killed_with_5000_messages_in_flight_loses_nothing() {
    let redis = RedisServer::start();
    a_killed_worker_loses_nothing(&redis.url(), &mut redis.con());
}

/// kill -9 of one of two workers holding part of 5,000 messages: the other takes its
/// messages over; each message gets exactly one taskback (also run on a Redis Cluster).
pub fn a_killed_worker_loses_nothing(url: &str, con: &mut impl redis::ConnectionLike) {
    // A long visibility timeout: only the takeover of a dead local worker can recover in time.
    let project = slow_project(
        20,
        "    workers: { concurrency: 256, batch: 256 }\n    retry: { visibility_timeout_ms: 600000 }\n",
    );
    let messages: Vec<_> = (0..5000).map(|i| vec![("text", format!("m{i}"))]).collect();
    let sent = add_messages(con, "work", &messages);
    let worker = || crate::support::host_at(&project, url);
    let mut victim = Running::start_cmd(worker(), &project, &["work", "--role", "worker"]);
    let mut survivor = Running::start_cmd(worker(), &project, &["work", "--role", "worker"]);
    victim.wait_for_log("workers started", Duration::from_secs(60));
    survivor.wait_for_log("workers started", Duration::from_secs(60));
    wait_len(con, &key("work", "taskback"), 500, Duration::from_secs(120));

    let victim_name = format!("{}-{}", host_name(), victim.child.id());
    let held = pending_of(con, "work", &victim_name);
    victim.child.kill().expect("kill -9");
    victim.child.wait().expect("reap");
    assert!(held > 0, "the killed worker held no messages; the test proves nothing");

    let got = wait_len(con, &key("work", "taskback"), 5000, Duration::from_secs(300));
    assert_eq!(got, 5000, "survivor log:\n{}", survivor.log_text());
    wait_until("nothing pending", Duration::from_secs(30), || pending(con, "work") == 0);
    std::thread::sleep(Duration::from_millis(500));
    assert_exactly_once(con, "work", &sent);
    assert!(survivor.log_text().contains("taking over messages of a dead worker"), "{}", survivor.log_text());
    assert!(survivor.terminate().success());
}

#[test]
fn redis_restarted_mid_run_loses_nothing() {
    let mut redis = RedisServer::start_with(&["--appendonly", "yes"]);
    let project = slow_project(10, "    workers: { concurrency: 32 }\n    retry: { visibility_timeout_ms: 3000 }\n");
    let mut con = redis.con();
    let first: Vec<_> = (0..600).map(|i| vec![("text", format!("a{i}"))]).collect();
    let mut sent = add_messages(&mut con, "work", &first);
    let mut worker = Running::start(&project, &redis, &["work"]);
    worker.wait_for_log("workers started", Duration::from_secs(60));
    wait_len(&mut con, &key("work", "taskback"), 100, Duration::from_secs(60));

    redis.restart_with(&["--appendonly", "yes"]);
    let mut con = redis.con();
    assert!(entries(&mut con, &key("work", "data")).len() >= 600, "AOF kept the stream");
    let second: Vec<_> = (0..400).map(|i| vec![("text", format!("b{i}"))]).collect();
    sent.extend(add_messages(&mut con, "work", &second));

    let got = wait_len(&mut con, &key("work", "taskback"), 1000, Duration::from_secs(180));
    assert_eq!(got, 1000, "worker log:\n{}", worker.log_text());
    wait_until("nothing pending", Duration::from_secs(60), || pending(&mut con, "work") == 0);
    std::thread::sleep(Duration::from_millis(500));
    assert_exactly_once(&mut con, "work", &sent);
    assert!(worker.terminate().success(), "{}", worker.log_text());
}

/// Redis down for a few seconds while a message runs: the reader's failed reads, and the
/// writer's for the finished message, each make one error line, warnings only at the 2nd,
/// 4th, 8th... failure, and one line when they work again, with the count.
#[test]
fn a_broker_outage_logs_one_error_and_the_recovery() {
    let mut redis = RedisServer::start_with(&["--appendonly", "yes"]);
    let project = slow_project(1_500, "");
    let mut worker = Running::start(&project, &redis, &["work"]);
    worker.wait_for_log("workers started", Duration::from_secs(60));
    let mut con = redis.con();
    let mut sent = add_messages(&mut con, "work", &[vec![("text", "during".to_owned())]]);
    wait_until("the message delivered", Duration::from_secs(30), || pending(&mut con, "work") == 1);
    // It finishes about 1.2 s into the outage; its write fails until Redis is back.
    redis.stop();
    // Reads fail at about 0, 0.1, 0.3, 0.7, 1.5 and 3.1 s (a doubling backoff from 100 ms).
    wait_until("the 4th failed read", Duration::from_secs(30), || {
        worker.log_text().matches("cannot read messages").count() >= 3
    });
    std::thread::sleep(Duration::from_millis(2_500));
    redis.restart_with(&["--appendonly", "yes"]);
    worker.wait_for_log("reading messages again", Duration::from_secs(30));
    let mut con = redis.con();
    sent.extend(add_messages(&mut con, "work", &[vec![("text", "after".to_owned())]]));
    wait_len(&mut con, &key("work", "taskback"), 2, Duration::from_secs(30));
    wait_until("nothing pending", Duration::from_secs(30), || pending(&mut con, "work") == 0);
    assert_exactly_once(&mut con, "work", &sent);
    let log = worker.log_text();
    for (what, recovered, count) in [
        ("cannot read messages", "reading messages again", "failed_reads="),
        ("cannot write taskbacks", "wrote the batch held up by failed writes", "failed_writes="),
    ] {
        let lines: Vec<&str> = log.lines().filter(|l| l.contains(what)).collect();
        let errors = lines.iter().filter(|l| l.contains("ERROR")).count();
        let warnings = lines.iter().filter(|l| l.contains("WARN")).count();
        assert_eq!(errors, 1, "one error for the outage ({what}):\n{log}");
        assert!((1..=2).contains(&warnings), "warnings at the 2nd and 4th failure only ({what}):\n{log}");
        let line = log.lines().find(|l| l.contains(recovered)).unwrap_or_else(|| panic!("no {recovered:?}:\n{log}"));
        let failed: u32 = line
            .split(count)
            .nth(1)
            .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no {count} in {line:?}"));
        assert!(failed >= 2, "the line after the outage counts the failures ({what}: {failed}):\n{log}");
    }
    assert!(!log.contains("a batch write was refused"), "an outage is not a refusal of the batch:\n{log}");
    assert!(worker.terminate().success(), "{log}");
}

#[test]
fn sigterm_finishes_and_acks_the_messages_in_flight() {
    let redis = RedisServer::start();
    let project = slow_project(1500, "    workers: { concurrency: 16, batch: 16 }\n");
    let mut con = redis.con();
    let messages: Vec<_> = (0..16).map(|i| vec![("text", format!("m{i}"))]).collect();
    let sent = add_messages(&mut con, "work", &messages);
    let mut worker = Running::start(&project, &redis, &["work"]);
    wait_until("all 16 in flight", Duration::from_secs(60), || pending(&mut con, "work") == 16);
    assert_eq!(entries(&mut con, &key("work", "taskback")).len(), 0, "none finished before the signal");

    let status = worker.terminate();
    assert!(status.success(), "exit {status}:\n{}", worker.log_text());
    assert_eq!(pending(&mut con, "work"), 0, "everything in flight was acknowledged");
    assert_exactly_once(&mut con, "work", &sent);
    assert!(worker.log_text().contains("draining"), "{}", worker.log_text());
}

/// Messages read ahead but not started when the drain timeout passes are left pending, not
/// run past the timeout; the next worker on the host takes them over.
#[test]
fn the_drain_timeout_bounds_messages_read_ahead() {
    let redis = RedisServer::start();
    let project = slow_project(
        400,
        "    workers: { concurrency: 1, batch: 16, drain_timeout_ms: 600 }\n    retry: { visibility_timeout_ms: 600000 }\n",
    );
    let mut con = redis.con();
    let messages: Vec<_> = (0..12).map(|i| vec![("text", format!("m{i}"))]).collect();
    let sent = add_messages(&mut con, "work", &messages);
    let mut first = Running::start(&project, &redis, &["work"]);
    wait_until("all 12 read", Duration::from_secs(60), || pending(&mut con, "work") == 12);

    // The backlog takes 12 x 400 ms one by one; the drain timeout allows a message or two.
    let status = first.terminate();
    assert!(status.success(), "exit {status}:\n{}", first.log_text());
    let log = first.log_text();
    assert!(log.contains("drain timeout passed before these messages read ahead could start"), "{log}");
    let done = entries(&mut con, &key("work", "taskback")).len();
    assert!(done < 12, "all {done} ran although the drain timeout had passed");
    assert_eq!(pending(&mut con, "work"), 12 - done, "the rest stays pending");

    let mut second = Running::start(&project, &redis, &["work"]);
    let got = wait_len(&mut con, &key("work", "taskback"), 12, Duration::from_secs(60));
    assert_eq!(got, 12, "{}", second.log_text());
    assert_exactly_once(&mut con, "work", &sent);
    assert!(second.terminate().success());
}

/// The reader sends its next read once half a batch is left to start, so a worker holds at
/// most `concurrency + batch + batch / 2` messages, and does reach that bound (a read sent only
/// when the whole batch had started held at most `concurrency + batch`).
#[test]
fn the_next_read_goes_out_while_half_a_batch_is_left_to_start() {
    let redis = RedisServer::start();
    let project = slow_project(
        250,
        "    workers: { concurrency: 1, batch: 4 }
",
    );
    let mut con = redis.con();
    let messages: Vec<_> = (0..16).map(|i| vec![("text", format!("m{i}"))]).collect();
    let sent = add_messages(&mut con, "work", &messages);
    let mut worker = Running::start(&project, &redis, &["work"]);
    // Held: one running, the batch's last two not started, the next batch of four; pending
    // in Redis may also count, for a moment, one finished and not yet acknowledged.
    wait_until("the next batch read early", Duration::from_secs(60), || pending(&mut con, "work") >= 7);
    let started = Instant::now();
    let mut most = 0;
    while started.elapsed() < Duration::from_millis(1500) {
        most = most.max(pending(&mut con, "work"));
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!((7..=8).contains(&most), "{most} pending at most: concurrency 1 + batch 4 + 4 / 2 held");
    let got = wait_len(&mut con, &key("work", "taskback"), 16, Duration::from_secs(60));
    assert_eq!(got, 16, "{}", worker.log_text());
    assert_exactly_once(&mut con, "work", &sent);
    assert!(worker.terminate().success());
}

#[test]
fn a_second_signal_exits_at_once_and_another_worker_recovers_the_rest() {
    let redis = RedisServer::start();
    let slow = slow_project(
        30_000,
        "    workers: { drain_timeout_ms: 60000 }\n    retry: { visibility_timeout_ms: 600000 }\n",
    );
    let mut con = redis.con();
    let messages: Vec<_> = (0..8).map(|i| vec![("text", format!("m{i}"))]).collect();
    let sent = add_messages(&mut con, "work", &messages);
    let mut first = Running::start(&slow, &redis, &["work"]);
    wait_until("all 8 in flight", Duration::from_secs(60), || pending(&mut con, "work") == 8);

    let pid = first.child.id().to_string();
    Command::new("kill").args(["-TERM", &pid]).status().expect("kill");
    first.wait_for_log("shutting down", Duration::from_secs(10));
    Command::new("kill").args(["-TERM", &pid]).status().expect("kill");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = first.child.try_wait().expect("wait") {
            break status;
        }
        // Generous, but well under the 30 s the messages would take to drain.
        assert!(started.elapsed() < Duration::from_secs(20), "a second signal did not stop cannon-host");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(130), "{}", first.log_text());
    assert_eq!(pending(&mut con, "work"), 8, "nothing was acknowledged unfinished");

    // Another worker on this host takes the dead worker's messages over at start, long
    // before the visibility timeout; this one's task is quick.
    let quick = slow_project(10, "    retry: { visibility_timeout_ms: 600000 }\n");
    let mut second = Running::start(&quick, &redis, &["work"]);
    let got = wait_len(&mut con, &key("work", "taskback"), 8, Duration::from_secs(60));
    assert_eq!(got, 8, "{}", second.log_text());
    wait_until("nothing pending", Duration::from_secs(30), || pending(&mut con, "work") == 0);
    assert_exactly_once(&mut con, "work", &sent);
    assert!(second.terminate().success());
}

/// Entries of one stream, read through the library as another process would.
fn stream(backend: &Backend, service: &str, kind: StreamKind) -> Vec<Entry> {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let broker = backend.open().await;
        broker.tail(service, kind, "0-0", 10_000, Duration::ZERO).await.expect("tail")
    })
}

fn get<'a>(entry: &'a Entry, name: &str) -> Option<&'a str> {
    field(&entry.fields, name)
}

pub fn retry_project() -> Project {
    component("flaky");
    component("failing");
    Project::new(
        "services:
  flaky:
    tasks: [ { file: flaky, allow: [kv] } ]
    retry: { max_attempts: 3, backoff_ms: 10 }
  stubborn:
    tasks: [ { file: flaky, allow: [kv], conf: { kwargs: { fail_times: \"3\" } } } ]
    retry: { max_attempts: 3, backoff_ms: 10 }
  failing:
    tasks: [ { file: failing } ]
    retry: { max_attempts: 3, backoff_ms: 10 }
    limits: { message_kb: 1 }
",
    )
}

pub fn retries_dead_letters_and_replay(backend: &Backend, project: &Project) {
    let mut host = Running::start_cmd(backend.host(project), project, &[]);
    host.wait_for_log("ready", Duration::from_secs(60));

    // Fails on attempt 1, succeeds on attempt 2: one taskback, nothing dead.
    let out = backend.run(project, &["send", "flaky", "text=hi", "--wait"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!((json["attempt"].as_str(), json["text"].as_str()), (Some("2"), Some("HI")), "{json}");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(stream(backend, "flaky", StreamKind::Taskback).len(), 1, "exactly one taskback");
    assert!(stream(backend, "flaky", StreamKind::Dead).is_empty());

    // Fails every allowed attempt: dead, with the attempt count, then replayed and run again.
    let out = backend.run(project, &["send", "stubborn", "text=x", "key=k1", "--wait"]);
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    let out = backend.run(project, &["dead", "stubborn", "--json"]);
    let dead: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(dead.as_array().map(Vec::len), Some(1), "{dead}");
    assert_eq!(dead[0]["attempts"], 3, "{dead}");
    assert!(dead[0]["error"].as_str().is_some_and(|e| e.contains("attempt 3 fails on purpose")), "{dead}");
    assert_eq!(dead[0]["fields"], serde_json::json!({ "text": "x", "key": "k1" }), "{dead}");
    let id = dead[0]["id"].as_str().expect("id").to_owned();
    let out = backend.run(project, &["dead", "stubborn", "--replay", &id]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    wait_until("the replayed message's taskback", Duration::from_secs(30), || {
        !stream(backend, "stubborn", StreamKind::Taskback).is_empty()
    });
    let taskbacks = stream(backend, "stubborn", StreamKind::Taskback);
    assert_eq!(get(&taskbacks[0], "attempt"), Some("4"), "attempt 4 = the first after the replay");
    assert!(stream(backend, "stubborn", StreamKind::Dead).is_empty());
    let out = backend.run(project, &["dead", "stubborn", "--replay", &id]);
    assert!(!out.status.success(), "a dead letter is replayed once");

    // Always fails: dead after max_attempts; an oversized message is dead at once, not run.
    let out = backend.run(project, &["send", "failing", "text=doomed", "--wait"]);
    assert_eq!(out.status.code(), Some(1));
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let big = "x".repeat(2048);
    runtime.block_on(async {
        let broker = backend.open().await;
        broker.add("failing", StreamKind::Data, &[("text".into(), big)]).await.expect("add");
    });
    wait_until("two dead letters", Duration::from_secs(30), || stream(backend, "failing", StreamKind::Dead).len() == 2);
    let dead = stream(backend, "failing", StreamKind::Dead);
    assert_eq!(get(&dead[0], "cannon.attempts"), Some("3"));
    assert!(get(&dead[0], "cannon.error").is_some_and(|e| e.contains("always fails")), "{dead:?}");
    assert_eq!(get(&dead[1], "cannon.attempts"), Some("0"));
    let error = get(&dead[1], "cannon.error").unwrap_or_default();
    assert!(error.contains("exceeds limits.message_kb = 1") && error.contains("not run"), "{error}");

    let out = backend.run(project, &["dead", "failing", "--all"]);
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 2, "both replayed");
    wait_until("both dead again", Duration::from_secs(30), || {
        let now = stream(backend, "failing", StreamKind::Dead);
        now.len() == 2 && now.iter().all(|e| dead.iter().all(|d| d.id != e.id))
    });
    assert!(host.terminate().success(), "{}", host.log_text());
}

#[test]
fn retries_dead_letters_and_replay_with_redis() {
    let project = retry_project();
    retries_dead_letters_and_replay(&Backend::Redis(RedisServer::start()), &project);
}

#[test]
fn retries_dead_letters_and_replay_embedded() {
    let project = retry_project();
    retries_dead_letters_and_replay(&Backend::embedded(&project), &project);
}

#[test]
fn the_default_service_runs_without_redis() {
    let data = tempfile::tempdir().expect("tempdir");
    let repo_compose = crate::support::repo().join("cannon-compose.yml");
    let host = || {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_cannon-host"));
        cmd.arg("-f")
            .arg(&repo_compose)
            .arg("--data-dir")
            .arg(data.path())
            .env("CANNON_CACHE_DIR", crate::support::cache_dir())
            .env_remove("CANNON_BROKER");
        cmd
    };
    let project = Project::new("services: {}\n");
    let mut worker = Running::start_cmd(host(), &project, &["shout"]);
    worker.wait_for_log("ready", Duration::from_secs(60));
    assert!(worker.log_text().contains("embedded:"), "{}", worker.log_text());
    let out = host().args(["send", "shout", "text=hi", "--wait"]).output().expect("send");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(json["text"], "HI");
    assert!(worker.terminate().success());
}

#[test]
fn embedded_messages_survive_restarts_and_kills() {
    component("shout");
    component("slow");
    let project = Project::new(
        "services:
  shout:
    tasks: [ { file: shout } ]
  work:
    tasks: [ { file: slow, conf: { kwargs: { ms: \"3000\" } } } ]
    limits: { timeout_ms: 60000 }
    retry: { visibility_timeout_ms: 600000 }
",
    );
    let backend = Backend::embedded(&project);

    // Sent while nothing runs: processed after the (re)start.
    let mut host = Running::start_cmd(backend.host(&project), &project, &[]);
    host.wait_for_log("ready", Duration::from_secs(60));
    assert!(host.terminate().success());
    let out = backend.run(&project, &["send", "shout", "text=while stopped"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let id = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let out = backend.run(&project, &["send", "work", "text=in flight"]);
    let work_id = String::from_utf8_lossy(&out.stdout).trim().to_owned();

    let mut host = Running::start_cmd(backend.host(&project), &project, &[]);
    wait_until("the message sent while stopped", Duration::from_secs(60), || {
        stream(&backend, "shout", StreamKind::Taskback).iter().any(|e| get(e, "cannon.id") == Some(id.as_str()))
    });
    let taskbacks = stream(&backend, "shout", StreamKind::Taskback);
    assert_eq!(taskbacks.len(), 1);
    assert_eq!(get(&taskbacks[0], "text"), Some("WHILE STOPPED"));

    // Killed while running a message: the next start on this host takes it over at once.
    wait_until("the slow message in flight", Duration::from_secs(30), || {
        let out = backend.run(&project, &["pending", "work", "--json"]);
        let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        rows.as_array().is_some_and(|r| r.len() == 1)
    });
    host.child.kill().expect("kill -9");
    host.child.wait().expect("reap");
    let mut host = Running::start_cmd(backend.host(&project), &project, &[]);
    wait_until("the killed message's taskback", Duration::from_secs(60), || {
        !stream(&backend, "work", StreamKind::Taskback).is_empty()
    });
    let taskbacks = stream(&backend, "work", StreamKind::Taskback);
    assert_eq!(taskbacks.len(), 1);
    assert_eq!(get(&taskbacks[0], "cannon.id"), Some(work_id.as_str()));
    let out = backend.run(&project, &["info", "work", "--json"]);
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(info["pending"], 0, "{info}");
    assert_eq!(info["dead"], 0, "{info}");
    assert!(host.terminate().success(), "{}", host.log_text());
}

/// `(deliveries)` of every entry pending in the workers' group.
fn delivery_counts(con: &mut redis::Connection, service: &str) -> Vec<u64> {
    let rows: Vec<(String, String, u64, u64)> = redis::cmd("XPENDING")
        .arg(key(service, "data"))
        .arg("cannon")
        .arg("-")
        .arg("+")
        .arg(100)
        .query(con)
        .unwrap_or_default();
    rows.into_iter().map(|(_, _, _, n)| n).collect()
}

#[test]
fn a_message_running_past_the_visibility_timeout_is_not_reclaimed() {
    let redis = RedisServer::start();
    // Runs 4 s; another worker would reclaim anything idle for 1 s.
    let project = slow_project(4000, "    retry: { visibility_timeout_ms: 1000 }\n");
    let mut con = redis.con();
    let mut owner = Running::start(&project, &redis, &["work", "--role", "worker"]);
    owner.wait_for_log("workers started", Duration::from_secs(60));
    let sent = add_messages(&mut con, "work", &[vec![("text", "long".to_owned())]]);
    wait_until("the message in flight", Duration::from_secs(30), || pending(&mut con, "work") == 1);
    let mut other = Running::start(&project, &redis, &["work", "--role", "worker"]);
    other.wait_for_log("workers started", Duration::from_secs(60));
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(delivery_counts(&mut con, "work"), vec![1], "delivered once, its claim kept fresh");

    wait_len(&mut con, &key("work", "taskback"), 1, Duration::from_secs(30));
    assert_exactly_once(&mut con, "work", &sent);
    for log in [owner.log_text(), other.log_text()] {
        assert!(!log.contains("reclaimed messages idle"), "{log}");
    }
    assert!(owner.terminate().success());
    assert!(other.terminate().success());
}

#[test]
fn info_pending_and_watch_show_the_streams() {
    let redis = RedisServer::start();
    let project = slow_project(1500, "");
    let backend = Backend::Redis(redis);
    let out = backend.run(&project, &["send", "work", "text=early"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let watch_out = project.path("watch.out");
    let mut watch = backend
        .host(&project)
        .args(["watch", "work", "--from-start"])
        .stdout(std::fs::File::create(&watch_out).expect("watch output"))
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn watch");
    let mut host = Running::start_cmd(backend.host(&project), &project, &["work"]);
    host.wait_for_log("workers started", Duration::from_secs(60));
    wait_until("the message in flight", Duration::from_secs(30), || {
        let out = backend.run(&project, &["pending", "work"]);
        String::from_utf8_lossy(&out.stdout).contains("deliveries 1")
    });
    let out = backend.run(&project, &["info", "work"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("stream {cannon:work}:data: 1 entries"), "{text}");
    assert!(text.contains("group cannon: 1 pending"), "{text}");
    assert!(text.contains(&format!("consumer {}-{}: 1 pending", host_name(), host.child.id())), "{text}");
    assert!(text.contains("pending 1, dead 0"), "{text}");

    wait_until("watch to print the taskback", Duration::from_secs(30), || {
        let seen = std::fs::read_to_string(&watch_out).unwrap_or_default();
        seen.lines().any(|l| l.starts_with("data ") && l.contains(r#""text":"early""#))
            && seen.lines().any(|l| l.starts_with("taskback ") && l.contains(r#""text":"EARLY""#))
    });
    Command::new("kill").args(["-INT", &watch.id().to_string()]).status().expect("kill");
    let status = watch.wait().expect("watch exit");
    assert!(status.success(), "watch exits 0 on SIGINT: {status}");
    assert!(host.terminate().success());
}

#[test]
fn deliveries_by_crashed_workers_count_towards_max_attempts() {
    let redis = RedisServer::start();
    let project = slow_project(10, "    retry: { max_attempts: 3, visibility_timeout_ms: 500 }\n");
    let mut con = redis.con();
    let data = key("work", "data");
    let _: () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(&data)
        .arg("cannon")
        .arg("0")
        .arg("MKSTREAM")
        .query(&mut con)
        .expect("group");
    let sent =
        add_messages(&mut con, "work", &[vec![("text", "cursed".to_owned())], vec![("text", "fine".to_owned())]]);
    // Consumers on another host took the first message three times and vanished.
    let _: redis::Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg("cannon")
        .arg("elsewhere-1")
        .arg("COUNT")
        .arg(1)
        .arg("STREAMS")
        .arg(&data)
        .arg(">")
        .query(&mut con)
        .expect("XREADGROUP");
    for ghost in ["elsewhere-2", "elsewhere-3"] {
        let _: redis::Value = redis::cmd("XCLAIM")
            .arg(&data)
            .arg("cannon")
            .arg(ghost)
            .arg(0)
            .arg(&sent[0])
            .query(&mut con)
            .expect("XCLAIM");
    }
    assert_eq!(delivery_counts(&mut con, "work"), vec![3]);

    let mut worker = Running::start(&project, &redis, &["work"]);
    let dead = wait_len(&mut con, &key("work", "dead"), 1, Duration::from_secs(60));
    assert_eq!(dead, 1, "{}", worker.log_text());
    let letters = entries(&mut con, &key("work", "dead"));
    let fields = &letters[0].1;
    assert_eq!(field(fields, "cannon.id"), Some(sent[0].as_str()));
    assert_eq!(field(fields, "cannon.attempts"), Some("3"));
    assert!(field(fields, "cannon.error").is_some_and(|e| e.starts_with("abandoned: delivered 3 times")), "{fields:?}");
    wait_len(&mut con, &key("work", "taskback"), 1, Duration::from_secs(30));
    assert_exactly_once(&mut con, "work", &sent[1..]);
    wait_until("nothing pending", Duration::from_secs(30), || pending(&mut con, "work") == 0);
    assert!(worker.terminate().success());
}
