//! examples/iwant: matchmaking with PENDING, MATCHED and EXPIRED results, notifications as
//! taskbacks `{to, text, kind, ...}`, a clock driven by a `tick` collector, and a restart.

use std::time::Duration;

use super::STDIN;
use super::{reply, say, taskbacks_where, wait_taskbacks};
use crate::collectors::example;
use crate::conformance::Backend;
use crate::support::{Project, RedisServer, Running, component, field};

/// examples/iwant/cannon-compose.yml as shipped, ticking every second and without its
/// stdin collector (the test sends chat lines with `cannon-host send`).
fn project() -> Project {
    component("iwant");
    component("iwant_clock");
    example("iwant", &[(STDIN, ""), ("every: 30s", "every: 1s")])
}

struct Setup {
    backend: Backend,
    project: Project,
    host: Running,
}

impl Setup {
    fn start() -> Self {
        let project = project();
        let backend = Backend::Redis(RedisServer::start());
        let host = Self::run(&backend, &project);
        Setup { backend, project, host }
    }

    fn run(backend: &Backend, project: &Project) -> Running {
        let mut host = Running::start_cmd(backend.host(project), project, &[]);
        host.wait_for_log("ready", Duration::from_secs(60));
        host
    }

    fn restart(&mut self) {
        assert!(self.host.terminate().success(), "{}", self.host.log_text());
        self.host = Self::run(&self.backend, &self.project);
    }

    fn say(&self, user: &str, text: &str) -> String {
        reply(&self.backend, &self.project, "iwant", user, text)
    }

    fn redis(&self) -> &RedisServer {
        match &self.backend {
            Backend::Redis(redis) => redis,
            _ => unreachable!("iwant's tests read the taskback stream from Redis"),
        }
    }

    /// Waits for `n` notices to `user` and returns them.
    fn notices(&self, user: &str, n: usize) -> Vec<Vec<(String, String)>> {
        wait_taskbacks(self.redis(), "iwant", "to", user, n)
    }
}

fn get<'a>(fields: &'a [(String, String)], name: &str) -> &'a str {
    field(fields, name).unwrap_or_else(|| panic!("no {name} in {fields:?}"))
}

#[test]
fn iwant_matches_compatible_requests_and_notifies_both() {
    let mut setup = Setup::start();
    let alice = setup.say("alice", "iwant coffee at +1h for 30m until +50m");
    assert!(
        alice.starts_with("request #1: looking for company for coffee at ") && alice.ends_with("(PENDING)"),
        "{alice}"
    );
    // No match: another activity, and a window that does not overlap.
    assert!(setup.say("bob", "iwant tea at +1h").ends_with("(PENDING)"));
    assert!(setup.say("carol", "iwant coffee at +3h for 30m").ends_with("(PENDING)"));
    assert!(taskbacks_where(setup.redis(), "iwant", "kind", "matched").is_empty());
    // A friendly refusal for a deadline after the start.
    let refused = setup.say("dave", "iwant coffee at +1h until +2h");
    assert!(refused.contains("is after the start"), "{refused}");

    let bob = setup.say("bob", "iwant coffee at +70m for 30m until +55m");
    assert!(bob.starts_with("request #4: match #1: coffee with alice at ") && bob.ends_with("(MATCHED)"), "{bob}");
    let notice = &setup.notices("alice", 1)[0];
    assert_eq!(
        (
            get(notice, "kind"),
            get(notice, "match"),
            get(notice, "activity"),
            get(notice, "with"),
            get(notice, "status")
        ),
        ("matched", "1", "coffee", "bob", "MATCHED")
    );
    assert!(get(notice, "text").starts_with("@alice: match #1: coffee with bob at "), "{notice:?}");
    assert!(!get(notice, "when").is_empty());

    let list = setup.say("alice", "iwant list");
    assert!(list.contains("#1 coffee at ") && list.contains(": MATCHED (match #1) with bob at "), "{list}");
    assert!(list.contains("#2 bob: tea at ") && list.contains("#3 carol: coffee at "), "{list}");
    assert!(!list.contains("#4 bob"), "bob's matched request is not open: {list}");

    assert_eq!(setup.say("carol", "iwant cancel coffee"), "cancelled #3 coffee");
    assert!(!setup.say("alice", "iwant list").contains("carol"));
    setup.restart();
}

#[test]
fn iwant_expires_requests_past_their_deadline() {
    let setup = Setup::start();
    assert!(setup.say("alice", "iwant coffee at +1h until +2s").ends_with("(PENDING)"));
    let notice = &setup.notices("alice", 1)[0];
    assert_eq!((get(notice, "kind"), get(notice, "status")), ("expired", "EXPIRED"));
    let text = get(notice, "text");
    assert!(
        text.starts_with("@alice: nobody joined you for coffee at ") && text.ends_with("request #1 EXPIRED"),
        "{text}"
    );
    assert!(
        setup.say("alice", "iwant list").contains("#1 coffee at ")
            && setup.say("alice", "iwant list").contains("EXPIRED")
    );
    // An expired request matches nobody.
    assert!(setup.say("bob", "iwant coffee at +1h").ends_with("(PENDING)"));
    // Later ticks do not tell alice again.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(taskbacks_where(setup.redis(), "iwant", "to", "alice").len(), 1);
}

#[test]
fn iwant_lets_a_third_request_join_a_match() {
    let setup = Setup::start();
    setup.say("alice", "iwant lunch at +2h for 1h until +1h");
    let bob = setup.say("bob", "iwant lunch at +2h for 1h until +90m");
    assert!(bob.starts_with("request #2: match #1: lunch with alice at "), "{bob}");
    let carol = setup.say("carol", "iwant lunch at +150m for 1h");
    assert!(
        carol.starts_with("request #3: match #1: lunch with alice and bob at ") && carol.ends_with("(MATCHED)"),
        "{carol}"
    );
    let to_alice = setup.notices("alice", 2);
    assert_eq!((get(&to_alice[0], "kind"), get(&to_alice[1], "kind")), ("matched", "joined"));
    assert_eq!(get(&to_alice[1], "with"), "bob,carol");
    assert!(get(&to_alice[1], "text").ends_with("(carol joined)"), "{to_alice:?}");
    let to_bob = setup.notices("bob", 1);
    assert_eq!((get(&to_bob[0], "kind"), get(&to_bob[0], "with")), ("joined", "alice,carol"));
    assert!(taskbacks_where(setup.redis(), "iwant", "to", "carol").is_empty(), "carol got the reply instead");
    let list = setup.say("carol", "iwant list");
    assert!(list.contains("MATCHED (match #1) with alice and bob"), "{list}");
}

#[test]
fn iwant_survives_a_host_restart_in_the_middle() {
    let mut setup = Setup::start();
    assert!(setup.say("alice", "iwant coffee at +1h until +50m").ends_with("(PENDING)"));
    assert!(setup.say("dave", "iwant tea at +1h until +4s").ends_with("(PENDING)"));
    setup.restart();
    let bob = setup.say("bob", "iwant coffee at +1h until +40m");
    assert!(bob.starts_with("request #3: match #1: coffee with alice at ") && bob.ends_with("(MATCHED)"), "{bob}");
    assert_eq!(get(&setup.notices("alice", 1)[0], "kind"), "matched");
    // The clock carries on after the restart: dave's request expires.
    assert_eq!(get(&setup.notices("dave", 1)[0], "kind"), "expired");
    assert!(setup.say("dave", "iwant list").contains("EXPIRED"));
}

#[test]
fn iwant_ignores_chat_needs_overlap_and_takes_now() {
    let setup = Setup::start();
    // Ordinary chat gets no reply (torch `ignore_unknown`); `iwant list all` lists.
    assert!(say(&setup.backend, &setup.project, "iwant", "alice", "hello everyone", 1500).is_none());
    assert!(setup.say("alice", "iwant list all").starts_with("you have no requests"));
    // `at now` and `at +0m`: the default deadline is never already past.
    assert!(setup.say("alice", "iwant coffee at now").ends_with("(PENDING)"));
    let bob = setup.say("bob", "iwant coffee at +0m");
    assert!(bob.starts_with("request #2: match #1: coffee with alice at ") && bob.ends_with("(MATCHED)"), "{bob}");
    // A minute of overlap is not a match.
    assert!(setup.say("carol", "iwant tea at +1h for 30m").ends_with("(PENDING)"));
    assert!(setup.say("dave", "iwant tea at +89m for 30m").ends_with("(PENDING)"));
    // A refusal: the reason and the one relevant line of usage.
    let refused = setup.say("dave", "iwant tea at 25:00");
    let lines: Vec<&str> = refused.lines().collect();
    assert_eq!(lines.len(), 2, "{refused}");
    assert!(lines[0].contains("cannot read") && lines[1].starts_with("usage: iwant ACTIVITY at TIME"), "{refused}");
    let refused = setup.say("dave", "iwant cancel 99");
    assert!(refused.ends_with("\nusage: iwant cancel ID|ACTIVITY|all"), "{refused}");
}
