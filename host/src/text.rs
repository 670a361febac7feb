//! Untrusted text made safe for a terminal, a log line or JSON output.
//!
//! Guest replies and errors, command names, message fields and anything else a component
//! or a message sender chose can carry terminal escapes (OSC 52 writes the clipboard, CSI
//! `2J` clears the screen), C1 controls (U+009B is a one-character CSI), bidi overrides
//! that reorder what the reader sees, and newlines that forge log records. Every place that
//! prints such text goes through this module:
//!
//! - [`for_terminal`]: one line; every character of the [unsafe class](is_unsafe) escaped
//!   (`\n`, `\r`, `\t`, else `\u{1b}` in Rust's notation). Log fields, error messages,
//!   names, one-line output.
//! - [`for_terminal_lines`]: the same but keeps `\n`, for chat replies and help texts
//!   that are several lines on purpose.
//! - [`for_json`]: serialized JSON with the same characters as `\u` escapes (serde_json
//!   escapes C0 controls only).
//! - [`log_fields`]: the `tracing` field formatter of the binary, which passes every log
//!   field and message through [`for_terminal`], so one record stays one line whatever
//!   a field holds.
//!
//! Backslashes are not escaped: the output is for reading, not for parsing back.

use std::borrow::Cow;
use std::fmt::Write as _;

/// Whether `c` must not reach a terminal or a log line raw: C0 controls, DEL and C1
/// controls (Unicode `Cc`), the bidi marks, embeddings, overrides and isolates (U+061C,
/// U+200E, U+200F, U+202A–U+202E, U+2066–U+2069), and the line and paragraph separators
/// U+2028 and U+2029 (some viewers break lines at them).
pub fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
        || matches!(c, '\u{2028}' | '\u{2029}')
}

/// `text` on one line with every [unsafe](is_unsafe) character escaped.
pub fn for_terminal(text: &str) -> Cow<'_, str> {
    escape(text, false)
}

/// Like [`for_terminal`], but `\n` is kept: for replies that are several lines on purpose.
pub fn for_terminal_lines(text: &str) -> Cow<'_, str> {
    escape(text, true)
}

fn escape(text: &str, keep_newline: bool) -> Cow<'_, str> {
    let escaped = |c: char| is_unsafe(c) && !(keep_newline && c == '\n');
    let Some(first) = text.find(escaped) else {
        return Cow::Borrowed(text);
    };
    let mut out = String::with_capacity(text.len() + 16);
    out.push_str(&text[..first]);
    for c in text[first..].chars() {
        if !escaped(c) {
            out.push(c);
            continue;
        }
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            // Writing to a String cannot fail.
            c => {
                let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
            }
        }
    }
    Cow::Owned(out)
}

/// Lower-case hex of `bytes` (digests shown or used in names: cache files, versions, ACL
/// password hashes, rate-limit buckets).
pub fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        // Writing to a String cannot fail.
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// Serialized JSON with every [unsafe](is_unsafe) character left raw by the serializer
/// (DEL, C1, bidi, U+2028/U+2029) written as a `\uXXXX` escape. JSON's own syntax is ASCII,
/// so such a character can only be inside a string, where the escape means the same.
pub fn for_json(json: String) -> String {
    if !json.contains(is_unsafe) {
        return json;
    }
    let mut out = String::with_capacity(json.len() + 16);
    for c in json.chars() {
        if is_unsafe(c) {
            // Every unsafe character is in the Basic Multilingual Plane: one escape.
            let _ = write!(out, "\\u{:04x}", u32::from(c));
        } else {
            out.push(c);
        }
    }
    out
}

/// The `tracing` field formatter: `name=value` pairs separated by spaces, the message
/// bare, every value through [`for_terminal`]. Install it with
/// `tracing_subscriber::fmt().fmt_fields(text::log_fields())`.
pub fn log_fields() -> impl for<'w> tracing_subscriber::fmt::FormatFields<'w> + Send + Sync + 'static {
    use tracing_subscriber::field::MakeExt as _;
    tracing_subscriber::fmt::format::debug_fn(|writer, field, value| {
        let shown = format!("{value:?}");
        let shown = for_terminal(&shown);
        if field.name() == "message" { write!(writer, "{shown}") } else { write!(writer, "{field}={shown}") }
    })
    .delimited(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The classes of code points, each checked over its whole range.
    #[test]
    fn every_code_point_is_classified() {
        let bidi = |c: u32| matches!(c, 0x061c | 0x200e | 0x200f | 0x202a..=0x202e | 0x2066..=0x2069);
        let separators = |c: u32| matches!(c, 0x2028 | 0x2029);
        let mut escaped = 0u32;
        for code in 0..=0x10_ffff_u32 {
            let Some(c) = char::from_u32(code) else {
                assert!((0xd800..=0xdfff).contains(&code), "{code:#x} is not a surrogate");
                continue;
            };
            let expected = match code {
                0x00..=0x1f => true, // C0
                0x7f => true,        // DEL
                0x80..=0x9f => true, // C1
                c if bidi(c) || separators(c) => true,
                _ => false,
            };
            assert_eq!(is_unsafe(c), expected, "U+{code:04X}");
            let s = c.to_string();
            let one = for_terminal(&s);
            let lines = for_terminal_lines(&s);
            let json = for_json(serde_json::Value::String(s.clone()).to_string());
            if expected {
                escaped += 1;
                assert!(one.chars().all(|c| c.is_ascii_graphic()), "U+{code:04X} shown as {one:?}");
                assert!(json.chars().all(|c| c.is_ascii_graphic()), "U+{code:04X} in JSON as {json:?}");
                assert_eq!(serde_json::from_str::<String>(&json).ok().as_deref(), Some(s.as_str()), "U+{code:04X}");
                if c == '\n' {
                    assert_eq!(lines, "\n");
                } else {
                    assert_eq!(lines, one, "U+{code:04X}");
                }
            } else {
                assert!(matches!(one, Cow::Borrowed(_)) && one == s, "U+{code:04X} changed to {one:?}");
                assert_eq!(lines, s, "U+{code:04X}");
                assert!(json.contains(c) || c == '"' || c == '\\', "U+{code:04X} in JSON as {json:?}");
            }
        }
        // 32 C0 + DEL + 32 C1 + 12 bidi + 2 separators.
        assert_eq!(escaped, 32 + 1 + 32 + 12 + 2);
    }

    #[test]
    fn escapes_read_like_rust() {
        assert_eq!(for_terminal("plain text, ünïcode ✓"), "plain text, ünïcode ✓");
        assert_eq!(
            for_terminal("a\nERROR forged\r\t\u{1b}[2J\u{9b}31m\u{202e}x"),
            "a\\nERROR forged\\r\\t\\u{1b}[2J\\u{9b}31m\\u{202e}x"
        );
        assert_eq!(
            for_terminal_lines("line one\nline two\u{1b}]52;c;eA==\u{7}"),
            "line one\nline two\\u{1b}]52;c;eA==\\u{7}"
        );
        // Escaping is idempotent: its output is printable ASCII plus what was safe.
        let once = for_terminal("\u{1b}\u{2066}\n").into_owned();
        assert_eq!(for_terminal(&once), once);
    }

    #[test]
    fn json_escapes_what_serde_leaves_raw() {
        let raw = serde_json::json!({ "k\u{202e}": "a\u{9b}b\u{7f}\u{2028}\u{1b}" }).to_string();
        assert!(raw.contains('\u{9b}'), "serde_json now escapes C1 itself: {raw}");
        let safe = for_json(raw);
        assert_eq!(safe, r#"{"k\u202e":"a\u009bb\u007f\u2028\u001b"}"#);
        assert!(serde_json::from_str::<serde_json::Value>(&safe).is_ok());
    }
}
