//! `notify` (test task): sends one extra taskback per user named in config `users`
//! (comma-separated) through the `taskback` import, each `{to: USER, text: TEXT}` where
//! TEXT is config `text` (default: the message's `text`). Returns `notified: N`. A refused
//! `taskback.send` fails the message with the host's reason. Needs `allow: [taskback]`.

use cannon_guest::{config, taskback, Fields, Message, Task};

struct Notify;

impl Task for Notify {
    fn run(msg: Message, _results: Fields) -> Result<Fields, String> {
        let users = config::get_or("users", "");
        let text = config::get("text")
            .or_else(|| msg.get("text").map(str::to_owned))
            .unwrap_or_default();
        let mut sent = 0;
        for user in users.split(',').map(str::trim).filter(|u| !u.is_empty()) {
            taskback::send(&[
                ("to".to_owned(), user.to_owned()),
                ("text".to_owned(), text.clone()),
            ])
            .map_err(|e| format!("taskback.send to {user}: {e}"))?;
            sent += 1;
        }
        Ok(vec![("notified".to_owned(), sent.to_string())])
    }
}

cannon_guest::export_task!(Notify);
