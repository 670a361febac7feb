//! Compiled-component cache on disk.
//!
//! Compiling a component with Cranelift takes from milliseconds (a 60 KB Rust guest) to
//! over ten seconds (an 18 MB Python guest). A compile that succeeded is stored (and removed
//! again if the engine refuses to load it: never one refused by a limit) as
//! `{dir}/{sha256(component bytes, engine settings)}.cwasm` and mapped back in with
//! `Component::deserialize_file`, which takes a few milliseconds (a fresh compile too, once
//! stored: mapped from the file, its pages are shared page cache). The key covers the
//! engine's compatibility hash (wasmtime version, target, settings), so a different
//! engine never loads an incompatible artifact; a corrupt file is recompiled.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use sha2::{Digest, Sha256};
use wasmtime::component::Component;

/// Where compiled components are kept.
#[derive(Debug, Clone)]
pub struct ComponentCache {
    dir: PathBuf,
}

/// Feeds `Hash` output into SHA-256, so the key is stable across processes.
struct ShaHasher(Sha256);

impl Hasher for ShaHasher {
    fn finish(&self) -> u64 {
        0
    }

    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

impl ComponentCache {
    /// A cache in `dir` (created when first written).
    pub fn new(dir: PathBuf) -> Self {
        Self { dir }
    }

    /// `$CANNON_CACHE_DIR`, else `$XDG_CACHE_HOME/cannon`, else `~/.cache/cannon`.
    pub fn default_dir() -> Option<PathBuf> {
        if let Some(dir) = std::env::var_os("CANNON_CACHE_DIR") {
            return Some(PathBuf::from(dir));
        }
        if let Some(dir) = std::env::var_os("XDG_CACHE_HOME") {
            return Some(PathBuf::from(dir).join("cannon"));
        }
        std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache").join("cannon"))
    }

    /// The cache's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn key(engine: &wasmtime::Engine, bytes: &[u8]) -> String {
        let mut hasher = ShaHasher(Sha256::new());
        engine.precompile_compatibility_hash().hash(&mut hasher);
        hasher.0.update(bytes);
        let digest = hasher.0.finalize();
        crate::text::hex(&digest)
    }

    /// Where the compiled form of `bytes` is (or would be) kept.
    pub(crate) fn file_for(&self, engine: &wasmtime::Engine, bytes: &[u8]) -> PathBuf {
        self.dir.join(format!("{}.cwasm", Self::key(engine, bytes)))
    }

    /// The cached compile at `file`, if there is a usable one; an unusable one is removed.
    pub(crate) fn lookup(&self, engine: &wasmtime::Engine, file: &Path) -> Option<Component> {
        if !file.is_file() {
            return None;
        }
        match deserialize_file(engine, file) {
            Ok(component) => Some(component),
            Err(err) => {
                tracing::warn!(file = %file.display(), "discarding unusable cached component: {err:#}");
                let _ = std::fs::remove_file(file);
                None
            }
        }
    }

    /// Keeps a compile that succeeded; a failure to write only costs the next load a
    /// compile. Says whether the file was written.
    pub(crate) fn store(&self, file: &Path, compiled: &[u8]) -> bool {
        match write_atomically(&self.dir, file, compiled) {
            Ok(()) => true,
            Err(err) => {
                tracing::warn!(dir = %self.dir.display(), "cannot write the component cache: {err:#}");
                false
            }
        }
    }
}

fn write_atomically(dir: &Path, file: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let tmp = file.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, file).with_context(|| format!("renaming {}", tmp.display()))?;
    Ok(())
}

#[expect(
    unsafe_code,
    reason = "the artifact was produced by Engine::precompile_component of a compatible engine \
              (the cache key includes the engine's compatibility hash) and wasmtime re-checks \
              the header; only someone able to write the cache directory could forge it"
)]
fn deserialize_file(engine: &wasmtime::Engine, file: &Path) -> anyhow::Result<Component> {
    // SAFETY: see the `expect` reason above.
    unsafe { Component::deserialize_file(engine, file) }.map_err(anyhow::Error::from)
}

#[expect(
    unsafe_code,
    reason = "the bytes were just produced by Engine::precompile_component, in this process or \
              in the compile child (this same binary, with the same engine configuration); \
              wasmtime re-checks the header and the compatibility of the settings"
)]
pub(crate) fn deserialize(engine: &wasmtime::Engine, compiled: &[u8]) -> anyhow::Result<Component> {
    // SAFETY: see the `expect` reason above.
    unsafe { Component::deserialize(engine, compiled) }.map_err(anyhow::Error::from)
}
