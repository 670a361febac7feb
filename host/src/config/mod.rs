//! Loading `cannon-compose.yml`: from text to a validated [`Compose`], or to every mistake
//! in the file at once, each with `file:line:column`.
//!
//! A load never stops at the first problem. Each top-level key, each service and each of
//! a service's sections is checked on its own and all problems are collected, sorted by
//! position, into one [`ConfigError`]. The loader never panics, whatever the input.
//!
//! # Layout
//! - [`model`]: the typed result (`Compose`, `Service`, settings structs with defaults).
//! - `yaml`: the YAML front end. Drives `yaml-rust2`'s event parser and builds a small node
//!   tree with a line and column per node; substitutes `${NAME}` (`$$` for `$`) in every
//!   scalar before resolving types with the YAML 1.2 core schema; expands aliases; rejects
//!   duplicate keys; caps depth and size.
//! - `env`: `${NAME}` substitution (`$$` for a literal `$`).
//! - `de`: a strict `serde::Deserializer` over that tree, used for the plain settings
//!   structs (`workers`, `limits`, `retry`, `stream`, `kv`, `allow`); its errors carry the
//!   node's position and dotted path, and suggest a key for a typo.
//! - `loader`: `Loader`, the state shared by one load (problems found so far, base
//!   directory, groups, params) and the typed accessors the hand-written checks use.
//! - `load`: the top level and each service, with the checks spanning sections (a torch
//!   task needs a shell, a shell needs a torch task, a service needs tasks or a collector).
//! - `collector`: the `collector:` kinds and their options.
//! - `chat`: the chat kinds (`irc`, `matrix`): shared `prefix`, `mention_only`, `replies`
//!   pacing, and each platform's settings and secrets; `chat_hosted`: `slack`, `discord`.
//! - `duration`: durations (`250ms`, `5s`, `2m`, ...) wherever a key takes one.
//! - `limits`: the ranges `limits:` must keep, for a service and for a component.
//! - `http_grant`: a component's `allow:` (with `{http: [PATTERN...]}`) and `secrets:`.
//! - `access`: a listener's `auth:` and `tls:`, and [`Secret`] (never printed).
//! - `component`: shells and tasks (both task spellings), `conf` with params, permissions,
//!   and per-component limits that inherit the service's.
//! - `error`: [`ConfigError`] and [`Diagnostic`], and did-you-mean suggestions.

mod access;
mod chat;
mod chat_hosted;
mod collector;
mod component;
mod de;
mod duration;
mod env;
mod error;
mod http_grant;
mod limits;
mod load;
mod loader;
pub mod model;
mod rate;
mod yaml;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_fixtures;

use std::path::{Path, PathBuf};

pub use crate::vocab::http::{Destination, HostPattern, HttpGrant, HttpPattern, HttpScheme, PortPattern};
pub use access::{HUB_SIGNATURE_HEADER, HttpAuth, SLACK_WINDOW, Secret, TlsFiles, is_loopback, parse_addr};
pub(crate) use chat::nick_problem as irc_nick_problem;
pub use chat::{ChatFilter, ChatPlatform, ChatSpec, IrcSettings, MatrixAuth, MatrixSettings, Pace};
pub use chat_hosted::{Branding, DISCORD_API_URL, DiscordSettings, SLACK_API_URL, SlackSettings};
pub use error::{ConfigError, Diagnostic};
pub use http_grant::parse_pattern;
pub use load::metrics_reachable;
pub use model::*;

use error::Problems;
use loader::Loader;

/// Reads and validates a compose file. Env vars come from the process environment.
pub fn load(path: &Path) -> Result<Compose, ConfigError> {
    match std::fs::read_to_string(path) {
        Ok(text) => parse(&text, path, &|name| std::env::var(name).ok()),
        Err(e) => {
            let mut problems = Problems::default();
            problems.push(0, 0, format!("cannot read file {}: {e}", path.display()));
            Err(problems.into_error(path))
        }
    }
}

/// Same from text, with an injectable environment (for tests and fuzzing). `path` is used
/// in messages and to resolve relative paths.
pub fn parse(text: &str, path: &Path, env: &dyn Fn(&str) -> Option<String>) -> Result<Compose, ConfigError> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let base = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
    parse_in(text, path, &base, env)
}

/// [`parse`] with the directory for relative paths given separately from the name shown
/// in messages (fixture tests show a repo-relative name whatever the working directory).
pub(crate) fn parse_in(
    text: &str,
    path: &Path,
    base: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Compose, ConfigError> {
    let mut ctx = Loader {
        problems: Problems::default(),
        base: base.to_path_buf(),
        app_dir: PathBuf::new(),
        app_dir_text: String::new(),
        groups: Default::default(),
        params: Default::default(),
        services: Vec::new(),
    };
    let compose = yaml::parse(text, env, &mut ctx.problems).and_then(|root| load::compose(&root, path, &mut ctx));
    match compose {
        Some(compose) if ctx.problems.is_empty() => Ok(compose),
        _ => {
            if ctx.problems.is_empty() {
                ctx.problems.push(1, 1, "invalid compose file");
            }
            Err(ctx.problems.into_error(path))
        }
    }
}
