//! Receipts: a taskback asking for one (`receipt: yes` from a task, `cannon.receipt: yes`
//! as written) makes the collector that performs it add a message with the outcome, which
//! the pipeline handles like any other; a collector's outside input cannot forge one.

use std::time::Duration;

use crate::collectors::{count, http, logged_port, plain, wait_plain};
use crate::support::{Project, RedisServer, Running, component, entries, field, key, run_host, wait_len};

#[test]
fn stdin_answers_ok_once_printed() {
    let redis = RedisServer::start();
    component("receipts");
    let project = Project::new("services:\n  r:\n    collector: { kind: stdin }\n    tasks: [ { file: receipts } ]\n");
    let out = run_host(&project, &redis, &["run", "r"], Some("hello\n"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // The reply, then the pipeline's answer to its receipt (awaited before the host exits).
    assert_eq!(stdout.lines().collect::<Vec<_>>(), ["HELLO", "receipt for hello: ok (printed)"], "{stdout}");
    let mut con = redis.con();
    let data = entries(&mut con, &key("r", "data"));
    assert_eq!(data.len(), 2, "{data:?}");
    let (line_id, receipt) = (&data[0].0, &data[1].1);
    assert_eq!(field(receipt, "cannon.receipt_for"), Some(line_id.as_str()));
    assert_eq!(field(receipt, "cannon.receipt"), Some("ok"));
    assert_eq!(field(receipt, "receipt_ref"), Some("hello"));
    // The taskback carried the host's request, not the task's pair.
    let taskbacks = entries(&mut con, &key("r", "taskback"));
    assert_eq!(field(&taskbacks[0].1, "cannon.receipt"), Some("yes"), "{taskbacks:?}");
    assert_eq!(field(&taskbacks[0].1, "receipt"), None, "{taskbacks:?}");
    // The answer to a receipt asks for none: no third message.
    assert_eq!(field(&taskbacks[1].1, "cannon.receipt"), None, "{taskbacks:?}");
}

/// A program that sends two lines (the second trying to forge a receipt key) and a stray
/// acknowledgement, then acknowledges each taskback asking for a receipt: `ok` for `one`,
/// `error` for anything else; other taskbacks it reports on stderr.
const PROGRAM: &str = r#"
import json, sys
def say(obj):
    print(json.dumps(obj), flush=True)
say({"text": "one"})
say({"text": "two", "cannon.receipt_for": "0-1", "Cannon.Receipt": "ok"})
say({"receipt_for": "9-9", "receipt": "ok"})
for line in sys.stdin:
    tb = json.loads(line)
    if tb.get("cannon.receipt") == "yes":
        ok = tb.get("receipt_ref") == "one"
        say({"receipt_for": tb["cannon.id"], "receipt": "ok" if ok else "failed",
             "detail": "sent" if ok else "refused", "receipt_ref": tb.get("receipt_ref", "")})
    else:
        print("got: " + tb.get("text", ""), file=sys.stderr, flush=True)
"#;

#[test]
fn exec_program_acknowledges_and_cannot_forge() {
    let redis = RedisServer::start();
    component("receipts");
    let project = Project::new(&format!(
        "services:\n  p:\n    collector: {{ kind: exec, command: [python3, -c, {PROGRAM:?}] }}\n    tasks: [ {{ file: receipts }} ]\n"
    ));
    let mut host = Running::start(&project, &redis, &["p"]);
    wait_plain(&mut host, "got: receipt for one: ok (sent)", Duration::from_secs(60));
    // The forged keys were dropped: `two` is an ordinary line whose taskback the program refuses.
    wait_plain(&mut host, "got: receipt for two: error (refused)", Duration::from_secs(30));
    assert_eq!(count(&host, "no receipt outstanding; skipped"), 1, "{}", plain(&host.log_text()));
    let mut con = redis.con();
    let data = entries(&mut con, &key("p", "data"));
    assert_eq!(data.len(), 4, "two lines and two receipts: {data:?}");
    assert_eq!(field(&data[1].1, "text"), Some("two"));
    assert!(data[1].1.iter().all(|(k, _)| !k.to_ascii_lowercase().starts_with("cannon.")), "{data:?}");
    let receipts: Vec<_> = data.iter().filter_map(|(_, f)| field(f, "cannon.receipt")).collect();
    assert_eq!(receipts.len(), 2, "{data:?}");
    assert!(receipts.contains(&"ok") && receipts.contains(&"error"), "{data:?}");
    assert!(host.terminate().success(), "{}", host.log_text());
}

#[test]
fn http_answers_ok_when_a_waiting_request_takes_the_taskback() {
    let redis = RedisServer::start();
    component("receipts");
    let project = Project::new(
        "services:\n  h:\n    collector: { kind: http, listen: \"127.0.0.1:0\" }\n    tasks: [ { file: receipts } ]\n",
    );
    let mut host = Running::start(&project, &redis, &["h"]);
    let port = logged_port(&mut host);
    let (status, body) = http(port, "POST", "/?wait=30000", br#"{"text": "hi"}"#);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(r#""text":"HI""#) && body.contains(r#""cannon.receipt":"yes""#), "{body}");
    let mut con = redis.con();
    wait_len(&mut con, &key("h", "data"), 2, Duration::from_secs(30));
    let data = entries(&mut con, &key("h", "data"));
    let receipt = &data[1].1;
    assert_eq!(field(receipt, "cannon.receipt_for"), Some(data[0].0.as_str()), "{data:?}");
    assert_eq!(field(receipt, "cannon.receipt"), Some("ok"));
    assert_eq!(field(receipt, "cannon.receipt_detail"), Some("delivered to the waiting request"));
    // A body cannot forge a receipt: its receipt keys are dropped.
    let (status, body) = http(port, "POST", "/?wait=30000", br#"{"text": "x", "cannon.receipt_for": "1-0"}"#);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(r#""text":"X""#), "an ordinary line, not a receipt: {body}");
    assert!(host.terminate().success(), "{}", host.log_text());
}
