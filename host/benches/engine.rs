//! Instantiate-plus-call of small guests: the per-message isolation cost.
//!
//! `cargo bench --bench engine` (build the guests first: `guests/build.sh rust`). Each
//! iteration creates a fresh `Store`, instantiates the component from its `InstancePre`
//! (pooling allocator, copy-on-write memory image) and calls it, exactly as a worker does
//! for every message.

use std::path::PathBuf;
use std::sync::Arc;

use cannon_host::config::ComponentSpec;
use cannon_host::engine::{Component, Engine, EngineOptions, Message, World};
use criterion::{Criterion, criterion_group, criterion_main};

fn component(engine: &Engine, name: &str, world: World) -> Arc<Component> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../app").join(format!("{name}.wasm"));
    assert!(path.is_file(), "{} missing: run guests/build.sh rust", path.display());
    Arc::new(engine.load(&ComponentSpec::ungranted(name, path), world).expect("load component"))
}

fn bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let options = EngineOptions { instances: 64, ..EngineOptions::default() };
    let engine = Engine::new(&options).expect("engine");
    let shout = component(&engine, "shout", World::Task);
    let counter = component(&engine, "counter", World::Task);
    let dice = component(&engine, "dice", World::Shell);
    let msg = Message {
        id: "1-0".into(),
        service: "bench".into(),
        fields: vec![("user".into(), "ann".into()), ("text".into(), "hello world".into())],
    };
    let results = Vec::new();
    let argv = vec!["roll".to_owned(), "2d6".to_owned()];

    let mut group = c.benchmark_group("instantiate+call");
    group.bench_function("shout", |b| {
        b.to_async(&runtime).iter(|| async { shout.run(&msg, &results, None).await.expect("run") })
    });
    group.bench_function("counter", |b| {
        b.to_async(&runtime).iter(|| async { counter.run(&msg, &results, None).await.expect("run") })
    });
    group.bench_function("dice roll", |b| {
        b.to_async(&runtime).iter(|| async { dice.call(&argv, &msg, None).await.expect("call") })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
