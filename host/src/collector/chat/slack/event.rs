//! Slack `events_api` payloads as chat messages: which events are messages a user typed,
//! which are the bot's own or edits, deletions and joins (skipped).

use serde_json::Value;

use super::api::Identity;
use crate::collector::chat::wire::bounded;

/// Longest text taken from one Slack message (Slack itself cuts at 40,000 characters).
pub const MAX_TEXT: usize = 40_000 * 4;

/// A message a user typed, as Slack describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlackMessage {
    /// The event's id (`Ev...`): the same event delivered again has the same one.
    pub event_id: String,
    pub team: String,
    pub channel: String,
    pub user_id: String,
    pub text: String,
    /// The message's own `ts` (its id in the channel).
    pub ts: String,
    /// The thread's parent `ts` when the message is in a thread.
    pub thread_ts: Option<String>,
}

/// Why an event is not a message for the service.
#[derive(Debug, PartialEq, Eq)]
pub enum Skip {
    /// Not a `message` event, or an edit, a deletion, a join...
    NotAMessage,
    /// Posted by this bot.
    Own,
    /// Posted in a channel the collector does not listen to.
    OtherChannel,
    /// A field the message needs is missing.
    Malformed(&'static str),
}

/// The user message in an `events_api` payload (`{"type": "event_callback", "event_id",
/// "team_id", "event": {...}}`).
pub fn message(payload: &Value, me: &Identity, channels: &[String]) -> Result<SlackMessage, Skip> {
    let event = &payload["event"];
    if event["type"].as_str() != Some("message") {
        return Err(Skip::NotAMessage);
    }
    // Plain messages have no subtype; a thread reply also sent to the channel is one too.
    if !matches!(event["subtype"].as_str(), None | Some("thread_broadcast")) {
        return Err(Skip::NotAMessage);
    }
    let text = |v: &Value| v.as_str().map(str::to_owned);
    let user_id = text(&event["user"]).ok_or(Skip::Malformed("user"))?;
    let own_bot = !me.bot_id.is_empty() && event["bot_id"].as_str() == Some(me.bot_id.as_str());
    if user_id == me.user_id || own_bot {
        return Err(Skip::Own);
    }
    let channel = text(&event["channel"]).ok_or(Skip::Malformed("channel"))?;
    if !channels.is_empty() && !channels.contains(&channel) {
        return Err(Skip::OtherChannel);
    }
    let ts = text(&event["ts"]).ok_or(Skip::Malformed("ts"))?;
    let event_id = text(&payload["event_id"]).unwrap_or_else(|| format!("{channel}/{ts}"));
    let team = text(&payload["team_id"]).or_else(|| text(&event["team"])).unwrap_or_else(|| me.team_id.clone());
    Ok(SlackMessage {
        event_id,
        team,
        channel,
        user_id,
        text: bounded(event["text"].as_str().unwrap_or_default(), MAX_TEXT),
        ts,
        thread_ts: text(&event["thread_ts"]),
    })
}

/// `text` with a leading mention of the bot (`<@U123>`) removed; `None` when the bot is not
/// mentioned at its start.
pub fn strip_mention<'a>(text: &'a str, bot_user: &str) -> Option<&'a str> {
    let rest = text.trim_start().strip_prefix("<@")?.strip_prefix(bot_user)?;
    // `<@U123|name>` is the older form.
    let rest =
        rest.strip_prefix('>').or_else(|| rest.strip_prefix('|').and_then(|r| r.split_once('>').map(|(_, t)| t)))?;
    Some(rest.trim_start_matches([':', ',']).trim_start())
}

/// Slack's escaping undone (`&amp;`, `&lt;`, `&gt;`): users type `<` and `&` as themselves.
pub fn unescape(text: &str) -> String {
    text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
}

/// Text escaped as Slack wants it in `chat.postMessage` (`&`, `<`, `>`), so a reply cannot
/// mention `@channel` or link by quoting markup.
pub fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn me() -> Identity {
        Identity { user_id: "UBOT".into(), bot_id: "BBOT".into(), team_id: "T1".into() }
    }

    fn payload(event: Value) -> Value {
        json!({"type": "event_callback", "event_id": "Ev1", "team_id": "T1", "event": event})
    }

    #[test]
    fn user_messages_are_taken_and_the_rest_skipped() {
        let p = payload(json!({"type": "message", "channel": "C1", "user": "U1", "text": "roll 2d6",
            "ts": "1.2", "thread_ts": "1.0"}));
        let m = message(&p, &me(), &[]).unwrap();
        assert_eq!((m.channel.as_str(), m.user_id.as_str(), m.text.as_str()), ("C1", "U1", "roll 2d6"));
        assert_eq!((m.event_id.as_str(), m.thread_ts.as_deref(), m.team.as_str()), ("Ev1", Some("1.0"), "T1"));
        assert_eq!(message(&p, &me(), &["C2".to_owned()]), Err(Skip::OtherChannel));
        let own = payload(json!({"type": "message", "channel": "C1", "user": "UBOT", "text": "x", "ts": "1"}));
        assert_eq!(message(&own, &me(), &[]), Err(Skip::Own));
        let bot = payload(json!({"type": "message", "channel": "C1", "user": "U9", "bot_id": "BBOT", "ts": "1"}));
        assert_eq!(message(&bot, &me(), &[]), Err(Skip::Own));
        let edit = payload(json!({"type": "message", "subtype": "message_changed", "channel": "C1"}));
        assert_eq!(message(&edit, &me(), &[]), Err(Skip::NotAMessage));
        let reaction = payload(json!({"type": "reaction_added", "user": "U1"}));
        assert_eq!(message(&reaction, &me(), &[]), Err(Skip::NotAMessage));
        let no_user = payload(json!({"type": "message", "channel": "C1", "ts": "1"}));
        assert_eq!(message(&no_user, &me(), &[]), Err(Skip::Malformed("user")));
    }

    #[test]
    fn mentions_and_escapes() {
        assert_eq!(strip_mention("<@UBOT> roll 2d6", "UBOT"), Some("roll 2d6"));
        assert_eq!(strip_mention("<@UBOT|cannon>: roll", "UBOT"), Some("roll"));
        assert_eq!(strip_mention("roll <@UBOT>", "UBOT"), None);
        assert_eq!(strip_mention("<@UOTHER> roll", "UBOT"), None);
        assert_eq!(unescape("a &lt;b&gt; &amp;amp;"), "a <b> &amp;");
        assert_eq!(escape("<!channel> & co"), "&lt;!channel&gt; &amp; co");
    }
}
