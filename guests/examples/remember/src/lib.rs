//! `remember`: an errbot-style memory for chat, one memory per chat server.
//!
//! `remember meeting is tomorrow` (or `rem ...`) stores `meeting` -> `tomorrow` for the
//! message's `server`; `remember meeting` and `recall meeting` recall it; replacing what
//! someone else stored needs `--force`. `forget meeting`, `remembered` (everything, as a
//! list), `leaderboard` (how many times each user stored something) and `popular` (the
//! most recalled keys) read it back. Everything lives in the service's kv, so it survives a
//! restart of the host.
//!
//! kv keys (user text escaped with `example_shared::key_part`):
//! - `fact:{server}:{key}` -> a record `{value, by}`;
//! - `score:{server}:{user}` -> how many times `user` stored something;
//! - `recalls:{server}:{key}` -> how many times `key` was recalled.
//!
//! A fact and its author's score are written both or neither: the score is incremented,
//! then the fact written with a compare-and-swap against the value read (so a fact changed
//! meanwhile by someone else is never overwritten unseen, and `--force` is checked against
//! what is replaced); when the fact cannot be written, the increment is taken back.

use cannon_guest::{Args, Cmd, CmdError, Message, Shell};
use example_shared::{key_part, unkey_part, GuestKv, Record, Store};

/// Longest key and value accepted, in characters.
const MAX_KEY: usize = 100;
const MAX_VALUE: usize = 1000;
/// Most entries shown by `remembered` and `leaderboard`.
const MAX_LISTED: u32 = 50;
/// How often `remember` looks again when the fact changed between reading and writing it.
const MAX_ATTEMPTS: u32 = 16;

struct Remember;

impl Shell for Remember {
    const COMMANDS: &'static [Cmd] = &[
        Cmd {
            name: "remember",
            summary: "remember something: remember KEY is VALUE; remember KEY recalls it",
            usage: "remember [--force] KEY is VALUE   (e.g. remember meeting is tomorrow at 10; --force replaces what someone else stored)",
            options: &[],
            flags: &["force"],
            run: |args, msg| remember(&GuestKv, &Chat::of(msg), &args.rest(0), args.flag("force")),
        },
        Cmd {
            name: "rem",
            summary: "short for remember",
            usage: "rem [--force] KEY is VALUE",
            options: &[],
            flags: &["force"],
            run: |args, msg| remember(&GuestKv, &Chat::of(msg), &args.rest(0), args.flag("force")),
        },
        Cmd {
            name: "recall",
            summary: "what was remembered about KEY",
            usage: "recall KEY",
            options: &[],
            flags: &[],
            run: |args, msg| with_key(args, |key| recall(&GuestKv, &Chat::of(msg), key)),
        },
        Cmd {
            name: "forget",
            summary: "forget KEY",
            usage: "forget KEY",
            options: &[],
            flags: &[],
            run: |args, msg| with_key(args, |key| forget(&GuestKv, &Chat::of(msg), key)),
        },
        Cmd {
            name: "remembered",
            summary: "everything remembered on this server",
            usage: "remembered",
            options: &[],
            flags: &[],
            run: |_, msg| remembered(&GuestKv, &Chat::of(msg)),
        },
        Cmd {
            name: "popular",
            summary: "the most recalled keys on this server",
            usage: "popular",
            options: &[],
            flags: &[],
            run: |_, msg| popular(&GuestKv, &Chat::of(msg)),
        },
        Cmd {
            name: "leaderboard",
            summary: "who stored the most things on this server",
            usage: "leaderboard",
            options: &[],
            flags: &[],
            run: |_, msg| leaderboard(&GuestKv, &Chat::of(msg)),
        },
    ];
}

cannon_guest::export_shell!(Remember);

/// Who speaks, and where: the message's `server` and `user` fields.
struct Chat {
    server: String,
    user: String,
}

impl Chat {
    fn of(msg: &Message) -> Self {
        Chat {
            server: msg.get("server").unwrap_or("default").to_owned(),
            user: msg.get("user").unwrap_or("someone").to_owned(),
        }
    }

    fn fact_prefix(&self) -> String {
        format!("fact:{}:", key_part(&self.server))
    }

    fn fact_key(&self, key: &str) -> String {
        format!("{}{}", self.fact_prefix(), key_part(key))
    }

    fn score_prefix(&self) -> String {
        format!("score:{}:", key_part(&self.server))
    }

    fn score_key(&self) -> String {
        format!("{}{}", self.score_prefix(), key_part(&self.user))
    }

    fn recalls_prefix(&self) -> String {
        format!("recalls:{}:", key_part(&self.server))
    }
}

/// A key as typed, normalised: lowercase, single spaces.
fn normalize(key: &str) -> String {
    key.split_whitespace().collect::<Vec<_>>().join(" ").to_lowercase()
}

fn with_key(args: &Args, then: impl FnOnce(&str) -> Result<String, CmdError>) -> Result<String, CmdError> {
    let key = normalize(&args.rest(0));
    if key.is_empty() {
        return Err(CmdError::usage("missing KEY"));
    }
    then(&key)
}

fn remember(store: &impl Store, chat: &Chat, text: &str, force: bool) -> Result<String, CmdError> {
    let Some((key, value)) = split_is(text) else {
        // `remember KEY` recalls, as the original does.
        let key = normalize(text);
        if key.is_empty() {
            return Err(CmdError::usage("say what is what, e.g. remember meeting is tomorrow"));
        }
        return recall(store, chat, &key);
    };
    let key = normalize(key);
    let value = value.trim();
    if key.is_empty() || value.is_empty() {
        return Err(CmdError::usage("both KEY and VALUE are needed, e.g. remember meeting is tomorrow"));
    }
    if key.chars().count() > MAX_KEY || value.chars().count() > MAX_VALUE {
        return Err(CmdError::usage(format!("too long: keys up to {MAX_KEY} characters, values up to {MAX_VALUE}")));
    }
    let slot = chat.fact_key(&key);
    let record = Record::new().with("value", value).with("by", &chat.user).encode();
    for _ in 0..MAX_ATTEMPTS {
        let before_raw = store.get(&slot)?;
        let before = before_raw.as_deref().and_then(|raw| Record::decode(raw).ok());
        let old = before.as_ref().and_then(|r| r.get("value"));
        let owner = before.as_ref().and_then(|r| r.get("by"));
        if let (Some(old), Some(owner)) = (old, owner) {
            if old != value && owner != chat.user && !force {
                return Ok(format!(
                    "{owner} already told me {key} is {old}; to replace it: remember --force {key} is {value}"
                ));
            }
        }
        // The score first: an increment can always be taken back by its opposite, whatever
        // else happened meanwhile. Then the fact, in one compare-and-swap against what was
        // read (so a concurrent change is never overwritten unseen). When the fact cannot be
        // written, the score is taken back: both are stored, or neither, and "storage is
        // full" always means nothing was stored.
        store.increment(&chat.score_key(), 1)?;
        match store.compare_and_swap(&slot, before_raw.as_deref(), Some(&record)) {
            Ok(true) => {
                return Ok(match old {
                    Some(old) if old != value => format!("ok, {key} is now {value} (it was {old})"),
                    _ => format!("ok, I'll remember that {key} is {value}"),
                })
            }
            // Someone changed the fact since it was read: look again.
            Ok(false) => unscore(store, chat)?,
            Err(err) => {
                unscore(store, chat)?;
                return Err(err.into());
            }
        }
    }
    Err(CmdError::fail(format!("{key} kept changing while it was being stored; try again")))
}

/// Takes back one point of the user's score; a score back at zero is removed (unless
/// another point arrived meanwhile).
fn unscore(store: &impl Store, chat: &Chat) -> Result<(), CmdError> {
    let key = chat.score_key();
    let undo =
        |err: example_shared::StoreError| CmdError::fail(format!("the score {key:?} could not be taken back: {err}"));
    if store.increment(&key, -1).map_err(undo)? == 0 {
        store.compare_and_swap(&key, Some("0"), None).map_err(undo)?;
    }
    Ok(())
}

/// Splits `KEY is VALUE` at the first standalone `is`.
fn split_is(text: &str) -> Option<(&str, &str)> {
    let mut from = 0;
    while let Some(pos) = text[from..].find("is") {
        let at = from + pos;
        let before_ok = at > 0 && text[..at].ends_with(char::is_whitespace);
        let after = &text[at + 2..];
        if before_ok && (after.is_empty() || after.starts_with(char::is_whitespace)) {
            return Some((&text[..at], after));
        }
        from = at + 2;
    }
    None
}

fn recall(store: &impl Store, chat: &Chat, key: &str) -> Result<String, CmdError> {
    match load(store, &chat.fact_key(key))? {
        Some(record) => {
            let value = record.get("value").unwrap_or("");
            let by = record.get("by").unwrap_or("someone");
            // Counting is best effort: a full store still answers.
            let _ = store.increment(&format!("{}{}", chat.recalls_prefix(), key_part(key)), 1);
            Ok(format!("{key} is {value} (said {by})"))
        }
        None => Ok(format!("I don't remember anything about {key} (to teach me: remember {key} is ...)")),
    }
}

fn load(store: &impl Store, slot: &str) -> Result<Option<Record>, CmdError> {
    match store.get(slot)? {
        Some(raw) => Record::decode(&raw)
            .map(Some)
            .map_err(|err| CmdError::fail(format!("stored value {slot:?} is damaged: {err}"))),
        None => Ok(None),
    }
}

fn forget(store: &impl Store, chat: &Chat, key: &str) -> Result<String, CmdError> {
    Ok(if store.delete(&chat.fact_key(key))? {
        store.delete(&format!("{}{}", chat.recalls_prefix(), key_part(key)))?;
        format!("ok, I forgot {key}")
    } else {
        format!("I didn't know anything about {key}")
    })
}

fn remembered(store: &impl Store, chat: &Chat) -> Result<String, CmdError> {
    let prefix = chat.fact_prefix();
    // One more than shown, to tell whether the list was cut.
    let slots = store.list(&prefix, MAX_LISTED + 1)?;
    if slots.is_empty() {
        return Ok("I don't remember anything yet; try `remember meeting is tomorrow`".to_owned());
    }
    let mut lines = vec![format!("I remember {}:", count(slots.len().min(MAX_LISTED as usize), "thing"))];
    for slot in slots.iter().take(MAX_LISTED as usize) {
        let key = unkey_part(&slot[prefix.len()..]);
        if let Some(record) = load(store, slot)? {
            lines.push(format!("- {key} is {}", record.get("value").unwrap_or("")));
        }
    }
    if slots.len() > MAX_LISTED as usize {
        lines.push(format!("(only the first {MAX_LISTED} are shown)"));
    }
    Ok(lines.join("\n"))
}

fn leaderboard(store: &impl Store, chat: &Chat) -> Result<String, CmdError> {
    let prefix = chat.score_prefix();
    let mut scores = Vec::new();
    for slot in store.list(&prefix, 1000)? {
        let n: i64 = store.get(&slot)?.and_then(|v| v.parse().ok()).unwrap_or(0);
        scores.push((n, unkey_part(&slot[prefix.len()..])));
    }
    if scores.is_empty() {
        return Ok("nobody has stored anything yet".to_owned());
    }
    scores.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    let mut lines = vec!["leaderboard:".to_owned()];
    for (rank, (n, user)) in scores.iter().take(MAX_LISTED as usize).enumerate() {
        lines.push(format!("{}. {user}: {}", rank + 1, count(*n as usize, "thing")));
    }
    Ok(lines.join("\n"))
}

fn popular(store: &impl Store, chat: &Chat) -> Result<String, CmdError> {
    let prefix = chat.recalls_prefix();
    let mut counts = Vec::new();
    for slot in store.list(&prefix, 1000)? {
        let n: i64 = store.get(&slot)?.and_then(|v| v.parse().ok()).unwrap_or(0);
        counts.push((n, unkey_part(&slot[prefix.len()..])));
    }
    if counts.is_empty() {
        return Ok("nothing has been recalled yet".to_owned());
    }
    counts.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    let mut lines = vec!["most recalled:".to_owned()];
    for (rank, (n, key)) in counts.iter().take(10).enumerate() {
        lines.push(format!("{}. {key}: {}", rank + 1, count(*n as usize, "time")));
    }
    Ok(lines.join("\n"))
}

fn count(n: usize, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use example_shared::{MemStore, RacingStore};

    fn chat(server: &str, user: &str) -> Chat {
        Chat { server: server.to_owned(), user: user.to_owned() }
    }

    #[test]
    fn remember_recall_forget() {
        let store = MemStore::new();
        let alice = chat("s1", "alice");
        assert_eq!(
            remember(&store, &alice, "Meeting  is tomorrow at 10", false).unwrap(),
            "ok, I'll remember that meeting is tomorrow at 10"
        );
        assert_eq!(recall(&store, &alice, "meeting").unwrap(), "meeting is tomorrow at 10 (said alice)");
        // Someone else's fact needs --force; the author's own does not.
        assert_eq!(
            remember(&store, &chat("s1", "bob"), "meeting is today", false).unwrap(),
            "alice already told me meeting is tomorrow at 10; to replace it: remember --force meeting is today"
        );
        assert_eq!(recall(&store, &alice, "meeting").unwrap(), "meeting is tomorrow at 10 (said alice)");
        assert_eq!(
            remember(&store, &chat("s1", "bob"), "meeting is today", true).unwrap(),
            "ok, meeting is now today (it was tomorrow at 10)"
        );
        assert_eq!(
            remember(&store, &chat("s1", "bob"), "meeting is at noon", false).unwrap(),
            "ok, meeting is now at noon (it was today)"
        );
        // `remember KEY` recalls.
        assert_eq!(remember(&store, &alice, "Meeting", false).unwrap(), "meeting is at noon (said bob)");
        assert_eq!(forget(&store, &alice, "meeting").unwrap(), "ok, I forgot meeting");
        assert_eq!(forget(&store, &alice, "meeting").unwrap(), "I didn't know anything about meeting");
        assert_eq!(
            recall(&store, &alice, "meeting").unwrap(),
            "I don't remember anything about meeting (to teach me: remember meeting is ...)"
        );
    }

    #[test]
    fn servers_are_separate_even_with_colons() {
        let store = MemStore::new();
        remember(&store, &chat("a", "u"), "x:y is 1", false).unwrap();
        remember(&store, &chat("a:x", "u"), "y is 2", false).unwrap();
        assert_eq!(recall(&store, &chat("a", "u"), "x:y").unwrap(), "x:y is 1 (said u)");
        assert_eq!(recall(&store, &chat("a:x", "u"), "y").unwrap(), "y is 2 (said u)");
        assert_eq!(remembered(&store, &chat("a", "u")).unwrap(), "I remember 1 thing:\n- x:y is 1");
        assert!(recall(&store, &chat("b", "u"), "x:y").unwrap().starts_with("I don't"));
    }

    #[test]
    fn list_and_leaderboard() {
        let store = MemStore::new();
        assert!(remembered(&store, &chat("s", "a")).unwrap().starts_with("I don't remember anything yet"));
        assert_eq!(leaderboard(&store, &chat("s", "a")).unwrap(), "nobody has stored anything yet");
        remember(&store, &chat("s", "bob"), "lunch is at noon", false).unwrap();
        remember(&store, &chat("s", "alice"), "meeting is tomorrow", false).unwrap();
        remember(&store, &chat("s", "alice"), "meeting is today", false).unwrap();
        remember(&store, &chat("other", "carol"), "x is y", false).unwrap();
        assert_eq!(
            remembered(&store, &chat("s", "bob")).unwrap(),
            "I remember 2 things:\n- lunch is at noon\n- meeting is today"
        );
        assert_eq!(
            leaderboard(&store, &chat("s", "bob")).unwrap(),
            "leaderboard:\n1. alice: 2 things\n2. bob: 1 thing"
        );
        assert_eq!(popular(&store, &chat("s", "bob")).unwrap(), "nothing has been recalled yet");
        for _ in 0..2 {
            recall(&store, &chat("s", "bob"), "meeting").unwrap();
        }
        recall(&store, &chat("s", "bob"), "lunch").unwrap();
        recall(&store, &chat("s", "bob"), "unknown").unwrap();
        assert_eq!(
            popular(&store, &chat("s", "bob")).unwrap(),
            "most recalled:\n1. meeting: 2 times\n2. lunch: 1 time"
        );
        assert_eq!(popular(&store, &chat("other", "bob")).unwrap(), "nothing has been recalled yet");
        // Forgetting a key forgets its count too.
        forget(&store, &chat("s", "bob"), "lunch").unwrap();
        assert_eq!(popular(&store, &chat("s", "bob")).unwrap(), "most recalled:\n1. meeting: 2 times");
    }

    #[test]
    fn bad_input_gets_a_usage_reply() {
        let store = MemStore::new();
        let u = chat("s", "u");
        assert!(matches!(remember(&store, &u, "  ", false), Err(CmdError::Usage(_))));
        // Without a standalone `is`, it is a recall.
        assert!(remember(&store, &u, "is tomorrow", false).unwrap().starts_with("I don't remember anything"));
        assert!(matches!(remember(&store, &u, "meeting is ", false), Err(CmdError::Usage(_))));
        let long = format!("k is {}", "v".repeat(MAX_VALUE + 1));
        assert!(matches!(remember(&store, &u, &long, false), Err(CmdError::Usage(_))));
        // `is` inside a word does not split.
        assert_eq!(split_is("this island is big"), Some(("this island ", " big")));
        assert!(store.keys().is_empty());
    }

    #[test]
    fn a_full_store_is_a_reply_not_a_retry() {
        let store = MemStore::with_max_keys(2);
        let u = chat("s", "u");
        remember(&store, &u, "a is 1", false).unwrap();
        match remember(&store, &u, "b is 2", false) {
            Err(CmdError::Usage(text)) => assert!(text.contains("storage is full"), "{text}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn fact_and_score_are_stored_both_or_neither() {
        // Room for u's fact and score, and one more key: v's fact fits, v's score does not.
        let store = MemStore::with_max_keys(3);
        remember(&store, &chat("s", "u"), "a is 1", false).unwrap();
        match remember(&store, &chat("s", "v"), "b is 2", false) {
            Err(CmdError::Usage(text)) => assert!(text.contains("storage is full"), "{text}"),
            other => panic!("{other:?}"),
        }
        assert!(recall(&store, &chat("s", "v"), "b").unwrap().starts_with("I don't remember anything about b"));
        assert_eq!(store.keys().len(), 2, "{:?}", store.keys());
        // An overwrite that cannot be scored keeps the old value.
        let full = MemStore::with_max_keys(2);
        remember(&full, &chat("s", "u"), "a is 1", false).unwrap();
        match remember(&full, &chat("s", "v"), "a is 2", true) {
            Err(CmdError::Usage(text)) => assert!(text.contains("storage is full"), "{text}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(recall(&full, &chat("s", "v"), "a").unwrap(), "a is 1 (said u)");
        assert_eq!(leaderboard(&full, &chat("s", "v")).unwrap(), "leaderboard:\n1. u: 1 thing");
    }

    #[test]
    fn a_fact_changed_meanwhile_is_not_overwritten_unseen() {
        let store = MemStore::new();
        // Between v reading "a" (absent) and writing it, u stores it.
        let racing = RacingStore::new(&store, |inner| {
            remember(inner, &chat("s", "u"), "a is 1", false).unwrap();
        });
        let answer = remember(&racing, &chat("s", "v"), "a is 2", false).unwrap();
        assert_eq!(answer, "u already told me a is 1; to replace it: remember --force a is 2");
        assert_eq!(recall(&store, &chat("s", "v"), "a").unwrap(), "a is 1 (said u)");
        // v's lost attempt left no score behind.
        assert_eq!(leaderboard(&store, &chat("s", "v")).unwrap(), "leaderboard:\n1. u: 1 thing");
        assert_eq!(store.keys(), ["fact:s:a", "recalls:s:a", "score:s:u"]);
    }
}
