//! Delivering [`Notice`]s: each goes to its user directly (a taskback with `to`) and asks
//! for a receipt; a copy waits in kv under `notice:{message id}:{n}` (for an hour). When the
//! receipt says `error` (the platform has no direct messages, the user is unknown, ...),
//! the notice is posted to the channel where that user asked instead, once; an `ok`
//! receipt just drops the copy.

use cannon_guest::receipt::{self, Receipt};
use cannon_guest::{CmdError, Fields};
use example_shared::{key_part, Record, Store};

use crate::Notice;

/// How long a notice's copy waits for its receipt, in milliseconds.
pub const PENDING_TTL_MS: u64 = 3_600_000;

fn pending_key(message_id: &str, n: &str) -> String {
    format!("notice:{}:{}", key_part(message_id), key_part(n))
}

/// The taskbacks for `notices`, caused by message `message_id`: each asks for a receipt,
/// with `receipt_ref` its index; the copies for the fallback are stored first.
pub fn direct(store: &impl Store, message_id: &str, notices: &[Notice]) -> Result<Vec<Fields>, CmdError> {
    let mut out = Vec::with_capacity(notices.len());
    for (n, notice) in notices.iter().enumerate() {
        let copy = Record::new()
            .with("text", &notice.text)
            .with("channel", &notice.channel)
            .with("server", &notice.server)
            .with("to", &notice.to)
            .with("kind", notice.kind);
        store.set_with_ttl(&pending_key(message_id, &n.to_string()), &copy.encode(), PENDING_TTL_MS)?;
        let mut fields = notice.fields();
        receipt::ask(&mut fields, Some(&n.to_string()));
        out.push(fields);
    }
    Ok(out)
}

/// What a receipt for a notice leads to: nothing (`ok`, or not one of ours, or already
/// handled), or the fallback taskback to post in the channel: `{text, channel, server,
/// kind, notice_to, fallback: yes}` (no `channel` when the user asked outside any).
pub fn on_receipt(store: &impl Store, receipt: &Receipt) -> Result<Option<Fields>, CmdError> {
    let Some(reference) = receipt.reference.as_deref() else {
        return Ok(None);
    };
    let key = pending_key(&receipt.for_id, reference);
    let Some(raw) = store.get(&key)? else {
        return Ok(None);
    };
    // Deleting with a compare-and-swap: of two copies of one receipt, one posts.
    if !store.compare_and_swap(&key, Some(&raw), None)? || receipt.ok {
        return Ok(None);
    }
    let copy = Record::decode(&raw).map_err(|e| CmdError::fail(format!("stored notice {key:?} is damaged: {e}")))?;
    let get = |k: &str| copy.get(k).unwrap_or_default().to_owned();
    let mut fields = vec![("text".to_owned(), get("text"))];
    if !get("channel").is_empty() {
        fields.push(("channel".to_owned(), get("channel")));
    }
    for (k, v) in [("server", get("server")), ("kind", get("kind")), ("notice_to", get("to"))] {
        fields.push((k.to_owned(), v));
    }
    fields.push(("fallback".to_owned(), "yes".to_owned()));
    Ok(Some(fields))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::book::Status;
    use cannon_guest::FieldsExt;
    use example_shared::MemStore;

    fn notice(to: &str, channel: &str) -> Notice {
        Notice {
            to: to.to_owned(),
            text: format!("@{to}: match #1"),
            kind: "matched",
            outcome: 1,
            activity: "coffee".to_owned(),
            with: "bob".to_owned(),
            when: "10:00-10:30 UTC".to_owned(),
            status: Status::Matched,
            channel: channel.to_owned(),
            server: "srv".to_owned(),
        }
    }

    fn receipt(for_id: &str, ok: bool, reference: Option<&str>) -> Receipt {
        Receipt { for_id: for_id.to_owned(), ok, detail: String::new(), reference: reference.map(str::to_owned) }
    }

    #[test]
    fn an_error_receipt_falls_back_to_the_channel_once() {
        let store = MemStore::new();
        let sent = direct(&store, "5-0", &[notice("alice", "#lunch"), notice("carol", "")]).unwrap();
        assert_eq!(sent.len(), 2);
        let get = |f: &Fields, k: &str| FieldsExt::get(f.as_slice(), k).map(str::to_owned);
        assert_eq!((get(&sent[0], "receipt"), get(&sent[0], "receipt_ref")), (Some("yes".into()), Some("0".into())));
        assert_eq!(get(&sent[1], "receipt_ref").as_deref(), Some("1"));
        // ok: the copy is dropped, nothing posted.
        assert_eq!(on_receipt(&store, &receipt("5-0", true, Some("1"))).unwrap(), None);
        // error: posted to the channel alice asked in, without `to`; once.
        let fallback = on_receipt(&store, &receipt("5-0", false, Some("0"))).unwrap().expect("a fallback");
        let f = |k: &str| get(&fallback, k);
        assert_eq!((f("text"), f("channel"), f("to")), (Some("@alice: match #1".into()), Some("#lunch".into()), None));
        assert_eq!(
            (f("notice_to"), f("fallback"), f("server")),
            (Some("alice".into()), Some("yes".into()), Some("srv".into()))
        );
        assert_eq!(on_receipt(&store, &receipt("5-0", false, Some("0"))).unwrap(), None);
        assert_eq!(on_receipt(&store, &receipt("9-9", false, None)).unwrap(), None);
        assert!(store.keys().is_empty(), "{:?}", store.keys());
    }
}
