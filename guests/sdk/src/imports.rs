//! Thin wrappers over the host's imports.

use crate::task_world::cannon::platform as wit;

/// Log lines go into the host's log, tagged with the service, component and message id.
/// A call's log output is bounded by the service's `limits.log_kb`.
pub mod log {
    use super::wit::log::{log, Level};

    pub fn trace(text: &str) {
        log(Level::Trace, text);
    }
    pub fn debug(text: &str) {
        log(Level::Debug, text);
    }
    pub fn info(text: &str) {
        log(Level::Info, text);
    }
    pub fn warn(text: &str) {
        log(Level::Warn, text);
    }
    pub fn error(text: &str) {
        log(Level::Error, text);
    }
}

/// The component's `conf` from the compose file (`kwargs`, or a `params` entry).
pub mod config {
    use super::wit::config;

    /// The value of `key`, if configured.
    pub fn get(key: &str) -> Option<String> {
        config::get(key)
    }

    /// The value of `key`, or `default`.
    pub fn get_or(key: &str, default: &str) -> String {
        config::get(key).unwrap_or_else(|| default.to_owned())
    }

    /// `key` parsed as `T`, or `default` when absent; a value that does not parse is an
    /// error naming the key.
    pub fn parse_or<T: std::str::FromStr>(key: &str, default: T) -> Result<T, String>
    where
        T::Err: std::fmt::Display,
    {
        match config::get(key) {
            None => Ok(default),
            Some(raw) => raw.parse().map_err(|err| format!("config {key}={raw:?}: {err}")),
        }
    }

    /// Every configured pair.
    pub fn all() -> Vec<(String, String)> {
        config::get_all()
    }
}

/// A key-value store scoped to the calling service. Needs `allow: [kv]` in the compose file.
pub mod kv {
    use super::wit::kv;
    pub use super::wit::kv::Error;

    pub fn get(key: &str) -> Result<Option<Vec<u8>>, Error> {
        kv::get(key)
    }

    /// The value as UTF-8 text (invalid bytes are replaced).
    pub fn get_string(key: &str) -> Result<Option<String>, Error> {
        Ok(kv::get(key)?.map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    pub fn set(key: &str, value: &[u8]) -> Result<(), Error> {
        kv::set(key, value, None)
    }

    pub fn set_string(key: &str, value: &str) -> Result<(), Error> {
        kv::set(key, value.as_bytes(), None)
    }

    /// Stores `value`, expiring after `ttl_ms` milliseconds.
    pub fn set_with_ttl(key: &str, value: &[u8], ttl_ms: u64) -> Result<(), Error> {
        kv::set(key, value, Some(ttl_ms))
    }

    /// Returns whether the key existed.
    pub fn delete(key: &str) -> Result<bool, Error> {
        kv::delete(key)
    }

    pub fn increment(key: &str, delta: i64) -> Result<i64, Error> {
        kv::increment(key, delta)
    }

    /// Keys starting with `prefix`, sorted, at most `limit`.
    pub fn list_keys(prefix: &str, limit: u32) -> Result<Vec<String>, Error> {
        kv::list_keys(prefix, limit)
    }

    /// Most keys one [`get_many`] call may read (the host refuses more as `too-large`).
    pub const MAX_GET_MANY: usize = 256;

    /// In one atomic step: when `key` holds `expected` (`None`: the key is absent), stores
    /// `new` (`None`: deletes the key) and returns `true`; otherwise changes nothing and
    /// returns `false`. Same quotas as [`set`].
    pub fn compare_and_swap(key: &str, expected: Option<&[u8]>, new: Option<&[u8]>) -> Result<bool, Error> {
        kv::compare_and_swap(key, expected, new, None)
    }

    /// [`compare_and_swap`] whose new value expires after `ttl_ms` milliseconds.
    pub fn compare_and_swap_with_ttl(
        key: &str,
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
        ttl_ms: u64,
    ) -> Result<bool, Error> {
        kv::compare_and_swap(key, expected, new, Some(ttl_ms))
    }

    /// The values of `keys`, in order (`None` for a missing key); at most
    /// [`MAX_GET_MANY`] keys per call.
    pub fn get_many(keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, Error> {
        kv::get_many(keys)
    }

    /// Reads `key`, computes its new value with `change` (`None` deletes it), and writes it
    /// with [`compare_and_swap`]; when another writer got there first, reads again and
    /// retries, up to `attempts` times. `change` sees the current value (`None`: absent)
    /// and returns the new one and what to hand back; it must have no other effects, since
    /// it may run several times. `Ok(None)` when every attempt lost the race.
    pub fn update<T>(
        key: &str,
        attempts: u32,
        mut change: impl FnMut(Option<&[u8]>) -> (Option<Vec<u8>>, T),
    ) -> Result<Option<T>, Error> {
        for _ in 0..attempts {
            let current = kv::get(key)?;
            let (new, out) = change(current.as_deref());
            if new == current || kv::compare_and_swap(key, current.as_deref(), new.as_deref(), None)? {
                return Ok(Some(out));
            }
        }
        Ok(None)
    }
}

/// Extra taskbacks, delivered only when the whole pipeline succeeds. Needs
/// `allow: [taskback]` in the compose file.
pub mod taskback {
    /// Queues one taskback with these fields.
    pub fn send(fields: &[(String, String)]) -> Result<(), String> {
        super::wit::taskback::send(fields)
    }
}

/// Read-only access to other services' streams: the newest entries, a time range, or the
/// entries after an id, of a service's `data` or `taskback` stream. Needs
/// `allow: [{streams: [SERVICE...]}]` in the compose file, naming each service read.
///
/// Every call answers at most 1,000 entries and 1 MiB; a [`Page`] cut by either bound, or
/// by the count asked, says `truncated`. Entries come oldest first, as stored (each a
/// [`crate::Message`] whose `service` is the service read). [`since`] reads on through
/// truncated pages for you.
pub mod streams {
    pub use super::wit::streams::{Error, Page, StreamKind};
    use super::wit::streams;
    use crate::Message;

    /// Most entries one call may ask for (more is [`Error::TooLarge`]).
    pub const MAX_COUNT: u32 = 1000;

    /// The newest `count` entries, oldest first.
    pub fn last(service: &str, kind: StreamKind, count: u32) -> Result<Page, Error> {
        streams::last(service, kind, count)
    }

    /// Up to `count` entries after id `id` (`"0"`: from the start), oldest first.
    pub fn after(service: &str, kind: StreamKind, id: &str, count: u32) -> Result<Page, Error> {
        streams::after(service, kind, id, count)
    }

    /// Up to `count` entries added from `from_ms` to `to_ms` (Unix milliseconds, both
    /// included), oldest first.
    pub fn between(
        service: &str,
        kind: StreamKind,
        from_ms: u64,
        to_ms: u64,
        count: u32,
    ) -> Result<Page, Error> {
        streams::between(service, kind, from_ms, to_ms, count)
    }

    /// Every entry added since `from_ms`, oldest first, reading page after page, but at
    /// most `max` entries; the `bool` says whether more were left unread.
    pub fn since(
        service: &str,
        kind: StreamKind,
        from_ms: u64,
        max: usize,
    ) -> Result<(Vec<Message>, bool), Error> {
        let page_size = |left: usize| u32::try_from(left).unwrap_or(MAX_COUNT).min(MAX_COUNT);
        let mut page = streams::between(service, kind, from_ms, u64::MAX, page_size(max))?;
        let mut out = Vec::new();
        loop {
            let truncated = page.truncated;
            out.extend(page.entries);
            let left = max.saturating_sub(out.len());
            let last_id = match out.last() {
                Some(last) if truncated && left > 0 => last.id.clone(),
                _ => return Ok((out, truncated)),
            };
            page = streams::after(service, kind, &last_id, page_size(left))?;
        }
    }

    /// The time an entry was added: the milliseconds part of its id (`MS-SEQ`).
    pub fn id_ms(id: &str) -> Option<u64> {
        id.split('-').next()?.parse().ok()
    }

    /// Milliseconds since the Unix epoch now (the host's wall clock).
    pub fn now_ms() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }
}
