//! Deployed component versions: bytes stored content-addressed (SHA-256) in the broker, a
//! version history per service component, which version is active, and what each running
//! worker reports it runs.
//!
//! [`ComponentStore`] is its own small trait, apart from [`crate::broker::Broker`]: only
//! `deploy`, `versions`, `rollback`, `info` and the deploy watcher of `run` use it, never
//! the message hot path. Redis keeps a service's keys under the hash tag `{ns:service}`
//! (`redis/versions.rs`); the embedded broker keeps them in tables of its database
//! (`embedded/versions.rs`).
//!
//! A change of the active versions bumps the service's *generation*, a counter that the
//! workers of `run` watch (`crate::deploy`).

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::broker::Result;

/// Largest component `deploy` stores: a Python guest is about 18 MB, a JavaScript one 12 MB.
pub const MAX_COMPONENT_BYTES: usize = 128 << 20;
/// Longest `--note`, in bytes.
pub const MAX_NOTE: usize = 1024;
/// Longest deploying user name, in bytes.
pub const MAX_USER: usize = 64;
/// Most version entries kept per service (older ones are dropped from the history; their
/// bytes stay while an entry or the active map names them).
pub const MAX_HISTORY: usize = 1000;

/// One deploy of one component of a service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Version {
    /// The component's `file:` name (or the file stem of its `path:`).
    pub component: String,
    /// SHA-256 of its bytes, 64 lower-case hex digits.
    pub sha256: String,
    /// Size in bytes.
    pub size: u64,
    /// When it was deployed, in milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// Who deployed it (`$USER` of the deploying process).
    pub user: String,
    /// The deployer's `--note` (may be empty).
    pub note: String,
}

/// Which version of each deployed component a service runs, and its generation (bumped by
/// every deploy and rollback).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Active {
    /// The counter bumped by each deploy and rollback.
    pub generation: u64,
    /// `(component, sha256)` for every component with an active deployed version.
    pub components: Vec<(String, String)>,
}

impl Active {
    /// The active SHA-256 of `component`, if one is deployed.
    pub fn of(&self, component: &str) -> Option<&str> {
        self.components.iter().find(|(c, _)| c == component).map(|(_, sha)| sha.as_str())
    }
}

/// What one component runs on one worker.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Running {
    /// The component's name.
    pub component: String,
    /// SHA-256 of the version it runs.
    pub sha256: String,
    /// The last version it failed to load, and why (it keeps running `sha256`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed: Option<String>,
    /// Why that version failed to load.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A worker process's report: what each component of the service runs there.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerReport {
    /// The worker's consumer name (`host-pid`).
    pub worker: String,
    /// When it last reported, in milliseconds since the Unix epoch.
    pub seen_ms: u64,
    /// The generation it has applied.
    pub generation: u64,
    /// What each component runs there.
    pub components: Vec<Running>,
}

/// Reports older than this belong to workers that stopped (a worker reports every few seconds).
pub const REPORT_STALE_MS: u64 = 15_000;

/// Storage of deployed component versions (see the module docs).
#[async_trait]
pub trait ComponentStore: Send + Sync + 'static {
    /// Where the versions live, for messages (password removed).
    fn describe(&self) -> String;

    /// Stores `bytes` under `version.sha256` (once; the same bytes deployed again share
    /// them), appends `version` to the history and makes it the component's active version,
    /// atomically. Returns the new generation.
    async fn deploy(&self, service: &str, version: &Version, bytes: &[u8]) -> Result<u64>;

    /// Makes the stored version `sha256` the component's active one; `Ok(None)` when no
    /// bytes are stored under it. Returns the new generation.
    async fn activate(&self, service: &str, component: &str, sha256: &str) -> Result<Option<u64>>;

    /// The service's version history, oldest first.
    async fn versions(&self, service: &str) -> Result<Vec<Version>>;

    /// The active versions and the generation.
    async fn active(&self, service: &str) -> Result<Active>;

    /// The generation alone: what workers poll.
    async fn generation(&self, service: &str) -> Result<u64>;

    /// The bytes stored under `sha256`.
    async fn bytes(&self, service: &str, sha256: &str) -> Result<Option<Vec<u8>>>;

    /// Records what a worker runs (replacing its previous report).
    async fn report(&self, service: &str, report: &WorkerReport) -> Result<()>;

    /// Removes a worker's report (it is stopping).
    async fn forget(&self, service: &str, worker: &str) -> Result<()>;

    /// Every worker's last report, stale ones included (see [`REPORT_STALE_MS`]).
    async fn reports(&self, service: &str) -> Result<Vec<WorkerReport>>;
}

/// Opens the version store of the Redis broker at `url`.
pub async fn connect(url: &str, namespace: &str) -> Result<Arc<dyn ComponentStore>> {
    Ok(Arc::new(crate::broker::redis::versions::RedisVersions::connect(url, namespace).await?))
}

/// Opens (creating when missing) the version store of the embedded broker in `data_dir`.
pub async fn open_embedded(data_dir: &Path, namespace: &str) -> Result<Arc<dyn ComponentStore>> {
    Ok(Arc::new(crate::broker::embedded::EmbeddedVersions::open(data_dir, namespace).await?))
}

/// A report's JSON, or `None` when it is not one (written by someone else).
pub(crate) fn parse_report(text: &[u8]) -> Option<WorkerReport> {
    serde_json::from_slice(text).ok()
}

/// A history entry's JSON, or `None` when it is not one.
pub(crate) fn parse_version(text: &[u8]) -> Option<Version> {
    serde_json::from_slice(text).ok()
}

/// Whether `sha256` is 64 lower-case hex digits (the only form stored or looked up).
pub fn is_sha256(sha256: &str) -> bool {
    sha256.len() == 64 && sha256.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}
