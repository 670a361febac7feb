//! The `kv` import: key checks and quotas on the host side, storage in the broker.
//!
//! A guest names keys relative to its service; the broker stores them under
//! `{ns:service}:kv:{key}`. A key written in an absolute form is refused as out of
//! scope, so a guest cannot even try to address another service's keys. The key is
//! checked before anything else, so the answer is the same whether or not a store is
//! attached (a kv-granted component without a store gets `unavailable` for in-scope keys).

use std::time::Duration;

use crate::engine::bindings::KvError;
use crate::engine::bindings::task::cannon::platform::kv::Host;
use crate::engine::state::{HostState, KvScope};
use crate::vocab::KvFailure;
use crate::vocab::kv::{KvSwap, MAX_GET_MANY};

/// Longest key a guest may use, in bytes.
pub const MAX_KEY_BYTES: usize = 512;

/// Checks one key (or `list-keys` prefix) of the calling service.
///
/// Out of scope: a key in one of the broker's absolute forms ([`crate::broker::names_broker_key`]:
/// `{ns:service}:...` or the older `ns:kv:service:key`).
pub(crate) fn check_key(key: &str, namespace: Option<&str>, service: &str) -> Result<(), KvError> {
    if key.is_empty() {
        return Err(KvError::InvalidKey("empty key".into()));
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(KvError::InvalidKey(format!("key of {} bytes is longer than {MAX_KEY_BYTES}", key.len())));
    }
    if key.chars().any(char::is_control) {
        return Err(KvError::InvalidKey(format!("key {key:?} contains a control character")));
    }
    if crate::broker::names_broker_key(key, namespace) {
        return Err(KvError::OutOfScope(format!(
            "key {key:?} names a broker key; keys are relative to service {service:?}"
        )));
    }
    Ok(())
}

/// Refuses a value larger than the service's `kv.max_value_kb`.
fn check_size(value: &[u8], kv: &KvScope) -> Result<(), KvError> {
    let max_value = usize::try_from(kv.quota.max_value_kb.saturating_mul(1024)).unwrap_or(usize::MAX);
    if value.len() > max_value {
        return Err(KvError::TooLarge(format!(
            "value of {} bytes is larger than kv.max_value_kb = {}",
            value.len(),
            kv.quota.max_value_kb
        )));
    }
    Ok(())
}

fn failure(err: KvFailure) -> KvError {
    match err {
        KvFailure::QuotaExceeded(m) => KvError::QuotaExceeded(m),
        KvFailure::NotANumber(m) => KvError::NotANumber(m),
        KvFailure::Unavailable(m) => KvError::Unavailable(m),
    }
}

impl HostState {
    /// Checks `key` first, then returns the store.
    fn kv_for(&self, key: &str) -> Result<&KvScope, KvError> {
        let namespace = self.kv.as_ref().map(|kv| &*kv.namespace);
        check_key(key, namespace, &self.service)?;
        self.kv.as_ref().ok_or_else(|| KvError::Unavailable("kv is not available to this component".into()))
    }
}

impl Host for HostState {
    async fn get(&mut self, key: String) -> Result<Option<Vec<u8>>, KvError> {
        // The call waits on the broker from here: its seat goes to another (`runners.rs`).
        self.seat.stand();
        let kv = self.kv_for(&key)?;
        kv.store.kv_get(&kv.service, &key).await.map_err(failure)
    }

    async fn set(&mut self, key: String, value: Vec<u8>, ttl_ms: Option<u64>) -> Result<(), KvError> {
        self.seat.stand();
        let kv = self.kv_for(&key)?;
        check_size(&value, kv)?;
        let ttl = ttl_ms.map(Duration::from_millis);
        kv.store.kv_set(&kv.service, &key, &value, ttl, &kv.quota).await.map_err(failure)
    }

    async fn delete(&mut self, key: String) -> Result<bool, KvError> {
        self.seat.stand();
        let kv = self.kv_for(&key)?;
        kv.store.kv_delete(&kv.service, &key).await.map_err(failure)
    }

    async fn increment(&mut self, key: String, delta: i64) -> Result<i64, KvError> {
        self.seat.stand();
        let kv = self.kv_for(&key)?;
        kv.store.kv_increment(&kv.service, &key, delta, &kv.quota).await.map_err(failure)
    }

    async fn list_keys(&mut self, prefix: String, limit: u32) -> Result<Vec<String>, KvError> {
        self.seat.stand();
        let kv = if prefix.is_empty() {
            self.kv.as_ref().ok_or_else(|| KvError::Unavailable("kv is not available to this component".into()))?
        } else {
            self.kv_for(&prefix)?
        };
        let limit = limit.min(kv.quota.list_limit);
        kv.store.kv_list(&kv.service, &prefix, limit).await.map_err(failure)
    }

    async fn compare_and_swap(
        &mut self,
        key: String,
        expected: Option<Vec<u8>>,
        new: Option<Vec<u8>>,
        ttl_ms: Option<u64>,
    ) -> Result<bool, KvError> {
        self.seat.stand();
        let kv = self.kv_for(&key)?;
        if let Some(value) = &new {
            check_size(value, kv)?;
        }
        let swap = KvSwap {
            key: &key,
            expected: expected.as_deref(),
            new: new.as_deref(),
            ttl: ttl_ms.map(Duration::from_millis),
        };
        kv.store.kv_compare_and_swap(&kv.service, &swap, &kv.quota).await.map_err(failure)
    }

    async fn get_many(&mut self, keys: Vec<String>) -> Result<Vec<Option<Vec<u8>>>, KvError> {
        self.seat.stand();
        if keys.len() > MAX_GET_MANY {
            return Err(KvError::TooLarge(format!("get-many of {} keys; at most {MAX_GET_MANY} per call", keys.len())));
        }
        let mut scope = None;
        for key in &keys {
            scope = Some(self.kv_for(key)?);
        }
        let Some(kv) = scope else {
            return match self.kv {
                Some(_) => Ok(Vec::new()),
                None => Err(KvError::Unavailable("kv is not available to this component".into())),
            };
        };
        kv.store.kv_get_many(&kv.service, &keys).await.map_err(failure)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope_error(key: &str, namespace: Option<&str>) -> Option<KvError> {
        check_key(key, namespace, "svc").err()
    }

    #[test]
    fn relative_keys_are_in_scope() {
        for key in ["count", "user:ann", "a:b:c", "kv", "x:kv", "cannonball:x"] {
            assert!(scope_error(key, Some("cannon")).is_none(), "{key}");
        }
    }

    #[test]
    fn absolute_keys_are_out_of_scope_with_or_without_a_namespace() {
        for ns in [Some("cannon"), None] {
            for key in ["cannon:kv:other:secret", "prod:kv:svc:x", "x:kv:y:z:w", "{cannon:other}:kv:secret"] {
                assert!(matches!(scope_error(key, ns), Some(KvError::OutOfScope(_))), "{key} with {ns:?}");
            }
        }
        assert!(matches!(scope_error("cannon:other:data", Some("cannon")), Some(KvError::OutOfScope(_))));
    }

    #[test]
    fn malformed_keys_are_invalid() {
        assert!(matches!(scope_error("", None), Some(KvError::InvalidKey(_))));
        assert!(matches!(scope_error("a\nb", None), Some(KvError::InvalidKey(_))));
        assert!(matches!(scope_error(&"k".repeat(MAX_KEY_BYTES + 1), None), Some(KvError::InvalidKey(_))));
    }
}
