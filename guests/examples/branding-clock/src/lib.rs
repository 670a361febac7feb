//! `branding-clock`: the daemon's clock in the `branding` service. On a message with a
//! `tick` field (a `tick` collector: daily at 00:00 UTC and once at start) it applies the
//! event of the day, rotating icons every `rotate_every` (config, default 3d), unless the
//! daemon is disabled. Each asset sent is a taskback `{action, event, asset, hash, text}`
//! asking for a receipt; assets whose applied hash did not change are not sent again. Moving
//! into a new event (not the fallback) is announced with a taskback `{action: announce,
//! event, text}`. A receipt for an asset records it as applied (`ok`) or leaves it to be
//! sent again at the next tick (and says so). Other messages (chat lines for the shell) are
//! left alone.

use std::path::Path;

use branding_core::{daemon, load_calendar, receipts};
use cannon_guest::receipt::Receipt;
use cannon_guest::{config, log, taskback, Fields, Message, Task};
use example_shared::{time, GuestKv};

struct Clock;

impl Task for Clock {
    fn run(msg: Message, _results: Fields) -> Result<Fields, String> {
        if let Some(receipt) = Receipt::of(&msg.fields) {
            return on_receipt(&receipt);
        }
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
        if let Some(event) = synced.event.as_ref().filter(|e| synced.entered && !e.is_fallback()) {
            taskback::send(&announcement(event))?;
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

/// A receipt for an asset: recorded; the reply (if any) goes to the chat.
fn on_receipt(receipt: &Receipt) -> Result<Fields, String> {
    let Some(confirmation) = receipts::record(&GuestKv, receipt).map_err(|e| e.to_string())? else {
        return Ok(Vec::new());
    };
    let what = confirmation.slot.word();
    let state = match (confirmation.current, confirmation.ok) {
        (false, _) => "an older sending, ignored",
        (true, true) => "applied",
        (true, false) => "NOT applied, sent again at the next tick",
    };
    log::info(&format!("branding receipt: {what} {} {state} ({})", confirmation.asset, confirmation.detail));
    Ok(confirmation.reply().map(|text| vec![("text".to_owned(), text)]).unwrap_or_default())
}

/// `{action: announce, event, text}`: the daemon moved into `event`.
fn announcement(event: &branding_core::events::Event) -> Vec<(String, String)> {
    let about = if event.description.is_empty() { String::new() } else { format!(": {}", event.description) };
    let text = format!("branding: {} has begun{about}", event.name);
    [("action", "announce"), ("event", event.id.as_str()), ("text", text.as_str())]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

cannon_guest::export_task!(Clock);
