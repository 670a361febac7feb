//! `slow` (test guest): sleeps for the message's `ms` field (else config `ms`, default 100)
//! milliseconds, then returns `done = {message id}` and `text` upper-cased. Used to keep
//! messages in flight while a worker is killed or stopped.

use std::time::Duration;

use cannon_guest::{config, Fields, Message, Task};

struct Slow;

impl Task for Slow {
    fn run(msg: Message, _results: Fields) -> Result<Fields, String> {
        let ms: u64 = match msg.get("ms") {
            Some(raw) => raw.parse().map_err(|e| format!("field ms={raw:?}: {e}"))?,
            None => config::parse_or("ms", 100)?,
        };
        std::thread::sleep(Duration::from_millis(ms));
        let text = msg.get("text").unwrap_or_default().to_uppercase();
        Ok(vec![("done".to_owned(), msg.id.clone()), ("text".to_owned(), text)])
    }
}

cannon_guest::export_task!(Slow);
