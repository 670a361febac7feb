//! Terminal and log injection (`guests/hostile/inject`): a guest's replies, errors and log
//! lines, and a message's own fields, carry OSC 52, CSI 2J, a title change, a C1 CSI, bidi
//! overrides and newlines forging log records. Every way they reach an operator (the stdin
//! collector, `torch`, `send --wait`, `dead`, `watch`, the worker's log) prints them
//! escaped: no raw control, C1 or bidi character, one log record per line.

use std::process::Stdio;
use std::time::{Duration, Instant};

use super::{plain_host, start};
use crate::support::{Project, RedisServer, component, run_host};

/// What the guest's hostile texts hold, escaped the way the host shows them.
const SHOWN: &str =
    "\\u{1b}]52;c;cHduZWQ=\\u{7}\\u{1b}[2J\\u{1b}]0;pwned\\u{7}\\u{9b}31m\\u{202e}desrever\\u{2066}\\r\\u{7f}";
/// The same, as the guest wrote it.
const RAW: &str = "\u{1b}]52;c;cHduZWQ=\u{7}\u{1b}[2J\u{1b}]0;pwned\u{7}\u{9b}31m\u{202e}desrever\u{2066}\r\u{7f}";

/// Fails when `text` holds a character that must not reach a terminal raw (only `\n` may,
/// and only where `newlines` allows).
fn assert_clean(what: &str, text: &str) {
    for c in text.chars() {
        let bad = match u32::from(c) {
            0x0a => false,
            0x00..=0x1f | 0x7f..=0x9f => true,
            0x061c | 0x200e | 0x200f | 0x202a..=0x202e | 0x2066..=0x2069 | 0x2028 | 0x2029 => true,
            _ => false,
        };
        assert!(!bad, "U+{:04X} reached {what} raw:\n{text}", u32::from(c));
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).expect("output is UTF-8")
}

/// No log line was forged: every line that looks like a record comes from the host.
fn assert_no_forged_records(what: &str, log: &str) {
    assert!(!log.lines().any(|l| l.starts_with("2030-01-01")), "a guest forged a record in {what}:\n{log}");
}

const COMPOSE: &str = "\
services:
  chat:
    collector: { kind: stdin, conf: { kwargs: { user: me } } }
    shell: { file: inject }
    tasks: [ torch ]
  inject:
    shell: { file: inject }
    tasks: [ torch ]
    retry: { max_attempts: 1, backoff_ms: 10 }
";

#[test]
fn guest_text_reaches_no_terminal_raw() {
    component("inject");
    let redis = RedisServer::start();
    let project = Project::new(COMPOSE);

    // The stdin collector: a chat reply keeps its newline, nothing else.
    let out = run_host(&project, &redis, &["run", "chat"], Some("reply\nlog\n"));
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains(&format!("inject-reply line one {SHOWN}\ninject-reply line two\n")), "{stdout}");
    assert!(stdout.contains("logged\n"), "{stdout}");
    assert_clean("the stdin collector's replies", &stdout);
    assert!(stderr.contains(&format!("inject-log {SHOWN}\\n2030-01-01")), "{stderr}");
    assert!(stderr.contains(&format!("inject-stderr {SHOWN}")), "{stderr}");
    assert_clean("the host log", &stderr);
    assert_no_forged_records("the host log", &stderr);

    // `cannon-host torch`: one command, a failing one, and the prompt.
    let out = run_host(&project, &redis, &["torch", "inject", "reply"], None);
    assert!(out.status.success());
    assert_eq!(text(&out.stdout), format!("inject-reply line one {SHOWN}\ninject-reply line two\n"));
    let out = run_host(&project, &redis, &["torch", "inject", "fail"], None);
    let stderr = text(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains(&format!("error: torch: inject-fail {SHOWN}\\n2030-01-01")), "{stderr}");
    assert_clean("torch's errors", &stderr);
    let out = run_host(&project, &redis, &["torch", "inject"], Some("reply\nfail\nlog\nno\u{1b}[2Jsuch\n"));
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(stdout.contains("unknown command \"no\\u{1b}[2Jsuch\""), "{stdout}");
    assert_clean("torch's replies", &stdout);
    assert_clean("torch's errors", &stderr);
    assert_no_forged_records("torch's errors", &stderr);

    // A worker: the failure is logged on one line, escaped.
    let mut host = start(&project, &redis, &["inject"]);
    let send = |args: &[&str]| {
        let mut all = vec!["send", "inject"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--wait", "--timeout-ms", "20000"]);
        run_host(&project, &redis, &all, None)
    };
    let out = send(&["text=reply"]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_clean("send --wait", &stdout);
    // JSON escapes, undone by any JSON reader: the guest's text whole.
    let taskback: serde_json::Value = serde_json::from_str(&stdout).expect("send --wait prints JSON");
    assert_eq!(taskback["text"], format!("inject-reply line one {RAW}\ninject-reply line two"));
    assert!(stdout.contains("\\u009b31m\\u202edesrever\\u2066\\r\\u007f"), "{stdout}");

    let field = format!("extra=inject-field {RAW}");
    let out = send(&["text=fail", &field]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let unversioned = crate::support::unversioned(&stderr);
    assert!(
        unversioned.contains(&format!("failed after 1 attempts: torch (inject): inject-fail {SHOWN}\\n2030-01-01")),
        "{stderr}"
    );
    assert_clean("send --wait errors", &stderr);
    assert_clean("send --wait", &stdout);
    let letter: serde_json::Value = serde_json::from_str(&stdout).expect("JSON");
    assert_eq!(letter["extra"], format!("inject-field {RAW}"));

    // `dead`, as text and as JSON.
    let out = run_host(&project, &redis, &["dead", "inject"], None);
    let stdout = text(&out.stdout);
    let unversioned = crate::support::unversioned(&stdout);
    assert!(unversioned.contains(&format!("error: torch (inject): inject-fail {SHOWN}\\n2030-01-01")), "{stdout}");
    assert!(stdout.contains("inject-field \\u001b]52;c;"), "{stdout}");
    assert_clean("dead", &stdout);
    let out = run_host(&project, &redis, &["dead", "inject", "--json"], None);
    let stdout = text(&out.stdout);
    assert_clean("dead --json", &stdout);
    let letters: serde_json::Value = serde_json::from_str(&stdout).expect("JSON");
    assert_eq!(letters[0]["fields"]["extra"], format!("inject-field {RAW}"));

    // `watch --from-start`: one line per entry, until interrupted.
    let watch_log = project.path("watch.out");
    let mut watch = plain_host(&project, &redis)
        .args(["watch", "inject", "--from-start"])
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&watch_log).expect("watch.out"))
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn watch");
    let deadline = Instant::now() + Duration::from_secs(30);
    let watched = loop {
        let seen = std::fs::read_to_string(&watch_log).unwrap_or_default();
        if seen.lines().any(|l| l.starts_with("dead ")) && seen.contains("inject-reply") || Instant::now() > deadline {
            break seen;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let _ = watch.kill();
    let _ = watch.wait();
    assert!(watched.lines().any(|l| l.starts_with("dead ") && l.contains("inject-field \\u001b]52;c;")), "{watched}");
    assert_clean("watch", &watched);

    // The worker's own log: the guest's error on the record of the failure, escaped.
    assert!(host.terminate().success());
    let log = host.log_text();
    let failure = log.lines().find(|l| l.contains("failed for the last time")).unwrap_or_else(|| panic!("{log}"));
    assert!(failure.contains(&format!("inject-fail {SHOWN}\\n2030-01-01")), "{failure}");
    assert_clean("the worker's log", &log);
    assert_no_forged_records("the worker's log", &log);
}
