//! The `kv` import: key checks and quotas on the host side, storage in the broker.
//!
//! A guest names keys relative to its service; the broker stores them under
//! `{ns}:kv:{service}:{key}`. A key written in that absolute form is refused as
//! out of scope, so a guest cannot even try to address another service's keys.

use std::sync::Arc;
use std::time::Duration;

use crate::broker::{KvFailure, KvStore};
use crate::config::KvQuota;
use crate::engine::bindings::KvError;
use crate::engine::bindings::task::cannon::platform::kv::Host;
use crate::engine::state::HostState;

/// Longest key a guest may use, in bytes.
pub const MAX_KEY_BYTES: usize = 512;

/// A service's view of the kv store.
#[derive(Clone)]
pub struct KvScope {
    pub store: Arc<dyn KvStore>,
    pub namespace: Arc<str>,
    pub service: Arc<str>,
    pub quota: KvQuota,
}

impl KvScope {
    fn check_key(&self, key: &str) -> Result<(), KvError> {
        if key.is_empty() {
            return Err(KvError::InvalidKey("empty key".into()));
        }
        if key.len() > MAX_KEY_BYTES {
            return Err(KvError::InvalidKey(format!("key of {} bytes is longer than {MAX_KEY_BYTES}", key.len())));
        }
        if key.chars().any(char::is_control) {
            return Err(KvError::InvalidKey(format!("key {key:?} contains a control character")));
        }
        let absolute = format!("{}:", self.namespace);
        if key.starts_with(&absolute) {
            return Err(KvError::OutOfScope(format!(
                "key {key:?} names a broker key; keys are relative to service {:?}",
                self.service
            )));
        }
        Ok(())
    }
}

fn failure(err: KvFailure) -> KvError {
    match err {
        KvFailure::QuotaExceeded(m) => KvError::QuotaExceeded(m),
        KvFailure::NotANumber(m) => KvError::NotANumber(m),
        KvFailure::Unavailable(m) => KvError::Unavailable(m),
    }
}

fn scope(state: &HostState) -> Result<&KvScope, KvError> {
    state.kv.as_ref().ok_or_else(|| KvError::Unavailable("kv is not available to this component".into()))
}

impl Host for HostState {
    async fn get(&mut self, key: String) -> Result<Option<Vec<u8>>, KvError> {
        let kv = scope(self)?;
        kv.check_key(&key)?;
        kv.store.kv_get(&kv.service, &key).await.map_err(failure)
    }

    async fn set(&mut self, key: String, value: Vec<u8>, ttl_ms: Option<u64>) -> Result<(), KvError> {
        let kv = scope(self)?;
        kv.check_key(&key)?;
        let max_value = usize::try_from(kv.quota.max_value_kb.saturating_mul(1024)).unwrap_or(usize::MAX);
        if value.len() > max_value {
            return Err(KvError::TooLarge(format!(
                "value of {} bytes is larger than kv.max_value_kb = {}",
                value.len(),
                kv.quota.max_value_kb
            )));
        }
        let ttl = ttl_ms.map(Duration::from_millis);
        kv.store.kv_set(&kv.service, &key, &value, ttl, &kv.quota).await.map_err(failure)
    }

    async fn delete(&mut self, key: String) -> Result<bool, KvError> {
        let kv = scope(self)?;
        kv.check_key(&key)?;
        kv.store.kv_delete(&kv.service, &key).await.map_err(failure)
    }

    async fn increment(&mut self, key: String, delta: i64) -> Result<i64, KvError> {
        let kv = scope(self)?;
        kv.check_key(&key)?;
        kv.store.kv_increment(&kv.service, &key, delta, &kv.quota).await.map_err(failure)
    }

    async fn list_keys(&mut self, prefix: String, limit: u32) -> Result<Vec<String>, KvError> {
        let kv = scope(self)?;
        if !prefix.is_empty() {
            kv.check_key(&prefix)?;
        }
        let limit = limit.min(kv.quota.list_limit);
        kv.store.kv_list(&kv.service, &prefix, limit).await.map_err(failure)
    }
}
