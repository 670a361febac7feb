//! The chat collectors' settings (`kind: irc`, `kind: matrix`; `slack` and `discord` in
//! config/chat_hosted.rs): what every chat kind shares
//! (`prefix`, `mention_only`, `replies` pacing) and each platform's own keys.
//!
//! [`keys`] says which keys a chat kind accepts (the caller reports the others) and
//! [`chat`] builds its [`ChatSpec`]. Secrets (`password`, `access_token`, SASL) are
//! [`Secret`]s, normally `${ENV}` (the loader substitutes every scalar), never printed.
//! A platform whose connection would carry a secret in clear text to another machine
//! (`irc://` off loopback with a password, `http://` Matrix off loopback) is refused.

use std::path::PathBuf;
use std::time::Duration;

use super::access::Secret;
use super::de::join;
use super::duration::every;
use super::loader::{Loader, field};
use super::yaml::{Key, Node, Value};

/// Keys every chat kind takes besides `kind` and `conf`.
const COMMON_KEYS: &[&str] = &["prefix", "mention_only", "replies"];

/// A chat collector: a platform connection whose channel messages become messages and whose
/// taskbacks are posted back.
#[derive(Debug, Clone)]
pub struct ChatSpec {
    /// The platform and its own settings.
    pub platform: ChatPlatform,
    /// Which lines become messages (the rest are ignored, never stored).
    pub filter: ChatFilter,
    /// Outbound pacing: replies wait for it (queued, never dropped).
    pub pace: Pace,
}

/// `prefix:` and `mention_only:`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChatFilter {
    /// Only lines starting with this become messages (the text is kept whole: torch's own
    /// `prefix` strips it).
    pub prefix: Option<String>,
    /// Only lines addressed to the bot (`nick: ...`, `@name ...`, or a direct message)
    /// become messages, with the address removed from `text`.
    pub mention_only: bool,
}

/// At most `burst` outbound messages at once, then one per `every` (a token bucket).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pace {
    /// Messages that may go out at once.
    pub burst: u32,
    /// Then one message per this interval.
    pub every: Duration,
}

/// One platform's own settings.
#[derive(Debug, Clone)]
pub enum ChatPlatform {
    /// `kind: irc`.
    Irc(IrcSettings),
    /// `kind: matrix`.
    Matrix(MatrixSettings),
    /// `kind: slack`.
    Slack(super::chat_hosted::SlackSettings),
    /// `kind: discord`.
    Discord(super::chat_hosted::DiscordSettings),
}

/// `kind: irc`.
#[derive(Debug, Clone)]
pub struct IrcSettings {
    /// `irc://HOST[:PORT]` (6667) or `ircs://HOST[:PORT]` (6697, TLS).
    pub server: String,
    /// The server URL's host.
    pub host: String,
    /// Its port (default 6667, or 6697 with TLS).
    pub port: u16,
    /// Whether the connection uses TLS (`ircs://`).
    pub tls: bool,
    /// Wanted nick; when in use, `nick_`, `nick__`, then `nick` plus digits.
    pub nick: String,
    /// USER name (ident) and real name; default the nick.
    pub user: String,
    /// Real name (`USER`'s last parameter).
    pub realname: String,
    /// Server password (`PASS`).
    pub password: Option<Secret>,
    /// SASL PLAIN account and password (`sasl: {user, password}`).
    pub sasl: Option<(String, Secret)>,
    /// Channels to join (`#bots`), with an optional key after a space (`#ops key`).
    pub channels: Vec<String>,
    /// Extra trusted root certificate(s), PEM, for `ircs://` (a private CA).
    pub ca_file: Option<PathBuf>,
}

/// `kind: matrix`.
#[derive(Debug, Clone)]
pub struct MatrixSettings {
    /// Base URL of the homeserver's client API, without a trailing slash.
    pub homeserver: String,
    /// The `server` field of its messages: the homeserver URL's host (and port when given).
    pub server: String,
    /// Login name (`cannon` or `@cannon:example.org`).
    pub user: String,
    /// How the bot logs in.
    pub auth: MatrixAuth,
    /// Rooms (ids `!x:hs` or aliases `#x:hs`) to join at start.
    pub rooms: Vec<String>,
    /// Join rooms the bot is invited to (default true).
    pub join_on_invite: bool,
    /// Extra trusted root certificate(s), PEM (a private CA).
    pub ca_file: Option<PathBuf>,
}

/// A Matrix login: a password, or an access token used as is.
#[derive(Debug, Clone)]
pub enum MatrixAuth {
    /// `password:`: logs in with `m.login.password`.
    Password(Secret),
    /// `access_token:`: used as is (no login).
    AccessToken(Secret),
}

impl ChatPlatform {
    /// The `platform` field of its messages and the kind's name.
    pub fn name(&self) -> &'static str {
        match self {
            ChatPlatform::Irc(_) => "irc",
            ChatPlatform::Matrix(_) => "matrix",
            ChatPlatform::Slack(_) => "slack",
            ChatPlatform::Discord(_) => "discord",
        }
    }

    /// The `server` field of its messages: the IRC network's host, the homeserver's URL;
    /// empty where each message names its own (Slack's workspace, Discord's guild).
    pub fn server(&self) -> &str {
        match self {
            ChatPlatform::Irc(irc) => &irc.host,
            ChatPlatform::Matrix(m) => &m.server,
            ChatPlatform::Slack(_) | ChatPlatform::Discord(_) => "",
        }
    }

    /// One line for `ls` and logs (no secrets).
    pub fn describe(&self) -> String {
        match self {
            ChatPlatform::Irc(irc) => format!("irc {} on {} {}", irc.nick, irc.server, irc.channels.join(" ")),
            ChatPlatform::Matrix(m) => format!("matrix {} on {}", m.user, m.homeserver),
            ChatPlatform::Slack(s) => format!("slack on {}", s.api_url),
            ChatPlatform::Discord(d) => format!("discord on {}", d.api_url),
        }
    }
}

/// The keys a chat kind accepts besides `kind` and `conf`; `None` for other kinds.
pub(crate) fn keys(kind: &str) -> Option<Vec<&'static str>> {
    let own: &[&str] = match kind {
        "irc" => &["server", "nick", "user", "realname", "password", "sasl", "channels", "ca_file"],
        "matrix" => &["homeserver", "user", "password", "access_token", "rooms", "join_on_invite", "ca_file"],
        "slack" => super::chat_hosted::SLACK_KEYS,
        "discord" => super::chat_hosted::DISCORD_KEYS,
        _ => return None,
    };
    Some(COMMON_KEYS.iter().chain(own).copied().collect())
}

/// Builds a chat kind's spec from its (already key-checked) mapping entries.
pub(crate) fn chat(ctx: &mut Loader, node: &Node, path: &str, kind: &str, fields: &[(Key, Node)]) -> Option<ChatSpec> {
    let filter = filter(ctx, path, fields);
    let platform = match kind {
        "irc" => ChatPlatform::Irc(irc(ctx, node, path, fields)?),
        "slack" => ChatPlatform::Slack(super::chat_hosted::slack(ctx, node, path, fields)?),
        "discord" => ChatPlatform::Discord(super::chat_hosted::discord(ctx, node, path, fields)?),
        _ => ChatPlatform::Matrix(matrix(ctx, node, path, fields)?),
    };
    let default = match platform {
        // Two lines a second after a burst of four: under the flood limits of common IRC daemons.
        ChatPlatform::Irc(_) => Pace { burst: 4, every: Duration::from_millis(2000) },
        // Synapse's default per-user message limit is a burst of 10, then 0.2 a second.
        ChatPlatform::Matrix(_) => Pace { burst: 10, every: Duration::from_millis(5000) },
        ChatPlatform::Slack(_) => super::chat_hosted::SLACK_PACE,
        ChatPlatform::Discord(_) => super::chat_hosted::DISCORD_PACE,
    };
    let pace = match field(fields, "replies") {
        Some(n) => replies(ctx, n, &join(path, "replies"), default)?,
        None => default,
    };
    Some(ChatSpec { platform, filter: filter?, pace })
}

fn filter(ctx: &mut Loader, path: &str, fields: &[(Key, Node)]) -> Option<ChatFilter> {
    // Both are checked before either can end the check.
    let prefix = field(fields, "prefix").map(|n| ctx.name(n, &join(path, "prefix")));
    let mention_only = field(fields, "mention_only").map(|n| ctx.boolean(n, &join(path, "mention_only")));
    let prefix = match prefix {
        Some(given) => Some(given?),
        None => None,
    };
    Some(ChatFilter { prefix, mention_only: mention_only.unwrap_or(Some(false))? })
}

/// `replies: {burst: N, every: DURATION}`.
fn replies(ctx: &mut Loader, node: &Node, path: &str, default: Pace) -> Option<Pace> {
    let fields = ctx.map(node, path, &["burst", "every"])?;
    let mut pace = default;
    if let Some(n) = field(fields, "burst") {
        match &n.value {
            Value::Int(b) if (1..=1000).contains(b) => pace.burst = u32::try_from(*b).unwrap_or(1),
            _ => ctx.expected(n, &join(path, "burst"), "a whole number from 1 to 1000"),
        }
    }
    if let Some(n) = field(fields, "every") {
        pace.every = every(ctx, n, &join(path, "every"))?;
    }
    Some(pace)
}

fn secret(ctx: &mut Loader, fields: &[(Key, Node)], path: &str, key: &str) -> Option<Secret> {
    let n = field(fields, key)?;
    ctx.name(n, &join(path, key)).map(Secret::new)
}

fn ca_file(ctx: &mut Loader, fields: &[(Key, Node)], path: &str) -> Option<PathBuf> {
    let n = field(fields, "ca_file")?;
    let p = join(path, "ca_file");
    let text = ctx.name(n, &p)?;
    let file = ctx.base.join(&text);
    if !file.is_file() {
        ctx.error(n, &p, format!("`{text}`: no such file (relative to the compose file's directory)"));
        return None;
    }
    Some(file)
}

/// `fields[key]`, reporting it missing as "WHAT needs `key:` (e.g. `key: EXAMPLE`)".
fn required<'n>(
    ctx: &mut Loader,
    node: &Node,
    path: &str,
    fields: &'n [(Key, Node)],
    what: &str,
    key: &str,
    example: &str,
) -> Option<&'n Node> {
    let found = field(fields, key);
    if found.is_none() {
        ctx.error(node, path, format!("{what} needs `{key}:` (e.g. `{key}: {example}`)"));
    }
    found
}

/// A list of names (channels, rooms), each checked by `check` (an error text when bad).
fn names(ctx: &mut Loader, node: &Node, path: &str, check: impl Fn(&str) -> Option<String>) -> Vec<String> {
    let mut out = Vec::new();
    for (i, (text, item)) in ctx.texts(node, path).into_iter().enumerate() {
        match check(&text) {
            Some(problem) => ctx.error(item, &format!("{path}[{i}]"), problem),
            None => out.push(text),
        }
    }
    out
}

fn irc(ctx: &mut Loader, node: &Node, path: &str, fields: &[(Key, Node)]) -> Option<IrcSettings> {
    let server_node = required(ctx, node, path, fields, "an `irc` collector", "server", "\"ircs://irc.libera.chat\"");
    let nick_node = required(ctx, node, path, fields, "an `irc` collector", "nick", "cannon");
    let channels_node = required(ctx, node, path, fields, "an `irc` collector", "channels", "[\"#bots\"]");
    let (server_node, nick_node, channels_node) = (server_node?, nick_node?, channels_node?);
    let server_path = join(path, "server");
    let server = ctx.name(server_node, &server_path)?;
    let Some((tls, host, port)) = irc_url(&server) else {
        let msg =
            format!("`{server}` is not an IRC server URL (e.g. `ircs://irc.libera.chat` or `irc://127.0.0.1:6667`)");
        ctx.error(server_node, &server_path, msg);
        return None;
    };
    let nick_path = join(path, "nick");
    let nick = ctx.name(nick_node, &nick_path)?;
    if let Some(problem) = nick_problem(&nick) {
        ctx.error(nick_node, &nick_path, problem);
    }
    let text = |ctx: &mut Loader, key: &str| field(fields, key).and_then(|n| ctx.name(n, &join(path, key)));
    let user = text(ctx, "user").unwrap_or_else(|| nick.clone());
    let realname = text(ctx, "realname").unwrap_or_else(|| nick.clone());
    for (key, value) in [("user", &user), ("realname", &realname)] {
        let bad = value.chars().any(char::is_control) || (key == "user" && value.contains([' ', '@']));
        if bad && let Some(n) = field(fields, key) {
            let what = if key == "user" { "spaces, `@` or control characters" } else { "control characters" };
            ctx.error(n, &join(path, key), format!("must not hold {what}"));
        }
    }
    let password = secret(ctx, fields, path, "password");
    let sasl = field(fields, "sasl").and_then(|n| sasl(ctx, n, &join(path, "sasl")));
    let channels = names(ctx, channels_node, &join(path, "channels"), channel_problem);
    let none_given = match &channels_node.value {
        Value::Seq(items) => items.is_empty(),
        Value::Null => true,
        _ => false,
    };
    if channels.is_empty() && none_given {
        ctx.error(channels_node, &join(path, "channels"), "name at least one channel (e.g. `[\"#bots\"]`)");
    }
    if !tls && (password.is_some() || sasl.is_some()) && !super::access::is_loopback(&format!("{host}:{port}")) {
        let msg = format!("`{server}` is not encrypted and would send the password in clear: use `ircs://`");
        ctx.error(server_node, &server_path, msg);
    }
    let ca_file = ca_file(ctx, fields, path);
    Some(IrcSettings { server, host, port, tls, nick, user, realname, password, sasl, channels, ca_file })
}

fn sasl(ctx: &mut Loader, node: &Node, path: &str) -> Option<(String, Secret)> {
    let fields = ctx.map(node, path, &["user", "password"])?;
    let user =
        required(ctx, node, path, fields, "`sasl:`", "user", "cannon").and_then(|n| ctx.name(n, &join(path, "user")));
    let password = required(ctx, node, path, fields, "`sasl:`", "password", "${IRC_PASSWORD}");
    let password = password.and_then(|n| ctx.name(n, &join(path, "password")));
    Some((user?, Secret::new(password?)))
}

/// `irc://host[:port]` or `ircs://host[:port]` as (tls, host, port).
pub(crate) fn irc_url(text: &str) -> Option<(bool, String, u16)> {
    let url = url::Url::parse(text).ok()?;
    let tls = match url.scheme() {
        "irc" => false,
        "ircs" => true,
        _ => return None,
    };
    let clean =
        url.username().is_empty() && url.password().is_none() && url.query().is_none() && url.fragment().is_none();
    if !clean || !matches!(url.path(), "" | "/") {
        return None;
    }
    let host = url.host_str()?.trim_start_matches('[').trim_end_matches(']').to_owned();
    Some((tls, host, url.port().unwrap_or(if tls { 6697 } else { 6667 })))
}

/// Why `nick` is not a valid IRC nick (RFC 2812 letters, digits and `-[]\`^{|}_`).
pub(crate) fn nick_problem(nick: &str) -> Option<String> {
    let special = |c: char| "[]\\`_^{|}".contains(c);
    let first_ok = nick.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || special(c));
    let rest_ok = nick.chars().all(|c| c.is_ascii_alphanumeric() || special(c) || c == '-');
    if first_ok && rest_ok && nick.len() <= 30 {
        return None;
    }
    Some(format!(
        "`{}` is not an IRC nick (letters, digits and -[]\\`^{{|}}_, not starting with a digit or -, at most 30)",
        crate::text::for_terminal(nick)
    ))
}

/// Why `channel` is not an IRC channel (`#name`, optionally followed by ` KEY`).
pub(crate) fn channel_problem(channel: &str) -> Option<String> {
    let (name, key) = match channel.split_once(' ') {
        Some((name, key)) => (name, Some(key)),
        None => (channel, None),
    };
    let bad = |c: char| c.is_control() || c == ',' || c == ' ';
    let name_ok = (2..=50).contains(&name.len()) && name.starts_with(['#', '&', '+', '!']) && !name.chars().any(bad);
    let key_ok = key.is_none_or(|k| !k.is_empty() && !k.chars().any(bad));
    if name_ok && key_ok {
        return None;
    }
    Some(format!(
        "`{}` is not an IRC channel (e.g. `#bots`, or `#ops KEY` with a key)",
        crate::text::for_terminal(channel)
    ))
}

fn matrix(ctx: &mut Loader, node: &Node, path: &str, fields: &[(Key, Node)]) -> Option<MatrixSettings> {
    let hs_node =
        required(ctx, node, path, fields, "a `matrix` collector", "homeserver", "\"https://matrix.example.org\"");
    let user_node = required(ctx, node, path, fields, "a `matrix` collector", "user", "cannon");
    let (hs_node, user_node) = (hs_node?, user_node?);
    let hs_path = join(path, "homeserver");
    let homeserver = ctx.name(hs_node, &hs_path)?;
    let url =
        url::Url::parse(&homeserver).ok().filter(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some());
    let Some(url) = url else {
        ctx.error(
            hs_node,
            &hs_path,
            format!("`{homeserver}` is not an http(s) URL (e.g. `https://matrix.example.org`)"),
        );
        return None;
    };
    if url.scheme() == "http" {
        let host = url.host_str().unwrap_or_default();
        if !super::access::is_loopback(&format!("{host}:{}", url.port_or_known_default().unwrap_or(80))) {
            ctx.error(
                hs_node,
                &hs_path,
                format!("`{homeserver}` is not encrypted and would send the credentials in clear: use `https://`"),
            );
        }
    }
    let user = ctx.name(user_node, &join(path, "user"))?;
    let auth = match (secret(ctx, fields, path, "password"), secret(ctx, fields, path, "access_token")) {
        (Some(p), None) => MatrixAuth::Password(p),
        (None, Some(t)) => MatrixAuth::AccessToken(t),
        (Some(_), Some(_)) => {
            ctx.error(node, path, "give either `password:` or `access_token:`, not both");
            return None;
        }
        (None, None) => {
            ctx.error(
                node,
                path,
                "a `matrix` collector needs `password:` or `access_token:` (e.g. `password: ${MATRIX_PASSWORD}`)",
            );
            return None;
        }
    };
    let room_problem = |room: &str| {
        // Room ids are `!opaque` (`!opaque:server` before room version 12); aliases `#name:server`.
        let shaped = (room.starts_with('!') && room.len() > 1) || (room.starts_with('#') && room.contains(':'));
        let ok = shaped && !room.chars().any(|c| c.is_control() || c == ' ');
        (!ok).then(|| {
            format!("`{}` is not a Matrix room id or alias (e.g. `#bots:example.org`)", crate::text::for_terminal(room))
        })
    };
    let rooms = field(fields, "rooms").map(|n| names(ctx, n, &join(path, "rooms"), room_problem)).unwrap_or_default();
    let join_on_invite = match field(fields, "join_on_invite") {
        Some(n) => ctx.boolean(n, &join(path, "join_on_invite"))?,
        None => true,
    };
    let ca_file = ca_file(ctx, fields, path);
    let homeserver = homeserver.trim_end_matches('/').to_owned();
    let server = match url.port() {
        Some(port) => format!("{}:{port}", url.host_str().unwrap_or_default()),
        None => url.host_str().unwrap_or_default().to_owned(),
    };
    Some(MatrixSettings { homeserver, server, user, auth, rooms, join_on_invite, ca_file })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn irc_urls() {
        assert_eq!(irc_url("irc://127.0.0.1:6667"), Some((false, "127.0.0.1".into(), 6667)));
        assert_eq!(irc_url("ircs://irc.libera.chat"), Some((true, "irc.libera.chat".into(), 6697)));
        assert_eq!(irc_url("irc://[::1]"), Some((false, "::1".into(), 6667)));
        assert_eq!(irc_url("http://x"), None);
        assert_eq!(irc_url("irc://u:p@x"), None);
        assert_eq!(irc_url("irc://x/#chan"), None);
        assert_eq!(irc_url("localhost:6667"), None);
    }

    #[test]
    fn nicks_and_channels() {
        assert!(nick_problem("cannon").is_none());
        assert!(nick_problem("[bot]_1").is_none());
        assert!(nick_problem("1bot").is_some());
        assert!(nick_problem("a b").is_some());
        assert!(nick_problem("").is_some());
        assert!(channel_problem("#bots").is_none());
        assert!(channel_problem("#ops secret").is_none());
        assert!(channel_problem("bots").is_some());
        assert!(channel_problem("#a,#b").is_some());
        assert!(channel_problem("#").is_some());
        assert!(channel_problem("#a\u{7}").is_some());
    }
}
