//! The common shape of chat traffic: an [`Incoming`] line becomes message fields (after the
//! `prefix` / `mention_only` filter), and a taskback becomes a [`Reply`] ([`route`]).

use crate::broker::Fields;
use crate::config::ChatFilter;

/// One line said on a platform, before it becomes a message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Incoming {
    /// Display name of the sender.
    pub user: String,
    /// The platform's stable id of the sender (IRC `nick!user@host`, Matrix `@u:hs`).
    pub user_id: String,
    pub text: String,
    /// Where it was said (IRC channel or the sender's nick for a private message, Matrix
    /// room id): replies go there.
    pub channel: String,
    /// Thread the line belongs to, where the platform has threads.
    pub thread: Option<String>,
    /// The platform's id of this line (Matrix event id), when it has one.
    pub message_id: Option<String>,
    /// Said to the bot alone (a private message): counts as addressed to it.
    pub direct: bool,
    /// The `server` of this line when the platform's lines name their own (Slack's
    /// workspace, Discord's guild); `None`: the collector's.
    pub server: Option<String>,
}

/// Field names of chat messages (the same on every platform).
pub(crate) const USER: &str = "user";
pub(crate) const USER_ID: &str = "user_id";
pub(crate) const TEXT: &str = "text";
pub(crate) const SERVER: &str = "server";
pub(crate) const CHANNEL: &str = "channel";
pub(crate) const THREAD: &str = "thread";
pub(crate) const PLATFORM: &str = "platform";
pub(crate) const MESSAGE_ID: &str = "message_id";
/// A taskback's direct-message target (a user), when it has no `channel`.
pub(crate) const TO: &str = "to";

/// The text to store for `line`, or `None` when the filter ignores it. `names` are the
/// bot's names a line may address it by (`cannon: roll`, `@cannon roll`).
pub(crate) fn admit(filter: &ChatFilter, line: &Incoming, names: &[String]) -> Option<String> {
    let mut text = line.text.trim_end();
    if filter.mention_only {
        match names.iter().find_map(|name| strip_mention(text, name)) {
            Some(rest) => text = rest,
            None if line.direct => {}
            None => return None,
        }
    }
    if let Some(prefix) = &filter.prefix
        && !text.starts_with(prefix.as_str())
    {
        return None;
    }
    (!text.trim().is_empty()).then(|| text.to_owned())
}

/// `text` without a leading address to `name` (`name: `, `name, `, `@name `, any ASCII
/// case), or `None` when it does not start with one.
pub(crate) fn strip_mention<'t>(text: &'t str, name: &str) -> Option<&'t str> {
    if name.is_empty() {
        return None;
    }
    let text = text.trim_start();
    let body = text.strip_prefix('@').unwrap_or(text);
    let head = body.get(..name.len())?;
    if !head.eq_ignore_ascii_case(name) {
        return None;
    }
    let rest = &body[name.len()..];
    let rest = match rest.chars().next() {
        Some(':' | ',') => &rest[1..],
        Some(c) if c.is_whitespace() && body.len() < text.len() => rest,
        None if body.len() < text.len() => rest,
        _ => return None,
    };
    Some(rest.trim_start())
}

/// The message fields of an admitted line: `user, user_id, text, server, channel,
/// [thread], platform, [message_id]`.
pub(crate) fn fields(line: &Incoming, text: String, platform: &str, server: &str) -> Fields {
    let mut out = vec![
        (USER.to_owned(), line.user.clone()),
        (USER_ID.to_owned(), line.user_id.clone()),
        (TEXT.to_owned(), text),
        (SERVER.to_owned(), line.server.clone().unwrap_or_else(|| server.to_owned())),
        (CHANNEL.to_owned(), line.channel.clone()),
    ];
    if let Some(thread) = &line.thread {
        out.push((THREAD.to_owned(), thread.clone()));
    }
    out.push((PLATFORM.to_owned(), platform.to_owned()));
    if let Some(id) = &line.message_id {
        out.push((MESSAGE_ID.to_owned(), id.clone()));
    }
    out
}

/// Where a reply goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    /// A channel or room the bot is in, optionally a thread in it.
    Channel { channel: String, thread: Option<String> },
    /// A user, directly (IRC: a private message).
    User(String),
    /// A change to the guild itself (Discord): `set-icon` or `set-banner` from `asset`, the
    /// branding example's taskbacks.
    Guild { action: String, asset: String },
}

/// A taskback's text and where to post it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Reply {
    pub target: Target,
    pub text: String,
    /// The `message_id` of the message answered, when the taskback has one (Discord shows
    /// the reply as an answer to it).
    pub message_id: Option<String>,
}

/// What a chat collector does with a taskback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Route {
    /// Posts it.
    Post(Reply),
    /// Not for this collector (another platform or server, or nothing to post): skipped
    /// without a receipt, since another collector of the service may deliver it.
    NotOurs(&'static str),
    /// Meant for this collector but cannot be posted: skipped, with an `error` receipt.
    Refused(String),
}

/// Routes a taskback (the message's fields merged with the results, or an extra taskback a
/// task sent): its last `text` goes to its last `channel` (and `thread`), else to user
/// `to`. A `platform` or `server` other than this collector's means it is not ours (a
/// service may have several chat collectors, and each sees every taskback).
pub(crate) fn route(fields: &Fields, platform: &str, server: &str) -> Route {
    let last = |key: &str| fields.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v.as_str());
    if last(PLATFORM).is_some_and(|p| p != platform) {
        return Route::NotOurs("another platform's taskback");
    }
    // An empty `server`: the platform's messages name their own (Slack, Discord).
    if !server.is_empty() && last(SERVER).is_some_and(|s| s != server) {
        return Route::NotOurs("another server's taskback");
    }
    let Some(text) = last(TEXT).filter(|t| !t.trim().is_empty()) else {
        return Route::NotOurs("no `text` to post");
    };
    let action = last("action").filter(|a| matches!(*a, "set-icon" | "set-banner"));
    let addressed = last(CHANNEL).is_some_and(|c| !c.is_empty()) || last(TO).is_some_and(|t| !t.is_empty());
    if platform == "discord"
        && !addressed
        && let (Some(action), Some(asset)) = (action, last("asset"))
    {
        let target = Target::Guild { action: action.to_owned(), asset: asset.to_owned() };
        return Route::Post(Reply { target, text: text.to_owned(), message_id: None });
    }
    let target = match (last(CHANNEL), last(TO)) {
        (Some(channel), _) if !channel.is_empty() => Target::Channel {
            channel: channel.to_owned(),
            thread: last(THREAD).filter(|t| !t.is_empty()).map(str::to_owned),
        },
        (_, Some(user)) if !user.is_empty() => Target::User(user.to_owned()),
        _ => return Route::Refused("the taskback names no `channel` (nor a user in `to`) to post to".to_owned()),
    };
    let message_id = last(MESSAGE_ID).filter(|id| !id.is_empty()).map(str::to_owned);
    Route::Post(Reply { target, text: text.to_owned(), message_id })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(pairs: &[(&str, &str)]) -> Fields {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn mentions() {
        assert_eq!(strip_mention("cannon: roll 2d6", "cannon"), Some("roll 2d6"));
        assert_eq!(strip_mention("Cannon, roll", "cannon"), Some("roll"));
        assert_eq!(strip_mention("@cannon roll", "cannon"), Some("roll"));
        assert_eq!(strip_mention("cannonball: hi", "cannon"), None);
        assert_eq!(strip_mention("cannon roll", "cannon"), None);
        assert_eq!(strip_mention("hi cannon: roll", "cannon"), None);
        assert_eq!(strip_mention("c", "cannon"), None);
        assert_eq!(strip_mention("é: x", "e"), None);
    }

    #[test]
    fn filters() {
        let line = |text: &str, direct| Incoming { text: text.into(), direct, ..Incoming::default() };
        let names = ["cannon".to_owned()];
        let open = ChatFilter::default();
        assert_eq!(admit(&open, &line("roll 2d6", false), &names).as_deref(), Some("roll 2d6"));
        assert_eq!(admit(&open, &line("   ", false), &names), None);
        let mention = ChatFilter { prefix: None, mention_only: true };
        assert_eq!(admit(&mention, &line("cannon: roll", false), &names).as_deref(), Some("roll"));
        assert_eq!(admit(&mention, &line("roll", false), &names), None);
        assert_eq!(admit(&mention, &line("roll", true), &names).as_deref(), Some("roll"));
        assert_eq!(admit(&mention, &line("cannon:", false), &names), None);
        let prefix = ChatFilter { prefix: Some(".".into()), mention_only: false };
        assert_eq!(admit(&prefix, &line(".roll", false), &names).as_deref(), Some(".roll"));
        assert_eq!(admit(&prefix, &line("roll", false), &names), None);
    }

    #[test]
    fn message_fields() {
        let line = Incoming {
            user: "alice".into(),
            user_id: "alice!a@h".into(),
            text: "x".into(),
            channel: "#bots".into(),
            thread: Some("t1".into()),
            message_id: Some("$e".into()),
            direct: false,
            server: None,
        };
        let got = fields(&line, "roll".into(), "irc", "net");
        let want = f(&[
            ("user", "alice"),
            ("user_id", "alice!a@h"),
            ("text", "roll"),
            ("server", "net"),
            ("channel", "#bots"),
            ("thread", "t1"),
            ("platform", "irc"),
            ("message_id", "$e"),
        ]);
        assert_eq!(got, want);
        // A line naming its own server (a Slack workspace, a Discord guild) keeps it.
        let hosted = Incoming { server: Some("T1".into()), ..line };
        assert!(fields(&hosted, "roll".into(), "slack", "").contains(&("server".to_owned(), "T1".to_owned())));
    }

    #[test]
    fn routing() {
        let post = |channel: &str, thread: Option<&str>, text: &str| {
            Route::Post(Reply {
                target: Target::Channel { channel: channel.into(), thread: thread.map(Into::into) },
                text: text.into(),
                message_id: None,
            })
        };
        let reply =
            f(&[("cannon.id", "1-0"), ("platform", "irc"), ("server", "net"), ("channel", "#a"), ("text", "hi")]);
        assert_eq!(route(&reply, "irc", "net"), post("#a", None, "hi"));
        assert!(matches!(route(&reply, "matrix", "net"), Route::NotOurs(_)));
        assert!(matches!(route(&reply, "irc", "other"), Route::NotOurs(_)));
        // The results' keys come later and win: a reply elsewhere, in a thread.
        let moved = f(&[("channel", "#a"), ("thread", "t"), ("text", "q"), ("text", "a"), ("channel", "#b")]);
        assert_eq!(route(&moved, "irc", "net"), post("#b", Some("t"), "a"));
        // An extra taskback to a user (iwant's notices).
        assert_eq!(
            route(&f(&[("to", "bob"), ("text", "match")]), "irc", "net"),
            Route::Post(Reply { target: Target::User("bob".into()), text: "match".into(), message_id: None })
        );
        // Slack and Discord messages name their own server; the answered message is kept.
        let hosted = f(&[("server", "T1"), ("channel", "C1"), ("message_id", "9"), ("text", "hi")]);
        let Route::Post(reply) = route(&hosted, "slack", "") else { panic!("not posted") };
        assert_eq!(reply.message_id.as_deref(), Some("9"));
        // Branding actions change a Discord guild; elsewhere they name no channel.
        let brand = f(&[("action", "set-icon"), ("asset", "x/icon.png"), ("text", "branding: icon set")]);
        let Route::Post(reply) = route(&brand, "discord", "") else { panic!("not posted") };
        assert_eq!(reply.target, Target::Guild { action: "set-icon".into(), asset: "x/icon.png".into() });
        assert!(matches!(route(&brand, "irc", "net"), Route::Refused(_)));
        assert!(matches!(route(&f(&[("text", "lost")]), "irc", "net"), Route::Refused(_)));
        assert!(matches!(route(&f(&[("channel", "#a")]), "irc", "net"), Route::NotOurs(_)));
        assert!(matches!(route(&f(&[("channel", "#a"), ("text", " ")]), "irc", "net"), Route::NotOurs(_)));
    }
}
