//! examples/remember: an errbot-style memory that survives a host restart, on both brokers.

use std::time::Duration;

use super::{reply, say};
use crate::collectors::example;
use crate::conformance::Backend;
use crate::support::{Project, RedisServer, Running, component};

/// examples/remember/cannon-compose.yml as shipped, without its stdin collector (the test
/// sends chat lines with `cannon-host send`; end of standard input would stop the host).
fn project() -> Project {
    component("remember");
    example("remember", &[("    collector: { kind: stdin, conf: { kwargs: { server: local } } }\n", "")])
}

fn start(backend: &Backend, project: &Project) -> Running {
    let mut host = Running::start_cmd(backend.host(project), project, &[]);
    host.wait_for_log("ready", Duration::from_secs(60));
    host
}

fn remember_survives_a_restart(backend: &Backend, project: &Project) {
    let mut host = start(backend, project);
    let say_ = |user: &str, text: &str| reply(backend, project, "remember", user, text);

    assert_eq!(say_("alice", ".remember meeting is tomorrow"), "ok, I'll remember that meeting is tomorrow");
    assert_eq!(say_("bob", ".remember lunch is at noon"), "ok, I'll remember that lunch is at noon");
    assert_eq!(say_("alice", ".remember the plan is to ship it"), "ok, I'll remember that the plan is to ship it");
    assert_eq!(say_("bob", ".recall meeting"), "meeting is tomorrow (said alice)");
    assert_eq!(
        say_("bob", ".recall nothing"),
        "I don't remember anything about nothing (to teach me: remember nothing is ...)"
    );
    // Ordinary chat, punctuation and lines that only look like commands get no reply.
    for line in ["just chatting about the meeting", "...", ". meeting", ".5 pm?"] {
        assert!(say(backend, project, "remember", "bob", line, 1500).is_none(), "{line:?} got a reply");
    }
    // The original's habits: `.remember KEY` recalls, `.rem` is short for `.remember`.
    assert_eq!(say_("bob", ".remember meeting"), "meeting is tomorrow (said alice)");
    assert_eq!(say_("bob", ".rem tea is green"), "ok, I'll remember that tea is green");
    assert_eq!(say_("bob", ".forget tea"), "ok, I forgot tea");

    // Memories belong to a chat server: another server does not see them.
    let other =
        backend.run(project, &["send", "remember", "server=elsewhere", "user=bob", "text=.recall meeting", "--wait"]);
    let other: serde_json::Value = serde_json::from_slice(&other.stdout).expect("a reply");
    assert_eq!(other["text"], "I don't remember anything about meeting (to teach me: remember meeting is ...)");

    assert!(host.terminate().success(), "{}", host.log_text());
    let mut host = start(backend, project);

    assert_eq!(say_("carol", ".recall meeting"), "meeting is tomorrow (said alice)");
    assert_eq!(
        say_("carol", ".remembered"),
        "I remember 3 things:\n- lunch is at noon\n- meeting is tomorrow\n- the plan is to ship it"
    );
    assert_eq!(say_("carol", ".leaderboard"), "leaderboard:\n1. alice: 2 things\n2. bob: 2 things");
    // Replacing what someone else stored needs --force.
    assert_eq!(
        say_("bob", ".remember meeting is today"),
        "alice already told me meeting is tomorrow; to replace it: remember --force meeting is today"
    );
    assert_eq!(say_("bob", ".remember --force meeting is today"), "ok, meeting is now today (it was tomorrow)");
    assert_eq!(say_("carol", ".leaderboard"), "leaderboard:\n1. bob: 3 things\n2. alice: 2 things");
    // Recalls are counted, across the restart: meeting 3 times (one by `.remember meeting`).
    assert_eq!(say_("carol", ".popular"), "most recalled:\n1. meeting: 3 times");
    assert_eq!(say_("carol", ".forget meeting"), "ok, I forgot meeting");
    assert!(say_("carol", ".recall meeting").starts_with("I don't remember anything about meeting"));
    assert!(host.terminate().success(), "{}", host.log_text());
}

#[test]
fn remember_survives_a_restart_with_redis() {
    let project = project();
    remember_survives_a_restart(&Backend::Redis(RedisServer::start()), &project);
}

#[test]
fn remember_survives_a_restart_embedded() {
    let project = project();
    remember_survives_a_restart(&Backend::embedded(&project), &project);
}

/// `cannon-host torch remember LINE`: the shell run from the command line uses the service's
/// kv scope on the configured broker, so it shares memories with the running service both ways.
fn torch_shares_the_service_kv(backend: impl FnOnce(&Project) -> Backend) {
    component("remember");
    // A tick once an hour instead of stdin: it keeps the host running and gives `cannon-host
    // torch` the kwargs (`server: test`) a chat message of `say` carries.
    let tick = "    collector: { kind: tick, every: 1h, conf: { kwargs: { server: test } } }\n";
    let project =
        example("remember", &[("    collector: { kind: stdin, conf: { kwargs: { server: local } } }\n", tick)]);
    let backend = &backend(&project);
    let torch = |user: &str, line: &str| {
        let out = backend.run(&project, &["torch", "remember", line, "--user", user]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "torch {line:?}: {stderr}");
        assert!(!stderr.contains("not available"), "{stderr}");
        String::from_utf8_lossy(&out.stdout).trim_end().to_owned()
    };
    // Without a running host: the command line alone remembers and recalls.
    assert_eq!(torch("alice", ".remember a is b"), "ok, I'll remember that a is b");
    assert_eq!(torch("bob", ".recall a"), "a is b (said alice)");
    // The prefix may be left out on the command line.
    assert_eq!(torch("bob", "remember lunch is at noon"), "ok, I'll remember that lunch is at noon");

    let mut host = start(backend, &project);
    assert_eq!(reply(backend, &project, "remember", "carol", ".recall a"), "a is b (said alice)");
    assert_eq!(reply(backend, &project, "remember", "carol", ".remember c is d"), "ok, I'll remember that c is d");
    assert_eq!(torch("dave", ".recall c"), "c is d (said carol)");
    assert_eq!(torch("dave", ".leaderboard"), "leaderboard:\n1. alice: 1 thing\n2. bob: 1 thing\n3. carol: 1 thing");
    assert!(host.terminate().success(), "{}", host.log_text());
}

#[test]
fn torch_shares_the_service_kv_with_redis() {
    torch_shares_the_service_kv(|_| Backend::Redis(RedisServer::start()));
}

#[test]
fn torch_shares_the_service_kv_embedded() {
    torch_shares_the_service_kv(Backend::embedded);
}

/// A fact and its author's score are stored both or neither: with room for three keys, a
/// second user's fact (which needs a fact key and a score key) is refused as a whole, and
/// "storage is full" never answers something that was stored.
fn remember_stores_fact_and_score_together(backend: impl FnOnce(&Project) -> Backend) {
    component("remember");
    let project = example(
        "remember",
        &[
            ("    collector: { kind: stdin, conf: { kwargs: { server: local } } }\n", ""),
            ("kv: { max_keys: 10000,", "kv: { max_keys: 3,"),
        ],
    );
    let backend = &backend(&project);
    let mut host = start(backend, &project);
    let say_ = |user: &str, text: &str| reply(backend, &project, "remember", user, text);
    assert_eq!(say_("u", ".remember a is 1"), "ok, I'll remember that a is 1");
    // v's score would be the third key, v's fact the fourth: neither is kept.
    let full = say_("v", ".remember b is 2");
    assert!(full.contains("storage is full") && full.contains("max_keys"), "{full}");
    assert!(say_("u", ".recall b").starts_with("I don't remember anything about b"));
    assert_eq!(say_("u", ".leaderboard"), "leaderboard:\n1. u: 1 thing");
    // Replacing a fact needs no new key for it: v's score takes the third, both are stored.
    assert_eq!(say_("v", ".remember --force a is 2"), "ok, a is now 2 (it was 1)");
    assert_eq!(say_("u", ".leaderboard"), "leaderboard:\n1. u: 1 thing\n2. v: 1 thing");
    // Now even a score has no room: w's line is refused and nothing of it is stored.
    let full = say_("w", ".remember --force a is 3");
    assert!(full.contains("storage is full"), "{full}");
    assert_eq!(say_("u", ".recall a"), "a is 2 (said v)");
    assert_eq!(say_("u", ".leaderboard"), "leaderboard:\n1. u: 1 thing\n2. v: 1 thing");
    assert!(host.terminate().success(), "{}", host.log_text());
}

#[test]
fn remember_stores_fact_and_score_together_with_redis() {
    remember_stores_fact_and_score_together(|_| Backend::Redis(RedisServer::start()));
}

#[test]
fn remember_stores_fact_and_score_together_embedded() {
    remember_stores_fact_and_score_together(Backend::embedded);
}
