//! The deploy watcher of one service in `cannon-host run`: notices a new generation in the
//! broker (polled every [`POLL`]; one `GET` on Redis, one indexed row in SQLite), loads the
//! newly active versions (compile cache first, else the sandboxed compile child), swaps
//! them in between messages and reports what runs here. A version that fails to load is
//! logged and reported, and the one running stays. With `--watch` it also reloads a
//! component whose file in `app_dir` changed, unless a deployed version is active for it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio_util::sync::CancellationToken;

use crate::broker::versions::{Active, ComponentStore, Running, WorkerReport, is_sha256};
use crate::engine::{Engine, VERSION_DIGITS, sha256_hex};
use crate::service::ServiceRuntime;
use crate::text::for_terminal;

/// How often the generation is looked at: a deploy reaches every worker within about this.
pub const POLL: Duration = Duration::from_millis(200);
/// How a failure to read a version's bytes starts (then retried at the next poll).
const UNREAD: &str = "cannot read its bytes";
/// How often a worker re-sends its report when nothing changed.
const HEARTBEAT: Duration = Duration::from_secs(3);

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A file's size and modification time, to notice a change.
type Stamp = (u64, Option<SystemTime>);

fn stamp(path: &std::path::Path) -> Option<Stamp> {
    std::fs::metadata(path).ok().map(|m| (m.len(), m.modified().ok()))
}

/// Watches the deployed versions (and, with `--watch`, the files) of one service.
pub struct Watcher {
    service: Arc<ServiceRuntime>,
    store: Arc<dyn ComponentStore>,
    engine: Arc<Engine>,
    /// This process's worker name (its consumer name), under which it reports.
    worker: String,
    /// The generation applied last (`None`: not looked yet).
    generation: Option<u64>,
    /// The active map of that generation.
    active: Active,
    /// Per component name: the last version that failed to load here, and why.
    failed: HashMap<String, (String, String)>,
    /// `--watch`: per component index, the file's last stamp and one seen changing.
    files: Option<Vec<(Option<Stamp>, Option<Stamp>)>>,
    /// Whether the last broker call failed (so an outage is logged once, not every poll).
    store_down: bool,
}

impl Watcher {
    /// A watcher for `service`'s worker `worker`; `watch_files`: `run --watch`.
    pub fn new(
        service: Arc<ServiceRuntime>,
        store: Arc<dyn ComponentStore>,
        engine: Arc<Engine>,
        worker: String,
        watch_files: bool,
    ) -> Self {
        let files = watch_files.then(|| service.live.iter().map(|c| (stamp(&c.spec.path), None)).collect());
        Self {
            service,
            store,
            engine,
            worker,
            generation: None,
            active: Active::default(),
            failed: HashMap::new(),
            files,
            store_down: false,
        }
    }

    fn name(&self) -> &str {
        self.service.name()
    }

    /// Applies the broker's active versions if their generation changed; true when it did.
    pub async fn sync(&mut self) -> bool {
        let service = self.name().to_owned();
        let generation = match self.store.generation(&service).await {
            Ok(generation) => generation,
            Err(err) => return self.store_failed(&err),
        };
        if self.generation == Some(generation) {
            return false;
        }
        let active = match self.store.active(&service).await {
            Ok(active) => active,
            Err(err) => return self.store_failed(&err),
        };
        self.store_down = false;
        // A version whose bytes could not be read (the broker went away meanwhile) is tried
        // again at the next poll; one that was read and refused waits for the next deploy.
        let mut unread = false;
        for index in 0..self.service.live.len() {
            let live = &self.service.live[index];
            let Some(sha) = active.of(&live.spec.name).map(str::to_owned) else { continue };
            if live.current().sha256 == sha {
                continue;
            }
            let origin = format!("deployed version {}", short(&sha));
            let fetched = if is_sha256(&sha) { self.fetch(&sha).await } else { Err("not a SHA-256".to_owned()) };
            match fetched {
                Ok(bytes) => self.install(index, bytes, &sha, &origin).await,
                Err(error) => {
                    unread |= error.starts_with(UNREAD);
                    self.refuse(index, &sha, &error);
                }
            }
        }
        if unread {
            return false;
        }
        self.generation = Some(active.generation.max(generation));
        self.active = active;
        true
    }

    fn store_failed(&mut self, err: &crate::broker::BrokerError) -> bool {
        if !self.store_down {
            tracing::warn!(service = %self.name(), error = %err, "cannot look for deployed versions; will retry");
            self.store_down = true;
        }
        false
    }

    /// The bytes of a deployed version, checked against their SHA-256 (whoever can write
    /// the broker could have put anything there).
    async fn fetch(&self, sha: &str) -> Result<Arc<Vec<u8>>, String> {
        match self.store.bytes(self.name(), sha).await {
            Ok(Some(bytes)) if sha256_hex(&bytes) == sha => Ok(Arc::new(bytes)),
            Ok(Some(bytes)) => Err(format!("the stored bytes have sha256:{}, not their key", sha256_hex(&bytes))),
            Ok(None) => Err("no bytes are stored under it".to_owned()),
            Err(err) => Err(format!("{UNREAD}: {err}")),
        }
    }

    /// Loads `bytes` as component `index` and swaps it in; on failure the old one stays.
    async fn install(&mut self, index: usize, bytes: Arc<Vec<u8>>, sha: &str, origin: &str) {
        let live = &self.service.live[index];
        let name = self.service.name().to_owned();
        let loaded =
            crate::service::load(&self.engine, &live.spec, live.world, &name, Some((bytes, origin.to_owned()))).await;
        let swapped = match loaded {
            Ok(component) => {
                let version = component.version.clone();
                live.swap(component).await.map(|()| version)
            }
            Err(err) => Err(err),
        };
        match swapped {
            Ok(version) => {
                tracing::info!(service = %name, component = %live.spec.name, %version, from = %origin, "swapped in a new version");
                self.failed.remove(&live.spec.name);
            }
            Err(err) => self.refuse(index, sha, &format!("{err:#}")),
        }
    }

    fn refuse(&mut self, index: usize, sha: &str, error: &str) {
        let live = &self.service.live[index];
        let error = for_terminal(error).into_owned();
        tracing::error!(
            service = %self.name(),
            component = %live.spec.name,
            version = %short(sha),
            running = %live.current().version,
            %error,
            "cannot load this version; the running one stays"
        );
        self.failed.insert(live.spec.name.clone(), (sha.to_owned(), error));
    }

    /// `--watch`: reloads components whose file changed and then stayed the same for one
    /// poll (so a file being written is not loaded half-way).
    async fn check_files(&mut self) {
        let Some(files) = self.files.take() else { return };
        let mut files = files;
        for (index, (last, seen)) in files.iter_mut().enumerate() {
            let live = &self.service.live[index];
            let now = stamp(&live.spec.path);
            if now == *last {
                *seen = None;
                continue;
            }
            if *seen != now {
                *seen = now; // Changed since the last poll: wait until it settles.
                continue;
            }
            *last = now;
            *seen = None;
            if let Some(sha) = self.active.of(&live.spec.name) {
                tracing::info!(
                    service = %self.name(),
                    component = %live.spec.name,
                    deployed = %short(sha),
                    "file changed, but a deployed version is active and takes precedence"
                );
                continue;
            }
            let origin = live.spec.path.display().to_string();
            match std::fs::read(&live.spec.path) {
                Ok(bytes) => {
                    let sha = sha256_hex(&bytes);
                    if live.current().sha256 != sha {
                        self.install(index, Arc::new(bytes), &sha, &origin).await;
                    }
                }
                Err(err) => self.refuse(index, "file", &format!("cannot read {origin}: {err}")),
            }
        }
        self.files = Some(files);
    }

    /// What runs here, for `deploy` and `versions`.
    fn report(&self) -> WorkerReport {
        let mut components: Vec<Running> = Vec::new();
        for live in &self.service.live {
            if components.iter().any(|c| c.component == live.spec.name) {
                continue;
            }
            let failed = self.failed.get(&live.spec.name);
            components.push(Running {
                component: live.spec.name.clone(),
                sha256: live.current().sha256.clone(),
                failed: failed.map(|(sha, _)| sha.clone()),
                error: failed.map(|(_, error)| error.clone()),
            });
        }
        WorkerReport {
            worker: self.worker.clone(),
            seen_ms: now_ms(),
            generation: self.generation.unwrap_or(0),
            components,
        }
    }

    async fn send_report(&mut self) {
        let report = self.report();
        if let Err(err) = self.store.report(self.name(), &report).await {
            self.store_failed(&err);
        }
    }

    /// Applies the active versions once (before the workers start), then watches until
    /// `shutdown`, and withdraws this worker's report.
    pub async fn run(mut self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let mut next_report = Instant::now();
        while !shutdown.is_cancelled() {
            let mut changed = self.sync().await;
            if self.files.is_some() {
                let before: Vec<String> = self.service.live.iter().map(|c| c.current().sha256.clone()).collect();
                self.check_files().await;
                changed |= self.service.live.iter().zip(&before).any(|(c, sha)| c.current().sha256 != *sha);
            }
            if changed || Instant::now() >= next_report {
                self.send_report().await;
                next_report = Instant::now() + HEARTBEAT;
            }
            tokio::select! {
                () = tokio::time::sleep(POLL) => {}
                () = shutdown.cancelled() => break,
            }
        }
        let _ = self.store.forget(self.name(), &self.worker).await;
        Ok(())
    }
}

/// The version (hash prefix) of a SHA-256, for messages; whatever came from the broker.
pub fn short(sha: &str) -> &str {
    sha.get(..VERSION_DIGITS).unwrap_or(sha)
}

/// Applies the active deployed versions and reports, before the service's workers read their
/// first message: a deployed version takes precedence over the file from the start.
pub async fn start(mut watcher: Watcher) -> Watcher {
    watcher.sync().await;
    watcher.send_report().await;
    watcher
}
