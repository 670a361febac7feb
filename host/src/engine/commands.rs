//! What a shell's command table may hold. torch lists the table in `help` and in its answer
//! to an unknown command, so a table with absurd entries would make every such reply absurd;
//! it is refused when the shell is loaded (by `run`, `check` and `torch` alike), naming the
//! offending entry.

use crate::engine::bindings::Command;
use crate::text::for_terminal;

/// Most commands a shell may list.
pub const MAX_COMMANDS: usize = 256;
/// Longest command name, in bytes.
pub const MAX_NAME: usize = 64;
/// Longest summary (one line of the command list), in bytes.
pub const MAX_SUMMARY: usize = 256;
/// Longest usage text (`help NAME`), in bytes.
pub const MAX_USAGE: usize = 1024;

/// The first rule `commands` breaks, as a sentence naming the entry; `Ok` when none.
pub fn check_table(commands: &[Command]) -> Result<(), String> {
    if commands.len() > MAX_COMMANDS {
        return Err(format!("{} commands listed, more than the {MAX_COMMANDS} a shell may list", commands.len()));
    }
    for (i, command) in commands.iter().enumerate() {
        let entry = || format!("command {} of {} ({})", i + 1, commands.len(), shown(&command.name));
        if let Some(problem) = name_problem(&command.name) {
            return Err(format!("{}: {problem}", entry()));
        }
        if let Some(first) = commands[..i].iter().position(|c| c.name == command.name) {
            return Err(format!("{}: the same name as command {}", entry(), first + 1));
        }
        if command.summary.len() > MAX_SUMMARY {
            return Err(format!("{}: summary of {} bytes, over {MAX_SUMMARY}", entry(), command.summary.len()));
        }
        if command.summary.contains(crate::text::is_unsafe) {
            return Err(format!("{}: the summary holds a control or bidi character (it is one line)", entry()));
        }
        if command.usage.len() > MAX_USAGE {
            return Err(format!("{}: usage of {} bytes, over {MAX_USAGE}", entry(), command.usage.len()));
        }
        if command.usage.contains(|c| c != '\n' && crate::text::is_unsafe(c)) {
            return Err(format!("{}: the usage holds a control or bidi character other than a newline", entry()));
        }
    }
    Ok(())
}

fn name_problem(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("the name is empty".to_owned());
    }
    if name.len() > MAX_NAME {
        return Some(format!("name of {} bytes, over {MAX_NAME}", name.len()));
    }
    if name.contains(crate::text::is_unsafe) {
        return Some("the name holds a control or bidi character".to_owned());
    }
    if name.contains(char::is_whitespace) {
        return Some("the name holds whitespace (a command is one word)".to_owned());
    }
    None
}

/// `name` quoted for an error message: cut to [`MAX_NAME`] bytes, escaped for a terminal.
fn shown(name: &str) -> String {
    let mut end = name.len().min(MAX_NAME);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    let more = if end < name.len() { "..." } else { "" };
    format!("\"{}{more}\"", for_terminal(&name[..end]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn command(name: &str, summary: &str, usage: &str) -> Command {
        Command { name: name.to_owned(), summary: summary.to_owned(), usage: usage.to_owned() }
    }

    fn refusal(commands: &[Command]) -> String {
        check_table(commands).expect_err("table accepted")
    }

    #[test]
    fn tables_at_the_limits_are_accepted() {
        let table: Vec<Command> = (0..MAX_COMMANDS)
            .map(|i| command(&format!("{i:0>64}"), &"s".repeat(MAX_SUMMARY), &"u\n".repeat(MAX_USAGE / 2)))
            .collect();
        assert_eq!(check_table(&table), Ok(()));
        assert_eq!(check_table(&[command("roll", "roll dice: ünïcode ✓", "roll NdM\n  N dice")]), Ok(()));
    }

    #[test]
    fn absurd_entries_are_named() {
        let ok = command("ok", "fine", "ok");
        let many: Vec<Command> = (0..=MAX_COMMANDS).map(|i| command(&i.to_string(), "", "")).collect();
        assert_eq!(refusal(&many), "257 commands listed, more than the 256 a shell may list");
        assert_eq!(
            refusal(&[ok.clone(), command(&"w".repeat(70_000), "", "")]),
            format!("command 2 of 2 (\"{}...\"): name of 70000 bytes, over 64", "w".repeat(64))
        );
        assert_eq!(refusal(&[command("", "", "")]), "command 1 of 1 (\"\"): the name is empty");
        assert_eq!(
            refusal(&[command("a\u{1b}]0;pwned\u{7}", "", "")]),
            "command 1 of 1 (\"a\\u{1b}]0;pwned\\u{7}\"): the name holds a control or bidi character"
        );
        assert!(refusal(&[command("a\u{202e}b", "", "")]).contains("(\"a\\u{202e}b\"): the name holds a control"));
        assert_eq!(
            refusal(&[command("two words", "", "")]),
            "command 1 of 1 (\"two words\"): the name holds whitespace (a command is one word)"
        );
        assert_eq!(refusal(&[ok.clone(), ok.clone()]), "command 2 of 2 (\"ok\"): the same name as command 1");
        assert_eq!(
            refusal(&[command("s", &"x".repeat(257), "")]),
            "command 1 of 1 (\"s\"): summary of 257 bytes, over 256"
        );
        assert!(
            refusal(&[command("s", "two\nlines", "")])
                .ends_with("the summary holds a control or bidi character (it is one line)")
        );
        assert_eq!(
            refusal(&[command("u", "", &"x".repeat(1025))]),
            "command 1 of 1 (\"u\"): usage of 1025 bytes, over 1024"
        );
        assert!(refusal(&[command("u", "", "clear\u{1b}[2J")]).ends_with("other than a newline"));
        // A multi-byte character at the cut is kept whole or dropped, never split.
        let cut = refusal(&[command(&"é".repeat(40), "", "")]);
        assert!(cut.starts_with(&format!("command 1 of 1 (\"{}...\")", "é".repeat(32))), "{cut}");
    }
}
