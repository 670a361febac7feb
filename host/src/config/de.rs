//! A `serde::Deserializer` over [`Node`], for the plain settings structs of the model.
//!
//! Strict on purpose: a number is never read from a string, nor a string from a number.
//! Each error carries the position of the node at fault and its dotted path
//! (`services.dice.limits.timeout_ms: expected a non-negative integer, found string "fast"`).

use std::fmt;

use serde::de::{self, DeserializeOwned, DeserializeSeed, IntoDeserializer, Visitor};

use super::error::{Problems, did_you_mean, one_of};
use super::yaml::{Key, Node, Value};

/// Deserializes `T` from `node`; on failure records one problem and returns `None`.
/// `path` names the node in messages (`services.dice.workers`).
pub(crate) fn from_node<T: DeserializeOwned>(node: &Node, path: &str, problems: &mut Problems) -> Option<T> {
    match T::deserialize(NodeDe { node, path: path.to_owned() }) {
        Ok(value) => Some(value),
        Err(e) if e.silent => None,
        Err(e) => {
            let (line, column, path) = e.at.unwrap_or((node.line, node.column, path.to_owned()));
            let message = if path.is_empty() { e.msg } else { format!("{path}: {}", e.msg) };
            problems.push(line, column, message);
            None
        }
    }
}

/// `parent.key`, or `key` at the top level.
pub(crate) fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() { key.to_owned() } else { format!("{parent}.{key}") }
}

#[derive(Debug)]
pub(crate) struct DeError {
    msg: String,
    /// Line, column and path of the node at fault; set by the innermost node that saw it.
    at: Option<(usize, usize, String)>,
    /// The node was already reported (a failed `${}`); say nothing more.
    silent: bool,
}

impl fmt::Display for DeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.msg)
    }
}

impl std::error::Error for DeError {}

impl de::Error for DeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        DeError { msg: msg.to_string(), at: None, silent: false }
    }

    fn invalid_type(unexp: de::Unexpected<'_>, exp: &dyn de::Expected) -> Self {
        Self::custom(format_args!("expected {exp}, found {unexp}"))
    }

    fn unknown_field(field: &str, expected: &'static [&'static str]) -> Self {
        let hint = did_you_mean(field, expected.iter().copied());
        Self::custom(format_args!("unknown key `{field}`{hint}; expected one of {}", one_of(expected)))
    }

    fn unknown_variant(variant: &str, expected: &'static [&'static str]) -> Self {
        let hint = did_you_mean(variant, expected.iter().copied());
        Self::custom(format_args!("unknown value `{variant}`{hint}; expected one of {}", one_of(expected)))
    }

    fn missing_field(field: &'static str) -> Self {
        Self::custom(format_args!("missing key `{field}`"))
    }
}

struct NodeDe<'a> {
    node: &'a Node,
    path: String,
}

impl NodeDe<'_> {
    /// Gives an error without a position this node's position and path.
    fn locate(&self, mut e: DeError) -> DeError {
        if e.at.is_none() {
            e.at = Some((self.node.line, self.node.column, self.path.clone()));
        }
        e
    }

    fn expected(&self, what: &str) -> DeError {
        if matches!(self.node.value, Value::Invalid) {
            return DeError { msg: String::new(), at: None, silent: true };
        }
        self.locate(de::Error::custom(format_args!("expected {what}, found {}", self.node.describe())))
    }

    fn unsigned(&self, max: u64) -> Result<u64, DeError> {
        match self.node.value {
            Value::Int(n) if n >= 0 => u64::try_from(n).ok().filter(|v| *v <= max).ok_or_else(|| {
                self.locate(de::Error::custom(format_args!("integer {n} is too large (at most {max})")))
            }),
            _ => Err(self.expected("a non-negative integer")),
        }
    }

    fn signed(&self, min: i64, max: i64) -> Result<i64, DeError> {
        match self.node.value {
            Value::Int(n) => i64::try_from(n).ok().filter(|v| (min..=max).contains(v)).ok_or_else(|| {
                self.locate(de::Error::custom(format_args!("integer {n} is out of range ({min} to {max})")))
            }),
            _ => Err(self.expected("an integer")),
        }
    }
}

macro_rules! unsigned {
    ($($method:ident: $ty:ty),*) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
            let v = self.unsigned(<$ty>::MAX as u64)?;
            visitor.visit_u64(v).map_err(|e| self.locate(e))
        }
    )*};
}

macro_rules! signed {
    ($($method:ident: $ty:ty),*) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
            let v = self.signed(<$ty>::MIN as i64, <$ty>::MAX as i64)?;
            visitor.visit_i64(v).map_err(|e| self.locate(e))
        }
    )*};
}

impl<'de> de::Deserializer<'de> for NodeDe<'_> {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let result = match &self.node.value {
            Value::Null => visitor.visit_unit(),
            Value::Bool(b) => visitor.visit_bool(*b),
            Value::Int(n) => match i64::try_from(*n) {
                Ok(v) => visitor.visit_i64(v),
                Err(_) => visitor.visit_i128(*n),
            },
            Value::Float(f) => visitor.visit_f64(*f),
            Value::Str(s) => visitor.visit_str(s),
            Value::Seq(items) => visitor.visit_seq(SeqDe { items: items.iter(), index: 0, path: &self.path }),
            Value::Map(entries) => visitor.visit_map(MapDe { entries: entries.iter(), value: None, path: &self.path }),
            Value::Invalid => return Err(self.expected("")),
        };
        result.map_err(|e| self.locate(e))
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.node.value {
            Value::Bool(b) => visitor.visit_bool(b).map_err(|e| self.locate(e)),
            _ => Err(self.expected("a boolean (`true` or `false`)")),
        }
    }

    unsigned!(deserialize_u8: u8, deserialize_u16: u16, deserialize_u32: u32, deserialize_u64: u64);
    signed!(deserialize_i8: i8, deserialize_i16: i16, deserialize_i32: i32, deserialize_i64: i64);

    fn deserialize_f32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_f64(visitor)
    }

    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let v = match self.node.value {
            Value::Float(f) => f,
            Value::Int(n) => n as f64,
            _ => return Err(self.expected("a number")),
        };
        visitor.visit_f64(v).map_err(|e| self.locate(e))
    }

    fn deserialize_char<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match &self.node.value {
            Value::Str(s) => visitor.visit_str(s).map_err(|e| self.locate(e)),
            _ => Err(self.expected("a string")),
        }
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_bytes<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, DeError> {
        Err(self.expected("bytes"))
    }

    fn deserialize_byte_buf<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, DeError> {
        Err(self.expected("bytes"))
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.node.value {
            Value::Null => visitor.visit_none().map_err(|e| self.locate(e)),
            Value::Invalid => Err(self.expected("")),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.node.value {
            Value::Null => visitor.visit_unit().map_err(|e| self.locate(e)),
            _ => Err(self.expected("null")),
        }
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(self, _name: &'static str, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_unit(visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(self, _name: &'static str, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match &self.node.value {
            Value::Seq(items) => {
                visitor.visit_seq(SeqDe { items: items.iter(), index: 0, path: &self.path }).map_err(|e| self.locate(e))
            }
            _ => Err(self.expected("a sequence")),
        }
    }

    fn deserialize_tuple<V: Visitor<'de>>(self, _len: usize, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match &self.node.value {
            Value::Map(entries) => visitor
                .visit_map(MapDe { entries: entries.iter(), value: None, path: &self.path })
                .map_err(|e| self.locate(e)),
            _ => Err(self.expected("a mapping")),
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_map(visitor)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        match &self.node.value {
            Value::Str(s) => {
                let de: de::value::StrDeserializer<'_, DeError> = s.as_str().into_deserializer();
                visitor.visit_enum(de).map_err(|e| self.locate(e))
            }
            _ => Err(self.expected(&format!("one of {}", one_of(variants)))),
        }
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_unit()
    }

    fn deserialize_u128<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_u64(visitor)
    }

    fn deserialize_i128<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_i64(visitor)
    }
}

struct SeqDe<'a, 'p> {
    items: std::slice::Iter<'a, Node>,
    index: usize,
    path: &'p str,
}

impl<'de> de::SeqAccess<'de> for SeqDe<'_, '_> {
    type Error = DeError;

    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>, DeError> {
        let Some(node) = self.items.next() else { return Ok(None) };
        let path = format!("{}[{}]", self.path, self.index);
        self.index += 1;
        seed.deserialize(NodeDe { node, path }).map(Some)
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.items.len())
    }
}

struct MapDe<'a, 'p> {
    entries: std::slice::Iter<'a, (Key, Node)>,
    /// The value of the key just returned, with its path.
    value: Option<(&'a Node, String)>,
    path: &'p str,
}

impl<'de> de::MapAccess<'de> for MapDe<'_, '_> {
    type Error = DeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, DeError> {
        let Some((key, node)) = self.entries.next() else { return Ok(None) };
        self.value = Some((node, join(self.path, &key.text)));
        let at = (key.line, key.column, self.path.to_owned());
        let text: de::value::StrDeserializer<'_, DeError> = key.text.as_str().into_deserializer();
        seed.deserialize(text).map(Some).map_err(|mut e| {
            if e.at.is_none() {
                e.at = Some(at);
            }
            e
        })
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, DeError> {
        match self.value.take() {
            Some((node, path)) => seed.deserialize(NodeDe { node, path }),
            None => Err(de::Error::custom("value requested before its key")),
        }
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.entries.len())
    }
}
