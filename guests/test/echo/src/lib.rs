//! `echo` (test guest): returns every `config` pair as a result, so tests can check the
//! order in which results from several tasks overwrite each other; a config value of the
//! form `@field` is replaced by the message's `field`.

use cannon_guest::{config, Fields, Message, Task};

struct Echo;

impl Task for Echo {
    fn run(msg: Message, _results: Fields) -> Result<Fields, String> {
        Ok(config::all()
            .into_iter()
            .map(|(key, value)| match value.strip_prefix('@') {
                Some(field) => {
                    let found = msg.get(field).unwrap_or_default().to_owned();
                    (key, found)
                }
                None => (key, value),
            })
            .collect())
    }
}

cannon_guest::export_task!(Echo);
