//! `torch`, the built-in task that turns a chat line into a shell command.
//!
//! `message[in_key]` is split like a POSIX shell would split it, `argv[0]` picks the
//! command, permissions are checked against the sender (`message[user_key]`), and the
//! shell's reply becomes `results[out_key]`. Help, unknown commands, refusals and bad
//! quoting are answered by torch itself, without entering the guest.
//!
//! A message without `in_key` is not for torch (e.g. a timer tick in the same service) and
//! gets no reply; with a `prefix`, neither does a line that does not start with it.

use std::collections::HashSet;
use std::sync::Arc;

use indexmap::IndexMap;

use crate::broker::Fields;
use crate::config::TorchSpec;
use crate::engine::{CallError, CallOutput, CallStats, Command, Component, KvScope, Message};

/// A torch task bound to its service's shell.
pub struct Torch {
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
    UnbalancedQuote(char),
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
        let width = self.commands.iter().map(|c| c.name.len()).max().unwrap_or(0);
        let mut out = String::from("commands:");
        for c in self.commands.iter() {
            out.push_str(&format!("\n  {:width$}  {}", c.name, c.summary));
        }
        out.push_str("\n`help COMMAND` shows how to use one.");
        out
    }

    fn usage(&self, command: &Command) -> String {
        format!("{}: {}\nusage: {}", command.name, command.summary, command.usage)
    }

    /// Runs one message through torch; the value is the reply for `results[out_key]`, or
    /// `None` when the message is not a command (no `in_key`, or no `prefix`).
    pub async fn run(&self, msg: &Message, kv: Option<KvScope>) -> Result<CallOutput<Option<String>>, CallError> {
        let Some(mut line) = field(&msg.fields, &self.spec.in_key) else {
            return Ok(reply(None));
        };
        if let Some(prefix) = &self.spec.prefix {
            match line.trim_start().strip_prefix(prefix.as_str()) {
                Some(rest) => line = rest,
                None => return Ok(reply(None)),
            }
        }
        let argv = match split(line) {
            Ok(argv) => argv,
            Err(SplitError::UnbalancedQuote(q)) => {
                return Ok(reply(Some(format!("cannot read that command: a {q} quote is not closed"))));
            }
            Err(SplitError::TrailingBackslash) => {
                return Ok(reply(Some("cannot read that command: it ends with a lone backslash".to_owned())));
            }
        };
        let Some(name) = argv.first() else {
            return Ok(reply(Some(self.help())));
        };
        if matches!(name.as_str(), "help" | "--help" | "-h") {
            let text = match argv.get(1).and_then(|n| self.find(n)) {
                Some(command) => self.usage(command),
                None => self.help(),
            };
            return Ok(reply(Some(text)));
        }
        let Some(command) = self.find(name) else {
            return Ok(reply(Some(format!("unknown command {name:?}.\n{}", self.help()))));
        };
        if argv.len() == 2 && matches!(argv[1].as_str(), "--help" | "-h") {
            return Ok(reply(Some(self.usage(command))));
        }
        if let Some(refusal) = self.refusal(&argv, msg) {
            return Ok(reply(Some(refusal)));
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

    #[test]
    fn reports_bad_quoting() {
        assert_eq!(split("say 'oops"), Err(SplitError::UnbalancedQuote('\'')));
        assert_eq!(split("say \"oops"), Err(SplitError::UnbalancedQuote('"')));
        assert_eq!(split("say oops\\"), Err(SplitError::TrailingBackslash));
    }
}
