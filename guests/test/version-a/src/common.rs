// Shared body of the `version-a` and `version-b` test guests (each sets `VERSION` first).

use cannon_guest::{Fields, Message, Task};

struct Version;

impl Task for Version {
    fn run(_msg: Message, _results: Fields) -> Result<Fields, String> {
        let started_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0);
        Ok(vec![
            ("version".to_owned(), VERSION.to_owned()),
            ("started_ms".to_owned(), started_ms.to_string()),
        ])
    }
}

cannon_guest::export_task!(Version);
