//! Who may talk to cannon's listeners: the pieces an http collector (and later the metrics
//! listener) puts in front of its handlers.
//!
//! ## Layout
//! - `auth.rs`: [`Gate`], the check of a listener's `auth:` (bearer token, GitHub-style or
//!   Slack-style HMAC signature) on a request's headers and raw body, the axum middleware
//!   [`require`] around it, and the refusal counter and burst log.
//! - `tls.rs`: [`ReloadingAcceptor`] (the current certificate, a handshake per accepted
//!   `TcpStream`, reloads on SIGHUP or file change) and [`TlsListener`] for `axum::serve`.
//!
//! The Redis side of access (credentials, `rediss://`, ACL rules) lives with the broker.

mod auth;
mod tls;

pub use auth::{Gate, Refusal, refused_total, require, unauthorized};
pub use tls::{
    HANDSHAKE_TIMEOUT, MAX_HANDSHAKES, ReloadingAcceptor, TlsError, TlsListener, install_crypto_provider, server_config,
};
