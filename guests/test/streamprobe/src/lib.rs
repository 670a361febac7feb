//! `streamprobe` (test guest): runs one `streams` read named by the message and reports
//! the answer as results, so tests can check the import through a real component.
//!
//! Message fields: `op` (`last`, `after`, `between`, `since`), `service`, `stream` (`data`
//! or `taskback`, default `data`), `count`, `id` (after), `from_ms` and `to_ms` (between,
//! since), `field` (whose values to report). Results: `ok` (`true`/`false`), then `count`,
//! `ids` and `values` (comma-separated, oldest first), `truncated`, `services` (the
//! distinct `service` of the entries), or `error` (the error's kind, e.g. `not-granted`)
//! and `detail` (its message). Needs `allow: [{streams: [...]}]`.

use cannon_guest::streams::{self, StreamKind};
use cannon_guest::{Fields, Message, Task};

struct StreamProbe;

fn pair(k: &str, v: impl Into<String>) -> (String, String) {
    (k.to_owned(), v.into())
}

fn number<T: std::str::FromStr>(msg: &Message, field: &str, default: T) -> Result<T, String>
where
    T::Err: std::fmt::Display,
{
    match msg.get(field) {
        None => Ok(default),
        Some(raw) => raw
            .parse()
            .map_err(|e| format!("field {field}={raw:?}: {e}")),
    }
}

fn kind(err: &streams::Error) -> (&'static str, String) {
    match err {
        streams::Error::NotGranted(m) => ("not-granted", m.clone()),
        streams::Error::UnknownService(m) => ("unknown-service", m.clone()),
        streams::Error::InvalidId(m) => ("invalid-id", m.clone()),
        streams::Error::TooLarge(m) => ("too-large", m.clone()),
        streams::Error::Unavailable(m) => ("unavailable", m.clone()),
    }
}

fn report(entries: &[Message], truncated: bool, field: &str) -> Fields {
    let ids: Vec<&str> = entries.iter().map(|e| e.id.as_str()).collect();
    let values: Vec<&str> = entries
        .iter()
        .map(|e| e.get(field).unwrap_or("-"))
        .collect();
    let mut services: Vec<&str> = entries.iter().map(|e| e.service.as_str()).collect();
    services.dedup();
    vec![
        pair("ok", "true"),
        pair("count", entries.len().to_string()),
        pair("ids", ids.join(",")),
        pair("values", values.join(",")),
        pair("truncated", truncated.to_string()),
        pair("services", services.join(",")),
    ]
}

impl Task for StreamProbe {
    fn run(msg: Message, _results: Fields) -> Result<Fields, String> {
        let op = msg
            .get("op")
            .ok_or("message has no field \"op\"")?
            .to_owned();
        let service = msg.get("service").unwrap_or_default().to_owned();
        let stream = match msg.get("stream").unwrap_or("data") {
            "data" => StreamKind::Data,
            "taskback" => StreamKind::Taskback,
            other => return Err(format!("unknown stream {other:?}")),
        };
        let count: u32 = number(&msg, "count", 10)?;
        let field = msg.get("field").unwrap_or("n").to_owned();
        let outcome = match op.as_str() {
            "last" => streams::last(&service, stream, count).map(|p| (p.entries, p.truncated)),
            "after" => {
                let id = msg.get("id").unwrap_or("0");
                streams::after(&service, stream, id, count).map(|p| (p.entries, p.truncated))
            }
            "between" => {
                let (from, to) = (
                    number(&msg, "from_ms", 0)?,
                    number(&msg, "to_ms", u64::MAX)?,
                );
                streams::between(&service, stream, from, to, count)
                    .map(|p| (p.entries, p.truncated))
            }
            "since" => streams::since(
                &service,
                stream,
                number(&msg, "from_ms", 0)?,
                count as usize,
            ),
            other => return Err(format!("unknown op {other:?}")),
        };
        Ok(match outcome {
            Ok((entries, truncated)) => report(&entries, truncated, &field),
            Err(err) => {
                let (kind, detail) = kind(&err);
                vec![
                    pair("ok", "false"),
                    pair("error", kind),
                    pair("detail", detail),
                ]
            }
        })
    }
}

cannon_guest::export_task!(StreamProbe);
