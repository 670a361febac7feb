//! `iwant-clock`: the task that drives expiry in the `iwant` service. On a message with a
//! `tick` field (from a `tick` collector) it expires PENDING requests past their deadline,
//! telling each user by a taskback `{to, text, kind: expired, ...}`, and forgets requests
//! whose window is over. Any other message (a chat line for the shell) is left alone.

use cannon_guest::{log, taskback, Fields, Message, Task};
use example_shared::{time, GuestKv};

struct Clock;

impl Task for Clock {
    fn run(msg: Message, _results: Fields) -> Result<Fields, String> {
        if msg.get("tick").is_none() {
            return Ok(Vec::new());
        }
        let tock = iwant_core::tick(&GuestKv, time::now()).map_err(|e| e.to_string())?;
        for notice in &tock.notices {
            taskback::send(&notice.fields())?;
        }
        let summary = format!("iwant clock: {} expired, {} forgotten", tock.expired, tock.forgotten);
        if tock.expired + tock.forgotten > 0 {
            log::info(&summary);
        } else {
            log::debug(&summary);
        }
        Ok(Vec::new())
    }
}

cannon_guest::export_task!(Clock);
