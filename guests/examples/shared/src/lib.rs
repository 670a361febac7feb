//! # example-shared: what the example services (`remember`, `iwant`, `branding`) share
//!
//! The examples keep their logic pure and testable natively (`cargo test -p CRATE` on the
//! build machine, where the host imports are not available), so storage goes through the
//! small [`Store`] trait: [`GuestKv`] is the real `kv` import, [`MemStore`] a map for tests.
//!
//! ## Layout
//! - [`Store`], [`StoreError`], [`GuestKv`], [`MemStore`], [`get_all`]: key-value storage,
//!   with compare-and-swap for changes that must not race.
//! - [`Record`]: a few named text fields in one kv value (`key=value` lines, escaped).
//! - [`key_part`]: escapes user text (a chat server, a user name) for use inside a key.
//! - [`fnv1a64`]: the stable hash of an asset.
//! - [`time`]: UTC calendar arithmetic and formatting, without a date library.

pub mod time;

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt;

/// Why a storage operation failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreError {
    /// The service's kv quota is used up (or the value is too large): the user can do
    /// something about it (forget things), so it becomes a reply, not a retry.
    Full(String),
    /// The key was refused (too long, say, for a very long server name): a reply too.
    Refused(String),
    /// The store is unreachable or refused the call for another reason; the message is
    /// failed so that the worker retries it.
    Unavailable(String),
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Full(text) => write!(f, "storage is full: {text}"),
            Self::Refused(text) => write!(f, "storage refused the key: {text}"),
            Self::Unavailable(text) => write!(f, "storage failed: {text}"),
        }
    }
}

impl std::error::Error for StoreError {}

impl From<StoreError> for cannon_guest::CmdError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::Full(_) | StoreError::Refused(_) => Self::Usage(err.to_string()),
            StoreError::Unavailable(_) => Self::Fail(err.to_string()),
        }
    }
}

/// The storage an example needs: text values under text keys, scoped to the service.
pub trait Store {
    fn get(&self, key: &str) -> Result<Option<String>, StoreError>;
    fn set(&self, key: &str, value: &str) -> Result<(), StoreError>;
    /// Stores `value`, expiring after `ttl_ms` milliseconds (a test store may keep it).
    fn set_with_ttl(&self, key: &str, value: &str, _ttl_ms: u64) -> Result<(), StoreError> {
        self.set(key, value)
    }
    /// Returns whether the key existed.
    fn delete(&self, key: &str) -> Result<bool, StoreError>;
    /// Adds `delta` to the integer at `key` (0 when absent); returns the new value.
    fn increment(&self, key: &str, delta: i64) -> Result<i64, StoreError>;
    /// Keys starting with `prefix`, sorted, at most `limit`.
    fn list(&self, prefix: &str, limit: u32) -> Result<Vec<String>, StoreError>;
    /// In one atomic step: when `key` holds `expected` (`None`: absent), stores `new`
    /// (`None`: deletes the key); whether it did.
    fn compare_and_swap(&self, key: &str, expected: Option<&str>, new: Option<&str>) -> Result<bool, StoreError>;
    /// The values of `keys`, in order (`None` for a missing key); at most
    /// [`MAX_GET_MANY`] keys.
    fn get_many(&self, keys: &[String]) -> Result<Vec<Option<String>>, StoreError>;
}

/// Most keys one [`Store::get_many`] reads.
pub const MAX_GET_MANY: usize = cannon_guest::kv::MAX_GET_MANY;

/// The values of any number of keys, [`MAX_GET_MANY`] per call.
pub fn get_all(store: &impl Store, keys: &[String]) -> Result<Vec<Option<String>>, StoreError> {
    let mut out = Vec::with_capacity(keys.len());
    for chunk in keys.chunks(MAX_GET_MANY) {
        out.extend(store.get_many(chunk)?);
    }
    Ok(out)
}

/// The host's `kv` import (needs `allow: [kv]` in the compose file).
#[derive(Debug, Default, Clone, Copy)]
pub struct GuestKv;

fn kv_error(err: cannon_guest::kv::Error) -> StoreError {
    use cannon_guest::kv::Error;
    match err {
        Error::QuotaExceeded(text) | Error::TooLarge(text) => StoreError::Full(text),
        Error::InvalidKey(text) | Error::OutOfScope(text) => StoreError::Refused(text),
        other => StoreError::Unavailable(other.to_string()),
    }
}

impl Store for GuestKv {
    fn get(&self, key: &str) -> Result<Option<String>, StoreError> {
        cannon_guest::kv::get_string(key).map_err(kv_error)
    }
    fn set(&self, key: &str, value: &str) -> Result<(), StoreError> {
        cannon_guest::kv::set_string(key, value).map_err(kv_error)
    }
    fn set_with_ttl(&self, key: &str, value: &str, ttl_ms: u64) -> Result<(), StoreError> {
        cannon_guest::kv::set_with_ttl(key, value.as_bytes(), ttl_ms).map_err(kv_error)
    }
    fn delete(&self, key: &str) -> Result<bool, StoreError> {
        cannon_guest::kv::delete(key).map_err(kv_error)
    }
    fn increment(&self, key: &str, delta: i64) -> Result<i64, StoreError> {
        cannon_guest::kv::increment(key, delta).map_err(kv_error)
    }
    fn list(&self, prefix: &str, limit: u32) -> Result<Vec<String>, StoreError> {
        cannon_guest::kv::list_keys(prefix, limit).map_err(kv_error)
    }
    fn compare_and_swap(&self, key: &str, expected: Option<&str>, new: Option<&str>) -> Result<bool, StoreError> {
        cannon_guest::kv::compare_and_swap(key, expected.map(str::as_bytes), new.map(str::as_bytes)).map_err(kv_error)
    }
    fn get_many(&self, keys: &[String]) -> Result<Vec<Option<String>>, StoreError> {
        let values = cannon_guest::kv::get_many(keys).map_err(kv_error)?;
        Ok(values.into_iter().map(|v| v.map(|v| String::from_utf8_lossy(&v).into_owned())).collect())
    }
}

/// An in-memory [`Store`] for unit tests, with an optional cap on the number of keys.
#[derive(Debug, Default)]
pub struct MemStore {
    map: RefCell<BTreeMap<String, String>>,
    max_keys: Option<usize>,
}

impl MemStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// A store that refuses new keys beyond `max_keys`, like a kv quota.
    pub fn with_max_keys(max_keys: usize) -> Self {
        Self { map: RefCell::default(), max_keys: Some(max_keys) }
    }

    /// Every key, sorted.
    pub fn keys(&self) -> Vec<String> {
        self.map.borrow().keys().cloned().collect()
    }
}

impl Store for MemStore {
    fn get(&self, key: &str) -> Result<Option<String>, StoreError> {
        Ok(self.map.borrow().get(key).cloned())
    }
    fn set(&self, key: &str, value: &str) -> Result<(), StoreError> {
        let mut map = self.map.borrow_mut();
        if let Some(max) = self.max_keys {
            if !map.contains_key(key) && map.len() >= max {
                return Err(StoreError::Full(format!("max_keys = {max}")));
            }
        }
        map.insert(key.to_owned(), value.to_owned());
        Ok(())
    }
    fn delete(&self, key: &str) -> Result<bool, StoreError> {
        Ok(self.map.borrow_mut().remove(key).is_some())
    }
    fn increment(&self, key: &str, delta: i64) -> Result<i64, StoreError> {
        let current = match self.get(key)? {
            Some(text) => text.parse::<i64>().map_err(|_| StoreError::Unavailable(format!("{key} is not a number")))?,
            None => 0,
        };
        let next = current + delta;
        self.set(key, &next.to_string())?;
        Ok(next)
    }
    fn list(&self, prefix: &str, limit: u32) -> Result<Vec<String>, StoreError> {
        Ok(self.map.borrow().keys().filter(|k| k.starts_with(prefix)).take(limit as usize).cloned().collect())
    }
    fn compare_and_swap(&self, key: &str, expected: Option<&str>, new: Option<&str>) -> Result<bool, StoreError> {
        if self.get(key)?.as_deref() != expected {
            return Ok(false);
        }
        match new {
            Some(value) => self.set(key, value)?,
            None => {
                self.delete(key)?;
            }
        }
        Ok(true)
    }
    fn get_many(&self, keys: &[String]) -> Result<Vec<Option<String>>, StoreError> {
        if keys.len() > MAX_GET_MANY {
            return Err(StoreError::Full(format!("get_many of {} keys", keys.len())));
        }
        keys.iter().map(|k| self.get(k)).collect()
    }
}

/// A [`MemStore`] for unit tests of races: just before its first compare-and-swap, it runs
/// `interloper` on the inner store, as another worker would change a key between a read
/// and the write that depends on it.
pub struct RacingStore<'a> {
    pub inner: &'a MemStore,
    interloper: RefCell<Option<Interloper<'a>>>,
}

/// What [`RacingStore`] runs before its first compare-and-swap.
type Interloper<'a> = Box<dyn FnOnce(&MemStore) + 'a>;

impl<'a> RacingStore<'a> {
    pub fn new(inner: &'a MemStore, interloper: impl FnOnce(&MemStore) + 'a) -> Self {
        Self { inner, interloper: RefCell::new(Some(Box::new(interloper))) }
    }
}

impl Store for RacingStore<'_> {
    fn get(&self, key: &str) -> Result<Option<String>, StoreError> {
        self.inner.get(key)
    }
    fn set(&self, key: &str, value: &str) -> Result<(), StoreError> {
        self.inner.set(key, value)
    }
    fn delete(&self, key: &str) -> Result<bool, StoreError> {
        self.inner.delete(key)
    }
    fn increment(&self, key: &str, delta: i64) -> Result<i64, StoreError> {
        self.inner.increment(key, delta)
    }
    fn list(&self, prefix: &str, limit: u32) -> Result<Vec<String>, StoreError> {
        self.inner.list(prefix, limit)
    }
    fn compare_and_swap(&self, key: &str, expected: Option<&str>, new: Option<&str>) -> Result<bool, StoreError> {
        let interloper = self.interloper.borrow_mut().take();
        if let Some(interloper) = interloper {
            interloper(self.inner);
        }
        self.inner.compare_and_swap(key, expected, new)
    }
    fn get_many(&self, keys: &[String]) -> Result<Vec<Option<String>>, StoreError> {
        self.inner.get_many(keys)
    }
}

/// Named text fields stored as one value: `key=value` lines, with `\`, newline and
/// carriage return escaped in values. Field order is kept.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Record {
    fields: Vec<(String, String)>,
}

impl Record {
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `key` (replacing an earlier value); returns `self` for chaining.
    pub fn with(mut self, key: &str, value: impl ToString) -> Self {
        self.set(key, value);
        self
    }

    pub fn set(&mut self, key: &str, value: impl ToString) {
        let value = value.to_string();
        match self.fields.iter_mut().find(|(k, _)| k == key) {
            Some(slot) => slot.1 = value,
            None => self.fields.push((key.to_owned(), value)),
        }
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.fields.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// Every field, in order.
    pub fn fields(&self) -> &[(String, String)] {
        &self.fields
    }

    /// The value of `key`, or an error naming the record and key.
    pub fn require(&self, key: &str, what: &str) -> Result<&str, String> {
        self.get(key).ok_or_else(|| format!("{what}: field {key:?} is missing"))
    }

    /// `key` parsed as `T`, or an error naming the record and key.
    pub fn parse<T: std::str::FromStr>(&self, key: &str, what: &str) -> Result<T, String> {
        let raw = self.require(key, what)?;
        raw.parse().map_err(|_| format!("{what}: field {key}={raw:?} does not parse"))
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        for (k, v) in &self.fields {
            out.push_str(k);
            out.push('=');
            for c in v.chars() {
                match c {
                    '\\' => out.push_str("\\\\"),
                    '\n' => out.push_str("\\n"),
                    '\r' => out.push_str("\\r"),
                    c => out.push(c),
                }
            }
            out.push('\n');
        }
        out
    }

    /// Reads what [`Record::encode`] wrote; a line without `=` is an error.
    pub fn decode(text: &str) -> Result<Self, String> {
        let mut record = Record::new();
        for line in text.lines().filter(|l| !l.is_empty()) {
            let (k, raw) = line.split_once('=').ok_or_else(|| format!("bad record line {line:?}"))?;
            let mut value = String::with_capacity(raw.len());
            let mut chars = raw.chars();
            while let Some(c) = chars.next() {
                if c != '\\' {
                    value.push(c);
                    continue;
                }
                match chars.next() {
                    Some('n') => value.push('\n'),
                    Some('r') => value.push('\r'),
                    Some(other) => value.push(other),
                    None => return Err(format!("bad escape at the end of {line:?}")),
                }
            }
            record.set(k, value);
        }
        Ok(record)
    }
}

/// Escapes user text for use as one part of a `:`-separated key: `%`, `:`, and control
/// characters become `%XX`, so `a:b` as a server name cannot reach another server's keys.
pub fn key_part(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c == '%' || c == ':' || c.is_control() {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("%{b:02X}"));
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Reverses [`key_part`] (invalid escapes are kept as they are).
pub fn unkey_part(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(hi), Some(lo)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push(hi << 4 | lo);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// FNV-1a, 64 bits: a small, stable hash (same input, same value, on every build and
/// machine) used to tell whether an asset changed. Not for security.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// [`fnv1a64`] as 16 lowercase hex digits.
pub fn fnv1a64_hex(bytes: &[u8]) -> String {
    format!("{:016x}", fnv1a64(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_with_escapes() {
        let record = Record::new().with("user", "alice").with("text", "a=b\nc\\d\r").with("n", 3);
        let decoded = Record::decode(&record.encode()).unwrap();
        assert_eq!(decoded, record);
        assert_eq!(decoded.get("text"), Some("a=b\nc\\d\r"));
        assert_eq!(decoded.parse::<u32>("n", "r"), Ok(3));
        assert!(decoded.parse::<u32>("user", "r").is_err());
        assert!(Record::decode("nope").is_err());
    }

    #[test]
    fn key_parts_cannot_inject_separators() {
        assert_eq!(key_part("a:b%c"), "a%3Ab%25c");
        assert_eq!(key_part("plain text"), "plain text");
        assert_eq!(unkey_part(&key_part("a:b%c\n é")), "a:b%c\n é");
        assert_eq!(unkey_part("100%"), "100%");
    }

    #[test]
    fn fnv1a_known_values() {
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64_hex(b"foobar"), "85944171f73967e8");
    }

    #[test]
    fn mem_store_quota_and_listing() {
        let store = MemStore::with_max_keys(2);
        store.set("b", "1").unwrap();
        store.set("a", "2").unwrap();
        assert!(matches!(store.set("c", "3"), Err(StoreError::Full(_))));
        store.set("a", "3").unwrap();
        assert_eq!(store.increment("b", 2), Ok(3));
        assert_eq!(store.list("", 10).unwrap(), ["a", "b"]);
        assert_eq!(store.list("", 1).unwrap(), ["a"]);
        assert_eq!(store.delete("a"), Ok(true));
        assert_eq!(store.delete("a"), Ok(false));
    }

    #[test]
    fn mem_store_compare_and_swap_and_get_many() {
        let store = MemStore::new();
        assert_eq!(store.compare_and_swap("k", Some("x"), Some("1")), Ok(false));
        assert_eq!(store.compare_and_swap("k", None, Some("1")), Ok(true));
        assert_eq!(store.compare_and_swap("k", None, Some("2")), Ok(false));
        assert_eq!(store.compare_and_swap("k", Some("1"), Some("2")), Ok(true));
        assert_eq!(get_all(&store, &["k".to_owned(), "nope".to_owned()]), Ok(vec![Some("2".to_owned()), None]));
        assert_eq!(store.compare_and_swap("k", Some("1"), None), Ok(false));
        assert_eq!(store.compare_and_swap("k", Some("2"), None), Ok(true));
        assert!(store.keys().is_empty());
        let many: Vec<String> = (0..MAX_GET_MANY + 5).map(|i| i.to_string()).collect();
        assert_eq!(get_all(&store, &many).map(|v| v.len()), Ok(MAX_GET_MANY + 5));
    }
}
