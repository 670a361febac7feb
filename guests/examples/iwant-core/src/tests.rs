use super::*;
use example_shared::time::{DAY, HOUR, MINUTE};
use example_shared::{MemStore, RacingStore};

/// 2024-05-17 09:00:00 UTC.
const NOW: u64 = 1_715_936_400;

fn ask(store: &MemStore, user: &str, text: &str, now: u64) -> Result<Answer, CmdError> {
    let words: Vec<String> = text.split_whitespace().map(str::to_owned).collect();
    let w = parse::parse_want(&words, now).map_err(CmdError::usage)?;
    want(store, Asker { user, server: "srv", channel: "#c" }, w, now)
}

fn status(store: &MemStore, id: u64) -> Status {
    Books::new(store).outcome(id).unwrap().expect("result").status
}

fn result_of(store: &MemStore, req: u64) -> u64 {
    Books::new(store).request(req).unwrap().expect("request").result
}

#[test]
fn two_compatible_requests_match() {
    let store = MemStore::new();
    let a = ask(&store, "alice", "coffee at 10:00 for 30m until 09:30", NOW).unwrap();
    assert_eq!(a.reply, "request #1: looking for company for coffee at 10:00-10:30 UTC until 09:30 UTC (PENDING)");
    assert!(a.notices.is_empty());
    assert_eq!(status(&store, 1), Status::Pending);

    let b = ask(&store, "bob", "Coffee at 10:15 for 1h until 09:45", NOW + MINUTE).unwrap();
    assert_eq!(b.reply, "request #2: match #1: coffee with alice at 10:15-10:30 UTC (MATCHED)");
    assert_eq!(b.notices.len(), 1);
    let n = &b.notices[0];
    assert_eq!(
        (n.to.as_str(), n.kind, n.with.as_str(), n.when.as_str()),
        ("alice", "matched", "bob", "10:15-10:30 UTC")
    );
    assert_eq!(n.text, "@alice: match #1: coffee with bob at 10:15-10:30 UTC");
    // Both requests point to one MATCHED result.
    assert_eq!((result_of(&store, 1), result_of(&store, 2)), (1, 1));
    assert_eq!(status(&store, 1), Status::Matched);
    assert!(Books::new(&store).outcome(2).unwrap().is_none());
    let fields = n.fields();
    assert!(fields.contains(&("to".to_owned(), "alice".to_owned())));
    assert!(fields.contains(&("status".to_owned(), "MATCHED".to_owned())));
}

#[test]
fn incompatible_requests_do_not_match() {
    let store = MemStore::new();
    ask(&store, "alice", "coffee at 10:00 for 30m", NOW).unwrap();
    // Other activity, window after, other server, same user.
    assert!(ask(&store, "bob", "tea at 10:00 for 30m", NOW).unwrap().reply.contains("PENDING"));
    assert!(ask(&store, "carol", "coffee at 10:30 for 30m", NOW).unwrap().reply.contains("PENDING"));
    let w = parse::parse_want(&["coffee".into(), "at".into(), "10:00".into()], NOW).unwrap();
    assert!(want(&store, Asker { user: "dave", server: "elsewhere", channel: "" }, w, NOW)
        .unwrap()
        .reply
        .contains("PENDING"));
    assert!(
        matches!(ask(&store, "alice", "coffee at 10:10", NOW), Err(CmdError::Usage(t)) if t.contains("already asked"))
    );
    for id in 1..=4 {
        assert_eq!(status(&store, id), Status::Pending, "#{id}");
    }
}

#[test]
fn a_pending_request_past_its_deadline_does_not_match_and_expires() {
    let store = MemStore::new();
    ask(&store, "alice", "coffee at +1h until +2s", NOW).unwrap();
    // Before any tick, alice's deadline has passed: bob gets no match.
    assert!(ask(&store, "bob", "coffee at +1h until +30m", NOW + 5).unwrap().reply.contains("PENDING"));
    let tock = tick(&store, NOW + 5).unwrap();
    assert_eq!((tock.expired, tock.forgotten), (1, 0));
    assert_eq!(tock.notices.len(), 1);
    let n = &tock.notices[0];
    assert_eq!((n.to.as_str(), n.kind, n.status), ("alice", "expired", Status::Expired));
    assert!(n.text.contains("request #1 EXPIRED"), "{}", n.text);
    assert_eq!(status(&store, 1), Status::Expired);
    assert_eq!(status(&store, 2), Status::Pending);
    assert!(list(&store, "alice", "srv", NOW + 6).unwrap().contains("EXPIRED"));
    // A second tick tells nobody again.
    assert_eq!(tick(&store, NOW + 6).unwrap(), Tock::default());
    // After the window, everything is forgotten.
    let tock = tick(&store, NOW + 2 * HOUR).unwrap();
    assert_eq!(tock.forgotten, 2);
    assert_eq!(store.keys(), ["seq"]);
}

#[test]
fn a_third_request_joins_the_match() {
    let store = MemStore::new();
    ask(&store, "alice", "lunch at 12:00 for 1h until 11:00", NOW).unwrap();
    ask(&store, "bob", "lunch at 12:00 for 1h until 11:30", NOW).unwrap();
    let c = ask(&store, "carol", "lunch at 12:30 for 1h", NOW).unwrap();
    assert_eq!(c.reply, "request #3: match #1: lunch with alice and bob at 12:30-13:00 UTC (MATCHED)");
    let to: Vec<&str> = c.notices.iter().map(|n| n.to.as_str()).collect();
    assert_eq!(to, ["alice", "bob"]);
    assert!(c.notices.iter().all(|n| n.kind == "joined"));
    assert_eq!(c.notices[0].text, "@alice: match #1: lunch with bob and carol at 12:30-13:00 UTC (carol joined)");
    assert_eq!(Books::new(&store).outcome(1).unwrap().unwrap().members, [1, 2, 3]);
    // Once the match started, nobody joins it any more.
    let late = ask(&store, "dave", "lunch at 12:45 for 15m", NOW + 3 * HOUR + 31 * MINUTE).unwrap();
    assert!(late.reply.contains("PENDING"), "{}", late.reply);
}

#[test]
fn cancelling_reopens_a_match_of_two() {
    let store = MemStore::new();
    ask(&store, "alice", "coffee at 10:00 for 30m", NOW).unwrap();
    ask(&store, "bob", "coffee at 10:00 for 30m until 09:50", NOW).unwrap();
    assert!(matches!(cancel(&store, "bob", "srv", "lunch", NOW), Err(CmdError::Usage(_))));
    let out = cancel(&store, "bob", "srv", "#2", NOW).unwrap();
    assert_eq!(out.reply, "cancelled #2 coffee");
    assert_eq!(out.notices.len(), 1);
    assert_eq!(out.notices[0].to, "alice");
    assert!(out.notices[0].text.contains("bob left coffee"), "{}", out.notices[0].text);
    let res = Books::new(&store).outcome(1).unwrap().unwrap();
    assert_eq!((res.status, res.members.clone(), res.deadline), (Status::Pending, vec![1], NOW + HOUR));
    let out = cancel(&store, "alice", "srv", "coffee", NOW).unwrap();
    assert!(out.notices.is_empty());
    assert_eq!(store.keys(), ["seq"]);
}

#[test]
fn listing() {
    let store = MemStore::new();
    assert!(list(&store, "alice", "srv", NOW).unwrap().starts_with("you have no requests"));
    ask(&store, "alice", "coffee at 10:00 for 30m until 09:30", NOW).unwrap();
    ask(&store, "bob", "coffee at 10:00 for 30m", NOW).unwrap();
    ask(&store, "carol", "tea at 11:00 for 30m", NOW).unwrap();
    assert_eq!(
        list(&store, "alice", "srv", NOW).unwrap(),
        "your requests:\n#1 coffee at 10:00-10:30 UTC: MATCHED (match #1) with bob at 10:00-10:30 UTC\n\
         others are looking for company:\n#3 carol: tea at 11:00-11:30 UTC (until 11:00 UTC)"
    );
    assert_eq!(
        list(&store, "carol", "srv", NOW).unwrap(),
        "your requests:\n#3 tea at 11:00-11:30 UTC: PENDING until 11:00 UTC"
    );
    assert!(list(&store, "carol", "other", NOW).unwrap().starts_with("you have no requests"));
}

#[test]
fn open_requests_per_user_are_bounded() {
    let store = MemStore::new();
    for i in 0..MAX_OPEN_PER_USER {
        ask(&store, "alice", &format!("thing{i} at +1h"), NOW).unwrap();
    }
    assert!(matches!(ask(&store, "alice", "one more at +1h", NOW), Err(CmdError::Usage(_))));
    assert!(ask(&store, "alice", "one more at +1h", NOW + DAY).is_ok(), "ended requests do not count");
}

#[test]
fn a_match_needs_enough_overlap() {
    let store = MemStore::new();
    ask(&store, "alice", "coffee at 10:00 for 30m", NOW).unwrap();
    // One minute of overlap is not a match: bob's request opens its own result.
    let b = ask(&store, "bob", "coffee at 10:29 for 30m", NOW).unwrap();
    assert!(b.reply.contains("(PENDING)"), "{}", b.reply);
    assert_eq!(result_of(&store, 2), 2);
    // A short activity wholly inside a window matches, though shorter than MIN_OVERLAP.
    let c = ask(&store, "carol", "coffee at 10:05 for 5m", NOW).unwrap();
    assert!(c.reply.contains("match #1: coffee with alice"), "{}", c.reply);
    assert!(enough_overlap((0, 15 * MINUTE), (0, HOUR)));
    assert!(!enough_overlap((0, 30 * MINUTE), (29 * MINUTE, HOUR)));
    assert!(!enough_overlap((0, 10), (10, 20)));
}

#[test]
fn requests_for_now_match_while_their_window_runs() {
    let store = MemStore::new();
    let a = ask(&store, "alice", "coffee at now", NOW).unwrap();
    assert!(a.reply.contains("(PENDING)"), "{}", a.reply);
    let b = ask(&store, "bob", "coffee at +0m", NOW + MINUTE).unwrap();
    assert!(b.reply.contains("match #1: coffee with alice"), "{}", b.reply);
    // The clock does not expire a request for now before its window ends.
    let store = MemStore::new();
    ask(&store, "alice", "tea at now for 1h", NOW).unwrap();
    assert_eq!(tick(&store, NOW + 30 * MINUTE).unwrap().expired, 0);
    assert_eq!(status(&store, 1), Status::Pending);
}

#[test]
fn refusals_show_one_line_of_usage() {
    assert_eq!(usage_line(Some("list")), "iwant list");
    assert_eq!(usage_line(Some("cancel")), "iwant cancel ID|ACTIVITY|all");
    assert!(usage_line(Some("coffee")).starts_with("iwant ACTIVITY at TIME"));
    assert!(!usage_line(None).contains('\n'));
}

#[test]
fn a_request_that_loses_a_race_sees_the_winner_and_matches_it() {
    let store = MemStore::new();
    // Alice's request is being handled when bob's compatible one lands first (another
    // worker): without the compare-and-swap both would stay PENDING, a lost match.
    let racing = RacingStore::new(&store, |inner| {
        let b = ask(inner, "bob", "coffee at 10:00 for 30m", NOW).unwrap();
        assert!(b.reply.ends_with("(PENDING)"), "{}", b.reply);
    });
    let w = parse::parse_want(&["coffee".into(), "at".into(), "10:00".into()], NOW).unwrap();
    let a = want(&racing, Asker { user: "alice", server: "srv", channel: "" }, w, NOW).unwrap();
    assert_eq!(a.reply, "request #1: match #2: coffee with bob at 10:00-10:30 UTC (MATCHED)");
    assert_eq!(a.notices.len(), 1);
    assert_eq!((result_of(&store, 1), result_of(&store, 2)), (2, 2));
    assert_eq!(Books::new(&store).outcome(2).unwrap().unwrap().members, [2, 1]);
    // And a third, racing with a cancel, never joins a withdrawn request.
    let racing = RacingStore::new(&store, |inner| {
        cancel(inner, "bob", "srv", "coffee", NOW).unwrap();
    });
    let w = parse::parse_want(&["coffee".into(), "at".into(), "10:00".into()], NOW).unwrap();
    let c = want(&racing, Asker { user: "carol", server: "srv", channel: "" }, w, NOW).unwrap();
    assert_eq!(c.reply, "request #3: match #2: coffee with alice at 10:00-10:30 UTC (MATCHED)");
    assert_eq!(Books::new(&store).outcome(2).unwrap().unwrap().members, [1, 3]);
}
