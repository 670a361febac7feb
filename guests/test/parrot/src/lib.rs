//! `parrot` (test shell): repeats what torch handed it, so tests can check command
//! splitting, the sender, and permissions.
//!
//! - `echo WORD...`: each argument in brackets, e.g. `[hello world] [it's]`.
//! - `whoami`: the message's `user` field.
//! - `admin`: a command the tests protect with `permissions:`.

use cannon_guest::{Args, Cmd, CmdError, Message, Shell};

struct Parrot;

impl Shell for Parrot {
    const COMMANDS: &'static [Cmd] = &[
        Cmd {
            name: "echo",
            summary: "repeat each argument in brackets",
            usage: "echo WORD...",
            options: &[],
            flags: &[],
            run: echo,
        },
        Cmd {
            name: "whoami",
            summary: "say who sent the message",
            usage: "whoami",
            options: &[],
            flags: &[],
            run: whoami,
        },
        Cmd {
            name: "admin",
            summary: "a protected command",
            usage: "admin",
            options: &[],
            flags: &[],
            run: admin,
        },
    ];
}

fn echo(args: &Args, _msg: &Message) -> Result<String, CmdError> {
    let words: Vec<String> = args
        .positionals()
        .iter()
        .map(|w| format!("[{w}]"))
        .collect();
    Ok(words.join(" "))
}

fn whoami(_args: &Args, msg: &Message) -> Result<String, CmdError> {
    Ok(msg.get("user").unwrap_or("nobody").to_owned())
}

fn admin(_args: &Args, _msg: &Message) -> Result<String, CmdError> {
    Ok("admin done".to_owned())
}

cannon_guest::export_shell!(Parrot);
