use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use example_shared::time::{days_from_civil, DAY, HOUR};
use example_shared::MemStore;

use super::daemon::{self, Slot};
use super::*;

/// A temporary events directory, removed on drop.
struct Events(PathBuf);

impl Events {
    fn new() -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "branding-core-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let events = Events(dir);
        events.write("halloween/event.conf", "name: Halloween\nstart: 15-10\nend: 02-11\ndescription: Boo\nbanner: banner.txt\nicons: icons/pumpkin.txt, icons/bat.txt, icons/ghost.txt\n");
        events.write("halloween/banner.txt", "orange banner");
        events.write("halloween/icons/pumpkin.txt", "pumpkin");
        events.write("halloween/icons/bat.txt", "bat");
        events.write("halloween/icons/ghost.txt", "ghost");
        events.write("default/event.conf", "name: Everyday\nfallback: yes\nbanner: banner.txt\nicons: icon.txt\n");
        events.write("default/banner.txt", "plain banner");
        events.write("default/icon.txt", "logo");
        events
    }

    fn write(&self, path: &str, text: &str) {
        let path = self.0.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    fn calendar(&self) -> Calendar {
        let calendar = Calendar::load(&self.0).unwrap();
        assert!(calendar.problems.is_empty(), "{:?}", calendar.problems);
        calendar
    }
}

impl Drop for Events {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Noon UTC on `day`-`month`-2024.
fn on(day: u32, month: u32) -> u64 {
    days_from_civil(2024, month, day) as u64 * DAY + 12 * HOUR
}

/// A receipt as the collector would send it for `action`.
fn receipt(action: &daemon::Action, ok: bool, detail: &str) -> cannon_guest::receipt::Receipt {
    cannon_guest::receipt::Receipt {
        for_id: "1-0".to_owned(),
        ok,
        detail: detail.to_owned(),
        reference: Some(receipts::reference(action)),
    }
}

/// Every action's receipt, `ok`; the replies.
fn confirm(store: &MemStore, synced: &daemon::Synced) -> Vec<Option<String>> {
    let confirm = |a: &daemon::Action| receipts::record(store, &receipt(a, true, "posted")).unwrap().unwrap().reply();
    synced.actions.iter().map(confirm).collect()
}

/// One scheduled step whose assets the collector then applies.
fn tick(
    store: &MemStore,
    calendar: &Calendar,
    root: &std::path::Path,
    now: u64,
    every: u64,
) -> Result<daemon::Synced, CmdError> {
    let synced = daemon::sync(store, calendar, root, now, every)?;
    confirm(store, &synced);
    Ok(synced)
}

/// `branding sync --force` whose assets the collector then applies.
fn forced_sync(
    store: &MemStore,
    calendar: &Calendar,
    root: &std::path::Path,
    now: u64,
    every: u64,
) -> Result<daemon::Synced, CmdError> {
    let synced = daemon::sync_with(store, calendar, root, now, every, daemon::Origin::Sync, true)?;
    let replies = confirm(store, &synced);
    assert!(replies.iter().all(|r| r.as_deref().is_some_and(|r| r.ends_with(" applied"))), "{replies:?}");
    Ok(synced)
}

fn applied(synced: &daemon::Synced) -> Vec<(&'static str, &str)> {
    synced.actions.iter().map(|a| (a.name(), a.asset.as_str())).collect()
}

#[test]
fn applies_once_then_nothing_until_something_changes() {
    let events = Events::new();
    let store = MemStore::new();
    let every = 3 * DAY;
    let first = tick(&store, &events.calendar(), &events.0, on(20, 10), every).unwrap();
    assert_eq!(first.event.as_ref().map(|e| e.id.as_str()), Some("halloween"));
    assert_eq!(applied(&first), [("set-banner", "halloween/banner.txt"), ("set-icon", "halloween/icons/pumpkin.txt")]);
    assert_eq!(first.actions[0].hash, example_shared::fnv1a64_hex(b"orange banner"));
    let fields = first.actions[1].fields();
    assert!(fields.contains(&("action".to_owned(), "set-icon".to_owned())));
    assert!(fields.contains(&("event".to_owned(), "halloween".to_owned())));

    // A restart is a new instance reading the same kv: nothing to apply.
    let again = tick(&store, &events.calendar(), &events.0, on(20, 10) + HOUR, every).unwrap();
    assert!(again.actions.is_empty(), "{:?}", again.actions);
    assert!(!again.rotated);

    // An edited banner is applied again, alone.
    events.write("halloween/banner.txt", "darker orange banner");
    let edited = tick(&store, &events.calendar(), &events.0, on(20, 10) + 2 * HOUR, every).unwrap();
    assert_eq!(applied(&edited), [("set-banner", "halloween/banner.txt")]);

    // --force applies everything again, without rotating.
    let forced = forced_sync(&store, &events.calendar(), &events.0, on(20, 10) + 3 * HOUR, every).unwrap();
    assert_eq!(applied(&forced), [("set-banner", "halloween/banner.txt"), ("set-icon", "halloween/icons/pumpkin.txt")]);
    assert!(!forced.rotated);
    let after = tick(&store, &events.calendar(), &events.0, on(20, 10) + 4 * HOUR, every).unwrap();
    assert!(after.actions.is_empty(), "{:?}", after.actions);
}

#[test]
fn icons_rotate_at_the_configured_frequency() {
    let events = Events::new();
    let store = MemStore::new();
    let calendar = events.calendar();
    let every = 3 * DAY;
    let start = on(16, 10);
    tick(&store, &calendar, &events.0, start, every).unwrap();
    let day = |n: u64| tick(&store, &calendar, &events.0, start + n * DAY, every).unwrap();
    assert!(day(1).actions.is_empty());
    assert!(day(2).actions.is_empty());
    let third = day(3);
    assert!(third.rotated);
    assert_eq!(applied(&third), [("set-icon", "halloween/icons/bat.txt")]);
    assert!(day(4).actions.is_empty());
    assert_eq!(applied(&day(6)), [("set-icon", "halloween/icons/ghost.txt")]);
    assert_eq!(applied(&day(9)), [("set-icon", "halloween/icons/pumpkin.txt")], "wraps around");
    // A tick a few minutes early still counts (slack), so rotation does not slip a day.
    let early = tick(&store, &calendar, &events.0, start + 12 * DAY - 300, every).unwrap();
    assert!(early.rotated);
}

#[test]
fn a_new_event_starts_at_its_first_icon_and_the_fallback_fills_gaps() {
    let events = Events::new();
    let store = MemStore::new();
    let calendar = events.calendar();
    let every = DAY;
    tick(&store, &calendar, &events.0, on(30, 10), every).unwrap();
    tick(&store, &calendar, &events.0, on(31, 10), every).unwrap();
    let after = tick(&store, &calendar, &events.0, on(3, 11), every).unwrap();
    assert_eq!(after.event.as_ref().map(|e| e.id.as_str()), Some("default"));
    assert_eq!(applied(&after), [("set-banner", "default/banner.txt"), ("set-icon", "default/icon.txt")]);
    // One icon: nothing to rotate.
    assert!(tick(&store, &calendar, &events.0, on(20, 11), every).unwrap().actions.is_empty());
    let back = tick(&store, &calendar, &events.0, on(15, 10), every).unwrap();
    assert_eq!(
        back.actions.iter().find(|a| a.slot == Slot::Icon).map(|a| a.asset.as_str()),
        Some("halloween/icons/pumpkin.txt")
    );
}

#[test]
fn state_keys_and_the_daemon_switch() {
    let events = Events::new();
    let store = MemStore::new();
    tick(&store, &events.calendar(), &events.0, on(20, 10), DAY).unwrap();
    assert_eq!(
        store.keys(),
        ["state:banner_hash", "state:event", "state:icon_hash", "state:rotated_at"],
        "index 0 and an enabled daemon are the defaults"
    );
    assert!(daemon::set_enabled(&store, false).unwrap());
    assert!(!daemon::set_enabled(&store, false).unwrap());
    assert_eq!(store.get(daemon::KEY_DAEMON).unwrap().as_deref(), Some("off"));
    assert!(daemon::State::load(&store).unwrap().disabled);
    assert!(daemon::set_enabled(&store, true).unwrap());
    assert!(!daemon::State::load(&store).unwrap().disabled);
}

#[test]
fn about_and_calendar_texts() {
    let events = Events::new();
    let store = MemStore::new();
    let calendar = events.calendar();
    let now = on(20, 10);
    assert_eq!(
        about(&store, &calendar, now, DAY).unwrap(),
        "no event applied yet\ntoday's event is Halloween: applied at the next sync\ndaemon: enabled"
    );
    tick(&store, &calendar, &events.0, now, DAY).unwrap();
    let text = about(&store, &calendar, now, DAY).unwrap();
    assert!(text.starts_with("event: Halloween (15-10 to 02-11): Boo\nbanner: halloween/banner.txt\n"), "{text}");
    assert!(text.contains("icon: halloween/icons/pumpkin.txt (1 of 3)"), "{text}");
    assert!(text.contains("icons rotate every 1d"), "{text}");
    assert!(text.ends_with("daemon: enabled"), "{text}");
    assert_eq!(
        calendar_text(&calendar, now),
        "events (today is 20-10):\n  15-10 to 02-11  Halloween: Boo  <- today\n  fallback        Everyday"
    );
    events.write("broken/event.conf", "start: 01-01\n");
    let text = calendar_text(&Calendar::load(&events.0).unwrap(), now);
    assert!(
        text.ends_with("skipped broken/event.conf: an event needs `start:` and `end:` (or `fallback: yes`)"),
        "{text}"
    );
}

#[test]
fn rotation_config() {
    assert_eq!(rotate_every(None), Ok(3 * DAY));
    assert_eq!(rotate_every(Some("12h".to_owned())), Ok(12 * HOUR));
    assert!(rotate_every(Some("0s".to_owned())).is_err());
    assert!(rotate_every(Some("soon".to_owned())).unwrap_err().contains("rotate_every"));
}

#[test]
fn an_asset_counts_as_applied_only_when_its_receipt_says_so() {
    let events = Events::new();
    let store = MemStore::new();
    let (calendar, every, now) = (events.calendar(), 3 * DAY, on(20, 10));
    let first = daemon::sync(&store, &calendar, &events.0, now, every).unwrap();
    assert_eq!(applied(&first), [("set-banner", "halloween/banner.txt"), ("set-icon", "halloween/icons/pumpkin.txt")]);
    assert!(first.entered);
    let fields = first.actions[0].fields();
    assert!(fields.contains(&("receipt".to_owned(), "yes".to_owned())), "{fields:?}");
    // The banner's upload fails, the icon's succeeds.
    let failed = receipts::record(&store, &receipt(&first.actions[0], false, "upload refused")).unwrap().unwrap();
    assert_eq!(
        failed.reply().as_deref(),
        Some(
            "branding: banner halloween/banner.txt was not applied (upload refused); it is sent again at the next tick"
        )
    );
    let ok = receipts::record(&store, &receipt(&first.actions[1], true, "posted")).unwrap().unwrap();
    assert_eq!(ok.reply(), None, "the schedule's applied assets are only logged");
    let state = daemon::State::load(&store).unwrap();
    assert_eq!((state.banner_hash, state.banner_sent), (None, None), "a failed upload is forgotten");
    assert_eq!(state.icon_hash.as_deref(), Some(first.actions[1].hash.as_str()));
    // The next tick sends the banner again, alone; a second receipt for the same sending is stale.
    let retry = daemon::sync(&store, &calendar, &events.0, now + HOUR, every).unwrap();
    assert_eq!(applied(&retry), [("set-banner", "halloween/banner.txt")]);
    // While a receipt may still come, the asset is not sent again; after that it is.
    let waiting = daemon::sync(&store, &calendar, &events.0, now + HOUR + 1, every).unwrap();
    assert!(waiting.actions.is_empty(), "{:?}", waiting.actions);
    let late = now + HOUR + daemon::AWAIT_RECEIPT;
    let retry = daemon::sync(&store, &calendar, &events.0, late, every).unwrap();
    assert_eq!(applied(&retry), [("set-banner", "halloween/banner.txt")]);
    assert!(!retry.entered);
    let about = about(&store, &calendar, late, every).unwrap();
    assert!(about.contains("banner: halloween/banner.txt (awaiting its receipt)"), "{about}");
    assert!(receipts::record(&store, &receipt(&retry.actions[0], true, "posted")).unwrap().unwrap().current);
    let stale = receipts::record(&store, &receipt(&retry.actions[0], true, "posted")).unwrap().unwrap();
    assert!(!stale.current && stale.reply().is_none());
    assert!(daemon::sync(&store, &calendar, &events.0, late + HOUR, every).unwrap().actions.is_empty());
    // A moderator's sync hears back per asset.
    let forced = daemon::sync_with(&store, &calendar, &events.0, now, every, daemon::Origin::Sync, true).unwrap();
    let replies: Vec<_> = forced
        .actions
        .iter()
        .map(|a| receipts::record(&store, &receipt(a, true, "posted")).unwrap().unwrap().reply())
        .collect();
    assert_eq!(
        replies,
        [
            Some("branding: banner halloween/banner.txt applied".to_owned()),
            Some("branding: icon halloween/icons/pumpkin.txt applied".to_owned())
        ]
    );
    // Receipts of other taskbacks are not the daemon's.
    let other = cannon_guest::receipt::Receipt {
        for_id: "1-0".to_owned(),
        ok: true,
        detail: String::new(),
        reference: Some("remember:x".to_owned()),
    };
    assert_eq!(receipts::record(&store, &other).unwrap(), None);
}

#[test]
fn entering_an_event_is_marked_but_the_fallback_counts_too() {
    let events = Events::new();
    let store = MemStore::new();
    let calendar = events.calendar();
    let fallback = tick(&store, &calendar, &events.0, on(20, 11), DAY).unwrap();
    assert!(fallback.entered && fallback.event.as_ref().is_some_and(|e| e.is_fallback()));
    let halloween = tick(&store, &calendar, &events.0, on(15, 10), DAY).unwrap();
    assert!(halloween.entered && !halloween.event.as_ref().is_some_and(|e| e.is_fallback()));
    assert!(!tick(&store, &calendar, &events.0, on(16, 10), DAY).unwrap().entered);
}
