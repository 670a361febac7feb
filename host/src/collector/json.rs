//! JSON objects as message fields and back: an http body, a line of an `exec` program, a
//! taskback handed to a program or an http caller.

use crate::broker::Fields;

/// Fields as one JSON object of strings.
pub(crate) fn to_json(fields: &Fields) -> serde_json::Value {
    let object: serde_json::Map<String, serde_json::Value> =
        fields.iter().map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone()))).collect();
    serde_json::Value::Object(object)
}

/// A JSON object (an http body, a line from an `exec` program) as message fields: strings
/// as they are, numbers and booleans as their text; anything else is an error naming the key.
pub(crate) fn json_fields(bytes: &[u8]) -> Result<Fields, String> {
    use serde_json::Value;
    fn kind(value: &Value) -> &'static str {
        match value {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Number(_) => "a number",
            Value::String(_) => "a string",
            Value::Array(_) => "an array",
            Value::Object(_) => "an object",
        }
    }
    let value: Value = serde_json::from_slice(bytes).map_err(|e| format!("not valid JSON: {e}"))?;
    let Value::Object(object) = value else {
        return Err(format!(r#"expected a JSON object such as {{"text": "hi"}}, found {}"#, kind(&value)));
    };
    object
        .into_iter()
        .map(|(key, value)| match value {
            Value::String(s) => Ok((key, s)),
            Value::Number(n) => Ok((key, n.to_string())),
            Value::Bool(b) => Ok((key, b.to_string())),
            other => Err(format!("field {key:?} is {}; values must be strings, numbers or booleans", kind(&other))),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_objects_become_fields() {
        let mut got = json_fields(br#"{"text": "hi", "n": 3, "x": 1.5, "ok": true}"#).unwrap();
        got.sort();
        let want: Fields = [("n", "3"), ("ok", "true"), ("text", "hi"), ("x", "1.5")]
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        assert_eq!(got, want);
        assert!(json_fields(b"{nope").unwrap_err().starts_with("not valid JSON"));
        assert!(json_fields(b"[1]").unwrap_err().ends_with("found an array"));
        assert_eq!(
            json_fields(br#"{"a": "x", "deep": {"b": 1}}"#).unwrap_err(),
            r#"field "deep" is an object; values must be strings, numbers or booleans"#
        );
        assert!(json_fields(br#"{"list": [1]}"#).unwrap_err().contains(r#""list" is an array"#));
        assert!(json_fields(br#"{"gone": null}"#).unwrap_err().contains(r#""gone" is null"#));
    }
}
