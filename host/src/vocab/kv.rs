//! The kv store behind the `kv` import, as the engine sees it: the brokers implement
//! [`KvStore`], the engine calls it, neither knows the other.

use std::time::Duration;

use async_trait::async_trait;

use crate::vocab::limits::KvQuota;

/// The longest `kv` TTL: 100 years. A longer one (up to `u64::MAX` ms from a guest) is
/// clamped to it by both brokers, so both answer the same: Redis refuses expiry times past
/// about 2^63 ms and its Lua scripts count in doubles, exact to 2^53.
pub const MAX_KV_TTL: Duration = Duration::from_millis(100 * 365 * 24 * 3600 * 1000);

/// `ttl` clamped to [`MAX_KV_TTL`], in whole milliseconds, at least 1.
pub fn kv_ttl_ms(ttl: Duration) -> u64 {
    u64::try_from(ttl.min(MAX_KV_TTL).as_millis()).unwrap_or(u64::MAX).max(1)
}

/// Why a kv operation was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvFailure {
    /// The write would exceed the service's `kv:` quota; says which.
    QuotaExceeded(String),
    /// `increment` on a value that is not a decimal 64-bit integer.
    NotANumber(String),
    /// The store could not be reached or answered with an error.
    Unavailable(String),
}

/// Storage behind the `kv` import. Keys are relative to the service; the store scopes them.
#[async_trait]
pub trait KvStore: Send + Sync + 'static {
    /// The value of `key`, `None` when missing or expired.
    async fn kv_get(&self, service: &str, key: &str) -> Result<Option<Vec<u8>>, KvFailure>;
    /// Stores `value` under `key`, expiring after `ttl` when given, within `quota`.
    async fn kv_set(
        &self,
        service: &str,
        key: &str,
        value: &[u8],
        ttl: Option<Duration>,
        quota: &KvQuota,
    ) -> Result<(), KvFailure>;
    /// Removes `key`; whether it existed.
    async fn kv_delete(&self, service: &str, key: &str) -> Result<bool, KvFailure>;
    /// Adds `delta` to the integer under `key` (0 when missing); the new value.
    async fn kv_increment(&self, service: &str, key: &str, delta: i64, quota: &KvQuota) -> Result<i64, KvFailure>;
    /// Up to `limit` keys starting with `prefix`.
    async fn kv_list(&self, service: &str, prefix: &str, limit: u32) -> Result<Vec<String>, KvFailure>;
    /// In one atomic step: when the value of `key` equals `expected` (`None`: absent),
    /// stores `new` (`None`: deletes the key) with `ttl` (as [`KvStore::kv_set`]), within
    /// `quota`; whether it did. A mismatch changes nothing and is `Ok(false)`.
    async fn kv_compare_and_swap(&self, service: &str, swap: &KvSwap<'_>, quota: &KvQuota) -> Result<bool, KvFailure>;
    /// The values of `keys` in order, `None` for a missing or expired key.
    async fn kv_get_many(&self, service: &str, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, KvFailure>;
}

/// One compare-and-swap: the key, the value it must hold, the value it gets.
#[derive(Debug, Clone, Copy)]
pub struct KvSwap<'a> {
    /// The key, relative to the service.
    pub key: &'a str,
    /// The value the key must hold for the swap to happen; `None`: the key must be absent.
    pub expected: Option<&'a [u8]>,
    /// The value stored on success; `None` deletes the key.
    pub new: Option<&'a [u8]>,
    /// Expiry of the new value, as for `set`; ignored when deleting.
    pub ttl: Option<Duration>,
}

/// Most keys one `get-many` call may read.
pub const MAX_GET_MANY: usize = 256;
