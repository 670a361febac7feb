//! `branding`: the commands of the branding daemon. `branding about` and
//! `branding calendar` are for everyone; `branding sync` (apply the event of the day now)
//! and `branding daemon enable|disable` are protected by torch permissions in the compose
//! file. The events directory is granted read-only (`files:`) and seen at `/`; the
//! daemon's state is in kv; applied assets go out as taskbacks `{action, event, asset,
//! hash, text}`. The daily work is done by the `branding-clock` task.

use std::path::Path;

use branding_core::{daemon, load_calendar};
use cannon_guest::{config, taskback, Args, Cmd, CmdError, Message, Shell};
use example_shared::{time, GuestKv};

struct Branding;

impl Shell for Branding {
    const COMMANDS: &'static [Cmd] = &[Cmd {
        name: "branding",
        summary: "the event branding: branding about|calendar|sync|daemon",
        usage: concat!(
            "branding about                     the event in force, its banner and icon\n",
            "       branding calendar                  every event and its dates\n",
            "       branding sync [--force]            apply today's event now; --force: every asset again (moderators)\n",
            "       branding daemon [enable|disable]   turn the daily work on (syncing at once) or off (moderators)",
        ),
        options: &[],
        flags: &["force"],
        run: branding,
    }];
}

cannon_guest::export_shell!(Branding);

fn rotate_every() -> Result<u64, CmdError> {
    branding_core::rotate_every(config::get("rotate_every")).map_err(CmdError::fail)
}

fn branding(args: &Args, _msg: &Message) -> Result<String, CmdError> {
    let root = Path::new("/");
    let now = time::now();
    match (args.get(0), args.get(1)) {
        (Some("about") | None, None) => branding_core::about(&GuestKv, &load_calendar(root)?, now, rotate_every()?),
        (Some("calendar"), None) => Ok(branding_core::calendar_text(&load_calendar(root)?, now)),
        (Some("sync"), None) => sync(root, now, args.flag("force")),
        (Some("daemon"), None) => {
            let state = daemon::State::load(&GuestKv)?;
            Ok(format!("the daemon is {}", if state.disabled { "disabled" } else { "enabled" }))
        }
        (Some("daemon"), Some(switch @ ("enable" | "disable"))) if args.positionals().len() == 2 => {
            let enable = switch == "enable";
            let changed = daemon::set_enabled(&GuestKv, enable)?;
            let state = if enable { "enabled" } else { "disabled" };
            let said =
                if changed { format!("the daemon is now {state}") } else { format!("the daemon was already {state}") };
            if !enable {
                return Ok(said);
            }
            // Enabling syncs at once rather than at the next tick.
            Ok(format!("{said}; {}", sync(root, now, false)?))
        }
        _ => Err(CmdError::usage(format!("unknown subcommand {:?}", args.rest(0)))),
    }
}

/// One sync now: the actions go out as taskbacks; the reply says what was sent, and each
/// asset's receipt is answered by `branding-clock` with whether it was applied.
fn sync(root: &Path, now: u64, force: bool) -> Result<String, CmdError> {
    let synced =
        daemon::sync_with(&GuestKv, &load_calendar(root)?, root, now, rotate_every()?, daemon::Origin::Sync, force)?;
    for action in &synced.actions {
        taskback::send(&action.fields()).map_err(CmdError::fail)?;
    }
    let Some(event) = synced.event else {
        return Ok("no event today and no fallback: nothing to apply".to_owned());
    };
    if synced.actions.is_empty() {
        return Ok(format!("{} is in force and up to date: nothing to apply", event.name));
    }
    let assets: Vec<&str> = synced.actions.iter().map(|a| a.asset.as_str()).collect();
    Ok(format!("{} is in force; sent {} (each is confirmed when applied)", event.name, assets.join(", ")))
}
