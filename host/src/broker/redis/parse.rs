//! Decoding of Redis stream replies into entries, tolerant of RESP2 and RESP3 shapes.
//! Anything unexpected is an error describing the shape, never a panic.
//!
//! Field keys and values are bytes in Redis: any producer can `XADD` something that is not
//! UTF-8. Such an entry is never decoded silently: [`fields`] reports the first field that
//! is not UTF-8 (its position, key and byte offset) next to a display copy of the fields in
//! which each invalid byte is written `\xNN`. The worker dead-letters such a message unrun
//! (the dead letter is copied from the stored entry inside Redis, so its bytes survive) and
//! collectors skip such a taskback with an error in the log.

use redis::Value;

use crate::broker::Fields;

/// A stream entry whose fields may be gone (deleted while pending).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawEntry {
    /// Stream id (`ms-seq`).
    pub id: String,
    /// Its fields; `None` when the entry was deleted while pending.
    pub fields: Option<Decoded>,
}

/// An entry's fields as text, and why they are not the stored bytes when they are not.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Decoded {
    /// The fields; a key or value that is not UTF-8 has each invalid byte written `\xNN`.
    pub fields: Fields,
    /// The first field that is not UTF-8, e.g. `value of field 2 ("text") is not UTF-8 at
    /// byte 5`; `None` when every key and value is UTF-8 (then `fields` are exact).
    pub not_utf8: Option<String>,
}

/// `bytes` as text with each byte that is not part of valid UTF-8 written `\xNN`.
pub fn escape_invalid_utf8(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        out.push_str(chunk.valid());
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

/// The offset of the first byte of `bytes` that is not valid UTF-8.
fn invalid_at(value: &Value) -> Option<usize> {
    match value {
        Value::BulkString(bytes) => std::str::from_utf8(bytes).err().map(|e| e.valid_up_to()),
        _ => None,
    }
}

/// One field pair; notes in `fault` the first that is not UTF-8 (`index` counts from 1).
fn pair(index: usize, k: &Value, v: &Value, fault: &mut Option<String>) -> Result<(String, String), String> {
    let (key, value) = (text(k)?, text(v)?);
    if fault.is_none() {
        if let Some(at) = invalid_at(k) {
            *fault = Some(format!("key of field {index} ({key:?}) is not UTF-8 at byte {at}"));
        } else if let Some(at) = invalid_at(v) {
            *fault = Some(format!("value of field {index} ({key:?}) is not UTF-8 at byte {at}"));
        }
    }
    Ok((key, value))
}

fn text(value: &Value) -> Result<String, String> {
    match value {
        Value::BulkString(bytes) => Ok(match std::str::from_utf8(bytes) {
            Ok(s) => s.to_owned(),
            Err(_) => escape_invalid_utf8(bytes),
        }),
        Value::SimpleString(s) | Value::VerbatimString { text: s, .. } => Ok(s.clone()),
        Value::Int(n) => Ok(n.to_string()),
        other => Err(format!("expected a string, found {other:?}")),
    }
}

fn items(value: &Value) -> Result<&[Value], String> {
    match value {
        Value::Array(items) | Value::Set(items) => Ok(items),
        other => Err(format!("expected an array, found {other:?}")),
    }
}

/// `[k1, v1, k2, v2, ...]` (or a RESP3 map) into fields.
pub fn fields(value: &Value) -> Result<Option<Decoded>, String> {
    let mut not_utf8 = None;
    let fields = match value {
        Value::Nil => return Ok(None),
        Value::Map(pairs) => pairs
            .iter()
            .enumerate()
            .map(|(i, (k, v))| pair(i + 1, k, v, &mut not_utf8))
            .collect::<Result<Fields, String>>()?,
        other => {
            let flat = items(other)?;
            if flat.len() % 2 != 0 {
                return Err(format!("odd number of field items ({})", flat.len()));
            }
            flat.chunks_exact(2)
                .enumerate()
                .map(|(i, p)| pair(i + 1, &p[0], &p[1], &mut not_utf8))
                .collect::<Result<Fields, String>>()?
        }
    };
    Ok(Some(Decoded { fields, not_utf8 }))
}

/// `[[id, fields], ...]` into entries.
pub fn entries(value: &Value) -> Result<Vec<RawEntry>, String> {
    if matches!(value, Value::Nil) {
        return Ok(Vec::new());
    }
    items(value)?
        .iter()
        .map(|entry| {
            let parts = items(entry)?;
            match parts {
                [id, body] => Ok(RawEntry { id: text(id)?, fields: fields(body)? }),
                [id] => Ok(RawEntry { id: text(id)?, fields: None }),
                _ => Err(format!("expected [id, fields], found {entry:?}")),
            }
        })
        .collect()
}

/// The reply of `XREAD`/`XREADGROUP` on one stream: nil, `[[name, entries]]` or `{name: entries}`.
pub fn read_reply(value: &Value) -> Result<Vec<RawEntry>, String> {
    match value {
        Value::Nil => Ok(Vec::new()),
        Value::Map(streams) => {
            let mut out = Vec::new();
            for (_, body) in streams {
                out.extend(entries(body)?);
            }
            Ok(out)
        }
        other => {
            let mut out = Vec::new();
            for stream in items(other)? {
                match items(stream)? {
                    [_, body] => out.extend(entries(body)?),
                    _ => return Err(format!("expected [stream, entries], found {stream:?}")),
                }
            }
            Ok(out)
        }
    }
}

/// The reply of `XAUTOCLAIM`: `[next-cursor, entries, deleted-ids]`.
pub fn autoclaim_reply(value: &Value) -> Result<Vec<RawEntry>, String> {
    match items(value)? {
        [_, claimed, ..] => entries(claimed),
        _ => Err(format!("expected [cursor, entries, ...], found {value:?}")),
    }
}

/// The reply of the extended `XPENDING`: `[[id, consumer, idle-ms, deliveries], ...]`.
pub fn pending_reply(value: &Value) -> Result<Vec<(String, String, u64, u32)>, String> {
    items(value)?
        .iter()
        .map(|row| match items(row)? {
            [id, consumer, idle, count] => {
                let number = |v: &Value| match v {
                    Value::Int(n) => Ok(u64::try_from(*n).unwrap_or(0)),
                    other => text(other)?.parse::<u64>().map_err(|e| e.to_string()),
                };
                Ok((text(id)?, text(consumer)?, number(idle)?, u32::try_from(number(count)?).unwrap_or(u32::MAX)))
            }
            _ => Err(format!("expected [id, consumer, idle, count], found {row:?}")),
        })
        .collect()
}

/// An integer reply (or a decimal string).
pub fn int(value: &Value) -> Result<i64, String> {
    match value {
        Value::Int(n) => Ok(*n),
        other => text(other)?.parse::<i64>().map_err(|e| format!("expected an integer: {e}")),
    }
}

/// A string reply (or an integer as text).
pub fn string(value: &Value) -> Result<String, String> {
    text(value)
}

/// The `XINFO` shape: a flat `[name, value, ...]` array (RESP2) or a map (RESP3).
pub fn info_pairs(value: &Value) -> Result<Vec<(String, &Value)>, String> {
    match value {
        Value::Map(pairs) => pairs.iter().map(|(k, v)| Ok((text(k)?, v))).collect(),
        other => {
            let flat = items(other)?;
            if flat.len() % 2 != 0 {
                return Err(format!("odd number of info items ({})", flat.len()));
            }
            flat.chunks_exact(2).map(|pair| Ok((text(&pair[0])?, &pair[1]))).collect()
        }
    }
}

/// `XINFO GROUPS` / `XINFO CONSUMERS`: a list of info maps.
pub fn info_list(value: &Value) -> Result<Vec<Vec<(String, &Value)>>, String> {
    items(value)?.iter().map(info_pairs).collect()
}

/// The value of `name` in an info map.
pub fn info_field<'v>(pairs: &[(String, &'v Value)], name: &str) -> Result<&'v Value, String> {
    pairs.iter().find(|(k, _)| k == name).map(|(_, v)| *v).ok_or_else(|| format!("no {name:?} in info reply"))
}

/// The reply of the claim script: `[[id, fields, deliveries], ...]`.
pub fn claimed_reply(value: &Value) -> Result<Vec<(String, Decoded, u32)>, String> {
    items(value)?
        .iter()
        .map(|row| match items(row)? {
            [id, body, count] => {
                let fields = fields(body)?.unwrap_or_default();
                Ok((text(id)?, fields, u32::try_from(int(count)?).unwrap_or(u32::MAX)))
            }
            _ => Err(format!("expected [id, fields, deliveries], found {row:?}")),
        })
        .collect()
}

/// A list of strings.
pub fn strings(value: &Value) -> Result<Vec<String>, String> {
    if matches!(value, Value::Nil) {
        return Ok(Vec::new());
    }
    items(value)?.iter().map(text).collect()
}

/// `[[a, b], ...]` into string pairs.
pub fn string_pairs(value: &Value) -> Result<Vec<(String, String)>, String> {
    items(value)?
        .iter()
        .map(|row| match items(row)? {
            [a, b] => Ok((text(a)?, text(b)?)),
            _ => Err(format!("expected a pair, found {row:?}")),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn resp2_read_reply() {
        let reply = Value::Array(vec![Value::Array(vec![
            bulk("ns:svc:data"),
            Value::Array(vec![
                Value::Array(vec![bulk("1-0"), Value::Array(vec![bulk("text"), bulk("hi")])]),
                Value::Array(vec![bulk("2-0"), Value::Nil]),
            ]),
        ])]);
        let got = read_reply(&reply).unwrap();
        let fields = Decoded { fields: vec![("text".into(), "hi".into())], not_utf8: None };
        assert_eq!(got[0], RawEntry { id: "1-0".into(), fields: Some(fields) });
        assert_eq!(got[1], RawEntry { id: "2-0".into(), fields: None });
    }

    #[test]
    fn fields_that_are_not_utf8_are_reported_never_replaced() {
        let raw = |b: &[u8]| Value::BulkString(b.to_vec());
        let value = Value::Array(vec![raw(b"ok"), raw(b"fine"), raw(b"text"), raw(b"ab\xff\xfecd")]);
        let got = fields(&value).unwrap().unwrap();
        assert_eq!(got.not_utf8.as_deref(), Some(r#"value of field 2 ("text") is not UTF-8 at byte 2"#));
        assert_eq!(got.fields[1].1, r"ab\xff\xfecd", "escaped for display, no U+FFFD");
        let value = Value::Array(vec![raw(b"n\xc3"), raw(b"v")]);
        let got = fields(&value).unwrap().unwrap();
        assert_eq!(got.not_utf8.as_deref(), Some(r#"key of field 1 ("n\\xc3") is not UTF-8 at byte 1"#));
        let got = fields(&Value::Array(vec![raw("é".as_bytes()), raw(b"")])).unwrap().unwrap();
        assert_eq!(got, Decoded { fields: vec![("é".into(), String::new())], not_utf8: None });
    }

    #[test]
    fn malformed_replies_are_errors() {
        assert!(read_reply(&Value::Int(3)).is_err());
        assert!(fields(&Value::Array(vec![bulk("odd")])).is_err());
        assert!(autoclaim_reply(&Value::Array(vec![])).is_err());
        assert!(read_reply(&Value::Nil).unwrap().is_empty());
    }
}
