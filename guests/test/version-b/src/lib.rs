//! `version-b` (test guest): one of two versions of the same task that answer differently,
//! for the deploy tests (the other is `version-a`; both share `version-a/src/common.rs`).
//! Answers `version: b` and `started_ms`, the wall clock in ms when its call began.

const VERSION: &str = "b";

include!("../../version-a/src/common.rs");
