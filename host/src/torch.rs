//! `torch`, the built-in task that turns a chat line into a shell command.
//!
//! `message[in_key]` is split like a POSIX shell would split it, `argv[0]` picks the
//! command, permissions are checked against the sender (`message[user_key]`), and the
//! shell's reply becomes `results[out_key]`. Help, unknown commands, refusals and bad
//! quoting are answered by torch itself, without entering the guest; each such reply is cut
//! to the shell's `limits.output_kb`, like the shell's own replies, whatever its command
//! table holds (the table itself is checked at load: `engine::commands`).
//!
//! A message without `in_key` is not for torch (e.g. a timer tick in the same service) and
//! gets no reply; with a `prefix`, neither does a line that does not start with it followed
//! directly by a letter (`...`, `.5 pm`, `. ` only look like commands).

use std::collections::HashSet;
use std::sync::Arc;

use indexmap::IndexMap;

use crate::broker::Fields;
use crate::config::TorchSpec;
use crate::engine::{CallError, CallOutput, CallStats, Command, Component, KvScope, Message};

/// A torch task bound to its service's shell.
pub struct Torch {
    /// The torch task's settings.
    pub spec: TorchSpec,
    shell: Arc<Component>,
    /// The shell's commands, asked once at load (they cannot change between calls).
    commands: Arc<Vec<Command>>,
    /// Command (or `command subcommand`) -> its groups and the users in them. Absent: everyone.
    allowed: IndexMap<String, (Vec<String>, HashSet<String>)>,
}

/// Why splitting a command line failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SplitError {
    /// A quote (the character) is not closed.
    UnbalancedQuote(char),
    /// The line ends in a backslash.
    TrailingBackslash,
}

/// Splits `line` into words: whitespace separates; `'...'` is literal; `"..."` allows
/// `\"`, `\\`, `\$` and `` \` `` escapes; a backslash outside quotes escapes the next character.
pub fn split(line: &str) -> Result<Vec<String>, SplitError> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => word.push(c),
                        None => return Err(SplitError::UnbalancedQuote('\'')),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(e @ ('"' | '\\' | '$' | '`')) => word.push(e),
                            Some('\n') => {}
                            Some(other) => {
                                word.push('\\');
                                word.push(other);
                            }
                            None => return Err(SplitError::UnbalancedQuote('"')),
                        },
                        Some(c) => word.push(c),
                        None => return Err(SplitError::UnbalancedQuote('"')),
                    }
                }
            }
            '\\' => {
                in_word = true;
                match chars.next() {
                    Some('\n') => {}
                    Some(c) => word.push(c),
                    None => return Err(SplitError::TrailingBackslash),
                }
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

impl Torch {
    /// Binds `spec` to `shell`; `commands` is the shell's answer to `commands()`.
    pub fn new(
        spec: TorchSpec,
        shell: Arc<Component>,
        commands: Arc<Vec<Command>>,
        permissions: &IndexMap<String, Vec<String>>,
        groups: &IndexMap<String, Vec<String>>,
    ) -> Self {
        let allowed = permissions
            .iter()
            .map(|(command, group_names)| {
                let users = group_names.iter().filter_map(|g| groups.get(g)).flatten().cloned().collect();
                (command.clone(), (group_names.clone(), users))
            })
            .collect();
        Self { spec, shell, commands, allowed }
    }

    /// The command list, as shown for `help` and unknown commands.
    pub fn help(&self) -> String {
        help(&self.commands, self.budget())
    }

    /// Most bytes of a reply torch writes itself: the shell's `limits.output_kb`, like the
    /// shell's own replies.
    fn budget(&self) -> usize {
        self.shell.output_budget()
    }

    /// A reply of torch's own, cut to the budget.
    fn reply(&self, text: String) -> CallOutput<Option<String>> {
        reply(Some(cut(text, self.budget())))
    }

    /// Runs one message through torch; the value is the reply for `results[out_key]`, or
    /// `None` when the message is not a command (no `in_key`, or no `prefix`).
    pub async fn run(&self, msg: &Message, kv: Option<KvScope>) -> Result<CallOutput<Option<String>>, CallError> {
        let Some(mut line) = field(&msg.fields, &self.spec.in_key) else {
            return Ok(reply(None));
        };
        if let Some(prefix) = &self.spec.prefix {
            // `...`, `.5`, `. ` or `.)` only look like commands: the prefix must be followed
            // directly by a letter.
            match line.trim_start().strip_prefix(prefix.as_str()) {
                Some(rest) if rest.starts_with(char::is_alphabetic) => line = rest,
                _ => return Ok(reply(None)),
            }
        }
        let argv = match split(line) {
            Ok(argv) => argv,
            Err(SplitError::UnbalancedQuote(q)) => {
                return Ok(self.reply(format!("cannot read that command: a {q} quote is not closed")));
            }
            Err(SplitError::TrailingBackslash) => {
                return Ok(self.reply("cannot read that command: it ends with a lone backslash".to_owned()));
            }
        };
        let Some(name) = argv.first() else {
            return Ok(self.reply(self.help()));
        };
        if matches!(name.as_str(), "help" | "--help" | "-h") {
            let text = match argv.get(1).and_then(|n| self.find(n)) {
                Some(command) => usage(command),
                None => self.help(),
            };
            return Ok(self.reply(text));
        }
        let Some(command) = self.find(name) else {
            if self.spec.ignore_unknown {
                return Ok(reply(None));
            }
            let first = format!("unknown command {:?}.\n", cut(name.clone(), UNKNOWN_NAME_SHOWN));
            let help = help(&self.commands, self.budget().saturating_sub(first.len()));
            return Ok(self.reply(first + &help));
        };
        if argv.len() == 2 && matches!(argv[1].as_str(), "--help" | "-h") {
            return Ok(self.reply(usage(command)));
        }
        if let Some(refusal) = self.refusal(&argv, msg) {
            return Ok(self.reply(refusal));
        }
        let out = self.shell.call(&argv, msg, kv).await?;
        Ok(CallOutput { value: Some(out.value), taskbacks: out.taskbacks, stats: out.stats })
    }

    /// Why the sender may not run `argv`, if they may not. A permission on `cmd sub` is
    /// checked before one on `cmd`.
    fn refusal(&self, argv: &[String], msg: &Message) -> Option<String> {
        let sub = argv.get(1).map(|sub| format!("{} {sub}", argv[0]));
        let (rule, (groups, users)) = sub
            .as_deref()
            .and_then(|key| self.allowed.get_key_value(key))
            .or_else(|| self.allowed.get_key_value(argv[0].as_str()))?;
        let user = field(&msg.fields, &self.spec.user_key).unwrap_or("");
        if users.contains(user) {
            return None;
        }
        let who = if user.is_empty() { "anonymous users".to_owned() } else { format!("{user:?}") };
        Some(format!("permission denied: `{rule}` is for {} only, and {who} is not a member", groups.join(", ")))
    }

    fn find(&self, name: &str) -> Option<&Command> {
        self.commands.iter().find(|c| c.name == name)
    }
}

/// Most bytes of an unknown command's name quoted back to its sender.
const UNKNOWN_NAME_SHOWN: usize = 64;
/// Widest name column of the command list; longer names push their summary right.
const NAME_COLUMN: usize = crate::engine::commands::MAX_NAME;
const HELP_HEAD: &str = "commands:";
const HELP_TAIL: &str = "\n`help COMMAND` shows how to use one.";
/// Room kept for the `... and N more` line.
const HELP_MORE: usize = 40;

/// The command list of `commands` in at most `budget` bytes: one line per command (name
/// column, summary) while they fit, then how many were left out. Never panics, whatever
/// the table; the work is linear in what is shown plus the number of commands.
pub fn help(commands: &[Command], budget: usize) -> String {
    let width = commands.iter().map(|c| c.name.chars().count()).max().unwrap_or(0).min(NAME_COLUMN);
    let mut out = String::from(HELP_HEAD);
    for (i, c) in commands.iter().enumerate() {
        let name_chars = c.name.chars().count();
        let pad = width.saturating_sub(name_chars);
        let line =
            3usize.saturating_add(c.name.len()).saturating_add(pad).saturating_add(2).saturating_add(c.summary.len());
        let reserve = HELP_TAIL.len() + if i + 1 < commands.len() { HELP_MORE } else { 0 };
        if out.len().saturating_add(line).saturating_add(reserve) > budget {
            out.push_str(&format!("\n  ... and {} more", commands.len() - i));
            break;
        }
        out.push_str("\n  ");
        out.push_str(&c.name);
        out.extend(std::iter::repeat_n(' ', pad + 2));
        out.push_str(&c.summary);
    }
    out.push_str(HELP_TAIL);
    cut(out, budget)
}

/// How to use `command`, for `help NAME` and `NAME --help`.
pub fn usage(command: &Command) -> String {
    format!("{}: {}\nusage: {}", command.name, command.summary, command.usage)
}

/// `text` cut to at most `max` bytes on a character boundary, ending in `...` when cut.
fn cut(mut text: String, max: usize) -> String {
    if text.len() <= max {
        return text;
    }
    let mut end = max.saturating_sub(3);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    if text.len() + 3 <= max {
        text.push_str("...");
    }
    text
}

fn reply(value: Option<String>) -> CallOutput<Option<String>> {
    CallOutput { value, taskbacks: Vec::new(), stats: CallStats::default() }
}

fn field<'a>(fields: &'a Fields, key: &str) -> Option<&'a str> {
    fields.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(line: &str) -> Vec<String> {
        split(line).unwrap()
    }

    #[test]
    fn splits_like_a_shell() {
        assert_eq!(words("roll 2d6"), ["roll", "2d6"]);
        assert_eq!(words("  a   b  "), ["a", "b"]);
        assert_eq!(words(r#"say "hello world" 'it''s'"#), ["say", "hello world", "its"]);
        assert_eq!(words(r#"say "a \"q\" \\ \n""#), ["say", r#"a "q" \ \n"#]);
        assert_eq!(words(r"a\ b c"), ["a b", "c"]);
        assert_eq!(words(r#"x "" y"#), ["x", "", "y"]);
        assert_eq!(words(""), Vec::<String>::new());
        assert_eq!(words("'a'\"b\"c"), ["abc"]);
    }

    fn command(name: &str, summary: &str) -> Command {
        Command { name: name.to_owned(), summary: summary.to_owned(), usage: "u".to_owned() }
    }

    #[test]
    fn help_lines_up_and_fits_the_budget() {
        let table = [command("roll", "roll dice"), command("flip", "flip a coin"), command("x", "short")];
        assert_eq!(
            help(&table, 64 << 10),
            "commands:\n  roll  roll dice\n  flip  flip a coin\n  x     short\n`help COMMAND` shows how to use one."
        );
        // Too small for every line: as many as fit, then how many were left out.
        let small = help(&table, 110);
        assert_eq!(small, "commands:\n  roll  roll dice\n  ... and 2 more\n`help COMMAND` shows how to use one.");
        assert!(small.len() <= 110);
        // Smaller than torch's own words: cut, never over.
        for budget in 0..70 {
            assert!(help(&table, budget).len() <= budget, "budget {budget}");
        }
    }

    #[test]
    fn help_of_absurd_tables_is_bounded_and_does_not_panic() {
        use crate::engine::commands::{MAX_COMMANDS, MAX_NAME, MAX_SUMMARY, check_table};
        // The largest table the load check accepts, under the default output_kb (64 KiB)
        // and a small one (1 KiB).
        let at_limits: Vec<Command> =
            (0..MAX_COMMANDS).map(|i| command(&format!("{i:é>32}"), &"s".repeat(MAX_SUMMARY))).collect();
        assert_eq!(check_table(&at_limits), Ok(()));
        assert!(at_limits.iter().all(|c| c.name.len() > MAX_NAME - 4));
        for budget in [64 << 10, 1 << 10] {
            let text = help(&at_limits, budget);
            assert!(text.len() <= budget, "{} bytes over {budget}", text.len());
            assert!(text.ends_with(HELP_TAIL) && text.contains(" more\n"), "{}", &text[text.len() - 80..]);
        }
        // What the load check refuses must not break torch either: a name wider than the
        // 65,535 a format width may be, many thousands of entries.
        let wide = vec![command(&"w".repeat(70_000), "wide"), command("ok", "fine")];
        let text = help(&wide, 1 << 10);
        assert!(text.len() <= 1 << 10 && text.starts_with("commands:\n  ... and 2 more"), "{text}");
        let many: Vec<Command> = (0..20_000).map(|i| command(&format!("c{i}"), "summary")).collect();
        let text = help(&many, 16 << 10);
        assert!(text.len() <= 16 << 10);
        assert!(text.contains("  c0      summary\n"), "{}", &text[..200]);
        assert_eq!(usage(&wide[1]), "ok: fine\nusage: u");
    }

    #[test]
    fn cut_keeps_characters_whole() {
        assert_eq!(cut("short".to_owned(), 5), "short");
        assert_eq!(cut("abcdefgh".to_owned(), 6), "abc...");
        assert_eq!(cut("ééé".to_owned(), 5), "é...");
        assert_eq!(cut("ééé".to_owned(), 2), "");
        assert_eq!(cut("éééé".to_owned(), 7), "éé...");
    }

    #[test]
    fn reports_bad_quoting() {
        assert_eq!(split("say 'oops"), Err(SplitError::UnbalancedQuote('\'')));
        assert_eq!(split("say \"oops"), Err(SplitError::UnbalancedQuote('"')));
        assert_eq!(split("say oops\\"), Err(SplitError::TrailingBackslash));
    }
}
