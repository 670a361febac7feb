//! Receipts for applied assets: each `set-banner`/`set-icon` taskback asks the collector that
//! performs it for a receipt ([`cannon_guest::receipt`]); only an `ok` receipt for the hash
//! sent last records the hash as applied. A failed upload leaves the applied hash as it was,
//! so the next tick sends the asset again.

use cannon_guest::receipt::Receipt;
use cannon_guest::CmdError;
use example_shared::Store;

use crate::daemon::{Action, Origin, Slot, State};

/// What a taskback's `receipt_ref` starts with: the receipts this daemon asked for.
pub const PREFIX: &str = "branding:";

/// The `receipt_ref` of an action: `branding:SLOT:HASH:ORIGIN:ASSET` (the asset last, so
/// that a cut at the collector's 256 bytes loses only the end of its name).
pub fn reference(action: &Action) -> String {
    format!("{PREFIX}{}:{}:{}:{}", action.slot.word(), action.hash, action.origin.word(), action.asset)
}

/// A receipt for one of the daemon's assets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Confirmation {
    pub slot: Slot,
    pub hash: String,
    pub origin: Origin,
    pub asset: String,
    /// The collector applied it.
    pub ok: bool,
    /// What the collector said.
    pub detail: String,
    /// It answers the sending awaited last for its slot (an older one is only logged).
    pub current: bool,
}

impl Confirmation {
    /// The line for the chat: `None` for an applied asset sent by the schedule (the log
    /// says it), and for a stale receipt.
    pub fn reply(&self) -> Option<String> {
        let what = self.slot.word();
        match (self.current, self.ok, self.origin) {
            (false, _, _) | (true, true, Origin::Tick) => None,
            (true, true, Origin::Sync) => Some(format!("branding: {what} {} applied", self.asset)),
            (true, false, _) => Some(format!(
                "branding: {what} {} was not applied ({}); it is sent again at the next tick",
                self.asset,
                if self.detail.is_empty() { "no detail" } else { &self.detail }
            )),
        }
    }
}

/// Parses a receipt's reference: `None` when it is not one of this daemon's.
pub fn parse(receipt: &Receipt) -> Option<Confirmation> {
    let rest = receipt.reference.as_deref()?.strip_prefix(PREFIX)?;
    let mut parts = rest.splitn(4, ':');
    let slot = Slot::from_word(parts.next()?)?;
    let hash = parts.next()?.to_owned();
    let origin = Origin::from_word(parts.next()?)?;
    let asset = parts.next().unwrap_or_default().to_owned();
    Some(Confirmation { slot, hash, origin, asset, ok: receipt.ok, detail: receipt.detail.clone(), current: false })
}

/// Records a receipt: when it answers the sending awaited for its slot, an `ok` makes that
/// hash the applied one; either way the slot no longer awaits it. `None` when the receipt
/// is not one of this daemon's.
pub fn record(store: &impl Store, receipt: &Receipt) -> Result<Option<Confirmation>, CmdError> {
    let Some(mut confirmation) = parse(receipt) else {
        return Ok(None);
    };
    let before = State::load(store)?;
    let mut state = before.clone();
    let (applied, sent) = state.slot_mut(confirmation.slot);
    if sent.as_ref().is_some_and(|s| s.hash == confirmation.hash) {
        confirmation.current = true;
        if confirmation.ok {
            *applied = Some(confirmation.hash.clone());
        }
        *sent = None;
    }
    state.save(store, &before)?;
    Ok(Some(confirmation))
}
