//! A component's `secrets:`: answered by its `config.get(NAME)` alone, and masked as `***`
//! wherever the component's own output could carry them out of the sandbox: its log lines
//! and stdout/stderr, its error (which becomes a dead letter), its results, reply and
//! taskbacks.

use std::borrow::Cow;

use indexmap::IndexMap;

use crate::engine::CallError;
use crate::vocab::{Fields, Secret};

/// What a masked secret is replaced by.
pub const MASK: &str = "***";

/// The secrets of one component (empty for most).
#[derive(Debug, Default)]
pub struct Secrets {
    by_name: IndexMap<String, Secret>,
}

impl Secrets {
    pub fn new(by_name: IndexMap<String, Secret>) -> Self {
        Self { by_name }
    }

    /// The secret named `name`, for the `config` import.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.by_name.get(name).map(Secret::expose)
    }

    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    /// `text` with every secret value replaced by [`MASK`] (borrowed when none occurs).
    pub fn mask<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let mut out = Cow::Borrowed(text);
        for secret in self.by_name.values() {
            let value = secret.expose();
            if !value.is_empty() && out.contains(value) {
                out = Cow::Owned(out.replace(value, MASK));
            }
        }
        out
    }

    fn mask_owned(&self, text: &mut String) {
        if let Cow::Owned(masked) = self.mask(text) {
            *text = masked;
        }
    }

    /// Masks keys and values of `fields` in place.
    pub fn mask_fields(&self, fields: &mut Fields) {
        if self.is_empty() {
            return;
        }
        for (key, value) in fields.iter_mut() {
            self.mask_owned(key);
            self.mask_owned(value);
        }
    }

    /// Masks a reply in place.
    pub fn mask_text(&self, text: &mut String) {
        if !self.is_empty() {
            self.mask_owned(text);
        }
    }

    /// The error with the guest's own text (its `err`, a trap message) masked.
    pub fn mask_error(&self, err: CallError) -> CallError {
        if self.is_empty() {
            return err;
        }
        let masked = |text: String| self.mask(&text).into_owned();
        match err {
            CallError::Guest(text) => CallError::Guest(masked(text)),
            CallError::Trap(text) => CallError::Trap(masked(text)),
            CallError::Output(text) => CallError::Output(masked(text)),
            CallError::Instantiate(text) => CallError::Instantiate(masked(text)),
            CallError::Commands(text) => CallError::Commands(masked(text)),
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_masked_everywhere_they_occur() {
        let mut map = IndexMap::new();
        map.insert("TOKEN".to_owned(), Secret::new("s3cr3t-value"));
        let secrets = Secrets::new(map);
        assert_eq!(secrets.get("TOKEN"), Some("s3cr3t-value"));
        assert_eq!(secrets.mask("a s3cr3t-value b s3cr3t-value"), "a *** b ***");
        assert!(matches!(secrets.mask("nothing"), Cow::Borrowed(_)));
        let err = secrets.mask_error(CallError::Guest("leak s3cr3t-value".into()));
        assert_eq!(err, CallError::Guest("leak ***".into()));
        let mut fields = vec![("s3cr3t-value".to_owned(), "x s3cr3t-value".to_owned())];
        secrets.mask_fields(&mut fields);
        assert_eq!(fields, [("***".to_owned(), "x ***".to_owned())]);
    }
}
