//! # cannon-host
//!
//! Runs message-driven services whose work is done by sandboxed WebAssembly components.
//! A native **collector** yields messages into a service's stream; **workers** run the
//! service's pipeline of **tasks** on each message, every task in a fresh component
//! instance; results go back to the collector as a **taskback**. A **shell** is a command
//! tree reached through the built-in **torch** task.
//!
//! ## Layout
//! - [`config`]: `cannon-compose.yml`, loaded into a typed model with errors at file:line.
//! - [`engine`]: wasmtime engine, linker, limits, host imports; one `InstancePre` per
//!   component and a fresh `Store` per call.
//! - [`vocab`]: the shared vocabulary below engine, broker and config: [`vocab::Fields`]
//!   and the host-owned `cannon.*` keys ([`vocab::fields`]: the linear merge, sizes),
//!   [`vocab::StreamKind`], limits and kv quotas, the component spec, the kv store trait.
//! - [`broker`]: the [`broker::Broker`] trait, implemented by the embedded broker (SQLite,
//!   the default) and by Redis (streams and consumer groups).
//! - [`pipeline`], [`torch`]: what happens to one message.
//! - [`service`]: compose entries turned into runnable pipelines.
//! - [`runner`]: the one wiring ([`run`], [`start`]): streams, engine, workers, collectors
//!   and the metrics listener, used by `run`, `bench` and the benchmarks.
//! - [`worker`]: consume -> pipeline -> taskback + ack, retries and dead letters.
//! - [`deploy`]: new component versions validated, stored in the broker and swapped into
//!   running workers between messages.
//! - [`scaffold`]: `cannon-host new`, ready projects for component authors.
//! - [`collector`]: native message sources (`stdin`, `http`, `tick`, `stream`, `exec`, and the
//!   chat platforms `irc`, `matrix`, `slack` and `discord` in `collector/chat/`).
//! - [`observe`]: Prometheus metrics, the dashboard (`run --metrics ADDR`) and OTLP traces.
//! - [`text`]: untrusted text made safe for terminals, log lines and JSON output.
//! - [`time`]: the clock, UTC dates as RFC 3339, retry backoff, cron expressions.
//! - [`access`]: who may talk to a listener: `auth:` checks and TLS with reloads.
//! - [`cli`]: the `cannon-host` commands; `main.rs` only parses arguments and sets up
//!   logging and signals.

#![warn(missing_docs)]

pub mod access;
pub mod broker;
pub mod cli;
pub mod collector;
pub mod config;
pub mod deploy;
pub mod engine;
pub mod observe;
pub mod pipeline;
pub mod runner;
pub mod scaffold;
pub mod service;
pub mod text;
pub mod time;
pub mod torch;
pub mod vocab;
pub mod worker;

/// Field maps (kept at the crate root for existing paths): see [`vocab::fields`].
pub use vocab::fields;

pub use runner::{run, start};
