//! Decoding of Redis stream replies into entries, tolerant of RESP2 and RESP3 shapes.
//! Anything unexpected is an error describing the shape, never a panic.

use redis::Value;

use crate::broker::Fields;

/// A stream entry whose fields may be gone (deleted while pending).
pub type RawEntry = (String, Option<Fields>);

fn text(value: &Value) -> Result<String, String> {
    match value {
        Value::BulkString(bytes) => Ok(String::from_utf8_lossy(bytes).into_owned()),
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
pub fn fields(value: &Value) -> Result<Option<Fields>, String> {
    match value {
        Value::Nil => Ok(None),
        Value::Map(pairs) => {
            pairs.iter().map(|(k, v)| Ok((text(k)?, text(v)?))).collect::<Result<_, String>>().map(Some)
        }
        other => {
            let flat = items(other)?;
            if flat.len() % 2 != 0 {
                return Err(format!("odd number of field items ({})", flat.len()));
            }
            flat.chunks_exact(2)
                .map(|pair| Ok((text(&pair[0])?, text(&pair[1])?)))
                .collect::<Result<_, String>>()
                .map(Some)
        }
    }
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
                [id, body] => Ok((text(id)?, fields(body)?)),
                [id] => Ok((text(id)?, None)),
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
pub fn claimed_reply(value: &Value) -> Result<Vec<(String, Fields, u32)>, String> {
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
        assert_eq!(got[0], ("1-0".into(), Some(vec![("text".into(), "hi".into())])));
        assert_eq!(got[1], ("2-0".into(), None));
    }

    #[test]
    fn malformed_replies_are_errors() {
        assert!(read_reply(&Value::Int(3)).is_err());
        assert!(fields(&Value::Array(vec![bulk("odd")])).is_err());
        assert!(autoclaim_reply(&Value::Array(vec![])).is_err());
        assert!(read_reply(&Value::Nil).unwrap().is_empty());
    }
}
