//! What the compose file says about one component, as the engine loads it.

use std::path::PathBuf;

use indexmap::IndexMap;
use serde::Deserialize;

use crate::vocab::http::HttpGrant;
use crate::vocab::limits::Limits;
use crate::vocab::secret::Secret;

/// Ordered `key -> value` strings: message fields, kwargs, params.
pub type Kwargs = IndexMap<String, String>;

/// A Wasm component as a shell or a task.
#[derive(Debug, Clone)]
pub struct ComponentSpec {
    /// Short name used in logs and errors (`file:` value, or the file stem of `path:`).
    pub name: String,
    /// Absolute path of the `.wasm` file.
    pub path: PathBuf,
    /// `sha256:` pin: the lower-case hex SHA-256 its bytes must have (file or deployed).
    pub sha256: Option<String>,
    /// What the component sees through the `config` import.
    pub config: Kwargs,
    /// cannon imports granted beyond `log` and `config`.
    pub allow: Vec<Capability>,
    /// `allow: [{http: [...]}]`: whom it may reach over HTTP (`wasi:http/outgoing-handler`);
    /// `None` refuses a component that imports it.
    pub http: Option<HttpGrant>,
    /// `allow: [{streams: [SERVICE...]}]`: the services whose `data` and `taskback` streams
    /// it may read (the `streams` import); empty refuses a component that imports it.
    pub streams: Vec<String>,
    /// `secrets: {NAME: ${ENV}}`: answered by this component's `config.get(NAME)` only, and
    /// masked in its log lines and errors.
    pub secrets: IndexMap<String, Secret>,
    /// A directory preopened read-only as `/` in the guest (absolute).
    pub files: Option<PathBuf>,
    /// Shell only: command name -> groups allowed to run it.
    pub permissions: IndexMap<String, Vec<String>>,
    /// Per-component overrides of the service's limits.
    pub limits: Limits,
    /// Line of the component in the compose file.
    pub line: usize,
}

impl ComponentSpec {
    /// The component at `path` as if declared with nothing but its file: no config, no
    /// grants, no secrets or files, the default limits (for tests and benchmarks).
    pub fn ungranted(name: &str, path: PathBuf) -> Self {
        Self {
            name: name.to_owned(),
            path,
            sha256: None,
            config: Kwargs::default(),
            allow: Vec::new(),
            http: None,
            streams: Vec::new(),
            secrets: IndexMap::new(),
            files: None,
            permissions: IndexMap::new(),
            limits: Limits::default(),
            line: 1,
        }
    }
}

/// A cannon import the compose file may grant to a component.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Capability {
    /// The `kv` import: the service's key-value store.
    Kv,
    /// The `taskback` import: extra taskbacks from one call.
    Taskback,
}
