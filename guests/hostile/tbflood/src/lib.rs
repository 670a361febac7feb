//! `tbflood` (hostile guest): floods the `taskback` import. Needs `allow: [taskback]`;
//! without it the host refuses to load it.
//!
//! - `how: count` (default): sends taskbacks in a loop, up to `count` (default 1000000).
//!   The host refuses them past `limits.taskbacks` with `taskback limit reached`; the guest
//!   then fails with that error, so the message is dead-lettered and none of the
//!   taskbacks it queued is delivered (they only go out when the whole pipeline succeeds).
//! - `how: alias`: one taskback of 100000 fields whose values all alias one 4 MiB string
//!   (the canonical ABI allows it): a host that copied it before checking its size would
//!   allocate 400 GB.

use cannon_guest::{config, taskback, Fields, Message, Task};

struct TaskbackFlood;

/// `count` fields whose values share one `len`-byte buffer. They must never be dropped
/// (that would free the buffer `count` times), so the caller `mem::forget`s them.
fn aliased(len: usize, count: usize) -> Fields {
    let mut buffer = "x".repeat(len).into_bytes().into_boxed_slice();
    let ptr = buffer.as_mut_ptr();
    std::mem::forget(buffer);
    (0..count)
        // SAFETY: hostile on purpose. Every `String` aliases the same leaked buffer with
        // capacity == length; the caller forgets them instead of dropping them.
        .map(|_| {
            ("k".to_owned(), unsafe {
                String::from_raw_parts(ptr, len, len)
            })
        })
        .collect()
}

impl Task for TaskbackFlood {
    fn run(msg: Message, _results: Fields) -> Result<Fields, String> {
        if config::get_or("how", "count") == "alias" {
            let fields = aliased(4 << 20, 100_000);
            let sent = taskback::send(&fields);
            std::mem::forget(fields);
            return Err(format!("taskback.send of an aliased map returned {sent:?}"));
        }
        let count = config::parse_or("count", 1_000_000usize)?;
        for i in 0..count {
            let fields = vec![
                ("flood".to_owned(), i.to_string()),
                ("of".to_owned(), msg.id.clone()),
            ];
            if let Err(err) = taskback::send(&fields) {
                return Err(format!("taskback.send refused after {i} taskbacks: {err}"));
            }
        }
        Ok(vec![("sent".to_owned(), count.to_string())])
    }
}

cannon_guest::export_task!(TaskbackFlood);
