//! Hostile command tables (`guests/hostile/badtable`): refused at load by `check`, `run` and
//! `torch` with the entry named and shown safely; a table at the limits is served, and every
//! reply torch writes from it stays within the shell's `limits.output_kb`.

use std::time::Duration;

use super::{assert_shout_served, compose, plain_host, send_shout, start};
use crate::support::{Project, RedisServer, Running, add_messages, component, entries, field, key, run_host, wait_len};

/// `(how, what the refusal says about the entry)`.
const ABSURD: [(&str, &str); 9] = [
    (
        "wide",
        "command 2 of 2 (\"wwwwwwwwwwwwwwwwwwwwwwwwwwwwwwwwwwwwwwwwwwwwwwwwwwwwwwwwwwwwwwww...\"): name of 70000 bytes, over 64",
    ),
    ("many", "5000 commands listed, more than the 256 a shell may list"),
    ("escape", "command 2 of 2 (\"title\\u{1b}]0;pwned\\u{7}\"): the name holds a control or bidi character"),
    ("bidi", "command 2 of 2 (\"evil\\u{202e}txt.exe\"): the name holds a control or bidi character"),
    ("space", "command 2 of 2 (\"two words\"): the name holds whitespace (a command is one word)"),
    ("empty", "command 2 of 2 (\"\"): the name is empty"),
    ("duplicate", "command 2 of 2 (\"ok\"): the same name as command 1"),
    ("summary", "command 2 of 2 (\"long\"): summary of 100000 bytes, over 256"),
    ("usage", "command 2 of 2 (\"clear\"): the usage holds a control or bidi character other than a newline"),
];

/// A torch service over `badtable` with `how`.
fn table_service(name: &str, how: &str, output_kb: u32) -> String {
    format!(
        "  {name}:\n    shell: {{ file: badtable, conf: {{ kwargs: {{ how: {how} }} }} }}\n    tasks: [ torch ]\n    limits: {{ output_kb: {output_kb} }}\n    retry: {{ max_attempts: 1 }}\n"
    )
}

fn assert_no_escapes(what: &str, text: &str) {
    assert!(!text.contains(['\u{1b}', '\u{7}', '\u{202e}']), "a raw escape reached {what}: {text:?}");
}

#[test]
fn absurd_command_tables_are_refused_at_load() {
    component("badtable");
    let redis = RedisServer::start();
    let services: Vec<String> = ABSURD.iter().map(|(how, _)| table_service(&format!("t_{how}"), how, 16)).collect();
    let project = Project::new(&compose(&services));

    let out = run_host(&project, &redis, &["check"], None);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    for (how, entry) in ABSURD {
        let expected = format!(
            "service \"t_{how}\": shell \"badtable\" failed to list its commands: command table refused: {entry}"
        );
        assert!(stderr.lines().any(|l| l.ends_with(&expected)), "{expected:?} not in:\n{stderr}");
    }
    assert!(stderr.contains("9 problems"), "{stderr}");
    assert_no_escapes("check", &stderr);

    // `run` refuses each such service with the same words; a worker for the good service
    // in the same file serves on meanwhile.
    let mut good = start(&project, &redis, &["shout"]);
    let mut con = redis.con();
    let shout_ids = send_shout(&mut con);
    for (how, entry) in [ABSURD[0], ABSURD[2], ABSURD[6]] {
        let out = run_host(&project, &redis, &["run", &format!("t_{how}")], None);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "t_{how} started:\n{stderr}");
        assert!(
            stderr.contains("shell \"badtable\" failed to list its commands") && stderr.contains(entry),
            "{stderr}"
        );
        assert_no_escapes("run", &stderr);
        // `cannon-host torch` loads the shell the same way.
        let out = run_host(&project, &redis, &["torch", &format!("t_{how}"), "help"], None);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && stderr.contains(entry), "{stderr}");
        assert_no_escapes("torch", &stderr);
    }
    assert_shout_served(&mut con, &shout_ids, &good);
    assert!(good.terminate().success());
}

#[test]
fn torch_replies_from_a_table_at_the_limits_fit_output_kb() {
    component("badtable");
    let redis = RedisServer::start();
    let project = Project::new(&compose(&[table_service("limits", "limits", 4)]));
    let budget = 4 * 1024;

    // `cannon-host torch`: help, an unknown command, usage.
    let out = run_host(
        &project,
        &redis,
        &["torch", "limits"],
        Some(&format!("help\n{} --x\nhelp {:x>64}\n", "b".repeat(5000), 0)),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let help_end = "`help COMMAND` shows how to use one.\n";
    let replies: Vec<&str> = stdout.split_inclusive(help_end).collect();
    assert!(replies.len() >= 2, "{stdout}");
    assert!(replies[0].starts_with("commands:\n") && replies[0].len() <= budget + 1, "{} bytes", replies[0].len());
    assert!(replies[0].contains(" more\n"), "{}", replies[0]);
    assert!(replies[1].starts_with("unknown command \"bbbb") && replies[1].len() <= budget + 1, "{}", replies[1]);
    assert!(stdout.contains(&format!("{:x>64}: sss", 0)), "usage of the first command");

    // Through a worker: each reply within the budget, nothing left pending.
    let mut host = Running::start_cmd(plain_host(&project, &redis), &project, &["limits"]);
    host.wait_for_log("ready", Duration::from_secs(120));
    let mut con = redis.con();
    let lines = ["help".to_owned(), "x".repeat(3000), String::new(), format!("help {:x>64}", 1)];
    let ids = add_messages(&mut con, "limits", &lines.iter().map(|l| vec![("text", l.clone())]).collect::<Vec<_>>());
    assert_eq!(
        wait_len(&mut con, &key("limits", "taskback"), ids.len(), Duration::from_secs(30)),
        ids.len(),
        "{}",
        host.log_text()
    );
    for (_, fields) in entries(&mut con, &key("limits", "taskback")) {
        let text = field(&fields, "text").expect("text");
        assert!(text.len() <= budget, "a reply of {} bytes: {text}", text.len());
    }
    assert_eq!(crate::support::pending(&mut con, "limits"), 0);
    assert!(host.terminate().success());
}
