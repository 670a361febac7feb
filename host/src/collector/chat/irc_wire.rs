//! IRC on the wire, below the message grammar (which `irc-proto` parses): a bounded,
//! cancel-safe line reader that survives text that is not UTF-8, the split of a reply
//! into lines that fit the 512-byte limit, and the nick fallback sequence.

use std::io;

use tokio::io::{AsyncBufRead, AsyncBufReadExt};

/// The protocol's limit for one line, CR LF included (RFC 2812; IRCv3 tags may add 8191
/// before it, which the reader allows for).
pub(crate) const LINE_BYTES: usize = 512;
/// The longest line read: tags plus a line. Longer lines are cut (and logged by the caller).
pub(crate) const MAX_READ: usize = 8191 + LINE_BYTES;
/// The longest host name assumed when the server relays our line with our prefix.
const HOST_BYTES: usize = 63;

/// Reads CR LF (or LF) terminated lines of at most [`MAX_READ`] bytes.
#[derive(Debug, Default)]
pub(crate) struct LineReader {
    /// The line so far (kept across cancelled reads).
    buf: Vec<u8>,
    /// The current line went over [`MAX_READ`]; the rest of it is skipped.
    cut: bool,
}

/// One line read: its text (not UTF-8 bytes replaced) and whether it was cut.
pub(crate) struct Line {
    pub text: String,
    pub cut: bool,
}

impl LineReader {
    /// The next line, without its line ending; `None` at end of stream. Cancel-safe: what was
    /// read is kept for the next call.
    pub(crate) async fn next(&mut self, reader: &mut (impl AsyncBufRead + Unpin)) -> io::Result<Option<Line>> {
        loop {
            let available = reader.fill_buf().await?;
            if available.is_empty() {
                return Ok(None);
            }
            let (chunk, found) = match available.iter().position(|&b| b == b'\n') {
                Some(i) => (&available[..i], Some(i + 1)),
                None => (available, None),
            };
            let room = MAX_READ.saturating_sub(self.buf.len());
            if chunk.len() > room {
                self.cut = true;
            }
            self.buf.extend_from_slice(&chunk[..chunk.len().min(room)]);
            let used = found.unwrap_or(available.len());
            reader.consume(used);
            if found.is_some() {
                if self.buf.last() == Some(&b'\r') {
                    self.buf.pop();
                }
                let text = String::from_utf8_lossy(&self.buf).into_owned();
                let line = Line { text, cut: self.cut };
                self.buf.clear();
                self.cut = false;
                return Ok(Some(line));
            }
        }
    }
}

/// Whether `c` may be sent inside a PRIVMSG: printable text and IRC's formatting codes
/// (bold, colour, reset, monospace, reverse, italics, strike, underline); never NUL, CR, LF
/// or CTCP's `\x01`.
fn sendable(c: char) -> bool {
    !c.is_control() || matches!(c, '\x02' | '\x03' | '\x0f' | '\x11' | '\x16' | '\x1d' | '\x1e' | '\x1f')
}

/// How many bytes of text fit in one `PRIVMSG target :text` that the server relays to
/// others with our full prefix `:nick!user@host`.
pub(crate) fn text_budget(nick: &str, user: &str, target: &str) -> usize {
    let prefix = 1 + nick.len() + 1 + 1 + user.len() + 1 + HOST_BYTES + 1;
    let command = "PRIVMSG ".len() + target.len() + " :".len();
    (LINE_BYTES - 2).saturating_sub(prefix + command).max(64)
}

/// A reply as the lines to send: one per line of text (blank ones left out), each cut to
/// at most `budget` bytes (at a space when there is one in the second half), tabs as
/// spaces, other control characters but IRC's formatting codes removed.
pub(crate) fn split_reply(text: &str, budget: usize) -> Vec<String> {
    let mut out = Vec::new();
    for raw in text.split(['\n', '\r']) {
        let clean: String = raw.chars().map(|c| if c == '\t' { ' ' } else { c }).filter(|&c| sendable(c)).collect();
        let mut rest = clean.trim_end();
        while !rest.trim().is_empty() {
            if rest.len() <= budget {
                out.push(rest.to_owned());
                break;
            }
            let mut cut = budget;
            while !rest.is_char_boundary(cut) {
                cut -= 1;
            }
            if let Some(space) = rest[..cut].rfind(' ').filter(|&i| i >= budget / 2) {
                cut = space;
            }
            out.push(rest[..cut].to_owned());
            rest = rest[cut..].trim_start_matches(' ');
        }
    }
    out
}

/// The nick to try after `attempt` nicks were refused as in use: `nick`, `nick_`,
/// `nick__`, then `nick` with a number, within `max_len` bytes.
pub(crate) fn fallback_nick(nick: &str, attempt: u32, max_len: usize) -> String {
    let suffix = match attempt {
        0 => String::new(),
        1 => "_".to_owned(),
        2 => "__".to_owned(),
        n => n.to_string(),
    };
    let keep = max_len.saturating_sub(suffix.len()).max(1).min(nick.len());
    format!("{}{suffix}", &nick[..keep])
}

/// IRC's case mapping (rfc1459): `[]\~` are the upper case of `{}|^`.
pub(crate) fn irc_lower(name: &str) -> String {
    name.chars()
        .map(|c| match c {
            '[' => '{',
            ']' => '}',
            '\\' => '|',
            '~' => '^',
            c => c.to_ascii_lowercase(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn lines_are_bounded_and_lossy() {
        let mut input: Vec<u8> = b"PING :a\r\nPRIVMSG #c :caf\xe9\r\n".to_vec();
        input.extend(std::iter::repeat_n(b'x', MAX_READ + 10));
        input.extend(b"\nlast");
        let mut reader = tokio::io::BufReader::with_capacity(64, &input[..]);
        let mut lines = LineReader::default();
        let first = lines.next(&mut reader).await.unwrap().unwrap();
        assert_eq!((first.text.as_str(), first.cut), ("PING :a", false));
        assert_eq!(lines.next(&mut reader).await.unwrap().unwrap().text, "PRIVMSG #c :caf\u{fffd}");
        let long = lines.next(&mut reader).await.unwrap().unwrap();
        assert!(long.cut);
        assert_eq!(long.text.len(), MAX_READ);
        assert!(lines.next(&mut reader).await.unwrap().is_none(), "an unterminated tail is no line");
    }

    #[test]
    fn replies_split_to_the_limit() {
        assert_eq!(split_reply("one\n\ntwo\r\nthree  ", 100), ["one", "two", "three"]);
        assert_eq!(split_reply("a\x01ACTION x\x01\tb\x00c", 100), ["aACTION x bc"]);
        assert_eq!(split_reply("\x02bold\x02", 100), ["\x02bold\x02"]);
        let words = "word ".repeat(100);
        let parts = split_reply(&words, 64);
        assert!(parts.iter().all(|p| p.len() <= 64 && !p.starts_with(' ')));
        assert_eq!(parts.join(" "), words.trim_end());
        let wide = "é".repeat(100);
        let parts = split_reply(&wide, 65);
        assert!(parts.iter().all(|p| p.len() <= 65));
        assert_eq!(parts.concat(), wide);
        assert!(split_reply(" \n\t\n", 100).is_empty());
        assert_eq!(text_budget("cannon", "cannon", "#bots"), 510 - (1 + 6 + 2 + 6 + 1 + 63 + 1) - (8 + 5 + 2));
    }

    #[test]
    fn nick_fallbacks() {
        assert_eq!(fallback_nick("cannon", 0, 9), "cannon");
        assert_eq!(fallback_nick("cannon", 1, 9), "cannon_");
        assert_eq!(fallback_nick("cannon", 2, 9), "cannon__");
        assert_eq!(fallback_nick("cannon", 3, 9), "cannon3");
        assert_eq!(fallback_nick("cannonball", 12, 9), "cannonb12");
        assert_eq!(irc_lower("[Bot]\\~"), "{bot}|^");
    }
}
