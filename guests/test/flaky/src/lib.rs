//! `flaky` (test guest): fails the first `fail_times` attempts (config, default 1) of each
//! message and succeeds after, counting attempts in `kv` under `attempts:{K}`, where `K` is
//! the message's `key` field when it has one (so counts survive a replay, which gives the
//! message a new id) and its id otherwise. Its results: `attempt` (the attempt that
//! succeeded) and `text` (the message's `text`, upper-cased). Needs `allow: [kv]`.

use cannon_guest::{config, kv, Fields, Message, Task};

struct Flaky;

impl Task for Flaky {
    fn run(msg: Message, _results: Fields) -> Result<Fields, String> {
        let fail_times: i64 = config::parse_or("fail_times", 1)?;
        let counted = msg.get("key").unwrap_or(&msg.id).to_owned();
        let attempt = kv::increment(&format!("attempts:{counted}"), 1).map_err(|e| format!("kv: {e:?}"))?;
        if attempt <= fail_times {
            return Err(format!("flaky: attempt {attempt} fails on purpose"));
        }
        let text = msg.get("text").unwrap_or_default().to_uppercase();
        Ok(vec![("attempt".to_owned(), attempt.to_string()), ("text".to_owned(), text)])
    }
}

cannon_guest::export_task!(Flaky);
