//! The settings of the hosted chat platforms, `kind: slack` and `kind: discord` (their
//! shared keys `prefix`, `mention_only` and `replies` are read by config/chat.rs).
//!
//! Tokens are [`Secret`]s, normally `${ENV}`, never printed. `api_url` exists for tests
//! and proxies; an `http://` one is refused off loopback (it would carry the token in clear).

use std::path::PathBuf;
use std::time::Duration;

use super::access::Secret;
use super::chat::Pace;
use super::de::join;
use super::loader::{Loader, field};
use super::yaml::{Key, Node};

/// Slack's Web API, the default `api_url` of `kind: slack`.
pub const SLACK_API_URL: &str = "https://slack.com/api";
/// Discord's REST API (v10), the default `api_url` of `kind: discord`.
pub const DISCORD_API_URL: &str = "https://discord.com/api/v10";

/// `kind: slack` (Socket Mode).
#[derive(Debug, Clone)]
pub struct SlackSettings {
    /// App-level token (`xapp-...`, scope `connections:write`): opens Socket Mode connections.
    pub app_token: Secret,
    /// Bot token (`xoxb-...`): posts replies, reads user names.
    pub bot_token: Secret,
    /// Web API base URL (default `https://slack.com/api`).
    pub api_url: String,
    /// Channel ids listened to; empty: every channel the bot is in.
    pub channels: Vec<String>,
}

/// `kind: discord` (Gateway v10).
#[derive(Debug, Clone)]
pub struct DiscordSettings {
    /// Bot token (Developer Portal, Bot page).
    pub token: Secret,
    /// REST API base URL (default `https://discord.com/api/v10`); the Gateway URL comes
    /// from its `GET /gateway/bot`.
    pub api_url: String,
    /// Channel ids listened to (a thread counts as its parent); empty: all.
    pub channels: Vec<String>,
    /// Guild ids listened to; empty: all.
    pub guilds: Vec<String>,
    /// `branding: {guild, assets}`: taskbacks `{action: set-icon|set-banner, asset}` change
    /// this guild's icon or banner, from image files under `assets`.
    pub branding: Option<Branding>,
}

/// Where the branding example's taskbacks apply on Discord.
#[derive(Debug, Clone)]
pub struct Branding {
    /// The guild whose icon and banner change.
    pub guild: String,
    /// The directory an `asset` is relative to (the events the guests see at `/`).
    pub assets: PathBuf,
}

/// The keys of each kind besides the shared ones.
pub(crate) const SLACK_KEYS: &[&str] = &["app_token", "bot_token", "api_url", "channels"];
pub(crate) const DISCORD_KEYS: &[&str] = &["token", "api_url", "channels", "guilds", "branding"];

/// Slack allows about one message a second per channel, with short bursts.
pub(crate) const SLACK_PACE: Pace = Pace { burst: 3, every: Duration::from_millis(1000) };
/// Discord's create-message route allows 5 per 5 s per channel; its headers do the rest.
pub(crate) const DISCORD_PACE: Pace = Pace { burst: 5, every: Duration::from_millis(1000) };

pub(crate) fn slack(ctx: &mut Loader, node: &Node, path: &str, fields: &[(Key, Node)]) -> Option<SlackSettings> {
    let app_token = token(ctx, node, path, fields, "slack", "app_token", "${SLACK_APP_TOKEN}");
    let bot_token = token(ctx, node, path, fields, "slack", "bot_token", "${SLACK_BOT_TOKEN}");
    let api_url = api_url(ctx, fields, path, SLACK_API_URL);
    let channels = ids(ctx, fields, path, "channels");
    Some(SlackSettings { app_token: app_token?, bot_token: bot_token?, api_url: api_url?, channels })
}

pub(crate) fn discord(ctx: &mut Loader, node: &Node, path: &str, fields: &[(Key, Node)]) -> Option<DiscordSettings> {
    let token = token(ctx, node, path, fields, "discord", "token", "${DISCORD_TOKEN}");
    let api_url = api_url(ctx, fields, path, DISCORD_API_URL);
    let channels = ids(ctx, fields, path, "channels");
    let guilds = ids(ctx, fields, path, "guilds");
    let branding = match field(fields, "branding") {
        Some(n) => Some(branding(ctx, n, &join(path, "branding"))?),
        None => None,
    };
    Some(DiscordSettings { token: token?, api_url: api_url?, channels, guilds, branding })
}

/// `branding: {guild: ID, assets: DIR}` (DIR relative to the compose file).
fn branding(ctx: &mut Loader, node: &Node, path: &str) -> Option<Branding> {
    let fields = ctx.map(node, path, &["guild", "assets"])?;
    let guild = match field(fields, "guild") {
        Some(n) => ctx.name(n, &join(path, "guild")),
        None => {
            ctx.error(node, path, "missing `guild:` (the id of the guild to brand)");
            None
        }
    };
    let Some(n) = field(fields, "assets") else {
        ctx.error(node, path, "missing `assets:` (the directory the assets are in, e.g. `assets: events`)");
        return None;
    };
    let p = join(path, "assets");
    let text = ctx.name(n, &p)?;
    let assets = ctx.base.join(&text);
    if !assets.is_dir() {
        ctx.error(n, &p, format!("`{text}`: no such directory (relative to the compose file's directory)"));
        return None;
    }
    Some(Branding { guild: guild?, assets })
}

fn token(
    ctx: &mut Loader,
    node: &Node,
    path: &str,
    fields: &[(Key, Node)],
    kind: &str,
    key: &str,
    example: &str,
) -> Option<Secret> {
    let Some(n) = field(fields, key) else {
        ctx.error(node, path, format!("a `{kind}` collector needs `{key}:` (e.g. `{key}: {example}`)"));
        return None;
    };
    let p = join(path, key);
    let value = ctx.name(n, &p)?;
    if value.chars().any(|c| c.is_control() || c.is_whitespace()) {
        // The value is a secret: say what is wrong with it, never what it is.
        ctx.error(n, &p, "must not hold spaces or control characters");
        return None;
    }
    Some(Secret::new(value))
}

/// `api_url:`, or `default`: an http(s) URL, `http://` only on loopback.
fn api_url(ctx: &mut Loader, fields: &[(Key, Node)], path: &str, default: &str) -> Option<String> {
    let Some(n) = field(fields, "api_url") else {
        return Some(default.to_owned());
    };
    let p = join(path, "api_url");
    let text = ctx.name(n, &p)?;
    let url = url::Url::parse(&text).ok().filter(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some());
    let Some(url) = url else {
        ctx.error(n, &p, format!("`{}` is not an http(s) URL (e.g. `{default}`)", crate::text::for_terminal(&text)));
        return None;
    };
    if url.scheme() == "http" {
        let host = url.host_str().unwrap_or_default();
        let port = url.port_or_known_default().unwrap_or(80);
        if !super::access::is_loopback(&format!("{host}:{port}")) {
            ctx.error(n, &p, format!("`{text}` is not encrypted and would send the token in clear: use `https://`"));
            return None;
        }
    }
    Some(text.trim_end_matches('/').to_owned())
}

/// A list of platform ids (`C0123`, `1234567890`): no spaces or control characters.
fn ids(ctx: &mut Loader, fields: &[(Key, Node)], path: &str, key: &str) -> Vec<String> {
    let Some(n) = field(fields, key) else { return Vec::new() };
    let p = join(path, key);
    let mut out = Vec::new();
    for (i, (text, item)) in ctx.texts(n, &p).into_iter().enumerate() {
        let bad = text.is_empty() || text.len() > 64 || text.chars().any(|c| c.is_control() || c.is_whitespace());
        if bad {
            let msg = format!("`{}` is not a channel or guild id (e.g. `C0123ABCD`)", crate::text::for_terminal(&text));
            ctx.error(item, &format!("{p}[{i}]"), msg);
        } else {
            out.push(text);
        }
    }
    out
}
