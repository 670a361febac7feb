//! `cannon-host check`: the real binary on valid files (exit 0 and a summary) and broken
//! ones (exit 1, every problem with `file:line`).

use std::path::Path;
use std::process::{Command, Output};

use crate::support::{Project, cache_dir, component, repo};

/// `cannon-host -f FILE check` from `dir`, with the fixture environment of the loader tests.
fn check(dir: &Path, file: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cannon-host"))
        .current_dir(dir)
        .arg("-f")
        .arg(file)
        .arg("check")
        .env("CANNON_CACHE_DIR", cache_dir())
        .env("T", "250")
        .env("HOST", "127.0.0.1")
        .output()
        .expect("run cannon-host check")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn the_root_compose_file_and_every_example_pass() {
    component("dice");
    component("shout");
    component("echo");
    let out = check(&repo(), Path::new("cannon-compose.yml"));
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}{}", stdout, text(&out.stderr));
    assert!(stdout.starts_with("cannon-compose.yml: 2 services OK"), "{stdout}");
    assert!(stdout.contains("  chat: collector stdin, shell dice, tasks [torch]"), "{stdout}");
    for example in ["chat", "webhook", "ticker", "relay", "exec"] {
        let file = format!("examples/{example}/cannon-compose.yml");
        let out = check(&repo(), Path::new(&file));
        assert!(out.status.success(), "{file}: {}{}", text(&out.stdout), text(&out.stderr));
        assert!(text(&out.stdout).contains(" OK"), "{file}");
    }
}

#[test]
fn broken_files_fail_with_every_problem_at_file_line() {
    let dir = repo().join("tests/compose/broken");
    let mut fixtures: Vec<_> = std::fs::read_dir(&dir)
        .expect("fixture dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yml"))
        .collect();
    fixtures.sort();
    assert!(fixtures.len() >= 20);
    for fixture in fixtures {
        let shown = fixture.strip_prefix(repo()).expect("inside the repo").to_path_buf();
        let expected = std::fs::read_to_string(fixture.with_extension("expected")).expect(".expected");
        let out = check(&repo(), &shown);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{}: {stderr}", shown.display());
        // The loader's exact text (see config::tests_fixtures), then the count.
        assert!(stderr.starts_with(&expected), "{}:\nexpected:\n{expected}\ngot:\n{stderr}", shown.display());
        let n = expected.lines().count();
        let total = format!("{n} problem{} in {}", if n == 1 { "" } else { "s" }, shown.display());
        assert!(stderr.contains(&total), "{}: {stderr}", shown.display());
        for line in expected.lines() {
            assert!(line.starts_with(&format!("{}:", shown.display())), "no file:line in {line:?}");
        }
    }
}

#[test]
fn components_schedules_and_programs_are_checked_too() {
    component("shout");
    component("dice");
    component("notify");
    component("mute");
    let project = Project::new(
        "\
services:
  wrong-world:
    shell: { file: shout }
    tasks:
      - torch
      - file: dice
  no-grant:
    tasks:
      - file: notify
  never:
    collector: { kind: tick, cron: \"0 0 31 2 *\" }
    tasks: [ { file: shout } ]
  missing-program:
    collector: { kind: exec, command: [no-such-program-anywhere, --flag] }
    tasks: [ { file: shout } ]
  mute:
    shell: { file: mute }
    tasks: [ torch ]
",
    );
    let out = check(project.dir.path(), &project.compose);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let file = project.compose.display().to_string();
    // The problems, without the log lines of what the guests printed while being checked.
    let lines: Vec<&str> = stderr.lines().filter(|l| l.starts_with(&file) || l.contains(" problems in ")).collect();
    assert_eq!(lines.len(), 7, "{stderr}");
    let expect = |i: usize, line: usize, words: &[&str]| {
        let got = lines[i];
        assert!(got.starts_with(&format!("{file}:{line}: ")), "line {i}: {got}");
        for word in words {
            assert!(got.contains(word), "{word:?} not in {got}");
        }
    };
    expect(0, 4, &["service \"wrong-world\"", "shout", "shell"]);
    expect(1, 7, &["service \"wrong-world\"", "dice", "task"]);
    expect(2, 10, &["service \"no-grant\"", "taskback"]);
    expect(3, 12, &["service \"never\"", "`0 0 31 2 *` never fires"]);
    expect(4, 15, &["service \"missing-program\"", "`no-such-program-anywhere` not found in PATH"]);
    expect(5, 18, &["service \"mute\"", "shell \"mute\" failed to list its commands", "unreachable"]);
    assert_eq!(lines[6], format!("6 problems in {file}"));
}

/// Issue 13.4: a 4 MB file whose 4 MB scalar is aliased 2,000 times (8 GB expanded) is
/// refused at the alias that passes the expansion budget (32 MiB, more than 4 x the file:
/// the 8th copy), with its line and column, instead of allocating gigabytes and aborting.
#[test]
fn an_alias_bomb_is_refused_at_the_alias_that_exceeds_the_budget() {
    let big = "x".repeat(4_000_000);
    let aliases = vec!["*big"; 2000].join(", ");
    let project = Project::new(&format!(
        "big: &big \"{big}\"\nbomb: [{aliases}]\nservices:\n  s:\n    collector: {{ kind: stdin }}\n    tasks: [ {{ path: x }} ]\n"
    ));
    let out = check(project.dir.path(), &project.compose);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    // Line 3 (after the `app_dir:` line Project writes), the 8th alias: `bomb: [` is 7
    // characters and each `*big, ` 6 more.
    let file = project.compose.display().to_string();
    let at = format!("{file}:3:{}: document too large: this alias expands the scalars to more than", 8 + 7 * 6);
    assert!(stderr.starts_with(&at), "expected {at:?}, got:\n{}", &stderr[..stderr.len().min(2000)]);
    assert!(stderr.contains("4 times the file's size"), "{stderr}");
}
