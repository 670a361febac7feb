//! `kvprobe` (test guest): runs one `kv` operation named by the message and reports the
//! outcome as results, so tests can drive the store through a real component.
//!
//! Message fields: `op` (`get`, `set`, `delete`, `incr`, `list`, `cas`, `mget`, `append`),
//! `key`, `value`, `ttl_ms`, `delta`, `prefix`, `limit`; for `cas` also `expected` (absent:
//! the key must be absent; `value` absent: delete), for `mget` `keys` (comma-separated, or
//! `count` generated keys `k0`, `k1`, ...); `append` adds `value,` to `key` with
//! `kv::update` (read, change, compare-and-swap, retry). Results: `ok` (`true`/`false`),
//! then `value` (get, incr), `existed` (delete), `keys` (list, comma-separated), `swapped`
//! (cas), `appended` (append), `values` (mget: comma-separated, `<none>` for a missing
//! key), or `error` (the kv error's kind, e.g. `out-of-scope`) and `detail` (its message).
//! Needs `allow: [kv]`.

use cannon_guest::{kv, Fields, Message, Task};

struct KvProbe;

fn pair(k: &str, v: impl Into<String>) -> (String, String) {
    (k.to_owned(), v.into())
}

fn number<T: std::str::FromStr>(msg: &Message, field: &str, default: T) -> Result<T, String>
where
    T::Err: std::fmt::Display,
{
    match msg.get(field) {
        None => Ok(default),
        Some(raw) => raw.parse().map_err(|e| format!("field {field}={raw:?}: {e}")),
    }
}

fn kind(err: &kv::Error) -> (&'static str, String) {
    match err {
        kv::Error::InvalidKey(m) => ("invalid-key", m.clone()),
        kv::Error::QuotaExceeded(m) => ("quota-exceeded", m.clone()),
        kv::Error::NotANumber(m) => ("not-a-number", m.clone()),
        kv::Error::OutOfScope(m) => ("out-of-scope", m.clone()),
        kv::Error::TooLarge(m) => ("too-large", m.clone()),
        kv::Error::Unavailable(m) => ("unavailable", m.clone()),
    }
}

impl Task for KvProbe {
    fn run(msg: Message, _results: Fields) -> Result<Fields, String> {
        let op = msg.get("op").ok_or("message has no field \"op\"")?.to_owned();
        let key = msg.get("key").unwrap_or_default().to_owned();
        let outcome: Result<Fields, kv::Error> = match op.as_str() {
            "get" => kv::get_string(&key).map(|v| match v {
                Some(v) => vec![pair("value", v), pair("found", "true")],
                None => vec![pair("found", "false")],
            }),
            "set" => {
                let value = msg.get("value").unwrap_or_default().as_bytes().to_vec();
                match msg.get("ttl_ms") {
                    Some(_) => kv::set_with_ttl(&key, &value, number(&msg, "ttl_ms", 0)?),
                    None => kv::set(&key, &value),
                }
                .map(|()| Vec::new())
            }
            "delete" => kv::delete(&key).map(|existed| vec![pair("existed", existed.to_string())]),
            "incr" => kv::increment(&key, number(&msg, "delta", 1)?).map(|n| vec![pair("value", n.to_string())]),
            "list" => {
                let prefix = msg.get("prefix").unwrap_or_default();
                kv::list_keys(prefix, number(&msg, "limit", 1000)?).map(|keys| vec![pair("keys", keys.join(","))])
            }
            "cas" => {
                let expected = msg.get("expected").map(str::as_bytes);
                let new = msg.get("value").map(str::as_bytes);
                match msg.get("ttl_ms") {
                    Some(_) => kv::compare_and_swap_with_ttl(&key, expected, new, number(&msg, "ttl_ms", 0)?),
                    None => kv::compare_and_swap(&key, expected, new),
                }
                .map(|swapped| vec![pair("swapped", swapped.to_string())])
            }
            "mget" => {
                let keys: Vec<String> = match msg.get("keys") {
                    Some(keys) => keys.split(',').map(str::to_owned).collect(),
                    None => (0..number(&msg, "count", 0usize)?).map(|i| format!("k{i}")).collect(),
                };
                kv::get_many(&keys).map(|values| {
                    let shown: Vec<String> = values
                        .iter()
                        .map(|v| match v {
                            Some(v) => String::from_utf8_lossy(v).into_owned(),
                            None => "<none>".to_owned(),
                        })
                        .collect();
                    vec![pair("values", shown.join(","))]
                })
            }
            "append" => {
                let line = format!("{},", msg.get("value").unwrap_or_default());
                kv::update(&key, 64, |current| {
                    let mut log = current.map(<[u8]>::to_vec).unwrap_or_default();
                    log.extend_from_slice(line.as_bytes());
                    (Some(log), ())
                })
                .map(|done| vec![pair("appended", done.is_some().to_string())])
            }
            other => return Err(format!("unknown op {other:?}")),
        };
        Ok(match outcome {
            Ok(mut fields) => {
                fields.insert(0, pair("ok", "true"));
                fields
            }
            Err(err) => {
                let (kind, detail) = kind(&err);
                vec![pair("ok", "false"), pair("error", kind), pair("detail", detail)]
            }
        })
    }
}

cannon_guest::export_task!(KvProbe);
