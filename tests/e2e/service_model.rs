//! The service model through real workers and a real Redis: torch (quoting, help, unknown
//! commands, permissions), result overwrite order, the map form of `tasks:`, params and
//! `${ENV}`, extra taskbacks through `taskback.send`, a failing task; and the `torch` and
//! `ls` commands.

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::{
    Project, RedisServer, Running, add_messages, component, entries, field, host, key, repo, run_host, wait_len,
};

type Fields = Vec<(String, String)>;

/// Adds `messages` to `service`, waits for `n` taskbacks and returns them by `cannon.id`
/// (several per id when tasks sent extra ones), plus the message ids in order.
fn exchange(
    redis: &RedisServer,
    host: &Running,
    service: &str,
    messages: &[Vec<(&str, String)>],
    n: usize,
) -> (Vec<String>, HashMap<String, Vec<Fields>>) {
    let mut con = redis.con();
    let ids = add_messages(&mut con, service, messages);
    let got = wait_len(&mut con, &key(service, "taskback"), n, Duration::from_secs(60));
    assert_eq!(got, n, "taskbacks of {service}:\n{}", host.log_text());
    let mut by_id: HashMap<String, Vec<Fields>> = HashMap::new();
    for (_, fields) in entries(&mut con, &key(service, "taskback")) {
        let id = field(&fields, "cannon.id").expect("cannon.id").to_owned();
        by_id.entry(id).or_default().push(fields);
    }
    (ids, by_id)
}

const PARROT: &str = "\
groups:
  admins: [alice]
services:
  parrot:
    shell:
      file: parrot
      permissions: { admin: [admins] }
    tasks:
      - torch: { in_key: cmd, out_key: reply, user_key: from }
";

#[test]
fn torch_splits_helps_and_refuses() {
    let redis = RedisServer::start();
    component("parrot");
    let project = Project::new(PARROT);
    let mut host = Running::start(&project, &redis, &["parrot"]);
    host.wait_for_log("ready", Duration::from_secs(60));
    let lines = [
        r#"echo "hello world" 'it''s' a\ b "say \"hi\"""#,
        "help",
        "--help",
        "",
        "help echo",
        "echo --help",
        "nope 1 2",
        "echo 'unbalanced",
        "admin",
        "echo -3 -- --x",
    ];
    let mut messages: Vec<Vec<(&str, String)>> =
        lines.iter().map(|l| vec![("from", "bob".to_owned()), ("cmd", (*l).to_owned())]).collect();
    messages.push(vec![("from", "alice".to_owned()), ("cmd", "admin".to_owned())]);
    let (ids, by_id) = exchange(&redis, &host, "parrot", &messages, messages.len());
    let reply = |i: usize| -> String {
        let fields = &by_id[&ids[i]][0];
        field(fields, "reply").unwrap_or_else(|| panic!("no reply in {fields:?}")).to_owned()
    };

    assert_eq!(reply(0), r#"[hello world] [its] [a b] [say "hi"]"#);
    for (i, line) in lines.iter().enumerate().take(4).skip(1) {
        let help = reply(i);
        assert!(help.starts_with("commands:"), "{line:?} -> {help}");
        assert!(help.contains("echo    repeat each argument in brackets"), "{help}");
        assert!(help.contains("whoami  say who sent the message"), "{help}");
    }
    assert_eq!(reply(4), "echo: repeat each argument in brackets\nusage: echo WORD...");
    assert_eq!(reply(5), reply(4));
    assert!(reply(6).starts_with("unknown command \"nope\".\ncommands:"), "{}", reply(6));
    assert_eq!(reply(7), "cannot read that command: a ' quote is not closed");
    assert_eq!(reply(8), "permission denied: `admin` is for admins only, and \"bob\" is not a member");
    assert_eq!(reply(9), "[-3] [--x]");
    // The sender is read from `user_key` (here `from`): alice is in `admins`.
    assert_eq!(reply(10), "admin done");
    assert!(host.terminate().success());
}

#[test]
fn later_results_overwrite_earlier_ones_in_place() {
    let redis = RedisServer::start();
    component("echo");
    component("shout");
    let project = Project::new(
        "\
services:
  chain:
    tasks:
      - file: echo
        conf: { kwargs: { a: first, b: first, text: from-echo } }
      - file: echo
        conf: { kwargs: { b: second, c: \"@text\" } }
      - file: echo
        conf: { kwargs: { c: third } }
  mapped:                       # botcannon's map form; order is the file's
    tasks:
      echo: { conf: { kwargs: { text: from-echo, x: \"1\" } } }
      shout: {}
  mapped-reversed:
    tasks:
      shout: {}
      echo: { conf: { kwargs: { text: from-echo, x: \"1\" } } }
",
    );
    let host = Running::start(&project, &redis, &[]);
    let (ids, by_id) = exchange(&redis, &host, "chain", &[vec![("text", "hi".to_owned())]], 1);
    let taskback = &by_id[&ids[0]][0];
    let pairs: Vec<(&str, &str)> = taskback.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    // The host's id first; then message fields, then results in the order they first
    // appeared, later values winning in place.
    assert_eq!(
        pairs,
        [("cannon.id", ids[0].as_str()), ("text", "from-echo"), ("a", "first"), ("b", "second"), ("c", "third")]
    );

    let (ids, by_id) = exchange(&redis, &host, "mapped", &[vec![("text", "hi".to_owned())]], 1);
    assert_eq!(field(&by_id[&ids[0]][0], "text"), Some("HI"), "shout runs after echo");
    assert_eq!(field(&by_id[&ids[0]][0], "x"), Some("1"));
    let (ids, by_id) = exchange(&redis, &host, "mapped-reversed", &[vec![("text", "hi".to_owned())]], 1);
    assert_eq!(field(&by_id[&ids[0]][0], "text"), Some("from-echo"), "echo runs after shout");
}

#[test]
fn params_are_reused_and_env_fills_secrets() {
    let redis = RedisServer::start();
    component("echo");
    let project = Project::new(
        "\
params:
  shared: { token: \"${CANNON_TEST_TOKEN}\", region: eu }
services:
  one:
    tasks: [ { file: echo, conf: { key: shared } } ]
  two:
    tasks:
      - file: echo
        conf: { key: shared }
      - file: echo
        conf: { kwargs: { region: \"${CANNON_TEST_REGION}-1\" } }
",
    );
    let mut cmd = host(&project, &redis);
    cmd.env("CANNON_TEST_TOKEN", "s3cret").env("CANNON_TEST_REGION", "us");
    let host_run = Running::start_cmd(cmd, &project, &[]);
    let (ids, by_id) = exchange(&redis, &host_run, "one", &[vec![("text", "x".to_owned())]], 1);
    assert_eq!(field(&by_id[&ids[0]][0], "token"), Some("s3cret"));
    assert_eq!(field(&by_id[&ids[0]][0], "region"), Some("eu"));
    let (ids, by_id) = exchange(&redis, &host_run, "two", &[vec![("text", "x".to_owned())]], 1);
    assert_eq!(field(&by_id[&ids[0]][0], "token"), Some("s3cret"));
    assert_eq!(field(&by_id[&ids[0]][0], "region"), Some("us-1"));
    drop(host_run);

    // Without the variable, nothing starts and the error names it.
    let out = run_host(&project, &redis, &["run"], None);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cannon-compose.yml:3:") && stderr.contains("`CANNON_TEST_TOKEN` is not set"), "{stderr}");
}

#[test]
fn tasks_send_extra_taskbacks_within_bounds() {
    let redis = RedisServer::start();
    component("notify");
    let project = Project::new(
        "\
services:
  notify:
    tasks:
      - file: notify
        allow: [taskback]
        conf: { kwargs: { users: \"bob, carol\", text: ping } }
  flood:
    tasks:
      - file: notify
        allow: [taskback]
        conf: { kwargs: { users: \"a,b,c\" } }
    limits: { taskbacks: 2 }
    retry: { max_attempts: 1 }
",
    );
    let host = Running::start(&project, &redis, &[]);
    let (ids, by_id) = exchange(&redis, &host, "notify", &[vec![("user", "ann".to_owned())]], 3);
    let taskbacks = &by_id[&ids[0]];
    assert_eq!(taskbacks.len(), 3, "{taskbacks:?}");
    assert_eq!(field(&taskbacks[0], "notified"), Some("2"));
    assert_eq!(field(&taskbacks[0], "user"), Some("ann"), "the main taskback carries the message");
    let to: Vec<_> = taskbacks[1..].iter().map(|f| (field(f, "to"), field(f, "text"))).collect();
    assert_eq!(to, [(Some("bob"), Some("ping")), (Some("carol"), Some("ping"))]);

    // Over limits.taskbacks: the send is refused and the task fails with that reason.
    let mut con = redis.con();
    add_messages(&mut con, "flood", &[vec![("text", "x".to_owned())]]);
    assert_eq!(wait_len(&mut con, &key("flood", "dead"), 1, Duration::from_secs(30)), 1, "{}", host.log_text());
    let (_, dead) = &entries(&mut con, &key("flood", "dead"))[0];
    let error = field(dead, "cannon.error").unwrap_or_default();
    assert!(error.contains("taskback.send to c: taskback limit reached: at most 2 per call"), "{error}");
    assert_eq!(entries(&mut con, &key("flood", "taskback")).len(), 0, "a failed message sends no taskback");
}

#[test]
fn a_failing_task_stops_the_pipeline() {
    let redis = RedisServer::start();
    component("fail");
    component("echo");
    let project = Project::new(
        "\
services:
  breaks:
    tasks:
      - file: echo
        conf: { kwargs: { before: ran } }
      - file: fail
        conf: { kwargs: { error: \"the printer is on fire\" } }
      - file: echo
        conf: { kwargs: { after: ran } }
    retry: { max_attempts: 2, backoff_ms: 10 }
",
    );
    let host = Running::start(&project, &redis, &["breaks"]);
    let mut con = redis.con();
    let ids = add_messages(&mut con, "breaks", &[vec![("text", "x".to_owned())]]);
    assert_eq!(wait_len(&mut con, &key("breaks", "dead"), 1, Duration::from_secs(30)), 1, "{}", host.log_text());
    let (_, dead) = &entries(&mut con, &key("breaks", "dead"))[0];
    assert_eq!(field(dead, "cannon.id"), Some(ids[0].as_str()));
    assert_eq!(field(dead, "cannon.attempts"), Some("2"));
    let error = crate::support::unversioned(field(dead, "cannon.error").unwrap_or_default());
    assert!(error.contains("fail: the printer is on fire"), "{dead:?}");
    assert_eq!(entries(&mut con, &key("breaks", "taskback")).len(), 0);
}

/// `cannon-host ARGS` against the repository's own compose file, with no broker at all.
fn repo_host(args: &[&str], stdin: Option<&str>) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cannon-host"));
    cmd.current_dir(repo())
        .args(args)
        .env("CANNON_CACHE_DIR", crate::support::cache_dir())
        .env("CANNON_BROKER", "redis://127.0.0.1:1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn cannon-host");
    if let (Some(mut pipe), Some(text)) = (child.stdin.take(), stdin) {
        std::io::Write::write_all(&mut pipe, text.as_bytes()).expect("write stdin");
    }
    child.wait_with_output().expect("wait cannon-host")
}

#[test]
fn torch_command_runs_the_shell_without_a_broker() {
    component("dice");
    let out = repo_host(&["torch", "chat", "roll 2d6"], None);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let rolls: Vec<u32> =
        stdout.split(" (total").next().unwrap_or("").split(' ').filter_map(|n| n.parse().ok()).collect();
    assert_eq!(rolls.len(), 2, "{stdout:?}");
    assert!(rolls.iter().all(|r| (1..=6).contains(r)), "{stdout:?}");
    assert!(stdout.trim_end().ends_with(&format!("(total {})", rolls.iter().sum::<u32>())), "{stdout:?}");

    // Words are joined like ssh does; a REPL reads one command per line.
    let out = repo_host(&["torch", "chat", "roll", "--", "3d4"], None);
    assert!(String::from_utf8_lossy(&out.stdout).contains("(total "), "{out:?}");
    let out = repo_host(&["torch", "chat"], Some("help\n\nroll --help\nbogus\n"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(stdout.starts_with("commands:\n  roll  roll dice"), "{stdout}");
    assert!(stdout.contains("usage: roll NdM"), "{stdout}");
    assert!(stdout.contains("unknown command \"bogus\""), "{stdout}");

    let out = repo_host(&["torch", "shout", "hi"], None);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("service \"shout\" has no shell"), "{out:?}");
    let out = repo_host(&["torch", "nosuch", "hi"], None);
    assert!(String::from_utf8_lossy(&out.stderr).contains("no service \"nosuch\""), "{out:?}");
}

#[test]
fn torch_command_checks_permissions_and_quoting() {
    let redis = RedisServer::start();
    component("parrot");
    let project = Project::new(
        "groups: { admins: [alice] }\nservices:\n  parrot:\n    collector: { kind: stdin, conf: { kwargs: { user: kim } } }\n    shell: { file: parrot, permissions: { admin: [admins] } }\n    tasks: [ torch ]\n",
    );
    let run = |args: &[&str]| {
        let out = run_host(&project, &redis, args, None);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim_end().to_owned()
    };
    assert_eq!(run(&["torch", "parrot", "admin", "--user", "bob"]), run(&["torch", "parrot", "admin", "--user=bob"]));
    assert!(run(&["torch", "parrot", "admin", "--user", "bob"]).starts_with("permission denied"));
    assert_eq!(run(&["torch", "parrot", "admin", "--user", "alice"]), "admin done");
    assert_eq!(run(&["torch", "parrot", "whoami"]), "kim", "default sender: the collector's `user` kwarg");
    assert_eq!(run(&["torch", "parrot", r#"echo "a b" c"#]), "[a b] [c]");
    assert_eq!(run(&["torch", "parrot", "whoami", "--user", "zed"]), "zed");
}

#[test]
fn ls_lists_collectors_shells_and_tasks() {
    let out = repo_host(&["ls"], None);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    let lines: Vec<Vec<&str>> = stdout.lines().map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(lines[0], ["SERVICE", "COLLECTOR", "SHELL", "TASKS"]);
    assert!(lines.contains(&vec!["chat", "stdin", "dice", "torch(text->text)"]), "{stdout}");
    assert!(lines.contains(&vec!["shout", "-", "-", "shout"]), "{stdout}");
    let out = repo_host(&["-f", "examples/relay/cannon-compose.yml", "ls"], None);
    assert!(String::from_utf8_lossy(&out.stdout).contains("stream from words:taskback"), "{out:?}");
}
