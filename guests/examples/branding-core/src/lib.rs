//! # branding-core: the logic of the `branding` example daemon
//!
//! A calendar of events (a directory, one folder per event: dates as day-month, a banner
//! and icons), a daemon that applies the event of the day by emitting `set-banner` and
//! `set-icon` actions, rotates icons every `rotate_every`, and re-applies an asset only
//! when its FNV-1a hash changed. Its state lives in kv, so a restart applies nothing that
//! is already applied.
//!
//! ## Layout
//! - [`events`]: `event.conf` files, [`events::Calendar`], choosing the active event.
//! - [`daemon`]: the [`daemon::State`] in kv and [`daemon::sync`], one step of the daemon.
//! - [`receipts`]: receipts for the assets sent; only an `ok` one records a hash as applied.
//! - here: the texts of `branding about` and `branding calendar`, and the configuration.

pub mod daemon;
pub mod events;
pub mod receipts;

use std::path::Path;

use cannon_guest::CmdError;
use example_shared::{time, Store};

use daemon::State;
use events::{Calendar, DayMonth};

/// Icon rotation period when `rotate_every` is not configured.
pub const DEFAULT_ROTATE_EVERY: &str = "3d";

/// `rotate_every` from the component's config (`3d`, `12h`, `30s`...), in seconds.
pub fn rotate_every(configured: Option<String>) -> Result<u64, String> {
    let text = configured.unwrap_or_else(|| DEFAULT_ROTATE_EVERY.to_owned());
    match time::parse_duration(&text) {
        Ok(0) => Err("config rotate_every must be more than 0s".to_owned()),
        Ok(secs) => Ok(secs),
        Err(err) => Err(format!("config rotate_every: {err}")),
    }
}

/// `branding calendar`: every event with its dates, today's marked.
pub fn calendar_text(calendar: &Calendar, now: u64) -> String {
    let today = DayMonth::of(now);
    let active = calendar.active(today).map(|e| e.id.clone());
    let mut lines = vec![format!("events (today is {today}):")];
    for e in &calendar.events {
        let mark = if active.as_deref() == Some(e.id.as_str()) { "  <- today" } else { "" };
        let about = if e.description.is_empty() { String::new() } else { format!(": {}", e.description) };
        lines.push(format!("  {:<14}  {}{about}{mark}", e.when(), e.name));
    }
    if calendar.events.is_empty() {
        lines.push("  (none)".to_owned());
    }
    for problem in &calendar.problems {
        lines.push(format!("skipped {problem}"));
    }
    lines.join("\n")
}

/// `branding about`: the event in force, its assets, the rotation and the daemon's state.
pub fn about(store: &impl Store, calendar: &Calendar, now: u64, rotate_every: u64) -> Result<String, CmdError> {
    let state = State::load(store)?;
    let today = calendar.active(DayMonth::of(now));
    let daemon = if state.disabled { "disabled" } else { "enabled" };
    let mut lines = Vec::new();
    match state.event.as_deref().and_then(|id| calendar.events.iter().find(|e| e.id == id)) {
        None => lines.push("no event applied yet".to_owned()),
        Some(e) => {
            let about = if e.description.is_empty() { String::new() } else { format!(": {}", e.description) };
            lines.push(format!("event: {} ({}){about}", e.name, e.when()));
            let banner_note = if state.banner_sent.is_some() { " (awaiting its receipt)" } else { "" };
            lines.push(format!("banner: {}{banner_note}", e.banner));
            let i = state.icon_index % e.icons.len();
            let icon_note = if state.icon_sent.is_some() { ", awaiting its receipt" } else { "" };
            lines.push(format!("icon: {} ({} of {}{icon_note})", e.icons[i], i + 1, e.icons.len()));
            if e.icons.len() > 1 {
                lines.push(format!(
                    "icons rotate every {}; this one since {}",
                    time::duration(rotate_every),
                    time::when(state.rotated_at, now)
                ));
            }
        }
    }
    if let Some(t) = today {
        if state.event.as_deref() != Some(t.id.as_str()) {
            lines.push(format!("today's event is {}: applied at the next sync", t.name));
        }
    }
    lines.push(format!("daemon: {daemon}"));
    Ok(lines.join("\n"))
}

/// Loads the calendar from the events directory granted to the guest (`files:`).
pub fn load_calendar(root: &Path) -> Result<Calendar, CmdError> {
    Calendar::load(root).map_err(|e| CmdError::fail(format!("{e} (is `files:` granted in the compose file?)")))
}

#[cfg(test)]
mod tests;
