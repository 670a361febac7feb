//! Hostile guests (`guests/hostile/*`) in a real `cannon-host run`: each is contained (its
//! message fails with a specific error in the dead-letter stream, or the component is
//! refused at load) while the well-behaved `shout` service in the same process answers
//! every one of its messages.
//!
//! The hostile services run with small limits and one attempt, so each case takes at most
//! a few hundred milliseconds.

mod command_table;
mod terminal;

use std::time::Duration;

use crate::support::{
    Project, RedisServer, Running, add_messages, component, entries, field, host, key, run_host, wait_len, xlen,
};

/// The suite's limits: small, so runaway guests are stopped quickly.
const LIMITS: &str = "{ timeout_ms: 200, memory_mb: 16, output_kb: 16, log_kb: 4, taskbacks: 4 }";
/// Messages the well-behaved service gets while the hostile ones run.
const SHOUT_MESSAGES: usize = 40;

/// A hostile service entry: one task, the suite's limits (or `limits`), one attempt.
fn service(name: &str, task: &str, limits: Option<&str>) -> String {
    format!(
        "  {name}:\n    tasks: [ {task} ]\n    limits: {}\n    retry: {{ max_attempts: 1, backoff_ms: 10 }}\n    workers: {{ concurrency: 4 }}\n",
        limits.unwrap_or(LIMITS)
    )
}

/// A compose body: `shout` plus `hostile` (service entries).
fn compose(hostile: &[String]) -> String {
    component("shout");
    format!("services:\n  shout:\n    tasks: [ {{ file: shout }} ]\n{}", hostile.concat())
}

/// Adds `SHOUT_MESSAGES` messages to `shout`; returns their ids.
fn send_shout(con: &mut redis::Connection) -> Vec<String> {
    let messages: Vec<_> = (0..SHOUT_MESSAGES).map(|i| vec![("text", format!("calm message {i}"))]).collect();
    add_messages(con, "shout", &messages)
}

/// Every `shout` message got its taskback, in upper case; nothing went to its dead letters.
fn assert_shout_served(con: &mut redis::Connection, ids: &[String], host: &Running) {
    let got = wait_len(con, &key("shout", "taskback"), ids.len(), Duration::from_secs(60));
    assert_eq!(got, ids.len(), "the well-behaved service was not served:\n{}", host.log_text());
    let taskbacks = entries(con, &key("shout", "taskback"));
    for id in ids {
        let (_, fields) = taskbacks
            .iter()
            .find(|(_, f)| field(f, "cannon.id") == Some(id.as_str()))
            .unwrap_or_else(|| panic!("no taskback for shout message {id}"));
        assert!(field(fields, "text").is_some_and(|t| t.starts_with("CALM MESSAGE ")), "{fields:?}");
    }
    assert_eq!(xlen(con, &key("shout", "dead")), 0, "{:?}", entries(con, &key("shout", "dead")));
}

/// Waits for `n` dead letters of `service`; returns `(message id, error, attempts)` of each.
fn dead(con: &mut redis::Connection, service: &str, n: usize, host: &Running) -> Vec<(String, String, String)> {
    let got = wait_len(con, &key(service, "dead"), n, Duration::from_secs(30));
    assert_eq!(got, n, "dead letters of {service}:\n{}", host.log_text());
    entries(con, &key(service, "dead"))
        .into_iter()
        .map(|(_, f)| {
            let get = |name: &str| field(&f, name).unwrap_or_default().to_owned();
            // The step's version tag (`spin@0123456789ab`) is the deploy tests' business.
            (get("cannon.id"), crate::support::unversioned(&get("cannon.error")), get("cannon.attempts"))
        })
        .collect()
}

/// The dead-letter error of the one message `service` got.
fn only_error(con: &mut redis::Connection, service: &str, host: &Running) -> String {
    let letters = dead(con, service, 1, host);
    assert_eq!(letters[0].2, "1", "one attempt only: {letters:?}");
    letters[0].1.clone()
}

/// `cannon-host` for `project`, with a plain-text log (no colours) so tests can match it.
fn plain_host(project: &Project, redis: &RedisServer) -> std::process::Command {
    let mut cmd = host(project, redis);
    cmd.env("NO_COLOR", "1");
    cmd
}

/// A running `cannon-host run ARGS...`, ready.
fn start(project: &Project, redis: &RedisServer, args: &[&str]) -> Running {
    let mut running = Running::start_cmd(plain_host(project, redis), project, args);
    running.wait_for_log("ready", Duration::from_secs(120));
    running
}

#[test]
fn runaway_guests_fail_only_their_own_message() {
    for name in ["spin", "hog", "recurse", "crash"] {
        component(name);
    }
    let redis = RedisServer::start();
    let project = Project::new(&compose(&[
        service("spin", "{ file: spin }", None),
        service("sleeper", "{ file: spin, conf: { kwargs: { how: sleep } } }", None),
        service("fuel", "{ file: spin }", Some("{ timeout_ms: 20000, fuel: 5000000 }")),
        service("hog", "{ file: hog }", None),
        service("recurse", "{ file: recurse }", None),
        service("shallow", "{ file: recurse, conf: { kwargs: { depth: \"100\" } } }", None),
        service("panic", "{ file: crash }", None),
        service("unreachable", "{ file: crash, conf: { kwargs: { how: unreachable } } }", None),
    ]));
    let mut host = start(&project, &redis, &[]);
    let mut con = redis.con();
    let one = vec![vec![("text", "go".to_owned())]];
    let mut hostile_ids = Vec::new();
    for name in ["spin", "sleeper", "fuel", "hog", "recurse", "shallow", "panic", "unreachable"] {
        hostile_ids.extend(add_messages(&mut con, name, &one));
    }
    let shout_ids = send_shout(&mut con);

    assert_eq!(only_error(&mut con, "spin", &host), "spin: deadline exceeded after 200 ms");
    // Blocked in a host function (wasi:io/poll) rather than spinning in Wasm.
    assert_eq!(only_error(&mut con, "sleeper", &host), "spin: deadline exceeded after 200 ms");
    assert_eq!(only_error(&mut con, "fuel", &host), "spin: fuel exhausted (5000000 units)");
    assert_eq!(only_error(&mut con, "hog", &host), "hog: memory limit 16 MiB exceeded");
    let overflow = only_error(&mut con, "recurse", &host);
    // Whichever overflows first: Wasmtime's native stack for Wasm frames, or the guest's
    // shadow stack in linear memory (first in memory, so overflowing it traps too).
    assert!(
        overflow.starts_with("recurse: trap: call stack exhausted")
            || overflow.starts_with("recurse: trap: out of bounds memory access"),
        "{overflow}"
    );
    for name in ["panic", "unreachable"] {
        let error = only_error(&mut con, name, &host);
        assert!(error.starts_with("crash: trap: wasm `unreachable` instruction executed"), "{error}");
    }
    // Ordinary recursion is not mistaken for an attack.
    wait_len(&mut con, &key("shallow", "taskback"), 1, Duration::from_secs(10));
    let shallow = entries(&mut con, &key("shallow", "taskback"));
    assert_eq!(field(&shallow[0].1, "depth"), Some("100"), "{}", host.log_text());
    assert_shout_served(&mut con, &shout_ids, &host);

    let log = host.log_text();
    // The panic message went to the guest's stderr, which is in the log.
    assert!(log.contains("hostile guest panicked on purpose"), "{log}");
    // Accounting: each call's cost is logged with its message id, failures included.
    for id in shout_ids.iter().chain(&hostile_ids) {
        let line = log
            .lines()
            .find(|l| l.contains("call finished") && l.contains(&format!("msg_id={id}")))
            .unwrap_or_else(|| panic!("no accounting line for {id}:\n{log}"));
        for part in ["wall_us=", "memory_peak=", "fuel="] {
            assert!(line.contains(part), "{part} missing: {line}");
        }
    }
    assert!(log.lines().any(|l| l.contains("call finished") && l.contains("outcome=deadline")), "{log}");
    assert!(host.terminate().success(), "{}", host.log_text());
}

#[test]
fn floods_are_cut_at_their_limits() {
    for name in ["bigresult", "flood", "tbflood"] {
        component(name);
    }
    let redis = RedisServer::start();
    let project = Project::new(&compose(&[
        service("many", "{ file: bigresult, conf: { kwargs: { entries: \"100\" } } }", None),
        service("alias", "{ file: bigresult, conf: { kwargs: { how: alias } } }", None),
        service("tbalias", "{ file: tbflood, allow: [taskback], conf: { kwargs: { how: alias } } }", None),
        service("bigerror", "{ file: bigresult, conf: { kwargs: { how: error, value_bytes: \"100000\" } } }", None),
        service(
            "flood",
            "{ file: flood, conf: { kwargs: { lines: \"20000\" } } }",
            Some("{ timeout_ms: 20000, log_kb: 4 }"),
        ),
        service("tbflood", "{ file: tbflood, allow: [taskback] }", None),
        service("bigmsg", "{ file: shout }", Some("{ message_kb: 1 }")),
    ]));
    let mut host = start(&project, &redis, &[]);
    let mut con = redis.con();
    let one = vec![vec![("text", "go".to_owned())]];
    for name in ["many", "alias", "tbalias", "bigerror", "flood", "tbflood"] {
        add_messages(&mut con, name, &one);
    }
    add_messages(&mut con, "bigmsg", &[vec![("text", "x".repeat(2000))]]);
    let shout_ids = send_shout(&mut con);

    // 100 pairs of 1 KiB: an honest map over limits.output_kb (102890 bytes plus 32 per pair).
    let many = only_error(&mut con, "many", &host);
    assert_eq!(many, "bigresult: output limit exceeded: results of 106090 bytes exceed limits.output_kb = 16");
    // 100000 pairs aliasing one 4 MiB string: refused before the host copies any of it.
    let transfer = "output limit exceeded: the guest passed more than 1048576 bytes to the host at once";
    assert_eq!(only_error(&mut con, "alias", &host), format!("bigresult: {transfer}"));
    assert_eq!(only_error(&mut con, "tbalias", &host), format!("tbflood: {transfer}"));
    // A 100000-byte error text is cut before it reaches the dead letters.
    let bigerror = only_error(&mut con, "bigerror", &host);
    assert!(bigerror.len() < 2100, "{} bytes", bigerror.len());
    assert!(bigerror.ends_with("E... (97952 more bytes cut)"), "{bigerror}");
    // Taskback flood: the fifth send is refused; the guest fails with the host's error and
    // none of its queued taskbacks is delivered.
    assert_eq!(
        only_error(&mut con, "tbflood", &host),
        "tbflood: taskback.send refused after 4 taskbacks: taskback limit reached: at most 4 per call (limits.taskbacks)"
    );
    assert_eq!(xlen(&mut con, &key("tbflood", "taskback")), 0);
    // A message over limits.message_kb never reaches the component: the worker buries it
    // at once, with no attempt made.
    let letters = dead(&mut con, "bigmsg", 1, &host);
    assert_eq!(letters[0].2, "0", "{letters:?}");
    assert_eq!(letters[0].1, r#"message of 2036 bytes exceeds limits.message_kb = 1 of service "bigmsg"; not run"#);

    // Log flood: the message succeeds, its output is cut at limits.log_kb.
    assert_eq!(wait_len(&mut con, &key("flood", "taskback"), 1, Duration::from_secs(30)), 1, "{}", host.log_text());
    let flood = entries(&mut con, &key("flood", "taskback"));
    assert_eq!(field(&flood[0].1, "written"), Some(&*(2 + 5 * 20_000).to_string()));
    assert_shout_served(&mut con, &shout_ids, &host);
    assert!(host.terminate().success());

    let log = host.log_text();
    let guest_lines: Vec<&str> = log.lines().filter(|l| l.contains("flood-")).collect();
    // 4 KiB at 32 bytes of overhead per line plus the text: at most 128 lines, and some.
    assert!((2..=128).contains(&guest_lines.len()), "{} guest lines in the host log", guest_lines.len());
    // Each guest line, and the note of what was dropped, names its service, message and component.
    let id = field(&flood[0].1, "cannon.id").expect("the taskback names its message");
    let context = format!("service=flood id={id} component=flood");
    assert!(guest_lines.iter().all(|l| l.contains(&context)), "{context} missing in {guest_lines:#?}");
    let dropped = log.lines().find(|l| l.contains("was dropped")).expect("what was dropped is logged");
    assert!(dropped.contains(&context) && dropped.contains("dropped_lines="), "{dropped}");
    // Forged records stay inside one escaped line; no terminal escape gets through.
    assert!(log.contains("flood-forged\\n2030-01-01T00:00:00Z ERROR"), "{log}");
    assert!(!log.lines().any(|l| l.starts_with("2030-01-01")), "a guest forged a host log line");
    assert!(log.contains("flood-forged \\u{1b}[2J\\u{1b}[31mterminal escape\\r"), "{log}");
    assert!(!log.contains('\u{1b}'), "a terminal escape reached the host log");
    // 100000 lines of 70+ bytes were attempted; the host's log stayed small.
    assert!(log.len() < 256 * 1024, "host log is {} bytes", log.len());
}

/// A `files:` grant: `data.txt`, and two symlinks leading out of it, next to a secret.
fn grant(project: &Project) -> std::path::PathBuf {
    let root = project.path("grant");
    let dir = root.join("files");
    std::fs::create_dir_all(&dir).expect("grant dir");
    std::fs::write(dir.join("data.txt"), "public data").expect("data.txt");
    std::fs::write(root.join("secret.txt"), "secret next to the grant").expect("secret.txt");
    std::os::unix::fs::symlink("/etc/passwd", dir.join("passwd")).expect("symlink");
    std::os::unix::fs::symlink("..", dir.join("up")).expect("symlink");
    dir
}

#[test]
fn capabilities_are_denied_by_default() {
    for name in ["snoop", "socket", "kvscope"] {
        component(name);
    }
    let redis = RedisServer::start();
    let project = Project::new("");
    let dir = grant(&project);
    let outside = project.path("written-by-snoop.txt");
    let body = compose(&[
        service("snoop", "{ file: snoop }", None),
        service("files", &format!("{{ file: snoop, files: {} }}", dir.display()), None),
        service("socket", "{ file: socket }", None),
        service("kvscope", "{ file: kvscope, allow: [kv] }", None),
    ]);
    std::fs::write(&project.compose, format!("app_dir: {}\n{body}", crate::support::app_dir().display()))
        .expect("compose");
    let secret = "s3cr3t-from-the-host-environment";
    let mut cmd = plain_host(&project, &redis);
    cmd.env("CANNON_SNOOP_SECRET", secret);
    let mut host = Running::start_cmd(cmd, &project, &[]);
    host.wait_for_log("ready", Duration::from_secs(120));
    let mut con = redis.con();
    let attempts = |tries: &[&str]| tries.iter().map(|t| vec![("try", (*t).to_owned())]).collect::<Vec<_>>();
    let no_grant = ["read:/etc/passwd", "list:/", &format!("write:{}", outside.display()), "env"];
    add_messages(&mut con, "snoop", &attempts(&no_grant));
    let in_grant = [
        "read:/data.txt",
        "read:/../secret.txt",
        "read:/passwd",
        "read:/up/secret.txt",
        "read:/etc/passwd",
        "write:/data.txt",
        "write:/new.txt",
    ];
    add_messages(&mut con, "files", &attempts(&in_grant));
    add_messages(&mut con, "socket", &[vec![("port", redis.port.to_string())]]);
    add_messages(&mut con, "kvscope", &[vec![("text", "go".to_owned())]]);
    let shout_ids = send_shout(&mut con);

    let check = |letters: Vec<(String, String, String)>, tries: &[&str]| {
        for attempt in tries {
            let prefix = format!("snoop: denied: {attempt}: ");
            assert!(letters.iter().any(|(_, e, _)| e.starts_with(&prefix)), "no {prefix:?} in {letters:#?}");
        }
    };
    let letters = dead(&mut con, "snoop", no_grant.len(), &host);
    check(letters, &no_grant);
    // The grant works for what it grants...
    wait_len(&mut con, &key("files", "taskback"), 1, Duration::from_secs(10));
    let granted = entries(&mut con, &key("files", "taskback"));
    assert_eq!(granted.len(), 1, "{granted:?}");
    assert_eq!(field(&granted[0].1, "got"), Some("public data"));
    // ...and nothing else: no way out through `..` or symlinks, no writes.
    let letters = dead(&mut con, "files", in_grant.len() - 1, &host);
    check(letters, &in_grant[1..]);
    assert_eq!(std::fs::read_to_string(dir.join("data.txt")).expect("data.txt"), "public data");
    assert!(!dir.join("new.txt").exists() && !outside.exists(), "a guest wrote a file on the host");

    let socket = only_error(&mut con, "socket", &host);
    assert!(socket.starts_with("socket: denied: tcp socket: "), "{socket}");
    assert!(socket.contains("udp socket: ") && socket.contains("dns: "), "{socket}");
    let kv = only_error(&mut con, "kvscope", &host);
    assert!(kv.starts_with("kvscope: all kv calls outside the scope were refused: get: out-of-scope"), "{kv}");
    for op in ["set", "increment", "delete", "list-keys"] {
        assert!(kv.contains(&format!("{op}: out-of-scope")), "{kv}");
    }
    assert_shout_served(&mut con, &shout_ids, &host);

    // The host's environment reached no guest.
    for service in ["snoop", "files", "socket", "kvscope"] {
        for stream in ["taskback", "dead"] {
            let all = format!("{:?}", entries(&mut con, &key(service, stream)));
            assert!(!all.contains(secret) && !all.contains("BREACH"), "{service}:{stream}: {all}");
        }
    }
    assert!(host.terminate().success());
}

#[test]
fn ungranted_and_unknown_imports_are_refused_at_load() {
    for name in ["tbflood", "kvscope", "fetch"] {
        component(name);
    }
    let redis = RedisServer::start();
    let project = Project::new(&compose(&[
        service("sneaky_taskback", "{ file: tbflood }", None),
        service("sneaky_kv", "{ file: kvscope }", None),
        service("fetcher", "{ file: fetch }", None),
    ]));
    let out = run_host(&project, &redis, &["check"], None);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    for expected in [
        "service \"sneaky_taskback\": component \"tbflood\" imports `cannon:platform/taskback@0.1.0`, which is not granted; add `allow: [taskback]`",
        "service \"sneaky_kv\": component \"kvscope\" imports `cannon:platform/kv@0.1.0`, which is not granted; add `allow: [kv]`",
        "service \"fetcher\": component \"fetch\" imports `wasi:http/",
    ] {
        assert!(stderr.contains(expected), "{expected:?} not in:\n{stderr}");
    }
    // wasi:http is provided, but only to a component granted `allow: [{http: [...]}]`.
    assert!(stderr.contains("which is not granted; add `allow: [{http: [\"https://HOST\"]}]`"), "{stderr}");
    assert!(stderr.contains("3 problems"), "{stderr}");

    // A worker for the good service serves on; one for a refused component never starts.
    let mut good = start(&project, &redis, &["shout"]);
    let mut con = redis.con();
    let shout_ids = send_shout(&mut con);
    for (service, import) in [
        ("sneaky_taskback", "`cannon:platform/taskback@0.1.0`, which is not granted"),
        ("sneaky_kv", "`cannon:platform/kv@0.1.0`, which is not granted"),
        ("fetcher", "`wasi:http/"),
    ] {
        let out = run_host(&project, &redis, &["run", service], None);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{service} started:\n{stderr}");
        assert!(stderr.contains(import), "{import} not in:\n{stderr}");
    }
    assert_shout_served(&mut con, &shout_ids, &good);
    assert!(good.terminate().success());

    // With the grants, the same components load.
    let granted = Project::new(&compose(&[
        service("tb", "{ file: tbflood, allow: [taskback] }", None),
        service("kv", "{ file: kvscope, allow: [kv, taskback] }", None),
    ]));
    let out = run_host(&granted, &redis, &["check"], None);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}
