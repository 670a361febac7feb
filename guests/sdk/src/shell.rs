//! Shells: a static table of commands, dispatched by name.

use crate::args::{Args, CmdError};
use crate::task_world::cannon::platform::types::Command;
use crate::Message;

/// One command of a shell.
#[derive(Debug, Clone, Copy)]
pub struct Cmd {
    /// What the user types, e.g. `roll`.
    pub name: &'static str,
    /// One line for the command list.
    pub summary: &'static str,
    /// Shown with `help NAME`, `NAME --help` and after a usage error, e.g. `roll NdM`.
    pub usage: &'static str,
    /// Options that take a value (`--sides 8`, `--sides=8`).
    pub options: &'static [&'static str],
    /// Boolean flags (`--sum`).
    pub flags: &'static [&'static str],
    /// The command itself; its `Ok` text is the reply.
    pub run: fn(&Args, &Message) -> Result<String, CmdError>,
}

/// A command tree. Implement it on a unit struct and export it with [`crate::export_shell!`].
pub trait Shell {
    const COMMANDS: &'static [Cmd];
}

#[doc(hidden)]
pub fn __shell_commands<S: Shell>() -> Vec<Command> {
    S::COMMANDS
        .iter()
        .map(|c| Command {
            name: c.name.to_owned(),
            summary: c.summary.to_owned(),
            usage: c.usage.to_owned(),
        })
        .collect()
}

#[doc(hidden)]
pub fn __shell_call<S: Shell>(argv: Vec<String>, msg: Message) -> Result<String, String> {
    let Some((name, rest)) = argv.split_first() else {
        return Err("empty argv".to_owned());
    };
    let Some(cmd) = S::COMMANDS.iter().find(|c| c.name == name) else {
        return Err(format!("unknown command {name:?}"));
    };
    let outcome = Args::parse(rest, cmd.options, cmd.flags).and_then(|args| (cmd.run)(&args, &msg));
    match outcome {
        Ok(reply) => Ok(reply),
        Err(CmdError::Usage(text)) => Ok(format!("{text}\nusage: {}", cmd.usage)),
        Err(CmdError::Fail(text)) => Err(text),
    }
}
