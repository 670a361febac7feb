//! `receipts` (test guest): answers a line with its `text` upper-cased and asks for a
//! receipt (`receipt_ref` = the text); answers a receipt with
//! `receipt for REF: ok|error (DETAIL)` and asks for nothing, so it never loops.

use cannon_guest::receipt::{self, Receipt};
use cannon_guest::{Fields, Message, Task};

struct Receipts;

impl Task for Receipts {
    fn run(msg: Message, _results: Fields) -> Result<Fields, String> {
        if let Some(got) = Receipt::of(&msg.fields) {
            let reference = got.reference.unwrap_or(got.for_id);
            let outcome = if got.ok { "ok" } else { "error" };
            return Ok(vec![("text".to_owned(), format!("receipt for {reference}: {outcome} ({})", got.detail))]);
        }
        let text = msg.get("text").unwrap_or_default().to_owned();
        let mut out = vec![("text".to_owned(), text.to_uppercase())];
        receipt::ask(&mut out, Some(&text));
        Ok(out)
    }
}

cannon_guest::export_task!(Receipts);
