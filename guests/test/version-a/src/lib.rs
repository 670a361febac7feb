//! `version-a` (test guest): one of two versions of the same task that answer differently,
//! for the deploy tests (the other is `version-b`; both share `version-a/src/common.rs`).
//! Answers `version: a` and `started_ms`, the wall clock in ms when its call began.

const VERSION: &str = "a";

include!("common.rs");
