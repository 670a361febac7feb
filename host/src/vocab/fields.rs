//! Field maps: the host-owned keys, the linear merge, and how fields count against limits.
//!
//! A message, a task's results and a taskback are ordered `key -> value` pairs
//! ([`Fields`]). Three rules apply wherever they are built:
//!
//! - **Host-owned keys.** Every key starting with `cannon.` ([`HOST_PREFIX`], matched
//!   ignoring ASCII case, so `Cannon.ID` is host-owned too) belongs to the host. Such keys
//!   are dropped from a task's results and from every taskback a task sends, all
//!   occurrences; the host then writes each of its own keys exactly once, **first** in the
//!   entry ([`with_host_keys`]). A waiter (`send --wait`, the http collector's `?wait`,
//!   `bench`, the collectors) reads a taskback's or dead letter's message id only there
//!   ([`host_id`]), comparing bytes exactly: a look-alike key (` cannon.id`, `cannon.id `)
//!   is an ordinary key and is never read as an id.
//! - **Merging is linear.** [`merge`] indexes keys in a hash map (SipHash with a random
//!   key, so colliding keys cannot be chosen): a later key overwrites an earlier one's value
//!   in place, a new key is appended. Order is the order in which keys first appeared.
//! - **No pair is free.** Byte budgets (`limits.output_kb`, `limits.message_kb`, the size
//!   of a taskback) count each pair's key and value plus [`ENTRY_OVERHEAD`] ([`size`]), so
//!   a flood of empty pairs is bounded too; `limits.max_fields` caps the number of pairs.
//! - **Receipts.** A task asks for a receipt by writing the ordinary pair `receipt: yes`
//!   ([`RECEIPT_REQUEST`]) into a taskback (its results or an extra taskback); the host
//!   replaces it with its own `cannon.receipt: yes` ([`RECEIPT_FIELD`]) right after
//!   `cannon.id`. The collector that performs the taskback then adds a receipt message
//!   ([`receipt_message`]) whose `cannon.receipt_*` keys a collector's outside input can never
//!   carry ([`is_receipt_key`]), so a receipt cannot be forged through a collector.

use indexmap::IndexMap;

/// Ordered `key -> value` pairs: a message's fields, results or a taskback.
pub type Fields = Vec<(String, String)>;

/// Prefix of the keys the host writes (`cannon.id`, `cannon.error`, ...).
pub const HOST_PREFIX: &str = "cannon.";

/// Field of a taskback or dead letter naming the message it answers.
pub const ID_FIELD: &str = "cannon.id";
/// Field of a dead letter: why the message failed.
pub const ERROR_FIELD: &str = "cannon.error";
/// Field of a dead letter: how many times the message was tried.
pub const ATTEMPTS_FIELD: &str = "cannon.attempts";
/// Field of a dead letter: when it last failed, in milliseconds since the Unix epoch.
pub const FAILED_AT_FIELD: &str = "cannon.failed_at";
/// The host-owned fields a dead letter starts with, in this order; a replay strips them.
pub const DEAD_FIELDS: [&str; 4] = [ID_FIELD, ERROR_FIELD, ATTEMPTS_FIELD, FAILED_AT_FIELD];

/// Bytes each pair costs on top of its key and value in every byte budget: the host's
/// own bookkeeping per pair (two strings and a slot) is about that, even when both are empty.
pub const ENTRY_OVERHEAD: usize = 32;

/// The ordinary key (value `yes`) by which a task asks for a receipt of a taskback.
pub const RECEIPT_REQUEST: &str = "receipt";
/// On a taskback: `yes` (a receipt was asked for). On a receipt message: `ok` or `error`.
pub const RECEIPT_FIELD: &str = "cannon.receipt";
/// On a receipt message: the id of the message whose taskback it reports on.
pub const RECEIPT_FOR_FIELD: &str = "cannon.receipt_for";
/// On a receipt message: what the collector says about it (`printed`, an error text, ...).
pub const RECEIPT_DETAIL_FIELD: &str = "cannon.receipt_detail";
/// An ordinary key a task may set on a taskback that asks for a receipt; the receipt
/// carries it back (at most [`RECEIPT_REF_MAX`] bytes), to tell apart several taskbacks of
/// one message.
pub const RECEIPT_REF: &str = "receipt_ref";
/// Longest `receipt_ref` carried back, in bytes (longer ones are cut at a character boundary).
pub const RECEIPT_REF_MAX: usize = 256;

/// Whether a step's taskback pairs ask for a receipt: the last `receipt` pair is `yes`.
pub fn asks_receipt(fields: &[(String, String)]) -> bool {
    fields.iter().rev().find(|(k, _)| k == RECEIPT_REQUEST).is_some_and(|(_, v)| v == "yes")
}

/// Whether a taskback the host wrote asks for a receipt: `cannon.receipt: yes` among its
/// leading host-owned pairs.
pub fn wants_receipt(fields: &[(String, String)]) -> bool {
    fields.iter().take_while(|(k, _)| is_host_key(k)).any(|(k, v)| k == RECEIPT_FIELD && v == "yes")
}

/// Whether `key` is one of the receipt keys (`cannon.receipt...`, any ASCII case), which
/// only a collector's receipt may carry into a message.
pub fn is_receipt_key(key: &str) -> bool {
    key.as_bytes().get(..RECEIPT_FIELD.len()).is_some_and(|head| head.eq_ignore_ascii_case(RECEIPT_FIELD.as_bytes()))
}

/// The fields of the receipt for `taskback` (which must ask for one): the message id it
/// answered, `ok` or `error`, the collector's `detail`, and the taskback's `receipt_ref`.
/// `None` when the taskback has no host-written id.
pub fn receipt_message(taskback: &[(String, String)], outcome: Result<&str, &str>) -> Option<Fields> {
    let id = host_id(taskback)?;
    let (word, detail) = match outcome {
        Ok(detail) => ("ok", detail),
        Err(detail) => ("error", detail),
    };
    let mut fields = vec![
        (RECEIPT_FOR_FIELD.to_owned(), id.to_owned()),
        (RECEIPT_FIELD.to_owned(), word.to_owned()),
        (RECEIPT_DETAIL_FIELD.to_owned(), detail.to_owned()),
    ];
    if let Some((_, reference)) = taskback.iter().rev().find(|(k, _)| k == RECEIPT_REF) {
        let mut end = reference.len().min(RECEIPT_REF_MAX);
        while !reference.is_char_boundary(end) {
            end -= 1;
        }
        fields.push((RECEIPT_REF.to_owned(), reference[..end].to_owned()));
    }
    Some(fields)
}

/// Whether `key` is host-owned: it starts with `cannon.`, in any ASCII case.
pub fn is_host_key(key: &str) -> bool {
    key.as_bytes().get(..HOST_PREFIX.len()).is_some_and(|head| head.eq_ignore_ascii_case(HOST_PREFIX.as_bytes()))
}

/// The message id the host wrote into a taskback or dead letter: the value of the first
/// pair when that pair is `cannon.id`. Nothing else in the entry is ever read as its id.
pub fn host_id(fields: &[(String, String)]) -> Option<&str> {
    match fields.first() {
        Some((key, value)) if key == ID_FIELD => Some(value),
        _ => None,
    }
}

/// What `fields` cost against a byte budget: keys plus values plus [`ENTRY_OVERHEAD`] per pair.
pub fn size(fields: &[(String, String)]) -> usize {
    fields.iter().fold(0usize, |sum, (k, v)| sum.saturating_add(k.len() + v.len() + ENTRY_OVERHEAD))
}

/// Sets each key of `new` in `into`: an existing key keeps its position and takes the new
/// value, a new key is appended. Duplicates within `into` or `new` fold the same way.
/// Linear in the number of pairs.
pub fn merge(into: &mut Fields, new: impl IntoIterator<Item = (String, String)>) {
    let mut map: IndexMap<String, String> = std::mem::take(into).into_iter().collect();
    map.extend(new);
    *into = map.into_iter().collect();
}

/// The pairs of `fields` that are not host-owned.
pub fn guest_pairs(fields: impl IntoIterator<Item = (String, String)>) -> impl Iterator<Item = (String, String)> {
    fields.into_iter().filter(|(k, _)| !is_host_key(k))
}

/// An entry the host writes: its own `host` pairs first (each key once, as given), then the
/// `rest` merged in order without any host-owned key.
pub fn with_host_keys(host: Fields, rest: impl IntoIterator<Item = (String, String)>) -> Fields {
    let mut body = Fields::new();
    merge(&mut body, guest_pairs(rest));
    let mut out = host;
    out.extend(body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(pairs: &[(&str, &str)]) -> Fields {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn host_keys_are_the_cannon_prefix_in_any_case() {
        for key in ["cannon.id", "cannon.", "Cannon.ID", "CANNON.error", "cannon.id.x"] {
            assert!(is_host_key(key), "{key}");
        }
        for key in ["cannon", "cannonid", " cannon.id", "xcannon.id", "", "é", "cannon_id", "cannon:id"] {
            assert!(!is_host_key(key), "{key}");
        }
    }

    #[test]
    fn merge_overwrites_in_place_and_appends() {
        let mut results = f(&[("a", "1"), ("b", "2")]);
        merge(&mut results, f(&[("b", "3"), ("c", "4"), ("a", "5"), ("c", "6")]));
        assert_eq!(results, f(&[("a", "5"), ("b", "3"), ("c", "6")]));
        // Duplicates already in the target fold into their first position.
        let mut dup = f(&[("x", "1"), ("y", "2"), ("x", "3")]);
        merge(&mut dup, Fields::new());
        assert_eq!(dup, f(&[("x", "3"), ("y", "2")]));
    }

    #[test]
    fn merge_keeps_order_of_many_distinct_keys() {
        let keys: Fields = (0..5000).map(|i| (format!("k{i}"), String::new())).collect();
        let mut results = Fields::new();
        merge(&mut results, keys.clone());
        merge(&mut results, keys.iter().rev().map(|(k, _)| (k.clone(), "v".to_owned())));
        assert_eq!(results.len(), 5000);
        assert!(results.iter().enumerate().all(|(i, (k, v))| *k == format!("k{i}") && v == "v"));
    }

    #[test]
    fn host_keys_come_first_and_once() {
        let forged = f(&[
            ("cannon.id", "victim"),
            ("text", "hi"),
            ("Cannon.ID", "victim"),
            ("cannon.id", "victim"),
            (" cannon.id", "victim"),
            ("cannon.error", "x"),
        ]);
        let entry = with_host_keys(f(&[("cannon.id", "mine")]), forged);
        assert_eq!(entry, f(&[("cannon.id", "mine"), ("text", "hi"), (" cannon.id", "victim")]));
        assert_eq!(host_id(&entry), Some("mine"));
        // Only the first pair is read: a `cannon.id` anywhere else names nothing.
        assert_eq!(host_id(&f(&[("text", "hi"), ("cannon.id", "victim")])), None);
        assert_eq!(host_id(&[]), None);
    }

    #[test]
    fn receipts() {
        assert!(asks_receipt(&f(&[("receipt", "no"), ("receipt", "yes")])));
        assert!(!asks_receipt(&f(&[("receipt", "yes"), ("receipt", "no")])));
        assert!(!asks_receipt(&f(&[("Receipt", "yes")])));
        assert!(wants_receipt(&f(&[("cannon.id", "1-0"), ("cannon.receipt", "yes"), ("a", "b")])));
        // Only among the host's leading pairs.
        assert!(!wants_receipt(&f(&[("cannon.id", "1-0"), ("a", "b"), ("cannon.receipt", "yes")])));
        for key in ["cannon.receipt", "Cannon.Receipt_for", "cannon.receipt_detail", "CANNON.RECEIPTX"] {
            assert!(is_receipt_key(key), "{key}");
        }
        assert!(!is_receipt_key("cannon.id") && !is_receipt_key("receipt") && !is_receipt_key("cannon.rec"));
        let long = "é".repeat(200);
        let taskback = f(&[("cannon.id", "5-0"), ("cannon.receipt", "yes"), ("receipt_ref", &long)]);
        let receipt = receipt_message(&taskback, Err("upload failed")).unwrap();
        assert_eq!(
            &receipt[..3],
            &f(&[
                ("cannon.receipt_for", "5-0"),
                ("cannon.receipt", "error"),
                ("cannon.receipt_detail", "upload failed")
            ])[..]
        );
        assert_eq!(receipt[3].1.len(), RECEIPT_REF_MAX);
        assert_eq!(receipt_message(&taskback[1..], Ok("x")), None);
    }

    #[test]
    fn every_pair_costs_its_overhead() {
        assert_eq!(size(&f(&[("", ""), ("", "")])), 2 * ENTRY_OVERHEAD);
        assert_eq!(size(&f(&[("ab", "cde")])), 5 + ENTRY_OVERHEAD);
    }
}
