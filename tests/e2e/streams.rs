//! The `streams` import (read-only reads of another service's stream) through a real guest
//! (`streamprobe`) and a real `cannon-host`, on both brokers: the grant refused at load,
//! `not-granted` at call, the count and byte bounds, and last N / after id / time range /
//! paged answers checked against what was written; then `examples/roombot` end to end.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cannon_host::broker::{BrokerAdmin, StreamKind};
use serde_json::Value;

use crate::collectors::example;
use crate::conformance::Backend;
use crate::support::{Project, RedisServer, Running, component};

/// One runtime per test: a Redis connection lives on the runtime that opened it.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime")
}

fn project() -> Project {
    component("streamprobe");
    component("shout");
    Project::new(
        "services:
  src:
    tasks: [ { file: shout } ]
  big:
    tasks: [ { file: shout } ]
  many:
    tasks: [ { file: shout } ]
  other:
    tasks: [ { file: shout } ]
  probe:
    tasks: [ { file: streamprobe, allow: [ { streams: [src, big, many] } ] } ]
    limits: { timeout_ms: 10000, memory_mb: 64 }
",
    )
}

/// Sends one message to the probe and returns its taskback.
fn probe(backend: &Backend, project: &Project, fields: &[&str]) -> Value {
    let mut args = vec!["send", "probe"];
    args.extend_from_slice(fields);
    args.extend(["--wait", "--timeout-ms", "30000"]);
    let out = backend.run(project, &args);
    assert!(out.status.success(), "{fields:?}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("one JSON object")
}

fn ids_of(answer: &Value) -> Vec<String> {
    assert_eq!(answer["ok"], "true", "{answer}");
    let ids = answer["ids"].as_str().unwrap_or_else(|| panic!("no ids: {answer}"));
    if ids.is_empty() { Vec::new() } else { ids.split(',').map(str::to_owned).collect() }
}

fn assert_error(answer: &Value, kind: &str, detail: &str) {
    assert_eq!((answer["ok"].as_str(), answer["error"].as_str()), (Some("false"), Some(kind)), "{answer}");
    assert!(answer["detail"].as_str().is_some_and(|d| d.contains(detail)), "{answer}");
}

fn ms(id: &str) -> u64 {
    id.split('-').next().and_then(|ms| ms.parse().ok()).unwrap_or_else(|| panic!("bad id {id}"))
}

/// Adds `n` entries `{n: first + i}` to a stream; their ids.
async fn add(broker: &Arc<dyn BrokerAdmin>, service: &str, stream: StreamKind, first: usize, n: usize) -> Vec<String> {
    let mut ids = Vec::with_capacity(n);
    for i in first..first + n {
        let fields = vec![("cannon.id".to_owned(), format!("m{i}")), ("n".to_owned(), i.to_string())];
        ids.push(broker.add(service, stream, &fields).await.expect("add"));
    }
    ids
}

/// What the test writes before the probe reads it.
struct Written {
    /// `src` data: two batches, the second added after the first's last millisecond.
    batch_a: Vec<String>,
    batch_b: Vec<String>,
    /// `src` taskbacks.
    taskbacks: Vec<String>,
    /// `big` data: entries of 400 KB, then one of 1.2 MB.
    big: Vec<String>,
    /// `many` data: 1,500 entries.
    many: Vec<String>,
}

async fn write(backend: &Backend) -> Written {
    let broker = backend.open().await;
    let batch_a = add(&broker, "src", StreamKind::Data, 0, 10).await;
    // Later ids: the second batch starts in a later millisecond than the first ends.
    tokio::time::sleep(Duration::from_millis(30)).await;
    let batch_b = add(&broker, "src", StreamKind::Data, 10, 20).await;
    assert!(ms(&batch_b[0]) > ms(&batch_a[9]), "{batch_a:?} {batch_b:?}");
    let taskbacks = add(&broker, "src", StreamKind::Taskback, 100, 5).await;
    let mut big = Vec::new();
    for (i, size) in [400_000, 400_000, 400_000, 1_200_000].into_iter().enumerate() {
        let fields = vec![("n".to_owned(), i.to_string()), ("blob".to_owned(), "x".repeat(size))];
        big.push(broker.add("big", StreamKind::Data, &fields).await.expect("add big"));
    }
    let many = add(&broker, "many", StreamKind::Data, 0, 1500).await;
    Written { batch_a, batch_b, taskbacks, big, many }
}

fn reads_through_a_guest(backend: &Backend, project: &Project) {
    let rt = runtime();
    let written = rt.block_on(write(backend));
    let src: Vec<String> = written.batch_a.iter().chain(&written.batch_b).cloned().collect();
    let mut host = Running::start_cmd(backend.host(project), project, &["probe"]);
    host.wait_for_log("ready", Duration::from_secs(60));
    let p = |fields: &[&str]| probe(backend, project, fields);

    // The newest N, oldest first, with the fields as stored.
    let last = p(&["op=last", "service=src", "count=3"]);
    assert_eq!(ids_of(&last), &src[27..], "{last}");
    assert_eq!((last["values"].as_str(), last["truncated"].as_str()), (Some("27,28,29"), Some("true")), "{last}");
    assert_eq!(last["services"], "src");
    let all = p(&["op=last", "service=src", "count=100"]);
    assert_eq!((ids_of(&all), all["truncated"].as_str()), (src.clone(), Some("false")), "{all}");

    // After an id: exclusive, bounded by the count; nothing after the newest.
    let after = p(&["op=after", "service=src", &format!("id={}", src[9]), "count=5"]);
    assert_eq!((ids_of(&after), after["truncated"].as_str()), (src[10..15].to_vec(), Some("true")), "{after}");
    let from_start = p(&["op=after", "service=src", "id=0", "count=1000"]);
    assert_eq!((ids_of(&from_start), from_start["truncated"].as_str()), (src.clone(), Some("false")));
    let past_end = p(&["op=after", "service=src", &format!("id={}", src[29]), "count=10"]);
    assert_eq!((ids_of(&past_end), past_end["truncated"].as_str()), (Vec::new(), Some("false")));

    // A time range: exactly the entries added in it (both ends included).
    let (a, b) = (&written.batch_a, &written.batch_b);
    let range = |from: u64, to: u64, count: usize| {
        p(&["op=between", "service=src", &format!("from_ms={from}"), &format!("to_ms={to}"), &format!("count={count}")])
    };
    let in_b = range(ms(&b[0]), ms(&b[19]), 1000);
    assert_eq!((ids_of(&in_b), in_b["truncated"].as_str()), (b.clone(), Some("false")), "{in_b}");
    let in_a = range(0, ms(&a[9]), 1000);
    assert_eq!(ids_of(&in_a), *a, "{in_a}");
    let first_of_a = range(ms(&a[0]), ms(&a[9]), 4);
    assert_eq!((ids_of(&first_of_a), first_of_a["truncated"].as_str()), (a[..4].to_vec(), Some("true")));
    assert_eq!(ids_of(&range(ms(&b[19]) + 1, u64::MAX, 10)), Vec::<String>::new());

    // The taskback stream, `cannon.*` fields included, as stored.
    let taskbacks = p(&["op=last", "service=src", "stream=taskback", "count=5", "field=cannon.id"]);
    assert_eq!(ids_of(&taskbacks), written.taskbacks, "{taskbacks}");
    assert_eq!(taskbacks["values"], "m100,m101,m102,m103,m104");

    // Grants and typed errors.
    assert_error(&p(&["op=last", "service=other", "count=1"]), "not-granted", "not in this component's grant");
    assert_error(&p(&["op=last", "service=nosuch", "count=1"]), "not-granted", "nosuch");
    assert_error(&p(&["op=last", "service=src:data", "count=1"]), "unknown-service", "cannot name a service");
    assert_error(&p(&["op=after", "service=src", "id=12-x", "count=1"]), "invalid-id", "not a stream id");
    assert_error(&p(&["op=last", "service=src", "count=1001"]), "too-large", "1000 entries per call");

    // The byte bound (1 MiB): two entries of 400 KB fit, a third does not; one entry larger
    // than the bound alone is refused, naming it, and can be read past with `after`.
    let big = &written.big;
    let two = p(&["op=after", "service=big", "id=0", "count=3"]);
    assert_eq!((ids_of(&two), two["truncated"].as_str()), (big[..2].to_vec(), Some("true")), "{two}");
    assert_error(&p(&["op=last", "service=big", "count=1"]), "too-large", &big[3]);
    let newest_fitting = p(&["op=last", "service=big", "count=3"]);
    assert_error(&newest_fitting, "too-large", &big[3]);
    let skipped = p(&["op=after", "service=big", &format!("id={}", big[3]), "count=3"]);
    assert_eq!(ids_of(&skipped), Vec::<String>::new());

    // The SDK's `since` reads on past a page of 1,000.
    let since = p(&["op=since", "service=many", "from_ms=0", "count=1200"]);
    assert_eq!((ids_of(&since), since["truncated"].as_str()), (written.many[..1200].to_vec(), Some("true")));
    let every = p(&["op=since", "service=many", "from_ms=0", "count=5000"]);
    assert_eq!((ids_of(&every), every["truncated"].as_str()), (written.many.clone(), Some("false")));

    // Reading changed nothing: the streams hold what was written, unread by any group.
    let broker = rt.block_on(backend.open());
    let info = rt.block_on(broker.stream_info("src", StreamKind::Data)).expect("info");
    assert_eq!(info.length, 30);
    assert!(host.terminate().success(), "{}", host.log_text());
}

#[test]
fn streams_through_a_guest_with_redis() {
    let project = project();
    reads_through_a_guest(&Backend::Redis(RedisServer::start()), &project);
}

#[test]
fn streams_through_a_guest_embedded() {
    let project = project();
    reads_through_a_guest(&Backend::embedded(&project), &project);
}

/// A component that imports `streams` without the grant is refused at load, by `check` and
/// by `run`, naming the grant to add.
fn refused_at_load(redis: Option<RedisServer>) {
    component("streamprobe");
    let project = Project::new(
        "services:
  src:
    tasks: [ { file: streamprobe, allow: [kv] } ]
",
    );
    let backend = match redis {
        Some(redis) => Backend::Redis(redis),
        None => Backend::embedded(&project),
    };
    for args in [&["check"][..], &["run", "src"][..]] {
        let out = backend.run(&project, args);
        let text = String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
        assert!(!out.status.success(), "{args:?} accepted an ungranted import: {text}");
        assert!(
            text.contains("cannon:platform/streams") && text.contains("allow: [{streams: [SERVICE]}]"),
            "{args:?}: {text}"
        );
    }
}

#[test]
fn streams_refused_at_load_with_redis() {
    refused_at_load(Some(RedisServer::start()));
}

#[test]
fn streams_refused_at_load_embedded() {
    refused_at_load(None);
}

/// `temp, last 1h: min .. °C, mean .. °C, max .. °C (N readings)` from the readings.
fn expected_stats(name: &str, unit: &str, values: &[f64]) -> String {
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let mean = values.iter().sum::<f64>() / values.len() as f64;
    format!("{name}, last 1h: min {min:.1}{unit}, mean {mean:.1}{unit}, max {max:.1}{unit} ({} readings)", values.len())
}

/// examples/roombot as shipped, with a 1 s tick and without the stdin collector.
pub(crate) fn roombot(backend: &Backend, project: &Project) {
    let rt = runtime();
    let broker = rt.block_on(backend.open());
    let mut sensors = Running::start_cmd(backend.host(project), project, &["sensors"]);
    sensors.wait_for_log("ready", Duration::from_secs(60));
    let deadline = Instant::now() + Duration::from_secs(30);
    while rt.block_on(broker.stream_info("sensors", StreamKind::Taskback)).expect("info").length < 4 {
        assert!(Instant::now() < deadline, "fewer than 4 readings in 30 s:\n{}", sensors.log_text());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(sensors.terminate().success(), "{}", sensors.log_text());
    let readings = rt.block_on(broker.scan("sensors", StreamKind::Taskback, "0-0", 10_000)).expect("scan");
    let column = |field: &str| -> Vec<f64> {
        readings
            .iter()
            .map(|e| {
                let value = e.fields.iter().find(|(k, _)| k == field).map(|(_, v)| v.as_str());
                value.and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("no {field} in {:?}", e.fields))
            })
            .collect()
    };
    let temp = expected_stats("temp", " °C", &column("temp_c"));
    let humidity = expected_stats("humidity", " %", &column("humidity_pct"));

    // From the command line: the shell reads the sensors' stream on the configured broker.
    let torch = |line: &str| {
        let out = backend.run(project, &["torch", "room", line]);
        assert!(out.status.success(), "{line}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).expect("utf-8")
    };
    let answer = torch("room temp --last 1h");
    assert_eq!(answer.lines().next(), Some(temp.as_str()), "{answer}");
    let chart = answer.lines().nth(1).unwrap_or_default();
    assert_eq!(chart.chars().count(), readings.len().min(24), "{answer}");
    assert!(chart.chars().all(|c| ('▁'..='█').contains(&c)), "{answer}");
    assert!(torch("room help").contains("usage: room temp"));

    // Through a running `room` service: the same answer as a chat reply.
    let mut room = Running::start_cmd(backend.host(project), project, &["room"]);
    room.wait_for_log("ready", Duration::from_secs(60));
    let say = |text: &str| -> String {
        let out = backend.run(project, &["send", "room", "user=ann", &format!("text={text}"), "--wait"]);
        assert!(out.status.success(), "{text}: {}", String::from_utf8_lossy(&out.stderr));
        let reply: Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
        reply["text"].as_str().unwrap_or_else(|| panic!("no text: {reply}")).to_owned()
    };
    assert_eq!(say("room temp --last 1h").lines().next(), Some(temp.as_str()));
    assert_eq!(say("room humidity --last 1h").lines().next(), Some(humidity.as_str()));
    std::thread::sleep(Duration::from_millis(2100));
    assert_eq!(say("room temp --last 1s"), "no temp readings in the last 1s");
    assert!(say("room temp --last 9d").starts_with("--last \"9d\": expected"));
    assert!(room.terminate().success(), "{}", room.log_text());
}

pub(crate) fn roombot_project() -> Project {
    component("sensors");
    component("roombot");
    example(
        "roombot",
        &[("every: 10s", "every: 1s"), ("    collector: { kind: stdin, conf: { kwargs: { server: local } } }\n", "")],
    )
}

#[test]
fn roombot_answers_from_the_sensors_stream_with_redis() {
    let project = roombot_project();
    roombot(&Backend::Redis(RedisServer::start()), &project);
}

#[test]
fn roombot_answers_from_the_sensors_stream_embedded() {
    let project = roombot_project();
    roombot(&Backend::embedded(&project), &project);
}

/// `cannon-host acl room` lets the room's processes read the sensors' streams (with the
/// read-only script's XRANGE/XREVRANGE), not write them, and nothing of a service it was
/// not granted. A rule printed before reads were read-only (`~` and `+evalsha` only) still
/// works: the read falls back to `EVALSHA`.
#[test]
fn roombot_reads_under_its_acl_user_with_redis() {
    let redis = RedisServer::start();
    let project = roombot_project();
    let mut admin = redis.con();
    for temp in ["20.5", "22.5"] {
        let _: String = redis::cmd("XADD")
            .arg(crate::support::key("sensors", "taskback"))
            .arg("*")
            .arg("temp_c")
            .arg(temp)
            .query(&mut admin)
            .expect("XADD");
    }
    let password = "room-acl-password-4711";
    let out = crate::support::host(&project, &redis)
        .args(["acl", "room", "--password-env", "ROOM_PW"])
        .env("ROOM_PW", password)
        .output()
        .expect("acl");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let rule = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(rule.contains(" %R~{cannon:sensors}:taskback ") && rule.contains(" +evalsha_ro"), "{rule}");
    assert!(!rule.contains(" ~{cannon:sensors}:") && !rule.contains("~{cannon:sensors}:*"), "{rule}");
    assert!(!rule.contains("~{cannon:sensors}:dead"), "{rule}");
    let older = rule.replace("%R~", "~").replace(" +evalsha_ro +eval_ro", "").replace("cannon-room", "cannon-room-old");
    for rule in [&rule, &older] {
        let mut setuser = redis::Cmd::new();
        for arg in rule.split(' ') {
            setuser.arg(arg);
        }
        let () = setuser.query(&mut admin).expect("ACL SETUSER as printed");
    }

    for user in ["cannon-room", "cannon-room-old", "cannon-room"] {
        // The first read loads the script (EVAL_RO), the others find it (EVALSHA_RO).
        let url = format!("redis://{user}:{password}@127.0.0.1:{}", redis.port);
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_cannon-host"))
            .arg("-f")
            .arg(&project.compose)
            .args(["--broker", &url, "torch", "room", "room temp --last 1h"])
            .env("CANNON_CACHE_DIR", crate::support::cache_dir())
            .env_remove("CANNON_BROKER")
            .current_dir(project.dir.path())
            .output()
            .expect("torch");
        let answer = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{user}: {answer}{}", String::from_utf8_lossy(&out.stderr));
        assert!(
            answer.starts_with("temp, last 1h: min 20.5 °C, mean 21.5 °C, max 22.5 °C (2 readings)"),
            "{user}: {answer}"
        );
    }

    let url = format!("redis://cannon-room:{password}@127.0.0.1:{}", redis.port);
    let mut user = redis::Client::open(url.as_str()).expect("url").get_connection().expect("log in as cannon-room");
    // It may read the sensors' taskback, but not write it, nor run a script that writes it.
    let read: redis::Value =
        redis::cmd("XLEN").arg(crate::support::key("sensors", "taskback")).query(&mut user).expect("XLEN");
    assert_eq!(read, redis::Value::Int(2));
    let mut xadd = redis::cmd("XADD");
    xadd.arg(crate::support::key("sensors", "taskback")).arg("*").arg("temp_c").arg("99");
    let err = xadd.query::<redis::Value>(&mut user).expect_err("write the sensors' stream");
    assert!(err.to_string().to_lowercase().contains("noperm"), "{err}");
    let mut eval = redis::cmd("EVAL");
    eval.arg("return redis.call('XADD', KEYS[1], '*', 'temp_c', '99')")
        .arg(1)
        .arg(crate::support::key("sensors", "taskback"));
    let err = eval.query::<redis::Value>(&mut user).expect_err("write the sensors' stream from a script");
    assert!(err.to_string().to_lowercase().contains("noperm"), "{err}");
    let len: i64 = redis::cmd("XLEN").arg(crate::support::key("sensors", "taskback")).query(&mut admin).expect("XLEN");
    assert_eq!(len, 2, "the sensors' stream is unchanged");

    // The same user cannot read a stream it was not granted.
    let mut xrange = redis::cmd("XRANGE");
    xrange.arg(crate::support::key("other", "data")).arg("-").arg("+");
    let err = xrange.query::<redis::Value>(&mut user).expect_err("read another service");
    assert!(err.to_string().to_lowercase().contains("noperm"), "{err}");
}
