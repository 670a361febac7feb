//! The shared vocabulary: the plain types and names that the engine, the brokers and the
//! compose loader all speak, so that none of them has to import another.
//!
//! The engine depends on this module and on neither `broker` nor `config`; the brokers
//! depend on it and not on `config`; `config` fills these types in from the compose file.
//!
//! ## Layout
//! - `fields.rs`: [`Fields`] and the host-owned `cannon.*` keys: the linear merge, sizes,
//!   receipts.
//! - `stream.rs`: [`StreamKind`], which of a service's three streams, and its name.
//! - `limits.rs`: [`Limits`] (per call) and [`KvQuota`] (per service), plain values.
//! - `component.rs`: [`ComponentSpec`] (what the engine loads) and the [`Capability`]
//!   grants.
//! - `http.rs`: [`HttpGrant`], a component's outbound HTTP allow-list, and its matching.
//! - `secret.rs`: [`Secret`], a compose-file value never printed (`secrets:`, `auth:`).
//! - `kv.rs`: the [`KvStore`] trait behind the `kv` import, which both brokers implement.
//! - `streams.rs`: the [`StreamReader`] trait behind the `streams` import (bounded reads of
//!   a service's stream), which both brokers implement.

pub mod component;
pub mod fields;
pub mod http;
pub mod kv;
pub mod limits;
pub mod secret;
pub mod stream;
pub mod streams;

pub use component::{Capability, ComponentSpec, Kwargs};
pub use fields::Fields;
pub use http::HttpGrant;
pub use kv::{KvFailure, KvStore};
pub use limits::{KvQuota, Limits};
pub use secret::Secret;
pub use stream::StreamKind;
pub use streams::{RangeFailure, RangePage, RangeQuery, RangeRequest, StreamId, StreamReader};
