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
//! - [`broker`]: the [`broker::Broker`] and [`broker::KvStore`] traits, implemented by the
//!   embedded broker (SQLite, the default) and by Redis (streams and consumer groups).
//! - [`fields`]: field maps: host-owned `cannon.*` keys, the linear merge, sizes.
//! - [`pipeline`], [`torch`]: what happens to one message.
//! - [`service`]: compose entries turned into runnable pipelines.
//! - [`worker`]: consume -> pipeline -> taskback + ack, retries and dead letters.
//! - [`collector`]: native message sources (`stdin`, `http`, `tick`, `stream`, `exec`, and the
//!   chat platforms `irc`, `matrix`, `slack` and `discord` in `collector/chat/`).
//! - [`observe`]: Prometheus metrics and the dashboard (`run --metrics ADDR`).
//! - [`text`]: untrusted text made safe for terminals, log lines and JSON output.
//! - [`access`]: who may talk to a listener: `auth:` checks and TLS with reloads.
//! - [`cli`]: the `cannon-host` commands; `main.rs` only parses arguments and sets up
//!   logging and signals.

pub mod access;
pub mod broker;
pub mod cli;
pub mod collector;
pub mod config;
pub mod engine;
pub mod fields;
pub mod observe;
pub mod pipeline;
pub mod service;
pub mod text;
pub mod torch;
pub mod worker;
