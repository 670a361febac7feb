//! The daemon's state in kv and one synchronisation step: pick the event of the day,
//! rotate its icons when due, and apply each asset whose hash differs from the applied one.

use std::path::Path;

use cannon_guest::CmdError;
use example_shared::{fnv1a64_hex, time, Store};

use crate::events::{Calendar, DayMonth, Event};

/// kv keys of the daemon's state.
pub const KEY_EVENT: &str = "state:event";
pub const KEY_BANNER: &str = "state:banner_hash";
pub const KEY_ICON: &str = "state:icon_hash";
pub const KEY_INDEX: &str = "state:icon_index";
pub const KEY_ROTATED: &str = "state:rotated_at";
pub const KEY_DAEMON: &str = "state:daemon";

/// Everything the daemon remembers between messages and across restarts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct State {
    /// Id (folder name) of the event applied last.
    pub event: Option<String>,
    /// Hashes of the banner and icon applied last.
    pub banner_hash: Option<String>,
    pub icon_hash: Option<String>,
    /// Which of the event's icons is current.
    pub icon_index: usize,
    /// When the icon was last rotated (Unix seconds).
    pub rotated_at: u64,
    /// `branding daemon disable` turns the daily work off (the default is on).
    pub disabled: bool,
}

impl State {
    pub fn load(store: &impl Store) -> Result<Self, CmdError> {
        let number =
            |key: &str| -> Result<u64, CmdError> { Ok(store.get(key)?.and_then(|v| v.parse().ok()).unwrap_or(0)) };
        Ok(State {
            event: store.get(KEY_EVENT)?,
            banner_hash: store.get(KEY_BANNER)?,
            icon_hash: store.get(KEY_ICON)?,
            icon_index: number(KEY_INDEX)? as usize,
            rotated_at: number(KEY_ROTATED)?,
            disabled: store.get(KEY_DAEMON)?.as_deref() == Some("off"),
        })
    }

    /// Writes the fields that differ from `before`.
    pub fn save(&self, store: &impl Store, before: &State) -> Result<(), CmdError> {
        let text = |key: &str, new: &Option<String>, old: &Option<String>| -> Result<(), CmdError> {
            match new {
                Some(value) if new != old => store.set(key, value)?,
                None if old.is_some() => {
                    store.delete(key)?;
                }
                _ => {}
            }
            Ok(())
        };
        text(KEY_EVENT, &self.event, &before.event)?;
        text(KEY_BANNER, &self.banner_hash, &before.banner_hash)?;
        text(KEY_ICON, &self.icon_hash, &before.icon_hash)?;
        if self.icon_index != before.icon_index {
            store.set(KEY_INDEX, &self.icon_index.to_string())?;
        }
        if self.rotated_at != before.rotated_at {
            store.set(KEY_ROTATED, &self.rotated_at.to_string())?;
        }
        if self.disabled != before.disabled {
            store.set(KEY_DAEMON, if self.disabled { "off" } else { "on" })?;
        }
        Ok(())
    }
}

/// Which asset an action sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    Banner,
    Icon,
}

/// One asset to apply: delivered as a taskback `{action, event, asset, hash, text}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Action {
    pub slot: Slot,
    /// The event's id and name.
    pub event: String,
    pub event_name: String,
    /// Path relative to the events directory.
    pub asset: String,
    pub hash: String,
}

impl Action {
    pub fn name(&self) -> &'static str {
        match self.slot {
            Slot::Banner => "set-banner",
            Slot::Icon => "set-icon",
        }
    }

    pub fn fields(&self) -> Vec<(String, String)> {
        let what = if self.slot == Slot::Banner { "banner" } else { "icon" };
        let text = format!("branding: {what} set to {} ({})", self.asset, self.event_name);
        [("action", self.name()), ("event", &self.event), ("asset", &self.asset), ("hash", &self.hash), ("text", &text)]
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }
}

/// What one synchronisation did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Synced {
    /// The event now in force (`None`: the calendar has no event for today and no fallback).
    pub event: Option<Event>,
    pub actions: Vec<Action>,
    /// Whether the icon rotation moved on.
    pub rotated: bool,
}

/// The hash of an asset's bytes.
pub fn asset_hash(root: &Path, asset: &str) -> Result<String, CmdError> {
    let bytes =
        std::fs::read(root.join(asset)).map_err(|e| CmdError::fail(format!("cannot read asset {asset}: {e}")))?;
    Ok(fnv1a64_hex(&bytes))
}

/// A rotation counts as due this long before its time, so that a daily tick a little
/// earlier than yesterday's still rotates (a tenth of the period, at most an hour).
fn slack(rotate_every: u64) -> u64 {
    (rotate_every / 10).min(time::HOUR)
}

/// One step: the event of `now`'s date (or the fallback); a new event starts at its first
/// icon; otherwise the icon rotates when `rotate_every` has passed; each asset is applied
/// only when its hash differs from the one applied last. The state is saved.
pub fn sync(
    store: &impl Store,
    calendar: &Calendar,
    root: &Path,
    now: u64,
    rotate_every: u64,
) -> Result<Synced, CmdError> {
    sync_with(store, calendar, root, now, rotate_every, false)
}

/// [`sync`]; with `force`, every asset of the event in force is applied again whatever its
/// hash (`branding sync --force`: recovery after staff changed the assets by hand).
pub fn sync_with(
    store: &impl Store,
    calendar: &Calendar,
    root: &Path,
    now: u64,
    rotate_every: u64,
    force: bool,
) -> Result<Synced, CmdError> {
    let before = State::load(store)?;
    let mut state = before.clone();
    let Some(event) = calendar.active(DayMonth::of(now)) else {
        return Ok(Synced::default());
    };
    let mut rotated = false;
    if state.event.as_deref() != Some(event.id.as_str()) {
        state.event = Some(event.id.clone());
        state.icon_index = 0;
        state.rotated_at = now;
    } else if event.icons.len() > 1 && now + slack(rotate_every) >= state.rotated_at.saturating_add(rotate_every) {
        state.icon_index = (state.icon_index + 1) % event.icons.len();
        state.rotated_at = now;
        rotated = true;
    }
    let icon = &event.icons[state.icon_index % event.icons.len()];
    let mut actions = Vec::new();
    for (slot, asset, applied) in
        [(Slot::Banner, &event.banner, &mut state.banner_hash), (Slot::Icon, icon, &mut state.icon_hash)]
    {
        let hash = asset_hash(root, asset)?;
        if force || applied.as_deref() != Some(hash.as_str()) {
            *applied = Some(hash.clone());
            actions.push(Action {
                slot,
                event: event.id.clone(),
                event_name: event.name.clone(),
                asset: asset.clone(),
                hash,
            });
        }
    }
    state.save(store, &before)?;
    Ok(Synced { event: Some(event.clone()), actions, rotated })
}

/// Turns the daemon on or off; returns whether it changed.
pub fn set_enabled(store: &impl Store, enabled: bool) -> Result<bool, CmdError> {
    let before = State::load(store)?;
    let after = State { disabled: !enabled, ..before.clone() };
    after.save(store, &before)?;
    Ok(before != after)
}
