//! `failing` (test guest): every call fails with a guest error naming the message's `text`.

use cannon_guest::{Fields, Message, Task};

struct Failing;

impl Task for Failing {
    fn run(msg: Message, _results: Fields) -> Result<Fields, String> {
        Err(format!("failing: always fails (text {:?})", msg.get("text").unwrap_or_default()))
    }
}

cannon_guest::export_task!(Failing);
