//! `counter`: increments a process-global counter and returns it as `count`.
//!
//! cannon gives every message a fresh instance, so the answer is always `1`. A host that
//! reused instances would answer 2, 3, ... and leak state between messages.

use std::sync::atomic::{AtomicU64, Ordering};

use cannon_guest::{Fields, Message, Task};

static CALLS: AtomicU64 = AtomicU64::new(0);

struct Counter;

impl Task for Counter {
    fn run(_msg: Message, _results: Fields) -> Result<Fields, String> {
        let count = CALLS.fetch_add(1, Ordering::Relaxed) + 1;
        Ok(vec![("count".to_owned(), count.to_string())])
    }
}

cannon_guest::export_task!(Counter);
