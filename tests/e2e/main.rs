//! End-to-end tests: real `redis-server` per test, real `cannon-host` processes, real
//! components built from `guests/` (run `guests/build.sh` first; `scripts/test` does).

mod support;

mod backbone;
mod conformance;
mod examples;
mod kv;
mod languages;
mod reliability;
