//! examples/iwant: matchmaking with PENDING, MATCHED and EXPIRED results, notifications as
//! taskbacks `{to, text, kind, ...}`, a clock driven by a `tick` collector, and a restart;
//! many concurrent matching requests on two worker processes (no lost or double match, on
//! both brokers); notices delivered directly with receipts, and posted to the channel when
//! a receipt says they could not be.

use std::time::Duration;

use super::STDIN;
use super::{reply, say, taskbacks_where, wait_taskbacks};
use crate::collectors::{count, example, plain, wait_plain};
use crate::conformance::Backend;
use crate::fake::slack::{self, FakeSlack};
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

/// Many requests at once that all match each other, on two worker processes at the default
/// concurrency: per activity, exactly one request opens the match and every other joins
/// it; every request is in the match the stored state shows, none is lost or counted twice.
fn iwant_concurrent_requests(backend: impl FnOnce(&Project) -> Backend) {
    let project = project();
    let backend = &backend(&project);
    let text = std::fs::read_to_string(&project.compose).expect("compose");
    assert!(!text.contains("concurrency:"), "the example runs at the default concurrency:\n{text}");
    let mut host = Running::start_cmd(backend.host(&project), &project, &[]);
    host.wait_for_log("ready", Duration::from_secs(60));
    let mut worker = Running::start_cmd(backend.host(&project), &project, &["iwant", "--role", "worker"]);
    worker.wait_for_log("ready", Duration::from_secs(60));

    const ACTIVITIES: [&str; 4] = ["coffee", "tea", "lunch", "chess"];
    const PER: usize = 8;
    let user = |a: usize, i: usize| format!("{}{i}", ACTIVITIES[a]);
    // Interleaved, all sent at once: 32 requests in flight on 2 x 16 workers.
    let replies: Vec<(usize, usize, String)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..PER)
            .flat_map(|i| (0..ACTIVITIES.len()).map(move |a| (a, i)))
            .map(|(a, i)| {
                let (project, user) = (&project, user(a, i));
                scope.spawn(move || {
                    let text = format!("iwant {} at +1h for 30m", ACTIVITIES[a]);
                    (a, i, reply(backend, project, "iwant", &user, &text))
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("a sender")).collect()
    });
    for (a, activity) in ACTIVITIES.iter().enumerate() {
        let mine: Vec<&(usize, usize, String)> = replies.iter().filter(|(x, _, _)| *x == a).collect();
        let opened: Vec<&str> = mine.iter().map(|(_, _, r)| r.as_str()).filter(|r| r.ends_with("(PENDING)")).collect();
        assert_eq!(opened.len(), 1, "{activity}: exactly one request opens the match: {mine:#?}");
        let id = opened[0]
            .strip_prefix("request #")
            .and_then(|r| r.split(':').next())
            .unwrap_or_else(|| panic!("{}", opened[0]));
        let joined = format!(": match #{id}: {activity} with ");
        for (_, _, r) in &mine {
            assert!(r.ends_with("(PENDING)") || (r.contains(&joined) && r.ends_with("(MATCHED)")), "{r}");
        }
        // The stored state agrees with every reply: each member sees all the others.
        for i in 0..PER {
            let list = reply(backend, &project, "iwant", &user(a, i), "iwant list");
            let line = list
                .lines()
                .find(|l| l.contains(&format!("MATCHED (match #{id}) with ")))
                .unwrap_or_else(|| panic!("{} is not in match #{id}: {list}", user(a, i)));
            for j in (0..PER).filter(|j| *j != i) {
                assert!(line.contains(&user(a, j)), "{} missing from {}'s match: {line}", user(a, j), user(a, i));
            }
            assert_eq!(list.matches("MATCHED").count(), 1, "{list}");
        }
        // Each join told every earlier member once: 1 + 2 + ... + 7 notices.
        if let Backend::Redis(redis) = backend {
            let notices = taskbacks_where(redis, "iwant", "activity", activity);
            assert_eq!(notices.len(), PER * (PER - 1) / 2, "{activity}: {notices:#?}");
        }
    }
    assert!(worker.terminate().success(), "{}", worker.log_text());
    assert!(host.terminate().success(), "{}", host.log_text());
}

#[test]
fn iwant_concurrent_requests_with_redis() {
    iwant_concurrent_requests(|_| Backend::Redis(RedisServer::start()));
}

#[test]
fn iwant_concurrent_requests_embedded() {
    iwant_concurrent_requests(Backend::embedded);
}

/// A chat program for the exec collector: alice asks in #a, then bob in #b, then carol in
/// #c, each after the previous one's reply. It acknowledges every taskback asking for a
/// receipt: `error` for alice (no direct messages to her), `ok` for anyone else; every
/// taskback it gets goes to stderr (`direct: TO: TEXT` or `got: CHANNEL: TEXT`).
const CHAT: &str = r##"
import json, sys
def say(obj):
    print(json.dumps(obj), flush=True)
def ask(user, channel):
    say({"user": user, "text": "iwant coffee at +1h", "server": "s", "channel": channel})
ask("alice", "#a")
for line in sys.stdin:
    tb = json.loads(line)
    text = tb.get("text", "")
    if tb.get("cannon.receipt") == "yes":
        ok = tb.get("to") != "alice"
        print("direct: %s: %s" % (tb.get("to"), text), file=sys.stderr, flush=True)
        say({"receipt_for": tb["cannon.id"], "receipt": "ok" if ok else "error",
             "detail": "sent" if ok else "no direct messages to alice",
             "receipt_ref": tb.get("receipt_ref", "")})
        continue
    print("got: %s: %s" % (tb.get("channel", "-"), text), file=sys.stderr, flush=True)
    if tb.get("user") == "alice":
        ask("bob", "#b")
    elif tb.get("user") == "bob":
        ask("carol", "#c")
"##;

fn iwant_notices_with_receipts(backend: impl FnOnce(&Project) -> Backend) {
    let exec = format!("      - {{ kind: exec, command: [python3, -c, {CHAT:?}] }}\n");
    component("iwant");
    component("iwant_clock");
    let project = example("iwant", &[(STDIN, exec.as_str())]);
    let backend = &backend(&project);
    let mut host = Running::start_cmd(backend.host(&project), &project, &[]);
    let wait = Duration::from_secs(60);
    // Bob's match: the notice to alice goes to her directly, is refused, and is posted in
    // #a (where she asked) instead.
    wait_plain(&mut host, "direct: alice: @alice: match #1: coffee with bob at ", wait);
    wait_plain(&mut host, "got: #a: @alice: match #1: coffee with bob at ", wait);
    // Carol joins: alice's notice falls back again; bob's is delivered and stays direct.
    wait_plain(&mut host, "direct: bob: @bob: match #1: coffee with alice and carol at ", wait);
    wait_plain(&mut host, "(carol joined)", wait);
    let fallbacks =
        |host: &Running| plain(&host.log_text()).lines().filter(|l| l.contains("got: #a: @alice: match #1")).count();
    let deadline = std::time::Instant::now() + wait;
    while fallbacks(&host) < 2 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = plain(&host.log_text());
    assert_eq!(fallbacks(&host), 2, "{log}");
    assert!(log.contains("got: #a: @alice: match #1: coffee with bob and carol at "), "{log}");
    // Each notice is posted to the channel at most once, and bob's, delivered, never.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(fallbacks(&host), 2, "{}", plain(&host.log_text()));
    assert_eq!(count(&host, "got: #b: @bob"), 0, "{}", plain(&host.log_text()));
    assert_eq!(count(&host, "got: #c: @"), 0, "{}", plain(&host.log_text()));
    assert!(host.terminate().success(), "{}", host.log_text());
}

#[test]
fn iwant_notices_with_receipts_with_redis() {
    iwant_notices_with_receipts(|_| Backend::Redis(RedisServer::start()));
}

#[test]
fn iwant_notices_with_receipts_embedded() {
    iwant_notices_with_receipts(Backend::embedded);
}

/// On Slack, as the README shows it: a notice to someone the collector has not seen speak
/// (here: not since it restarted) gets an `error` receipt and is posted in the channel where
/// they asked; once they have spoken, their notices go to their direct messages.
#[test]
fn iwant_on_slack_posts_an_undeliverable_notice_in_the_channel() {
    component("iwant");
    component("iwant_clock");
    let fake = FakeSlack::start();
    fake.state.lock().users_insert("U3", "Carol");
    let collector = format!(
        "      - {{ kind: slack, app_token: \"${{SLACK_APP_TOKEN}}\", bot_token: \"${{SLACK_BOT_TOKEN}}\", api_url: \"{}\" }}\n",
        fake.api_url
    );
    let project = example("iwant", &[(STDIN, collector.as_str())]);
    let backend = Backend::Redis(RedisServer::start());
    let start = || {
        let mut cmd = backend.host(&project);
        cmd.env("SLACK_APP_TOKEN", slack::APP_TOKEN).env("SLACK_BOT_TOKEN", slack::BOT_TOKEN);
        Running::start_cmd(cmd, &project, &[])
    };
    let wait = Duration::from_secs(60);
    let mut host = start();
    fake.wait_connected(1, wait);
    fake.say("U1", "C1", "iwant coffee at +1h for 30m until +50m", None);
    fake.wait_posts(1, wait);
    assert!(host.terminate().success(), "{}", host.log_text());
    let mut host = start();
    fake.wait_connected(2, wait);
    // Bob asks in C2; the restarted collector does not know Alice: her notice lands in C1.
    fake.say("U2", "C2", "iwant coffee at +70m for 30m until +55m", None);
    let posts = fake.wait_posts(3, wait);
    let in_c1: Vec<_> = posts.iter().filter(|p| p.channel == "C1" && p.text.starts_with("@Alice: match #1")).collect();
    assert_eq!(in_c1.len(), 1, "{posts:?}");
    assert!(in_c1[0].text.starts_with("@Alice: match #1: coffee with Bob at "), "{posts:?}");
    assert!(!posts.iter().any(|p| p.channel == "U1"), "{posts:?}");
    assert!(posts.iter().any(|p| p.channel == "C2" && p.text.contains("(MATCHED)")), "{posts:?}");
    // Alice speaks; then Carol joins: both earlier members are told directly now.
    fake.say("U1", "C1", "iwant list", None);
    fake.wait_posts(4, wait);
    fake.say("U3", "C3", "iwant coffee at +65m for 30m", None);
    let posts = fake.wait_posts(7, wait);
    let dm = |user: &str| posts.iter().filter(|p| p.channel == user).map(|p| p.text.clone()).collect::<Vec<_>>();
    assert_eq!(dm("U1").len(), 1, "{posts:?}");
    assert!(dm("U1")[0].ends_with("(Carol joined)"), "{posts:?}");
    assert!(dm("U2")[0].starts_with("@Bob: match #1: coffee with Alice and Carol at "), "{posts:?}");
    std::thread::sleep(Duration::from_secs(1));
    let in_c1 = fake.posts().iter().filter(|p| p.channel == "C1" && p.text.starts_with("@Alice")).count();
    assert_eq!(in_c1, 1, "only the undeliverable notice went to the channel: {:?}", fake.posts());
    assert!(host.terminate().success(), "{}", host.log_text());
}
