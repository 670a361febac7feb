//! The sandbox through the library API: components built from `guests/` loaded into an
//! [`Engine`] in this process and called directly, to check each limit's exact error, the
//! per-call cost and the process-wide counters.

use std::time::Duration;

use cannon_host::config::{Capability, ComponentSpec, Kwargs, Limits};
use cannon_host::engine::{CallError, Component, Engine, EngineOptions, FailureKind, Message, World, metrics};

use crate::support::{cache_dir, component};

fn engine(fuel: bool) -> Engine {
    let options = EngineOptions {
        instances: 8,
        max_memory_mb: 16,
        fuel,
        cache_dir: Some(cache_dir()),
        ..EngineOptions::default()
    };
    Engine::new(&options).expect("engine")
}

pub(crate) fn spec(name: &str, conf: &[(&str, &str)], limits: Limits, allow: &[Capability]) -> ComponentSpec {
    ComponentSpec {
        config: conf.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect::<Kwargs>(),
        allow: allow.to_vec(),
        limits,
        ..ComponentSpec::ungranted(name, component(name))
    }
}

pub(crate) fn small() -> Limits {
    Limits { timeout_ms: 100, memory_mb: 16, ..Limits::default() }
}

pub(crate) fn load(engine: &Engine, spec: &ComponentSpec) -> Component {
    engine.load(spec, World::Task).unwrap_or_else(|e| panic!("{e}"))
}

pub(crate) fn msg(fields: &[(&str, &str)]) -> Message {
    Message {
        id: "1-0".into(),
        service: "svc".into(),
        fields: fields.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_limit_has_its_own_error_and_is_counted() {
    let engine = engine(false);
    let before = metrics::snapshot();

    let shout = load(&engine, &spec("shout", &[], small(), &[]));
    let out = shout.run(&msg(&[("text", "hi")]), &Vec::new(), None).await.expect("shout");
    assert_eq!(out.value, vec![("text".to_owned(), "HI".to_owned())]);
    assert!(out.stats.memory_peak > 0 && out.stats.wall > Duration::ZERO, "{:?}", out.stats);
    assert_eq!(out.stats.fuel, None, "fuel is off");

    // A timeout too large to add to a clock reading is no timeout, not a panic.
    let endless = load(&engine, &spec("shout", &[], Limits { timeout_ms: u64::MAX, ..small() }, &[]));
    endless.run(&msg(&[("text", "hi")]), &Vec::new(), None).await.expect("shout without a deadline");

    let spin = load(&engine, &spec("spin", &[], small(), &[]));
    assert_eq!(spin.run(&msg(&[]), &Vec::new(), None).await.unwrap_err(), CallError::Deadline(100));
    let sleep = load(&engine, &spec("spin", &[("how", "sleep")], small(), &[]));
    assert_eq!(sleep.run(&msg(&[]), &Vec::new(), None).await.unwrap_err(), CallError::Deadline(100));
    let hog = load(&engine, &spec("hog", &[], small(), &[]));
    assert_eq!(hog.run(&msg(&[]), &Vec::new(), None).await.unwrap_err(), CallError::Memory(16));
    let big = load(&engine, &spec("shout", &[], Limits { message_kb: 1, ..small() }, &[]));
    let long = "x".repeat(1025);
    let err = big.run(&msg(&[("text", &long)]), &Vec::new(), None).await.unwrap_err();
    // Each field costs its bytes plus 32: 4 + 1025 + 32.
    assert_eq!(err.to_string(), "input limit exceeded: message of 1061 bytes exceeds limits.message_kb = 1");
    let few = load(&engine, &spec("shout", &[], Limits { max_fields: 2, ..small() }, &[]));
    let err = few.run(&msg(&[("text", "hi"), ("a", ""), ("b", "")]), &Vec::new(), None).await.unwrap_err();
    assert_eq!(err.to_string(), "input limit exceeded: message of 3 fields exceeds limits.max_fields = 2");
    few.run(&msg(&[("text", "hi"), ("a", "")]), &Vec::new(), None).await.expect("two fields are within the cap");

    let after = metrics::snapshot();
    // Other tests in this process may call components too: at least ours are counted.
    assert!(after.calls >= before.calls + 6, "{before:?} -> {after:?}");
    assert!(after.failures_of(FailureKind::Deadline) >= before.failures_of(FailureKind::Deadline) + 2);
    assert!(after.failures_of(FailureKind::Memory) > before.failures_of(FailureKind::Memory));
    assert!(after.failures_of(FailureKind::Input) > before.failures_of(FailureKind::Input));
    assert!(after.wall >= before.wall + Duration::from_millis(200), "two deadlines of 100 ms");
    assert!(after.memory_peak_max >= 8 << 20, "the hog's peak is counted: {after:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fuel_is_metered_and_capped_without_breaking_deadlines() {
    let engine = engine(true);
    let before = metrics::snapshot();
    let capped =
        load(&engine, &spec("spin", &[], Limits { timeout_ms: 20_000, fuel: Some(2_000_000), ..small() }, &[]));
    assert_eq!(capped.run(&msg(&[]), &Vec::new(), None).await.unwrap_err(), CallError::Fuel(2_000_000));
    // With fuel on for the engine, a component without a fuel cap still meets its deadline.
    let uncapped = load(&engine, &spec("spin", &[], small(), &[]));
    assert_eq!(uncapped.run(&msg(&[]), &Vec::new(), None).await.unwrap_err(), CallError::Deadline(100));
    let shout = load(&engine, &spec("shout", &[], small(), &[]));
    let out = shout.run(&msg(&[("text", "hi")]), &Vec::new(), None).await.expect("shout");
    assert!(out.stats.fuel.is_some_and(|f| f > 0), "{:?}", out.stats);
    let after = metrics::snapshot();
    assert!(after.fuel >= before.fuel + 2_000_000, "{before:?} -> {after:?}");
    assert!(after.failures_of(FailureKind::Fuel) > before.failures_of(FailureKind::Fuel));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn taskbacks_need_the_grant_and_stay_within_the_count() {
    let engine = engine(false);
    let limits = Limits { taskbacks: 3, ..small() };
    let flood = load(&engine, &spec("tbflood", &[], limits, &[Capability::Taskback]));
    let err = flood.run(&msg(&[]), &Vec::new(), None).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "taskback.send refused after 3 taskbacks: taskback limit reached: at most 3 per call (limits.taskbacks)"
    );
    let few = load(&engine, &spec("tbflood", &[("count", "3")], limits, &[Capability::Taskback]));
    let out = few.run(&msg(&[]), &Vec::new(), None).await.expect("three taskbacks fit");
    assert_eq!(out.taskbacks.len(), 3);
    let refused = engine.load(&spec("tbflood", &[], limits, &[]), World::Task).err().expect("refused");
    assert!(refused.to_string().contains("`cannon:platform/taskback@0.1.0`, which is not granted"), "{refused}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadlines_hold_after_the_engine_is_dropped() {
    // `cannon-host run` drops its `Engine` once the services are built; the components
    // must keep the epoch ticker going, or a spinning guest would never be stopped.
    let spin = {
        let engine = engine(false);
        load(&engine, &spec("spin", &[], small(), &[]))
    };
    let (message, results) = (msg(&[]), Vec::new());
    let call = spin.run(&message, &results, None);
    let outcome = tokio::time::timeout(Duration::from_secs(30), call).await.expect("the deadline never fired");
    assert_eq!(outcome.unwrap_err(), CallError::Deadline(100));
}
