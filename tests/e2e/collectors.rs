//! Every collector kind, run from the compose files in `examples/` against a real Redis:
//! stdin, http, tick, stream and exec, plus the supervisor that restarts a failed collector.

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use crate::support::{Project, RedisServer, Running, component, entries, field, key, repo, run_host, wait_len};

/// A project from `examples/NAME/cannon-compose.yml`: its `app_dir` and `broker` lines are
/// dropped (the harness sets both) and each `(from, to)` replacement applied.
pub fn example(name: &str, replace: &[(&str, &str)]) -> Project {
    let path = repo().join("examples").join(name).join("cannon-compose.yml");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut body: String = text
        .lines()
        .filter(|l| !l.starts_with("app_dir:") && !l.starts_with("broker:"))
        .map(|l| format!("{l}\n"))
        .collect();
    for (from, to) in replace {
        assert!(body.contains(from), "{from:?} is not in {}", path.display());
        body = body.replace(from, to);
    }
    Project::new(&body)
}

/// The log without the colour codes of the terminal formatter.
pub fn plain(log: &str) -> String {
    let mut out = String::with_capacity(log.len());
    let mut chars = log.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

pub fn count(host: &Running, needle: &str) -> usize {
    plain(&host.log_text()).matches(needle).count()
}

/// Waits until the log (colours removed) contains `needle`.
pub fn wait_plain(host: &mut Running, needle: &str, timeout: Duration) {
    wait_count(host, needle, 1, timeout);
}

/// Waits until `needle` appears `n` times in the log.
pub fn wait_count(host: &mut Running, needle: &str, n: usize, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while count(host, needle) < n {
        assert!(Instant::now() < deadline, "{needle:?} not logged {n} times:\n{}", plain(&host.log_text()));
        if let Ok(Some(status)) = host.child.try_wait() {
            panic!("cannon-host exited with {status}:\n{}", plain(&host.log_text()));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The port the http collector logged (`address=127.0.0.1:PORT`).
pub fn logged_port(host: &mut Running) -> u16 {
    host.wait_for_log("http collector listening", Duration::from_secs(60));
    let log = plain(&host.log_text());
    let line = log.lines().find(|l| l.contains("http collector listening")).expect("listening line");
    let address = line.split_whitespace().find_map(|w| w.strip_prefix("address=")).expect("address= in the line");
    address.rsplit(':').next().and_then(|p| p.parse().ok()).unwrap_or_else(|| panic!("no port in {line}"))
}

/// One HTTP/1.1 request; returns the status code and the body.
pub fn http(port: u16, method: &str, target: &str, body: &[u8]) -> (u16, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to the http collector");
    stream.set_read_timeout(Some(Duration::from_secs(60))).expect("timeout");
    let head = format!(
        "{method} {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).expect("write request");
    // The server may answer (413) before reading the whole body and close.
    let _ = stream.write_all(body);
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (status, body)
}

fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {body:?}"))
}

/// `XINFO GROUPS`: (name, pending, last-delivered-id) per group of a stream.
fn groups(con: &mut redis::Connection, stream: &str) -> Vec<(String, usize, String)> {
    let groups: Vec<std::collections::HashMap<String, redis::Value>> =
        redis::cmd("XINFO").arg("GROUPS").arg(stream).query(con).expect("XINFO GROUPS");
    groups
        .into_iter()
        .map(|g| {
            let text = |k: &str| redis::from_redis_value::<String>(g[k].clone()).expect(k);
            let pending = redis::from_redis_value::<usize>(g["pending"].clone()).expect("pending");
            (text("name"), pending, text("last-delivered-id"))
        })
        .collect()
}

#[test]
fn stdin_chat_example_answers_each_line() {
    let redis = RedisServer::start();
    component("dice");
    let project = example("chat", &[]);
    let out = run_host(&project, &redis, &["run", "chat"], Some("roll 2d6\nflip\nroll \"2d6\n"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.lines().any(|l| l.contains("(total ")), "no roll in {stdout:?}");
    assert!(stdout.lines().any(|l| l == "heads" || l == "tails"), "alice is a moderator and may flip: {stdout:?}");
    assert!(stdout.contains("a \" quote is not closed"), "{stdout:?}");
    // Every message carries the collector's kwargs.
    let mut con = redis.con();
    let data = entries(&mut con, &key("chat", "data"));
    assert_eq!(data.len(), 3);
    assert!(data.iter().all(|(_, f)| field(f, "user") == Some("alice")), "{data:?}");
}

#[test]
fn http_example_answers_waits_and_rejects_bad_bodies() {
    let redis = RedisServer::start();
    component("shout");
    let project = example("webhook", &[("127.0.0.1:8080", "127.0.0.1:0")]);
    let mut host = Running::start(&project, &redis, &["webhook"]);
    let port = logged_port(&mut host);

    let (status, body) = http(port, "GET", "/healthz", b"");
    assert_eq!(status, 200, "{body}");

    // ?wait: the taskback itself, kwargs and the body's fields included.
    let (status, body) = http(port, "POST", "/?wait=20000", br#"{"text": "hello", "n": 3, "ok": true}"#);
    assert_eq!(status, 200, "{body}");
    let taskback = json(&body);
    assert_eq!(taskback["text"], "HELLO", "{taskback}");
    assert_eq!(taskback["n"], "3");
    assert_eq!(taskback["ok"], "true");
    assert_eq!(taskback["source"], "webhook", "collector kwargs: {taskback}");
    assert!(taskback["cannon.id"].as_str().is_some_and(|id| id.contains('-')));

    // Without wait: 202 and the id; the taskback still arrives.
    let (status, body) = http(port, "POST", "/", br#"{"text": "later"}"#);
    assert_eq!(status, 202, "{body}");
    let id = json(&body)["id"].as_str().expect("id").to_owned();
    let mut con = redis.con();
    wait_len(&mut con, &key("webhook", "taskback"), 2, Duration::from_secs(20));
    let taskbacks = entries(&mut con, &key("webhook", "taskback"));
    assert!(taskbacks.iter().any(|(_, f)| field(f, "cannon.id") == Some(&id) && field(f, "text") == Some("LATER")));

    let (status, body) = http(port, "POST", "/", br#"{"text": "x", "meta": {"a": 1}}"#);
    assert_eq!(status, 400, "{body}");
    assert!(json(&body)["error"].as_str().unwrap().contains(r#"field "meta" is an object"#), "{body}");
    let (status, body) = http(port, "POST", "/", br#"{"text": "#);
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("not valid JSON"), "{body}");
    let (status, body) = http(port, "POST", "/", b"[1, 2]");
    assert_eq!(status, 400, "{body}");
    let (status, body) = http(port, "POST", "/?wait=soon", br#"{"text": "x"}"#);
    assert_eq!(status, 400, "{body}");
    // limits.message_kb is 64 in the example: a 70 KB value is refused, a huge body too.
    let big = format!(r#"{{"text": "{}"}}"#, "x".repeat(70_000));
    let (status, body) = http(port, "POST", "/", big.as_bytes());
    assert_eq!(status, 413, "{body}");
    assert!(body.contains("limits.message_kb = 64"), "{body}");
    let (status, _) = http(port, "POST", "/", "y".repeat(400_000).as_bytes());
    assert_eq!(status, 413);

    // A message whose pipeline fails (no `text` for shout) sends no taskback: 504.
    let (status, body) = http(port, "POST", "/?wait=300", br#"{"other": "x"}"#);
    assert_eq!(status, 504, "{body}");
    assert!(json(&body)["error"].as_str().unwrap().contains("no taskback within 300 ms"), "{body}");

    // Taskbacks nobody waited for are consumed and acknowledged by the collector group.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let last = entries(&mut con, &key("webhook", "taskback")).last().map(|(id, _)| id.clone()).unwrap();
        let group = groups(&mut con, &key("webhook", "taskback"));
        if group.iter().any(|(name, pending, delivered)| name == "collector" && *pending == 0 && *delivered == last) {
            break;
        }
        assert!(Instant::now() < deadline, "taskbacks not acknowledged: {group:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(host.terminate().success(), "{}", host.log_text());
}

#[test]
fn tick_example_fires_on_the_schedule() {
    let redis = RedisServer::start();
    component("shout");
    let project = example("ticker", &[]);
    let mut host = Running::start(&project, &redis, &["ticker"]);
    let mut con = redis.con();
    // at_start, then every 5 s at multiples of 5 s.
    let got = wait_len(&mut con, &key("ticker", "taskback"), 3, Duration::from_secs(30));
    assert!(got >= 3, "{}", host.log_text());
    let data = entries(&mut con, &key("ticker", "data"));
    let ticks: Vec<&str> = data.iter().map(|(_, f)| field(f, "tick").expect("tick field")).collect();
    assert!(data.iter().all(|(_, f)| field(f, "text") == Some("tick tock")), "kwargs: {data:?}");
    // RFC 3339 UTC, seconds of the scheduled fire (not of the moment it was sent).
    let seconds = |t: &str| -> u32 {
        assert!(t.len() == 20 && t.ends_with('Z') && &t[10..11] == "T", "{t}");
        t[17..19].parse::<u32>().expect("seconds") + 60 * t[14..16].parse::<u32>().expect("minutes")
    };
    let (second, third) = (seconds(ticks[1]), seconds(ticks[2]));
    assert_eq!(second % 5, 0, "{ticks:?}");
    assert_eq!((third + 3600 - second) % 3600, 5, "{ticks:?}");
    let taskbacks = entries(&mut con, &key("ticker", "taskback"));
    assert_eq!(field(&taskbacks[1].1, "text"), Some("TICK TOCK"));
    wait_plain(&mut host, "\"text\":\"TICK TOCK\"", Duration::from_secs(5));
    assert!(host.terminate().success());
}

#[test]
fn stream_example_follows_another_services_taskbacks() {
    let redis = RedisServer::start();
    component("shout");
    component("echo");
    let project = example("relay", &[]);
    let mut host = Running::start(&project, &redis, &[]);
    host.wait_for_log("following stream", Duration::from_secs(60));
    let out = run_host(&project, &redis, &["send", "words", "text=hello", "--wait"], None);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let words_id = json(&String::from_utf8_lossy(&out.stdout))["cannon.id"].as_str().expect("id").to_owned();

    let mut con = redis.con();
    assert_eq!(wait_len(&mut con, &key("relay", "taskback"), 1, Duration::from_secs(20)), 1, "{}", host.log_text());
    let (_, relayed) = &entries(&mut con, &key("relay", "taskback"))[0];
    assert_eq!(field(relayed, "relayed"), Some("HELLO"), "{relayed:?}");
    assert_eq!(field(relayed, "from"), Some(words_id.as_str()), "{relayed:?}");
    assert_eq!(field(relayed, "via"), Some("relay"), "kwargs: {relayed:?}");
    let follow = groups(&mut con, &key("words", "taskback"));
    assert!(follow.iter().any(|(name, pending, _)| name == "follow:relay" && *pending == 0), "{follow:?}");
    wait_plain(&mut host, "\"relayed\":\"HELLO\"", Duration::from_secs(5));
    assert!(host.terminate().success());
}

#[test]
fn exec_example_round_trips_and_is_restarted() {
    let redis = RedisServer::start();
    component("shout");
    let bot = repo().join("examples/exec/bot.py");
    let project = example("exec", &[("[python3, bot.py", &format!("[python3, {}", bot.display()))]);
    let mut host = Running::start(&project, &redis, &["bot"]);
    // Three messages out, three taskbacks back in on its stdin (it reports them on stderr).
    for i in 0..3 {
        wait_plain(&mut host, &format!("reply {}/3: HELLO NUMBER {i}", i + 1), Duration::from_secs(60));
    }
    // It then exits and is started again, after a backoff.
    wait_plain(&mut host, "program exited (exit status: 0); restarting it", Duration::from_secs(20));
    wait_count(&mut host, "program started", 2, Duration::from_secs(20));
    let mut con = redis.con();
    let data = entries(&mut con, &key("bot", "data"));
    assert!(data.len() >= 3);
    assert_eq!(field(&data[0].1, "via"), Some("exec"), "kwargs: {data:?}");
    assert_eq!(field(&data[0].1, "n"), Some("0"), "numbers become text: {data:?}");
    assert!(host.terminate().success());
}

#[test]
fn exec_skips_bad_lines_and_kills_the_program_at_shutdown() {
    let redis = RedisServer::start();
    component("shout");
    let script = r#"echo 'not json at all'; echo '[1, 2]'; echo '{"text": "fine"}'; exec sleep 600"#;
    let project = Project::new(&format!(
        "services:\n  prog:\n    collector: {{ kind: exec, command: [sh, -c, {script:?}] }}\n    tasks: [ {{ file: shout }} ]\n"
    ));
    let mut host = Running::start(&project, &redis, &["prog"]);
    let mut con = redis.con();
    assert_eq!(wait_len(&mut con, &key("prog", "taskback"), 1, Duration::from_secs(60)), 1);
    wait_plain(&mut host, "line=not json at all", Duration::from_secs(10));
    assert_eq!(count(&host, "program wrote a line that is not a message; skipped"), 2, "{}", host.log_text());
    let data = entries(&mut con, &key("prog", "data"));
    assert_eq!(data.len(), 1, "{data:?}");
    assert_eq!(field(&data[0].1, "text"), Some("fine"));
    // `sleep` ignores its closed stdin: it is killed after the grace period.
    assert!(host.terminate().success(), "{}", host.log_text());
    assert!(plain(&host.log_text()).contains("killing it"), "{}", host.log_text());
}

#[test]
fn a_failing_collector_is_restarted_while_workers_keep_draining() {
    let redis = RedisServer::start();
    component("shout");
    // Hold the port so the http collector cannot bind it.
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    let project = Project::new(&format!(
        "services:\n  hook:\n    collector: {{ kind: http, listen: \"127.0.0.1:{port}\" }}\n    tasks: [ {{ file: shout }} ]\n"
    ));
    let mut host = Running::start(&project, &redis, &["hook"]);
    wait_count(&mut host, "collector failed; restarting it", 2, Duration::from_secs(60));
    assert!(plain(&host.log_text()).contains(&format!("cannot listen on 127.0.0.1:{port}")), "{}", host.log_text());
    // The workers carry on meanwhile.
    let out = run_host(&project, &redis, &["send", "hook", "text=still here", "--wait"], None);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("STILL HERE"));
    // Once the port is free, the next restart succeeds.
    drop(taken);
    host.wait_for_log("http collector listening", Duration::from_secs(60));
    let (status, body) = http(port, "POST", "/?wait=20000", br#"{"text": "back"}"#);
    assert_eq!((status, json(&body)["text"].as_str()), (200, Some("BACK")), "{body}");
    assert!(host.terminate().success());
}
