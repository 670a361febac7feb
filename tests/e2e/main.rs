//! End-to-end tests: real `redis-server` per test, real `cannon-host` processes, real
//! components built from `guests/` (run `guests/build.sh` first; `scripts/test` does).

mod fake;
mod support;

mod access;
mod backbone;
mod chat_discord;
mod chat_irc;
mod chat_matrix;
mod chat_slack;
mod check;
mod cluster;
mod collectors;
mod compile;
mod conformance;
mod deploy;
mod edges;
mod egress;
mod examples;
mod fairness;
mod host_fault;
mod hostile;
mod hostile_fields;
mod kv;
mod languages;
mod observe;
mod receipts;
mod reliability;
mod runners;
mod sandbox;
mod service_model;
mod streams;
mod traces;
mod wat;
