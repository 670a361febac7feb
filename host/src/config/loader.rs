//! Shared state of one load and the typed accessors the hand-written checks use.
//!
//! Every accessor records a problem and returns `None` (or skips the bad entry) instead of
//! failing, so the caller carries on and the load reports every mistake at once.

use std::fmt::Display;
use std::path::PathBuf;

use indexmap::IndexMap;
use serde::de::DeserializeOwned;

use super::de::{from_node, join};
use super::error::{Problems, did_you_mean, one_of};
use super::yaml::{Key, Node, Value};
use crate::vocab::Kwargs;

pub(crate) struct Loader {
    pub problems: Problems,
    /// Absolute directory of the compose file; relative paths are joined onto it.
    pub base: PathBuf,
    /// Absolute `app_dir`, and how the file wrote it (for messages that must not depend on
    /// where the checkout lives).
    pub app_dir: PathBuf,
    pub app_dir_text: String,
    pub groups: IndexMap<String, Vec<String>>,
    pub params: IndexMap<String, Kwargs>,
    /// Names under `services:`, for `stream` collectors that follow another service.
    pub services: Vec<String>,
}

impl Loader {
    /// Records `path: msg` at `node` (just `msg` at the top level). Nodes whose `${}`
    /// substitution failed were reported already and are skipped.
    pub fn error(&mut self, node: &Node, path: &str, msg: impl Display) {
        if matches!(node.value, Value::Invalid) {
            return;
        }
        self.error_at(node.line, node.column, path, msg);
    }

    pub fn error_at(&mut self, line: usize, column: usize, path: &str, msg: impl Display) {
        let message = if path.is_empty() { msg.to_string() } else { format!("{path}: {msg}") };
        self.problems.push(line, column, message);
    }

    /// Records "expected WHAT, found ..." at `node`.
    pub fn expected(&mut self, node: &Node, path: &str, what: &str) {
        let found = node.describe();
        self.error(node, path, format!("expected {what}, found {found}"));
    }

    /// The entries of a mapping (null counts as empty), reporting keys not in `allowed`.
    pub fn map<'n>(&mut self, node: &'n Node, path: &str, allowed: &[&str]) -> Option<&'n [(Key, Node)]> {
        let entries: &[(Key, Node)] = match &node.value {
            Value::Map(entries) => entries,
            Value::Null => &[],
            _ => {
                self.expected(node, path, "a mapping");
                return None;
            }
        };
        for (key, _) in entries {
            if !allowed.contains(&key.text.as_str()) {
                let hint = did_you_mean(&key.text, allowed.iter().copied());
                let msg = format!("unknown key `{}`{hint}; expected one of {}", key.text, one_of(allowed));
                self.error_at(key.line, key.column, path, msg);
            }
        }
        Some(entries)
    }

    /// Entries of a name -> value mapping whose keys are free-form (null counts as empty).
    pub fn named<'n>(&mut self, node: &'n Node, path: &str) -> &'n [(Key, Node)] {
        match &node.value {
            Value::Map(entries) => entries,
            Value::Null | Value::Invalid => &[],
            _ => {
                self.expected(node, path, "a mapping");
                &[]
            }
        }
    }

    /// A string, strictly: `6` and `true` are not strings here.
    pub fn string(&mut self, node: &Node, path: &str) -> Option<String> {
        match &node.value {
            Value::Str(s) => Some(s.clone()),
            _ => {
                self.expected(node, path, "a string");
                None
            }
        }
    }

    /// A non-empty string.
    pub fn name(&mut self, node: &Node, path: &str) -> Option<String> {
        let s = self.string(node, path)?;
        if s.is_empty() {
            self.error(node, path, "must not be empty");
            return None;
        }
        Some(s)
    }

    pub fn boolean(&mut self, node: &Node, path: &str) -> Option<bool> {
        match node.value {
            Value::Bool(b) => Some(b),
            _ => {
                self.expected(node, path, "a boolean (`true` or `false`)");
                None
            }
        }
    }

    /// Any scalar as text, as written (`6` -> "6", `true` -> "true"); null is "".
    pub fn text(&mut self, node: &Node, path: &str) -> Option<String> {
        match &node.value {
            Value::Null => Some(String::new()),
            Value::Str(s) => Some(s.clone()),
            Value::Bool(_) | Value::Int(_) | Value::Float(_) => Some(node.raw.clone()),
            Value::Invalid => None,
            Value::Seq(_) | Value::Map(_) => {
                self.expected(node, path, "a scalar (string, number or boolean)");
                None
            }
        }
    }

    /// A `key -> scalar` mapping as strings; bad entries are reported and left out.
    pub fn kwargs(&mut self, node: &Node, path: &str) -> Kwargs {
        let mut out = Kwargs::new();
        for (key, value) in self.named(node, path) {
            if let Some(text) = self.text(value, &join(path, &key.text)) {
                out.insert(key.text.clone(), text);
            }
        }
        out
    }

    /// A sequence of scalars as text; a single scalar counts as a one-item list.
    pub fn texts<'n>(&mut self, node: &'n Node, path: &str) -> Vec<(String, &'n Node)> {
        let items = match &node.value {
            Value::Seq(items) => items.as_slice(),
            Value::Null | Value::Invalid => &[],
            Value::Map(_) => {
                self.expected(node, path, "a sequence");
                &[]
            }
            _ => std::slice::from_ref(node),
        };
        let mut out = Vec::new();
        for (i, item) in items.iter().enumerate() {
            if let Some(text) = self.text(item, &format!("{path}[{i}]")) {
                out.push((text, item));
            }
        }
        out
    }

    /// A settings struct through serde; its defaults when absent or invalid.
    pub fn settings<T: DeserializeOwned + Default>(&mut self, node: Option<&Node>, path: &str) -> T {
        node.and_then(|n| from_node(n, path, &mut self.problems)).unwrap_or_default()
    }

    /// Reports `key` in `node` when `bad` holds, e.g. a zero that would stall a service.
    pub fn check(&mut self, node: Option<&Node>, path: &str, key: &str, bad: bool, msg: &str) {
        if bad && let Some(value) = node.and_then(|n| n.get(key)) {
            self.error(value, &join(path, key), msg);
        }
    }
}

/// True when `s` is non-empty and every char is ASCII alphanumeric or in `extra`.
pub(crate) fn is_identifier(s: &str, extra: &[char]) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || extra.contains(&c))
}

/// The value under `key` among a mapping's entries.
pub(crate) fn field<'n>(fields: &'n [(Key, Node)], key: &str) -> Option<&'n Node> {
    fields.iter().find(|(k, _)| k.text == key).map(|(_, v)| v)
}
