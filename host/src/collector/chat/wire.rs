//! Plumbing shared by the Slack and Discord clients: the HTTP client,
//! bounded reads of HTTP bodies and WebSocket frames, and a bounded set of recently seen
//! event ids (a redelivered event is not added twice).

use std::collections::{HashSet, VecDeque};
use std::time::Duration;

use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// Largest HTTP response body read from a platform API; a longer one is an error.
pub(crate) const MAX_BODY: usize = 1 << 20;
/// Largest WebSocket message (and frame) accepted from a gateway. Discord's READY of a large
/// bot can be several megabytes; anything beyond this closes the connection.
pub(crate) const MAX_FRAME: usize = 8 << 20;
/// Time limit of one HTTP request (connect, send, read the answer).
pub(crate) const HTTP_TIMEOUT: Duration = Duration::from_secs(30);

/// One HTTP client per collector (connection reuse), with rustls and the system's roots.
pub(crate) fn http_client() -> anyhow::Result<reqwest::Client> {
    // rustls with ring, as everywhere in the host (a no-op when already installed).
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(HTTP_TIMEOUT)
        .connect_timeout(Duration::from_secs(10))
        .user_agent(concat!("cannon-host/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| anyhow::anyhow!("cannot build the HTTP client: {e}"))
}

/// Reads a response body of at most [`MAX_BODY`] bytes.
pub(crate) async fn read_body(mut response: reqwest::Response, what: &str) -> anyhow::Result<Vec<u8>> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| anyhow::anyhow!("{what}: reading the answer: {e}"))? {
        if body.len() + chunk.len() > MAX_BODY {
            anyhow::bail!("{what}: the answer is larger than {MAX_BODY} bytes");
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// A WebSocket to a gateway (`ws://` or `wss://` with rustls).
pub(crate) type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Opens a WebSocket to `url` with bounded message and frame sizes, within 30 s.
pub(crate) async fn connect(url: &str) -> anyhow::Result<Socket> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let config = WebSocketConfig::default().max_message_size(Some(MAX_FRAME)).max_frame_size(Some(MAX_FRAME));
    let connecting = tokio_tungstenite::connect_async_with_config(url, Some(config), false);
    match tokio::time::timeout(Duration::from_secs(30), connecting).await {
        Ok(Ok((socket, _response))) => Ok(socket),
        Ok(Err(err)) => Err(anyhow::anyhow!("cannot open the WebSocket {}: {err}", redact_query(url))),
        Err(_) => Err(anyhow::anyhow!("opening the WebSocket {} timed out", redact_query(url))),
    }
}

/// A URL without its query (Slack's Socket Mode URL carries a one-time ticket).
pub(crate) fn redact_query(url: &str) -> String {
    let shown = match url.split_once('?') {
        Some((base, _)) => format!("{base}?..."),
        None => url.to_owned(),
    };
    crate::text::for_terminal(&shown).into_owned()
}

/// Recently seen ids (Slack event ids, Discord message ids), the last `capacity` of them: a
/// platform that delivers an event again (after a reconnect, a missing ack or a resume)
/// does not get it added twice.
pub(crate) struct Seen {
    order: VecDeque<String>,
    set: HashSet<String>,
    capacity: usize,
}

impl Seen {
    pub(crate) fn new(capacity: usize) -> Self {
        Seen { order: VecDeque::with_capacity(capacity), set: HashSet::with_capacity(capacity), capacity }
    }

    pub(crate) fn contains(&self, id: &str) -> bool {
        self.set.contains(id)
    }

    /// Remembers `id`; false when it was already there.
    pub(crate) fn insert(&mut self, id: &str) -> bool {
        if self.set.contains(id) {
            return false;
        }
        if self.order.len() == self.capacity
            && let Some(old) = self.order.pop_front()
        {
            self.set.remove(&old);
        }
        self.order.push_back(id.to_owned());
        self.set.insert(id.to_owned());
        true
    }
}

/// The users seen speaking, by display name: a taskback's `to` may name a user as the
/// messages did (`user`), and the platform needs the id. Bounded; starts over when full.
#[derive(Default)]
pub(crate) struct Directory(std::collections::HashMap<String, String>);

impl Directory {
    const CAPACITY: usize = 10_000;

    pub(crate) fn learn(&mut self, name: &str, id: &str) {
        if self.0.len() >= Self::CAPACITY && !self.0.contains_key(name) {
            self.0.clear();
        }
        self.0.insert(name.to_owned(), id.to_owned());
    }

    /// The id of the user `to` names: a name seen before, else `to` itself when it is an
    /// id already (`is_id`).
    pub(crate) fn resolve(&self, to: &str, is_id: impl Fn(&str) -> bool) -> Option<String> {
        self.0.get(to).cloned().or_else(|| is_id(to).then(|| to.to_owned()))
    }
}

/// Text from a platform bounded to `max` bytes (cut at a character boundary).
pub(crate) fn bounded(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

/// Splits `text` into pieces of at most `max` characters, preferring line breaks, then
/// spaces; nothing is lost (a reply longer than a platform's limit is sent as several).
pub(crate) fn split_reply(text: &str, max: usize) -> Vec<String> {
    let mut pieces = Vec::new();
    let mut rest = text;
    while rest.chars().count() > max {
        let cut = rest.char_indices().nth(max).map_or(rest.len(), |(i, _)| i);
        let head = &rest[..cut];
        let at = head.rfind('\n').or_else(|| head.rfind(' ')).filter(|&i| i > 0).unwrap_or(cut);
        pieces.push(rest[..at].to_owned());
        rest = rest[at..].strip_prefix(['\n', ' ']).unwrap_or(&rest[at..]);
    }
    if !rest.is_empty() || pieces.is_empty() {
        pieces.push(rest.to_owned());
    }
    pieces
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directory_resolves_names_and_ids() {
        let mut users = Directory::default();
        users.learn("Alice", "U1");
        let is_id = |s: &str| s.starts_with('U');
        assert_eq!(users.resolve("Alice", is_id).as_deref(), Some("U1"));
        assert_eq!(users.resolve("U9", is_id).as_deref(), Some("U9"));
        assert_eq!(users.resolve("Bob", is_id), None);
    }

    #[test]
    fn seen_forgets_the_oldest() {
        let mut seen = Seen::new(2);
        assert!(seen.insert("a"));
        assert!(!seen.insert("a"));
        assert!(seen.insert("b"));
        assert!(seen.insert("c"));
        assert!(!seen.contains("a"));
        assert!(seen.contains("b") && seen.contains("c"));
    }

    #[test]
    fn replies_split_at_lines_then_spaces_and_lose_nothing() {
        assert_eq!(split_reply("short", 10), vec!["short"]);
        assert_eq!(split_reply("", 10), vec![""]);
        assert_eq!(split_reply("aaaa\nbbbb cccc", 10), vec!["aaaa", "bbbb cccc"]);
        assert_eq!(split_reply("aaaa bbbb cccc", 10), vec!["aaaa bbbb", "cccc"]);
        assert_eq!(split_reply("abcdefghijkl", 5), vec!["abcde", "fghij", "kl"]);
        let long = "é".repeat(25);
        let pieces = split_reply(&long, 10);
        assert_eq!(pieces.len(), 3);
        assert_eq!(pieces.concat(), long);
        assert_eq!(bounded("héllo", 2), "h");
        assert_eq!(redact_query("wss://x/link?ticket=abc"), "wss://x/link?...");
    }
}
