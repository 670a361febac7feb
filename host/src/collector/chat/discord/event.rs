//! Discord dispatches as chat messages: MESSAGE_CREATE from users (the bot's own skipped),
//! and the threads the bot can see (GUILD_CREATE, THREAD_CREATE, THREAD_LIST_SYNC), so a
//! message in a thread gets the thread's parent as its `channel` and the thread as `thread`.

use std::collections::HashMap;

use serde_json::Value;

use crate::collector::chat::wire::bounded;

/// Longest text taken from one message (Discord's own limit is 4,000 characters).
pub const MAX_TEXT: usize = 4_000 * 4;
/// Threads remembered (their parent channel); beyond that the map starts over.
const MAX_THREADS: usize = 50_000;

/// A message a user typed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscordMessage {
    pub id: String,
    /// The guild's id; empty for a direct message.
    pub guild: String,
    /// The channel (a thread's parent for a message in a thread).
    pub channel: String,
    /// The thread's id, for a message in a thread.
    pub thread: Option<String>,
    pub user_id: String,
    /// Server nickname, else display name, else user name.
    pub user: String,
    pub text: String,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Skip {
    /// Posted by this bot.
    Own,
    /// A system message (join, pin, ...) or one with no text.
    NotText,
    /// Outside the configured channels or guilds.
    Elsewhere,
    Malformed(&'static str),
}

/// Which channels are threads, and of which parent.
#[derive(Default)]
pub struct Threads(HashMap<String, String>);

impl Threads {
    /// Learns the threads a dispatch announces.
    pub fn learn(&mut self, event: &str, data: &Value) {
        let list = match event {
            "GUILD_CREATE" | "THREAD_LIST_SYNC" => data["threads"].as_array().cloned().unwrap_or_default(),
            "THREAD_CREATE" | "THREAD_UPDATE" => vec![data.clone()],
            "THREAD_DELETE" => {
                if let Some(id) = data["id"].as_str() {
                    self.0.remove(id);
                }
                return;
            }
            _ => return,
        };
        for thread in list {
            if let (Some(id), Some(parent)) = (thread["id"].as_str(), thread["parent_id"].as_str()) {
                if self.0.len() >= MAX_THREADS {
                    self.0.clear();
                }
                self.0.insert(id.to_owned(), parent.to_owned());
            }
        }
    }

    pub fn parent(&self, channel: &str) -> Option<&str> {
        self.0.get(channel).map(String::as_str)
    }
}

/// The user message in a MESSAGE_CREATE's data. `channels`/`guilds` (when not empty) are the
/// only ones listened to; a thread counts as its parent channel.
pub fn message(
    data: &Value,
    me: Option<&str>,
    threads: &Threads,
    channels: &[String],
    guilds: &[String],
) -> Result<DiscordMessage, Skip> {
    let text = |v: &Value| v.as_str().map(str::to_owned);
    let author = &data["author"];
    let user_id = text(&author["id"]).ok_or(Skip::Malformed("author.id"))?;
    if me == Some(user_id.as_str()) {
        return Err(Skip::Own);
    }
    // 0 DEFAULT and 19 REPLY are what people type; the rest are system messages.
    if !matches!(data["type"].as_u64(), Some(0 | 19)) {
        return Err(Skip::NotText);
    }
    let content = data["content"].as_str().unwrap_or_default();
    if content.trim().is_empty() {
        return Err(Skip::NotText);
    }
    let id = text(&data["id"]).ok_or(Skip::Malformed("id"))?;
    let channel_id = text(&data["channel_id"]).ok_or(Skip::Malformed("channel_id"))?;
    let guild = text(&data["guild_id"]).unwrap_or_default();
    let (channel, thread) = match threads.parent(&channel_id) {
        Some(parent) => (parent.to_owned(), Some(channel_id)),
        None => (channel_id, None),
    };
    let listened = |list: &[String], id: &str| list.is_empty() || list.iter().any(|c| c == id);
    if !listened(channels, &channel) || !listened(guilds, &guild) {
        return Err(Skip::Elsewhere);
    }
    let user = [&data["member"]["nick"], &author["global_name"], &author["username"]]
        .into_iter()
        .filter_map(Value::as_str)
        .find(|s| !s.trim().is_empty())
        .unwrap_or(&user_id)
        .to_owned();
    Ok(DiscordMessage { id, guild, channel, thread, user_id, user, text: bounded(content, MAX_TEXT) })
}

/// `text` with a leading mention of the bot (`<@ID>` or `<@!ID>`) removed; `None` when the
/// bot is not mentioned at its start.
pub fn strip_mention<'a>(text: &'a str, me: &str) -> Option<&'a str> {
    let rest = text.trim_start().strip_prefix("<@")?;
    let rest = rest.strip_prefix('!').unwrap_or(rest);
    let rest = rest.strip_prefix(me)?.strip_prefix('>')?;
    Some(rest.trim_start_matches([':', ',']).trim_start())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn create(channel: &str, author: &str, content: &str) -> Value {
        json!({"id": "10", "type": 0, "channel_id": channel, "guild_id": "G", "content": content,
            "author": {"id": author, "username": "alice", "global_name": "Alice"}, "member": {"nick": null}})
    }

    #[test]
    fn messages_threads_and_skips() {
        let mut threads = Threads::default();
        threads.learn("GUILD_CREATE", &json!({"threads": [{"id": "TH", "parent_id": "C"}]}));
        let m = message(&create("C", "U", "roll 2d6"), Some("BOT"), &threads, &[], &[]).unwrap();
        assert_eq!((m.channel.as_str(), m.thread, m.user.as_str()), ("C", None, "Alice"));
        let t = message(&create("TH", "U", "roll"), Some("BOT"), &threads, &["C".into()], &["G".into()]).unwrap();
        assert_eq!((t.channel.as_str(), t.thread.as_deref()), ("C", Some("TH")));
        assert_eq!(message(&create("C", "BOT", "hi"), Some("BOT"), &threads, &[], &[]), Err(Skip::Own));
        assert_eq!(message(&create("C", "U", "  "), Some("BOT"), &threads, &[], &[]), Err(Skip::NotText));
        assert_eq!(message(&create("X", "U", "a"), Some("BOT"), &threads, &["C".into()], &[]), Err(Skip::Elsewhere));
        assert_eq!(message(&create("C", "U", "a"), Some("BOT"), &threads, &[], &["H".into()]), Err(Skip::Elsewhere));
        let mut join = create("C", "U", "joined");
        join["type"] = json!(7);
        assert_eq!(message(&join, Some("BOT"), &threads, &[], &[]), Err(Skip::NotText));
        threads.learn("THREAD_DELETE", &json!({"id": "TH"}));
        assert_eq!(threads.parent("TH"), None);
        let mut nick = create("C", "U", "x");
        nick["member"]["nick"] = json!("Ali");
        assert_eq!(message(&nick, None, &threads, &[], &[]).unwrap().user, "Ali");
    }

    #[test]
    fn mentions() {
        assert_eq!(strip_mention("<@42> roll 2d6", "42"), Some("roll 2d6"));
        assert_eq!(strip_mention("<@!42>, roll", "42"), Some("roll"));
        assert_eq!(strip_mention("<@421> roll", "42"), None);
        assert_eq!(strip_mention("hi <@42>", "42"), None);
    }
}
