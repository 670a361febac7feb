//! `branding-clock`: the daemon's clock in the `branding` service. On a message with a
//! `tick` field (a `tick` collector: daily at 00:00 UTC and once at start) it applies the
//! event of the day, rotating icons every `rotate_every` (config, default 3d), unless the
//! daemon is disabled. Each applied asset is a taskback `{action, event, asset, hash,
//! text}`; assets whose hash did not change are not applied again. Other messages (chat
//! lines for the shell) are left alone.

use std::path::Path;

use branding_core::{daemon, load_calendar};
use cannon_guest::{config, log, taskback, Fields, Message, Task};
use example_shared::{time, GuestKv};

struct Clock;

impl Task for Clock {
    fn run(msg: Message, _results: Fields) -> Result<Fields, String> {
        if msg.get("tick").is_none() {
            return Ok(Vec::new());
        }
        let state = daemon::State::load(&GuestKv).map_err(|e| e.to_string())?;
        if state.disabled {
            log::info("branding tick: daemon disabled, nothing done");
            return Ok(Vec::new());
        }
        let every = branding_core::rotate_every(config::get("rotate_every"))?;
        let root = Path::new("/");
        let calendar = load_calendar(root).map_err(|e| e.to_string())?;
        for problem in &calendar.problems {
            log::warn(&format!("branding: skipped {problem}"));
        }
        let synced = daemon::sync(&GuestKv, &calendar, root, time::now(), every).map_err(|e| e.to_string())?;
        for action in &synced.actions {
            taskback::send(&action.fields())?;
        }
        let event = synced.event.map_or_else(|| "none".to_owned(), |e| e.id);
        log::info(&format!(
            "branding tick: event {event}, rotated {}, applied {}",
            synced.rotated,
            synced.actions.len()
        ));
        Ok(Vec::new())
    }
}

cannon_guest::export_task!(Clock);
