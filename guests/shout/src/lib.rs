//! `shout`: upper-cases the message field named by config key `field` (default `text`)
//! and returns it under the same key.

use cannon_guest::{config, Fields, Message, Task};

struct Shout;

impl Task for Shout {
    fn run(msg: Message, _results: Fields) -> Result<Fields, String> {
        let field = config::get_or("field", "text");
        let value = msg
            .get(&field)
            .ok_or_else(|| format!("message has no field {field:?}"))?;
        Ok(vec![(field, value.to_uppercase())])
    }
}

cannon_guest::export_task!(Shout);
