//! `badtable` (hostile guest): a shell whose command table is absurd, chosen by config key
//! `how`. torch lists the table in `help` and in every unknown-command reply, so the host
//! must refuse such a table when the shell is loaded (`check`, `run` and `torch` alike),
//! naming the entry, and must never panic or write an unbounded reply whatever it holds.
//!
//! - `wide`: a command named by 70,000 bytes (a format width above 65,535 panics).
//! - `many`: `count` commands (default 5,000).
//! - `escape`: a name that sets the terminal title (`ESC ] 0 ; ... BEL`).
//! - `bidi`: a name with a right-to-left override (U+202E).
//! - `space`: a name of two words. `empty`: an empty name. `duplicate`: one name twice.
//! - `summary`: a summary of 100,000 bytes. `usage`: a usage text that clears the screen.
//! - `limits` (the default): the largest table the host accepts (256 commands, names of
//!   64 bytes, summaries of 256, usages of 1,024): its `help` must stay within
//!   `limits.output_kb`.
//!
//! Every command answers `ran NAME`.

use cannon_guest::shell_world::Guest;
use cannon_guest::{config, Command, Message};

struct BadTable;

fn command(name: impl Into<String>, summary: impl Into<String>, usage: impl Into<String>) -> Command {
    Command { name: name.into(), summary: summary.into(), usage: usage.into() }
}

impl Guest for BadTable {
    fn commands() -> Vec<Command> {
        let ok = command("ok", "a well-behaved command", "ok");
        match config::get_or("how", "limits").as_str() {
            "wide" => vec![ok, command("w".repeat(70_000), "wide", "wide")],
            "many" => {
                let count = config::parse_or("count", 5_000usize).unwrap_or(5_000);
                (0..count).map(|i| command(format!("c{i}"), "one of many", "c")).collect()
            }
            "escape" => vec![ok, command("title\u{1b}]0;pwned\u{7}", "sets the title", "t")],
            "bidi" => vec![ok, command("evil\u{202e}txt.exe", "reorders text", "b")],
            "space" => vec![ok, command("two words", "a space in the name", "s")],
            "empty" => vec![ok, command("", "no name", "")],
            "duplicate" => vec![ok.clone(), ok],
            "summary" => vec![ok, command("long", "s".repeat(100_000), "long")],
            "usage" => vec![ok, command("clear", "clears the screen", "clear\u{1b}[2J")],
            _ => (0..256)
                .map(|i| command(format!("{i:x>64}"), "s".repeat(256), "u".repeat(1024)))
                .collect(),
        }
    }

    fn call(argv: Vec<String>, _msg: Message) -> Result<String, String> {
        Ok(format!("ran {}", argv.first().map_or("", String::as_str)))
    }
}

cannon_guest::shell_world::__export_shell_world!(BadTable with_types_in cannon_guest::shell_world);
