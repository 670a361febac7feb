//! Host faults are not guest failures: a worker whose process runs out of file descriptors
//! while instantiating spends no attempt, logs the cause once, and answers every message
//! once the descriptors are back.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::{
    Project, RedisServer, Running, add_messages, component, entries, field, host, key, wait_len, xlen,
};

/// The soft and hard `Max open files` of process `pid`.
fn nofile(pid: u32) -> (String, String) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("read limits");
    let line = limits.lines().find(|l| l.starts_with("Max open files")).expect("Max open files");
    let words: Vec<&str> = line.split_whitespace().collect();
    (words[3].to_owned(), words[4].to_owned())
}

fn set_nofile(pid: u32, soft: &str, hard: &str) {
    let status = Command::new("prlimit")
        .arg("--pid")
        .arg(pid.to_string())
        .arg(format!("--nofile={soft}:{hard}"))
        .status()
        .expect("prlimit (util-linux) is installed");
    assert!(status.success(), "prlimit failed");
}

/// `blocked_clients` of `INFO clients`: connections waiting in a blocking command.
fn blocked_clients(con: &mut redis::Connection) -> u64 {
    let info: String = redis::cmd("INFO").arg("clients").query(con).expect("INFO clients");
    info.lines().find_map(|l| l.strip_prefix("blocked_clients:")).and_then(|n| n.trim().parse().ok()).unwrap_or(0)
}

#[test]
fn running_out_of_fds_spends_no_attempt_and_recovers() {
    component("shout");
    let redis = RedisServer::start();
    // One attempt: had a host fault counted against a message, it would be dead at once.
    let project = Project::new(
        "services:\n  shout:\n    tasks: [ { file: shout } ]\n    retry: { max_attempts: 1, backoff_ms: 10 }\n",
    );
    // A cache directory that cannot be created (its parent is a file): the component is
    // compiled now and, not stored, loaded from memory, so its first instance needs a new
    // descriptor (the memfd of its memory image). A compile that is stored is mapped from
    // its file and needs none.
    let scratch = tempfile::tempdir().expect("scratch dir");
    std::fs::write(scratch.path().join("file"), "").expect("write");
    let mut cmd = host(&project, &redis);
    cmd.env("CANNON_CACHE_DIR", scratch.path().join("file").join("cache"))
        .env("CANNON_LOG", "info")
        .env("NO_COLOR", "1");
    let mut running = Running::start_cmd(cmd, &project, &[]);
    running.wait_for_log("ready", Duration::from_secs(60));
    // The reader opens its connection at its first read: until Redis holds that read
    // blocked, lowering the limit would starve the connection instead of the instance.
    let mut con = redis.con();
    let deadline = Instant::now() + Duration::from_secs(30);
    while blocked_clients(&mut con) == 0 {
        assert!(Instant::now() < deadline, "no blocked read within 30s:\n{}", running.log_text());
        std::thread::sleep(Duration::from_millis(20));
    }
    let pid = running.child.id();
    let (soft, hard) = nofile(pid);
    // Raised at start: the soft limit is the hard one.
    assert_eq!(soft, hard, "the soft fd limit was raised to the hard one");

    // No new descriptor can be opened (any new one would be numbered above 3).
    set_nofile(pid, "3", &hard);
    let messages: Vec<_> = (0..20).map(|i| vec![("text", format!("message {i}"))]).collect();
    let ids = add_messages(&mut con, "shout", &messages);
    running.wait_for_log("EMFILE: too many open files", Duration::from_secs(30));
    // Several rounds of backoff while short: nothing answered, nothing dead.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(xlen(&mut con, &key("shout", "taskback")), 0, "{}", running.log_text());
    assert_eq!(xlen(&mut con, &key("shout", "dead")), 0, "{}", running.log_text());

    set_nofile(pid, &soft, &hard);
    let got = wait_len(&mut con, &key("shout", "taskback"), ids.len(), Duration::from_secs(30));
    assert_eq!(got, ids.len(), "{}", running.log_text());
    let taskbacks = entries(&mut con, &key("shout", "taskback"));
    for id in &ids {
        assert!(taskbacks.iter().any(|(_, f)| field(f, "cannon.id") == Some(id.as_str())), "no answer to {id}");
    }
    assert_eq!(xlen(&mut con, &key("shout", "dead")), 0, "{:?}", entries(&mut con, &key("shout", "dead")));
    running.wait_for_log("host resources are back", Duration::from_secs(10));
    let log = running.log_text();
    assert_eq!(log.matches("host fault: the host is short").count(), 1, "logged once per burst:\n{log}");
}
