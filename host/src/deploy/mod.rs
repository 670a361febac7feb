//! Deploying components to a running fleet: validate a new version, store it in the broker
//! (content-addressed, [`crate::broker::ComponentStore`]), and swap it into every running
//! worker between messages.
//!
//! The guarantees: a version is validated as `run` loads it (grants, command table, the
//! sandboxed compile under `limits.compile_s`/`compile_mb`) before it is stored; a message
//! takes the current version of every step when it starts and finishes on it, whatever is
//! deployed meanwhile; a version a worker cannot load leaves the old one running there and
//! is reported (`versions`, the log). `docs/deploy.md` is the user's guide.
//!
//! ## Layout
//! - `live.rs`: [`LiveComponent`], one component of a running service behind `ArcSwap`s.
//! - `validate.rs`: what `deploy` and `rollback` check before anything runs.
//! - `watch.rs`: [`Watcher`], the loop in `run` that applies deploys (and `--watch` edits).

mod live;
mod validate;
mod watch;

pub use live::LiveComponent;
pub use validate::{targets, validate};
pub use watch::{POLL, Watcher, now_ms, short, start};
