//! The daemon's state in kv and one synchronisation step: pick the event of the day,
//! rotate its icons when due, and send each asset whose hash differs from the applied one.
//! An asset counts as applied only when the collector's receipt says so ([`crate::receipts`]):
//! until then the next sync sends it again.

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
/// Hashes sent and not yet confirmed by a receipt.
pub const KEY_BANNER_SENT: &str = "state:banner_sent";
pub const KEY_ICON_SENT: &str = "state:icon_sent";

/// Everything the daemon remembers between messages and across restarts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct State {
    /// Id (folder name) of the event applied last.
    pub event: Option<String>,
    /// Hashes of the banner and icon applied last (confirmed by a receipt).
    pub banner_hash: Option<String>,
    pub icon_hash: Option<String>,
    /// The sendings awaiting their receipt.
    pub banner_sent: Option<Sent>,
    pub icon_sent: Option<Sent>,
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
            banner_sent: store.get(KEY_BANNER_SENT)?.as_deref().and_then(Sent::decode),
            icon_sent: store.get(KEY_ICON_SENT)?.as_deref().and_then(Sent::decode),
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
        let sent = |s: &Option<Sent>| s.as_ref().map(Sent::encode);
        text(KEY_BANNER_SENT, &sent(&self.banner_sent), &sent(&before.banner_sent))?;
        text(KEY_ICON_SENT, &sent(&self.icon_sent), &sent(&before.icon_sent))?;
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

/// How long a sending waits for its receipt before the next sync sends the asset again
/// (a failed upload's receipt makes the next sync send it again at once).
pub const AWAIT_RECEIPT: u64 = 60;

/// An asset sent and awaiting its receipt: its hash, and when (Unix seconds). Stored as
/// `HASH@SECONDS`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    pub hash: String,
    pub at: u64,
}

impl Sent {
    pub fn encode(&self) -> String {
        format!("{}@{}", self.hash, self.at)
    }

    pub fn decode(text: &str) -> Option<Sent> {
        let (hash, at) = text.rsplit_once('@')?;
        Some(Sent { hash: hash.to_owned(), at: at.parse().ok()? })
    }

    /// Whether `hash` was sent less than [`AWAIT_RECEIPT`] before `now`.
    fn awaits(&self, hash: &str, now: u64) -> bool {
        self.hash == hash && now < self.at.saturating_add(AWAIT_RECEIPT)
    }
}

/// Which asset an action sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    Banner,
    Icon,
}

impl Slot {
    /// `banner` or `icon`.
    pub fn word(self) -> &'static str {
        match self {
            Slot::Banner => "banner",
            Slot::Icon => "icon",
        }
    }

    pub fn from_word(word: &str) -> Option<Slot> {
        match word {
            "banner" => Some(Slot::Banner),
            "icon" => Some(Slot::Icon),
            _ => None,
        }
    }
}

impl State {
    /// The applied hash and the sending awaiting its receipt of `slot`.
    pub fn slot_mut(&mut self, slot: Slot) -> (&mut Option<String>, &mut Option<Sent>) {
        match slot {
            Slot::Banner => (&mut self.banner_hash, &mut self.banner_sent),
            Slot::Icon => (&mut self.icon_hash, &mut self.icon_sent),
        }
    }
}

/// What made the daemon send an asset: its schedule or a moderator's `branding sync`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Tick,
    Sync,
}

impl Origin {
    pub fn word(self) -> &'static str {
        match self {
            Origin::Tick => "tick",
            Origin::Sync => "sync",
        }
    }

    pub fn from_word(word: &str) -> Option<Origin> {
        match word {
            "tick" => Some(Origin::Tick),
            "sync" => Some(Origin::Sync),
            _ => None,
        }
    }
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
    pub origin: Origin,
}

impl Action {
    pub fn name(&self) -> &'static str {
        match self.slot {
            Slot::Banner => "set-banner",
            Slot::Icon => "set-icon",
        }
    }

    /// The taskback: `{action, event, asset, hash, text}`, asking for a receipt whose
    /// `receipt_ref` ([`crate::receipts::reference`]) names the slot, hash, origin and asset.
    pub fn fields(&self) -> Vec<(String, String)> {
        let text = format!("branding: {} set to {} ({})", self.slot.word(), self.asset, self.event_name);
        let mut fields: Vec<(String, String)> = [
            ("action", self.name()),
            ("event", &self.event),
            ("asset", &self.asset),
            ("hash", &self.hash),
            ("text", &text),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
        cannon_guest::receipt::ask(&mut fields, Some(&crate::receipts::reference(self)));
        fields
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
    /// Whether this step moved into another event than the one applied last.
    pub entered: bool,
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
    sync_with(store, calendar, root, now, rotate_every, Origin::Tick, false)
}

/// [`sync`]; with `force`, every asset of the event in force is applied again whatever its
/// hash (`branding sync --force`: recovery after staff changed the assets by hand).
/// An asset whose last sending was not confirmed by a receipt is sent again, unless it was
/// sent less than [`AWAIT_RECEIPT`] ago and its receipt may still come.
pub fn sync_with(
    store: &impl Store,
    calendar: &Calendar,
    root: &Path,
    now: u64,
    rotate_every: u64,
    origin: Origin,
    force: bool,
) -> Result<Synced, CmdError> {
    let before = State::load(store)?;
    let mut state = before.clone();
    let Some(event) = calendar.active(DayMonth::of(now)) else {
        return Ok(Synced::default());
    };
    let mut rotated = false;
    let entered = state.event.as_deref() != Some(event.id.as_str());
    if entered {
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
    for (slot, asset) in [(Slot::Banner, &event.banner), (Slot::Icon, icon)] {
        let hash = asset_hash(root, asset)?;
        let (applied, sent) = state.slot_mut(slot);
        let awaited = sent.as_ref().is_some_and(|s| s.awaits(&hash, now));
        if force || (applied.as_deref() != Some(hash.as_str()) && !awaited) {
            *sent = Some(Sent { hash: hash.clone(), at: now });
            actions.push(Action {
                slot,
                event: event.id.clone(),
                event_name: event.name.clone(),
                asset: asset.clone(),
                hash,
                origin,
            });
        }
    }
    state.save(store, &before)?;
    Ok(Synced { event: Some(event.clone()), actions, rotated, entered })
}

/// Turns the daemon on or off; returns whether it changed.
pub fn set_enabled(store: &impl Store, enabled: bool) -> Result<bool, CmdError> {
    let before = State::load(store)?;
    let after = State { disabled: !enabled, ..before.clone() };
    after.save(store, &before)?;
    Ok(before != after)
}
