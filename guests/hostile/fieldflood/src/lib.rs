//! `fieldflood` (hostile guest): field counts an attacker chooses, which a host that merged
//! or measured fields carelessly would pay for quadratically, or not at all.
//!
//! - `how: keys` (default): returns `entries` (default 20000) distinct short keys with
//!   empty values: about 100 KB of strings, and quadratic work for a naive merge.
//! - `how: taskbacks`: sends up to `count` (default 17) taskbacks of `pairs` (default
//!   300000) empty pairs each, then returns `sent`. Needs `allow: [taskback]`.
//!
//! A refused `taskback.send` makes the call fail with the host's answer, so the test sees it.

use cannon_guest::{config, taskback, Fields, Message, Task};

struct FieldFlood;

/// A short distinct key per number (base 36).
fn key(mut n: usize) -> String {
    let digits = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    loop {
        out.push(digits[n % 36]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    String::from_utf8(out).unwrap_or_default()
}

impl Task for FieldFlood {
    fn run(_msg: Message, _results: Fields) -> Result<Fields, String> {
        if config::get_or("how", "keys") == "taskbacks" {
            let count = config::parse_or("count", 17usize)?;
            let pairs = config::parse_or("pairs", 300_000usize)?;
            let fields: Fields = vec![(String::new(), String::new()); pairs];
            for i in 0..count {
                if let Err(err) = taskback::send(&fields) {
                    return Err(format!("taskback.send refused after {i} taskbacks: {err}"));
                }
            }
            return Ok(vec![("sent".to_owned(), count.to_string())]);
        }
        let entries = config::parse_or("entries", 20_000usize)?;
        Ok((0..entries).map(|i| (key(i), String::new())).collect())
    }
}

cannon_guest::export_task!(FieldFlood);
