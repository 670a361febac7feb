//! Robust edges (issues 13 and 12.2): data from producers cannon does not control, clients
//! that stall, defaults that fit together, and writes the broker refuses for good.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use redis::Value;

use crate::collectors::{http, plain, wait_plain};
use crate::support::{Project, RedisServer, Running, component, key, run_host, wait_len};

/// Raw fields of an entry: keys and values as bytes.
type RawFields = Vec<(Vec<u8>, Vec<u8>)>;
/// Entries of a stream: id and raw fields.
type RawEntries = Vec<(String, RawFields)>;

/// Every entry of a stream with its fields as bytes (the harness's `entries` wants UTF-8).
fn raw_entries(con: &mut redis::Connection, key: &str) -> RawEntries {
    let value: Value = redis::cmd("XRANGE").arg(key).arg("-").arg("+").query(con).expect("XRANGE");
    let Value::Array(items) = value else { panic!("XRANGE reply {value:?}") };
    let bytes = |v: &Value| match v {
        Value::BulkString(b) => b.clone(),
        other => panic!("not a bulk string: {other:?}"),
    };
    items
        .into_iter()
        .map(|item| {
            let Value::Array(parts) = item else { panic!("entry {item:?}") };
            let id = String::from_utf8(bytes(&parts[0])).expect("id");
            let Value::Array(flat) = &parts[1] else { panic!("fields {:?}", parts[1]) };
            (id, flat.chunks(2).map(|c| (bytes(&c[0]), bytes(&c[1]))).collect())
        })
        .collect()
}

fn raw_field<'a>(fields: &'a RawFields, name: &str) -> Option<&'a [u8]> {
    fields.iter().rev().find(|(k, _)| k == name.as_bytes()).map(|(_, v)| v.as_slice())
}

fn text_field(fields: &RawFields, name: &str) -> String {
    String::from_utf8_lossy(raw_field(fields, name).unwrap_or_default()).into_owned()
}

/// XADDs one entry of raw byte pairs to a service's data stream; returns its id.
fn xadd_raw(con: &mut redis::Connection, service: &str, stream: &str, fields: &[(&[u8], &[u8])]) -> String {
    let mut cmd = redis::cmd("XADD");
    cmd.arg(key(service, stream)).arg("*");
    for (k, v) in fields {
        cmd.arg(*k).arg(*v);
    }
    cmd.query(con).expect("XADD")
}

/// Waits until the taskback and dead streams of `service` together hold `n` entries.
fn wait_answers(con: &mut redis::Connection, service: &str, n: usize) -> (RawEntries, RawEntries) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let taskbacks = raw_entries(con, &key(service, "taskback"));
        let dead = raw_entries(con, &key(service, "dead"));
        if taskbacks.len() + dead.len() >= n || Instant::now() > deadline {
            return (taskbacks, dead);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Issue 13.5: under the default limits, a message of exactly `limits.message_kb` is
/// transformed and answered (output_kb used to be a quarter of message_kb).
#[test]
fn defaults_answer_a_message_of_the_largest_accepted_size() {
    component("shout");
    let redis = RedisServer::start();
    let project = Project::new("services:\n  shout:\n    tasks: [ { file: shout } ]\n");
    let mut host = Running::start(&project, &redis, &["shout"]);
    host.wait_for_log("workers started", Duration::from_secs(60));
    let mut con = redis.con();
    // Each field costs its key and value plus the per-entry overhead (32 bytes).
    let text = "a".repeat(256 * 1024 - "text".len() - cannon_host::fields::ENTRY_OVERHEAD);
    let id = xadd_raw(&mut con, "shout", "data", &[(b"text", text.as_bytes())]);
    let (taskbacks, dead) = wait_answers(&mut con, "shout", 1);
    assert!(
        dead.is_empty(),
        "dead-lettered: {}",
        dead.iter().map(|d| text_field(&d.1, "cannon.error")).collect::<String>()
    );
    assert_eq!(taskbacks.len(), 1);
    assert_eq!(text_field(&taskbacks[0].1, "cannon.id"), id);
    assert_eq!(raw_field(&taskbacks[0].1, "text"), Some(text.to_uppercase().as_bytes()));
}

/// Issue 13.1: an entry whose key or value is not UTF-8 is never run on an altered copy:
/// it is dead-lettered unrun, with the field and byte offset named, logged, shown by
/// `dead`, and the dead letter holds the producer's bytes. A taskback that is not UTF-8
/// is skipped by the collector with an error in the log.
#[test]
fn entries_that_are_not_utf8_are_dead_lettered_with_their_bytes() {
    component("shout");
    let redis = RedisServer::start();
    let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("port").port();
    let project = Project::new(&format!(
        "services:\n  shout:\n    collector: {{ kind: http, listen: \"127.0.0.1:{port}\" }}\n    tasks: [ {{ file: shout }} ]\n"
    ));
    let mut host = Running::start(&project, &redis, &["shout"]);
    host.wait_for_log("http collector listening", Duration::from_secs(60));
    let mut con = redis.con();
    let bad_value = xadd_raw(&mut con, "shout", "data", &[(b"user", b"ann"), (b"text", b"caf\xff\xfe!")]);
    let bad_key = xadd_raw(&mut con, "shout", "data", &[(b"te\xc3xt", b"hello")]);
    let good = xadd_raw(&mut con, "shout", "data", &[(b"text", "café".as_bytes())]);
    let (taskbacks, dead) = wait_answers(&mut con, "shout", 3);
    assert_eq!(taskbacks.len(), 1, "only the good one is answered");
    assert_eq!(text_field(&taskbacks[0].1, "cannon.id"), good);
    assert_eq!(text_field(&taskbacks[0].1, "text"), "CAFÉ");
    assert_eq!(dead.len(), 2);
    let letter = |id: &str| dead.iter().find(|d| text_field(&d.1, "cannon.id") == id).expect("a dead letter").1.clone();
    let first = letter(&bad_value);
    assert_eq!(raw_field(&first, "text"), Some(&b"caf\xff\xfe!"[..]), "the producer's bytes survive");
    assert_eq!(raw_field(&first, "user"), Some(&b"ann"[..]));
    assert_eq!(text_field(&first, "cannon.attempts"), "0", "never run");
    let error = text_field(&first, "cannon.error");
    assert_eq!(error, r#"message is not UTF-8: value of field 2 ("text") is not UTF-8 at byte 3; not run"#);
    let second = letter(&bad_key);
    // The host's pairs come first, then the message's, byte for byte.
    assert_eq!(second[4..], [(b"te\xc3xt".to_vec(), b"hello".to_vec())], "keys too");
    assert!(text_field(&second, "cannon.error").contains(r#"key of field 1 ("te\\xc3xt") is not UTF-8 at byte 2"#));
    wait_plain(&mut host, "message is not UTF-8", Duration::from_secs(10));
    let out = run_host(&project, &redis, &["dead", "shout"], None);
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{shown}");
    assert!(shown.contains("value of field 2") && shown.contains(r"caf\\xff\\xfe!"), "{shown}");

    // A taskback that is not UTF-8 (written by anyone) is skipped, never handed on altered,
    // and the collector carries on.
    xadd_raw(&mut con, "shout", "taskback", &[(b"cannon.id", b"1-1"), (b"text", b"\x80")]);
    wait_plain(&mut host, "taskback is not UTF-8", Duration::from_secs(20));
    let (status, body) = http(port, "POST", "/?wait=20000", br#"{"text": "still here"}"#);
    assert_eq!((status, body.contains("STILL HERE")), (200, true), "{body}");
}

/// Issue 13 "done when": a third-party producer writing awkward entries straight into the
/// data stream gets exactly one taskback or one dead letter per entry, each dead letter
/// with a reason, and the host keeps answering.
#[test]
fn awkward_entries_from_a_third_party_get_one_answer_each() {
    component("shout");
    let redis = RedisServer::start();
    let project = Project::new("services:\n  shout:\n    tasks: [ { file: shout } ]\n    retry: { max_attempts: 1 }\n");
    let mut host = Running::start(&project, &redis, &["shout"]);
    host.wait_for_log("workers started", Duration::from_secs(60));
    let mut con = redis.con();
    let long_name = "n".repeat(300);
    let big = "b".repeat(64 * 1024);
    let many: Vec<(String, String)> = (0..10_000).map(|i| (format!("f{i}"), i.to_string())).collect();
    let mut ids = Vec::new();
    let odd: [&[u8]; 9] = [
        b"",
        b" ",
        b"a b",
        b"line\nbreak",
        "ключ".as_bytes(),
        "🙂".as_bytes(),
        b"$%^&*(){}",
        b"\x00nul",
        long_name.as_bytes(),
    ];
    for name in odd {
        ids.push(xadd_raw(&mut con, "shout", "data", &[(name, b"v"), (b"text", b"odd name")]));
    }
    ids.push(xadd_raw(&mut con, "shout", "data", &[(b"text", b"")]));
    ids.push(xadd_raw(&mut con, "shout", "data", &[(b"", b"")]));
    ids.push(xadd_raw(&mut con, "shout", "data", &[(b"other", b"")]));
    let mut pairs: Vec<(&[u8], &[u8])> = many.iter().map(|(k, v)| (k.as_bytes(), v.as_bytes())).collect();
    pairs.push((b"text", b"many"));
    ids.push(xadd_raw(&mut con, "shout", "data", &pairs));
    ids.push(xadd_raw(&mut con, "shout", "data", &[(b"text", big.as_bytes())]));
    ids.push(xadd_raw(&mut con, "shout", "data", &[(b"text", b"\xff\xff")]));
    ids.push(xadd_raw(&mut con, "shout", "data", &[(b"\xfe", b"x"), (b"text", b"y")]));

    let (taskbacks, dead) = wait_answers(&mut con, "shout", ids.len());
    std::thread::sleep(Duration::from_millis(500)); // anything extra would show up now
    let (taskbacks_after, dead_after) = wait_answers(&mut con, "shout", ids.len());
    assert_eq!((taskbacks.len(), dead.len()), (taskbacks_after.len(), dead_after.len()));
    for id in &ids {
        let answered = taskbacks.iter().filter(|t| text_field(&t.1, "cannon.id") == *id).count();
        let buried: Vec<_> = dead.iter().filter(|d| text_field(&d.1, "cannon.id") == *id).collect();
        assert_eq!(answered + buried.len(), 1, "entry {id}: {answered} taskbacks, {} dead letters", buried.len());
        for letter in buried {
            assert!(!text_field(&letter.1, "cannon.error").is_empty(), "entry {id}: a dead letter without a reason");
        }
    }
    let reasons: Vec<String> = dead.iter().map(|d| text_field(&d.1, "cannon.error")).collect();
    assert!(reasons.iter().any(|r| r.contains("message has no field \"text\"")), "{reasons:?}");
    assert!(reasons.iter().filter(|r| r.contains("is not UTF-8 at byte")).count() == 2, "{reasons:?}");
    let big_answer = taskbacks.iter().find(|t| text_field(&t.1, "cannon.id") == ids[13]).expect("the 64 KB one");
    assert_eq!(raw_field(&big_answer.1, "text").map(<[u8]>::len), Some(64 * 1024));

    // And the host keeps answering.
    let last = xadd_raw(&mut con, "shout", "data", &[(b"text", b"after")]);
    let (taskbacks, _) = wait_answers(&mut con, "shout", ids.len() + 1);
    assert!(taskbacks.iter().any(|t| text_field(&t.1, "cannon.id") == last), "{}", plain(&host.log_text()));
}

/// Issue 12.2: a taskback larger than Redis accepts (`proto-max-bulk-len`) is refused for
/// good. The message is dead-lettered with the broker's error instead of being retried
/// forever, the same service's other messages and another service keep answering.
#[test]
fn a_taskback_the_broker_refuses_is_dead_lettered_and_nothing_stalls() {
    component("bigresult");
    component("shout");
    let redis = RedisServer::start_with(&["--proto-max-bulk-len", "1mb"]);
    let project = Project::new(
        "\
services:
  big:
    tasks:
      - file: bigresult
        conf: { kwargs: { entries: \"1\", value_bytes: \"2000000\" } }
    limits: { output_kb: 4096 }
  small:
    tasks: [ { file: shout } ]
",
    );
    let mut host = Running::start(&project, &redis, &["big", "small"]);
    host.wait_for_log("workers started", Duration::from_secs(60));
    let mut con = redis.con();
    let big: Vec<String> =
        (0..3).map(|i| xadd_raw(&mut con, "big", "data", &[(b"n", i.to_string().as_bytes())])).collect();
    let small: Vec<String> =
        (0..5).map(|i| xadd_raw(&mut con, "small", "data", &[(b"text", format!("m{i}").as_bytes())])).collect();
    assert_eq!(wait_len(&mut con, &key("small", "taskback"), small.len(), Duration::from_secs(60)), small.len());
    assert_eq!(
        wait_len(&mut con, &key("big", "dead"), big.len(), Duration::from_secs(120)),
        big.len(),
        "{}",
        plain(&host.log_text())
    );
    let dead = raw_entries(&mut con, &key("big", "dead"));
    for (i, id) in big.iter().enumerate() {
        let letter = &dead.iter().find(|d| text_field(&d.1, "cannon.id") == *id).expect("dead letter").1;
        assert_eq!(text_field(letter, "n"), i.to_string(), "the message's own fields");
        let error = text_field(letter, "cannon.error");
        assert!(error.starts_with("the broker refused this message's taskbacks: broker redis://"), "{error}");
    }
    assert_eq!(crate::support::xlen(&mut con, &key("big", "taskback")), 0);
    assert_eq!(crate::support::pending(&mut con, "big"), 0, "nothing left pending");
    // Logged once per refused message, not once per retry, and its end once written.
    crate::reliability::wait_until("the refused writes' end lines", Duration::from_secs(30), || {
        plain(&host.log_text()).matches("wrote a finished message held up by failed writes").count() >= big.len()
    });
    let log = plain(&host.log_text());
    assert_eq!(log.matches("cannot write a finished message; retrying").count(), big.len(), "{log}");
    // Both services still answer.
    xadd_raw(&mut con, "small", "data", &[(b"text", b"after")]);
    assert_eq!(
        wait_len(&mut con, &key("small", "taskback"), small.len() + 1, Duration::from_secs(60)),
        small.len() + 1
    );
    xadd_raw(&mut con, "big", "data", &[(b"n", b"9")]);
    assert_eq!(wait_len(&mut con, &key("big", "dead"), big.len() + 1, Duration::from_secs(60)), big.len() + 1);
}

/// One raw HTTP/1.1 exchange on an open stream: what the server sends until it closes (or
/// `limit` passes). Returns the bytes and whether the server closed the connection.
fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> (String, bool) {
    stream.set_read_timeout(Some(limit)).expect("timeout");
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return (String::from_utf8_lossy(&got).into_owned(), true),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                return (String::from_utf8_lossy(&got).into_owned(), true);
            }
            Err(_) => return (String::from_utf8_lossy(&got).into_owned(), false),
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("port").port()
}

/// Issue 13.3: slow headers (a byte a second), a body shorter than its `Content-Length`,
/// silent and idle keep-alive connections are all cut off by the collector's timeouts;
/// with the connection cap reached, `/healthz` still answers and the rest get `503`.
#[test]
fn http_collector_times_out_slow_stalled_and_idle_clients_and_caps_connections() {
    component("shout");
    let redis = RedisServer::start();
    let (quick, capped) = (free_port(), free_port());
    let project = Project::new(&format!(
        "\
services:
  quick:
    collector: {{ kind: http, listen: \"127.0.0.1:{quick}\", header_timeout_ms: 1500, body_timeout_ms: 1500, idle_timeout_ms: 1000 }}
    tasks: [ {{ file: shout }} ]
  capped:
    collector: {{ kind: http, listen: \"127.0.0.1:{capped}\", max_connections: 2, header_timeout_ms: 60000, idle_timeout_ms: 60000 }}
    tasks: [ {{ file: shout }} ]
"
    ));
    let mut host = Running::start(&project, &redis, &["quick", "capped"]);
    host.wait_for_log("max_connections=2", Duration::from_secs(60));
    wait_plain(&mut host, "max_connections=512", Duration::from_secs(60));
    let connect = |port: u16| TcpStream::connect(("127.0.0.1", port)).expect("connect");
    // Generous bounds: each is many times the configured timeout, and a connection the
    // server never closed would hit them.
    let within = Duration::from_secs(20);

    // Headers one byte a second: closed without an answer once header_timeout_ms passed.
    let mut slow = connect(quick);
    slow.set_nonblocking(false).expect("blocking");
    let head = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}";
    let started = Instant::now();
    let mut cut_off = false;
    for byte in head.iter() {
        if slow.write_all(&[*byte]).is_err() {
            cut_off = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(1000));
        if started.elapsed() > within {
            break;
        }
        slow.set_read_timeout(Some(Duration::from_millis(1))).expect("timeout");
        let mut probe = [0u8; 1];
        if matches!(slow.read(&mut probe), Ok(0)) {
            cut_off = true;
            break;
        }
    }
    assert!(cut_off, "a client sending its headers a byte a second was never cut off");

    // A body shorter than its Content-Length: 408, then closed.
    let mut stalled = connect(quick);
    stalled.write_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"text\":").expect("write");
    let (answer, closed) = read_until_closed(&mut stalled, within);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("body_timeout_ms"), "{answer}");
    assert!(closed, "still open after the 408");

    // Silent from the start: closed.
    let mut silent = connect(quick);
    let (answer, closed) = read_until_closed(&mut silent, within);
    assert!(closed && answer.is_empty(), "{answer:?}");

    // Idle after a request on a keep-alive connection: closed.
    let mut idle = connect(quick);
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").expect("write");
    let (answer, closed) = read_until_closed(&mut idle, within);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(closed, "an idle keep-alive connection stayed open");

    // The cap: two silent connections hold both slots (its timeouts are long).
    let held: Vec<TcpStream> = (0..2).map(|_| connect(capped)).collect();
    std::thread::sleep(Duration::from_millis(300));
    let (status, body) = http(capped, "GET", "/healthz", b"");
    assert_eq!(status, 200, "{body}");
    let (status, body) = http(capped, "POST", "/?wait=20000", br#"{"text": "over the cap"}"#);
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("max_connections = 2"), "{body}");
    drop(held);
    std::thread::sleep(Duration::from_millis(300));
    let (status, body) = http(capped, "POST", "/?wait=20000", br#"{"text": "room again"}"#);
    assert_eq!((status, body.contains("ROOM AGAIN")), (200, true), "{body}");
    // The collector with short timeouts still serves well-behaved clients.
    let (status, body) = http(quick, "POST", "/?wait=20000", br#"{"text": "fine"}"#);
    assert_eq!((status, body.contains("FINE")), (200, true), "{body}");
}
