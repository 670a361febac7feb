//! `inject` (hostile guest): a shell whose replies, errors and log lines carry terminal
//! escapes and forged log records, to prove the host prints none of them raw:
//!
//! - `reply`: a two-line reply holding an OSC 52 clipboard write, a screen clear (CSI 2J),
//!   a window-title change, a one-character C1 CSI (U+009B), a bidi override (U+202E), a
//!   bidi isolate (U+2066), a carriage return and DEL.
//! - `fail`: fails with an error holding the same and a newline followed by a forged host
//!   log record.
//! - `log`: writes the same through the `log` import and stderr, then answers `logged`.
//!
//! Every hostile text starts with `inject-` so tests can find where it was printed.

use cannon_guest::shell_world::Guest;
use cannon_guest::{log, Command, Message};

struct Inject;

/// The escapes, in one string.
const HOSTILE: &str = "\u{1b}]52;c;cHduZWQ=\u{7}\u{1b}[2J\u{1b}]0;pwned\u{7}\u{9b}31m\u{202e}desrever\u{2066}\r\u{7f}";

fn command(name: &str, summary: &str) -> Command {
    Command { name: name.to_owned(), summary: summary.to_owned(), usage: name.to_owned() }
}

impl Guest for Inject {
    fn commands() -> Vec<Command> {
        vec![
            command("reply", "a reply with terminal escapes"),
            command("fail", "an error with escapes and a forged log record"),
            command("log", "log lines with escapes"),
        ]
    }

    fn call(argv: Vec<String>, _msg: Message) -> Result<String, String> {
        match argv.first().map(String::as_str) {
            Some("reply") => Ok(format!("inject-reply line one {HOSTILE}\ninject-reply line two")),
            Some("fail") => Err(format!(
                "inject-fail {HOSTILE}\n2030-01-01T00:00:00.000000Z ERROR cannon_host::worker: forged record"
            )),
            Some("log") => {
                log::error(&format!(
                    "inject-log {HOSTILE}\n2030-01-01T00:00:00.000000Z ERROR cannon_host::worker: forged record"
                ));
                eprintln!("inject-stderr {HOSTILE}");
                Ok("logged".to_owned())
            }
            _ => Err("no such command".to_owned()),
        }
    }
}

cannon_guest::shell_world::__export_shell_world!(Inject with_types_in cannon_guest::shell_world);
