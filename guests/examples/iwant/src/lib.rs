//! `iwant`: the matchmaking shell. `iwant coffee at 10:00 for 30m until 09:30` asks for
//! company, `iwant list` shows requests, `iwant cancel ID|ACTIVITY|all` withdraws them.
//! Other users are told by taskbacks `{to, text, kind, match, activity, with, when,
//! status}` that ask for a receipt (`iwant-clock` posts a notice to the channel when its
//! receipt is an error); the logic is in `iwant-core`, the clock in `iwant-clock`.

use cannon_guest::{taskback, Args, Cmd, CmdError, Message, Shell};
use example_shared::{time, GuestKv};
use iwant_core::{notices, parse, Answer, Asker};

struct Iwant;

impl Shell for Iwant {
    const COMMANDS: &'static [Cmd] = &[Cmd {
        name: "iwant",
        summary: "find company: iwant coffee at 10:00 for 30m until 09:30",
        usage: concat!(
            "iwant ACTIVITY at TIME [for DURATION] [until TIME]   ask for company\n",
            "       iwant list                                          your requests, and who else is looking\n",
            "       iwant cancel ID|ACTIVITY|all                        withdraw requests\n",
            "TIME: HH:MM or HH:MM:SS in UTC (a time already past means tomorrow), +10m from now, or now.\n",
            "DURATION: like 30m or 1h30m (default 30m). until: when to stop looking (default: the start;\n",
            "for `at now`, the end). A match needs 15 minutes of overlap, or all of the shorter window.",
        ),
        options: &[],
        flags: &[],
        run: iwant,
    }];
}

cannon_guest::export_shell!(Iwant);

/// A refusal gets the one line of usage that fits it, not the whole text.
fn iwant(args: &Args, msg: &Message) -> Result<String, CmdError> {
    match run(args, msg) {
        Err(CmdError::Usage(text)) => Ok(format!("{text}\nusage: {}", iwant_core::usage_line(args.get(0)))),
        other => other,
    }
}

fn run(args: &Args, msg: &Message) -> Result<String, CmdError> {
    let user = msg.get("user").unwrap_or("someone");
    let server = msg.get("server").unwrap_or("default");
    let channel = msg.get("channel").unwrap_or_default();
    let now = time::now();
    let answer = match args.get(0) {
        None => return Err(CmdError::usage("what do you want? e.g. iwant coffee at 10:00")),
        // `iwant list all` (or anything after `list`) lists; it is never an activity.
        Some("list") => {
            return iwant_core::list(&GuestKv, user, server, now);
        }
        Some("cancel") => {
            let what = args.rest(1);
            if what.is_empty() {
                return Err(CmdError::usage("cancel what? e.g. iwant cancel 3 (see iwant list)"));
            }
            iwant_core::cancel(&GuestKv, user, server, &what, now)?
        }
        Some(_) => {
            let want = parse::parse_want(args.positionals(), now).map_err(CmdError::usage)?;
            iwant_core::want(&GuestKv, Asker { user, server, channel }, want, now)?
        }
    };
    notify(answer, &msg.id)
}

/// Sends the notices as direct taskbacks asking for receipts and returns the reply.
fn notify(answer: Answer, message_id: &str) -> Result<String, CmdError> {
    for fields in notices::direct(&GuestKv, message_id, &answer.notices)? {
        taskback::send(&fields).map_err(CmdError::fail)?;
    }
    Ok(answer.reply)
}
