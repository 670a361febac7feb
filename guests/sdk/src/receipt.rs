//! Receipts: ask the collector that performs a taskback to report whether it did.
//!
//! A taskback (the results, or one sent with [`crate::taskback::send`]) that holds the pair
//! `receipt: yes` ([`ask`]) asks for a receipt; the host turns that pair into its own
//! `cannon.receipt: yes`. The collector that performs the taskback then adds a message to
//! the service's stream, which the pipeline handles like any other: [`Receipt::of`] reads
//! it. Only a collector can write the `cannon.receipt*` keys of a message, so a receipt
//! cannot be forged by someone typing into a chat. A taskback may carry `receipt_ref`
//! (up to 256 bytes) to tell apart several taskbacks of one message; the receipt carries it
//! back.

use crate::FieldsExt;

/// The key and value that ask for a receipt.
pub const ASK: (&str, &str) = ("receipt", "yes");
/// The key a taskback's receipt carries back.
pub const REF: &str = "receipt_ref";

/// Adds `receipt: yes` (and `receipt_ref: reference`, when given) to a taskback's fields.
pub fn ask(fields: &mut Vec<(String, String)>, reference: Option<&str>) {
    fields.push((ASK.0.to_owned(), ASK.1.to_owned()));
    if let Some(reference) = reference {
        fields.push((REF.to_owned(), reference.to_owned()));
    }
}

/// What a collector reported about a taskback that asked for a receipt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    /// The id of the message whose taskback this reports on.
    pub for_id: String,
    /// Whether the collector did it (`cannon.receipt: ok`).
    pub ok: bool,
    /// The collector's detail (`printed`, an error text, ...).
    pub detail: String,
    /// The taskback's `receipt_ref`, if it had one.
    pub reference: Option<String>,
}

impl Receipt {
    /// The receipt in a message's fields, or `None` when the message is not a receipt.
    pub fn of(fields: &[(String, String)]) -> Option<Receipt> {
        let get = |key: &str| FieldsExt::get(fields, key);
        let for_id = get("cannon.receipt_for")?.to_owned();
        Some(Receipt {
            for_id,
            ok: get("cannon.receipt") == Some("ok"),
            detail: get("cannon.receipt_detail").unwrap_or_default().to_owned(),
            reference: get(REF).map(str::to_owned),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ask_and_read() {
        let mut fields = vec![("text".to_owned(), "hi".to_owned())];
        ask(&mut fields, Some("a1"));
        assert_eq!(FieldsExt::get(fields.as_slice(), "receipt"), Some("yes"));
        assert_eq!(FieldsExt::get(fields.as_slice(), "receipt_ref"), Some("a1"));
        assert_eq!(Receipt::of(&fields), None);
        let message: Vec<(String, String)> =
            [("cannon.receipt_for", "1-0"), ("cannon.receipt", "error"), ("cannon.receipt_detail", "upload failed")]
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect();
        let receipt = Receipt::of(&message).expect("a receipt");
        assert!(!receipt.ok);
        assert_eq!(
            (receipt.for_id.as_str(), receipt.detail.as_str(), receipt.reference),
            ("1-0", "upload failed", None)
        );
    }
}
