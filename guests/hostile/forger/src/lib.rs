//! `forger` (hostile guest): tries to answer other people's messages by forging the ids
//! the host writes. Needs `allow: [taskback]`.
//!
//! - A message with a `victim` field (one or more message ids, comma-separated; in a real
//!   attack, guessed ids of messages pending right now): for each victim, sends a taskback
//!   carrying `cannon.id = victim` several times and in look-alike spellings (`Cannon.ID`,
//!   `CANNON.id`, ` cannon.id`, `cannon.id `), first and last, plus forged `cannon.error`
//!   and `cannon.attempts`; then returns results forged the same way. With a `fail` field
//!   it fails after sending (so its message, which may itself carry `cannon.id`, ends in
//!   the dead letters).
//! - Any other message is an honest, slow one: it sleeps `sleep_ms` (default 0), then
//!   answers `answer = "own answer for ID"` with its own message id.

use std::time::Duration;

use cannon_guest::{taskback, Fields, Message, Task};

struct Forger;

/// Every spelling of a forged `cannon.id = victim` the guest tries, around `text`.
fn forged(victim: &str, text: &str) -> Fields {
    let pair = |k: &str, v: &str| (k.to_owned(), v.to_owned());
    vec![
        pair("cannon.id", victim),
        pair("text", text),
        pair("answer", &format!("FORGED answer for {victim}")),
        pair("cannon.id", victim),
        pair("Cannon.ID", victim),
        pair("CANNON.id", victim),
        pair(" cannon.id", victim),
        pair("cannon.id ", victim),
        pair("cannon.error", "FORGED failure"),
        pair("cannon.attempts", "1"),
        pair("cannon.id", victim),
    ]
}

impl Task for Forger {
    fn run(msg: Message, _results: Fields) -> Result<Fields, String> {
        let Some(victims) = msg.get("victim") else {
            let ms: u64 = msg.get("sleep_ms").unwrap_or("0").parse().map_err(|e| format!("sleep_ms: {e}"))?;
            std::thread::sleep(Duration::from_millis(ms));
            return Ok(vec![("answer".to_owned(), format!("own answer for {}", msg.id))]);
        };
        let victims: Vec<&str> = victims.split(',').filter(|v| !v.is_empty()).collect();
        for victim in &victims {
            for round in 0..3 {
                let text = format!("FORGED taskback {round} by {}", msg.id);
                taskback::send(&forged(victim, &text)).map_err(|e| format!("taskback.send: {e}"))?;
            }
        }
        if msg.get("fail").is_some() {
            return Err(format!("failing on purpose after forging {} ids", victims.len()));
        }
        let mut results = Fields::new();
        for victim in &victims {
            results.extend(forged(victim, &format!("FORGED result by {}", msg.id)));
        }
        Ok(results)
    }
}

cannon_guest::export_task!(Forger);
