//! `remember`: an errbot-style memory for chat, one memory per chat server.
//!
//! `remember meeting is tomorrow` stores `meeting` -> `tomorrow` for the message's
//! `server`; `recall meeting`, `forget meeting`, `remembered` (everything, as a list) and
//! `leaderboard` (how many times each user stored something) read it back. Everything
//! lives in the service's kv, so it survives a restart of the host.
//!
//! kv keys (user text escaped with `example_kit::key_part`):
//! - `fact:{server}:{key}` -> a record `{value, by}`;
//! - `score:{server}:{user}` -> how many times `user` stored something.

use cannon_guest::{Args, Cmd, CmdError, Message, Shell};
use example_kit::{key_part, unkey_part, GuestKv, Record, Store};

/// Longest key and value accepted, in characters.
const MAX_KEY: usize = 100;
const MAX_VALUE: usize = 1000;
/// Most entries shown by `remembered` and `leaderboard`.
const MAX_LISTED: u32 = 50;

struct Remember;

impl Shell for Remember {
    const COMMANDS: &'static [Cmd] = &[
        Cmd {
            name: "remember",
            summary: "remember something: remember KEY is VALUE",
            usage: "remember KEY is VALUE   (e.g. remember meeting is tomorrow at 10)",
            options: &[],
            flags: &[],
            run: |args, msg| remember(&GuestKv, &Chat::of(msg), &args.rest(0)),
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

fn remember(store: &impl Store, chat: &Chat, text: &str) -> Result<String, CmdError> {
    let Some((key, value)) = split_is(text) else {
        return Err(CmdError::usage("say what is what, e.g. remember meeting is tomorrow"));
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
    let before = store.get(&slot)?.and_then(|raw| Record::decode(&raw).ok());
    let record = Record::new().with("value", value).with("by", &chat.user);
    store.set(&slot, &record.encode())?;
    let score = format!("{}{}", chat.score_prefix(), key_part(&chat.user));
    store.increment(&score, 1)?;
    Ok(match before.as_ref().and_then(|r| r.get("value")) {
        Some(old) if old != value => format!("ok, {key} is now {value} (it was {old})"),
        _ => format!("ok, I'll remember that {key} is {value}"),
    })
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
            Ok(format!("{key} is {value} (said {by})"))
        }
        None => Ok(format!("I don't remember anything about {key}")),
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
    use example_kit::MemStore;

    fn chat(server: &str, user: &str) -> Chat {
        Chat { server: server.to_owned(), user: user.to_owned() }
    }

    #[test]
    fn remember_recall_forget() {
        let store = MemStore::new();
        let alice = chat("s1", "alice");
        assert_eq!(
            remember(&store, &alice, "Meeting  is tomorrow at 10").unwrap(),
            "ok, I'll remember that meeting is tomorrow at 10"
        );
        assert_eq!(recall(&store, &alice, "meeting").unwrap(), "meeting is tomorrow at 10 (said alice)");
        assert_eq!(
            remember(&store, &chat("s1", "bob"), "meeting is today").unwrap(),
            "ok, meeting is now today (it was tomorrow at 10)"
        );
        assert_eq!(forget(&store, &alice, "meeting").unwrap(), "ok, I forgot meeting");
        assert_eq!(forget(&store, &alice, "meeting").unwrap(), "I didn't know anything about meeting");
        assert_eq!(recall(&store, &alice, "meeting").unwrap(), "I don't remember anything about meeting");
    }

    #[test]
    fn servers_are_separate_even_with_colons() {
        let store = MemStore::new();
        remember(&store, &chat("a", "u"), "x:y is 1").unwrap();
        remember(&store, &chat("a:x", "u"), "y is 2").unwrap();
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
        remember(&store, &chat("s", "bob"), "lunch is at noon").unwrap();
        remember(&store, &chat("s", "alice"), "meeting is tomorrow").unwrap();
        remember(&store, &chat("s", "alice"), "meeting is today").unwrap();
        remember(&store, &chat("other", "carol"), "x is y").unwrap();
        assert_eq!(
            remembered(&store, &chat("s", "bob")).unwrap(),
            "I remember 2 things:\n- lunch is at noon\n- meeting is today"
        );
        assert_eq!(
            leaderboard(&store, &chat("s", "bob")).unwrap(),
            "leaderboard:\n1. alice: 2 things\n2. bob: 1 thing"
        );
    }

    #[test]
    fn bad_input_gets_a_usage_reply() {
        let store = MemStore::new();
        let u = chat("s", "u");
        assert!(matches!(remember(&store, &u, "meeting tomorrow"), Err(CmdError::Usage(_))));
        assert!(matches!(remember(&store, &u, "is tomorrow"), Err(CmdError::Usage(_))));
        assert!(matches!(remember(&store, &u, "meeting is "), Err(CmdError::Usage(_))));
        let long = format!("k is {}", "v".repeat(MAX_VALUE + 1));
        assert!(matches!(remember(&store, &u, &long), Err(CmdError::Usage(_))));
        // `is` inside a word does not split.
        assert_eq!(split_is("this island is big"), Some(("this island ", " big")));
        assert!(store.keys().is_empty());
    }

    #[test]
    fn a_full_store_is_a_reply_not_a_retry() {
        let store = MemStore::with_max_keys(2);
        let u = chat("s", "u");
        remember(&store, &u, "a is 1").unwrap();
        match remember(&store, &u, "b is 2") {
            Err(CmdError::Usage(text)) => assert!(text.contains("storage is full"), "{text}"),
            other => panic!("{other:?}"),
        }
    }
}
