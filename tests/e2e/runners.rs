//! Runners (`host/src/engine/runners.rs`): calls take turns at the engine's seats, so at
//! concurrency 16 a CPU-bound guest keeps about one instance per core alive instead of 16;
//! a call gives its seat up when its slice is over or when it waits on the broker or the
//! network, and a
//! seat held past its slice where no epoch tick runs is taken back. Each property is checked
//! against the order in which calls finish (or the count of calls alive at once), never a
//! timing.

use std::time::{Duration, Instant};

use cannon_host::config::{Capability, ComponentSpec, HttpGrant, KvQuota, Limits, parse_pattern};
use cannon_host::engine::{CallError, Component, Engine, EngineOptions, KvScope, RunnerOptions};

use crate::sandbox::{load, msg, small, spec};
use crate::support::{RedisServer, cache_dir};

/// Longer than any test here: a wait or slice that never runs out.
const NEVER: Duration = Duration::from_secs(600);

fn engine(runners: RunnerOptions) -> Engine {
    let options = EngineOptions {
        instances: 16,
        max_memory_mb: 16,
        cache_dir: Some(cache_dir()),
        runners,
        ..EngineOptions::default()
    };
    Engine::new(&options).expect("engine")
}

fn spinning(engine: &Engine, how: &str, timeout_ms: u64) -> Component {
    load(engine, &spec("spin", &[("how", how)], Limits { timeout_ms, ..small() }, &[]))
}

/// Runs `first` and, 100 ms later, `second`; returns which finished first and both outcomes.
async fn race<A, B>(first: impl Future<Output = A>, second: impl Future<Output = B>) -> (&'static str, A, B) {
    let winner = std::sync::OnceLock::new();
    let first = async {
        let out = first.await;
        let _ = winner.set("first");
        out
    };
    let second = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let out = second.await;
        let _ = winner.set("second");
        out
    };
    let (a, b) = tokio::join!(first, second);
    (winner.get().copied().expect("both finished"), a, b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_take_turns_at_the_seats() {
    // Four calls that each spin until their 30 ms deadline, started together: with one
    // seat only one of them ever has an instance, although each yields its thread every
    // epoch tick, and the last waits ~90 ms, many times the 5 ms between its looks for a
    // seat to take back (none is held past its slice).
    let seated = engine(RunnerOptions { seats: Some(1), wait: Duration::from_millis(5), slice: NEVER });
    let spin = spinning(&seated, "loop", 30);
    let (message, results) = (msg(&[]), Vec::new());
    let call = || spin.run(&message, &results, None);
    let outcomes = tokio::join!(call(), call(), call(), call());
    for outcome in [outcomes.0, outcomes.1, outcomes.2, outcomes.3] {
        assert_eq!(outcome.unwrap_err(), CallError::Deadline(30));
    }
    assert_eq!(seated.live_calls_peak(), 1, "one seat, one instance alive at a time");

    // Without seats (`CANNON_RUNNERS=0`) the same calls interleave, each holding a slot.
    let free = engine(RunnerOptions { seats: Some(0), wait: NEVER, slice: NEVER });
    let spin = spinning(&free, "loop", 30);
    let call = || spin.run(&message, &results, None);
    let _ = tokio::join!(call(), call(), call(), call());
    assert!(free.live_calls_peak() > 1, "without seats the calls overlap: {}", free.live_calls_peak());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_call_gives_its_seat_up_after_its_slice() {
    // One seat, kept at most 50 ms: a call spinning until its 3 s deadline does not keep a
    // short call, started 100 ms later, waiting for it (the wait for a seat never runs out).
    let engine = engine(RunnerOptions { seats: Some(1), wait: NEVER, slice: Duration::from_millis(50) });
    let spin = spinning(&engine, "loop", 3_000);
    let shout = load(&engine, &spec("shout", &[], small(), &[]));
    let (no_msg, hi, results) = (msg(&[]), msg(&[("text", "hi")]), Vec::new());
    let (finished_first, long, short) = race(spin.run(&no_msg, &results, None), shout.run(&hi, &results, None)).await;
    assert_eq!(long.unwrap_err(), CallError::Deadline(3_000));
    short.expect("shout");
    assert_eq!(finished_first, "second", "the short call ran while the long one spun");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seat_held_past_its_slice_without_a_tick_is_taken_back() {
    // A guest asleep in `wasi:io/poll` reaches no epoch tick, so it cannot give its seat up
    // itself; the call waiting for it takes the seat back once the sleeper's 200 ms slice
    // is over (looking every 20 ms).
    let wait = Duration::from_millis(20);
    let engine = engine(RunnerOptions { seats: Some(1), wait, slice: Duration::from_millis(200) });
    let sleep = spinning(&engine, "sleep", 3_000);
    let shout = load(&engine, &spec("shout", &[], small(), &[]));
    let (no_msg, hi, results) = (msg(&[]), msg(&[("text", "hi")]), Vec::new());
    let (finished_first, long, short) = race(sleep.run(&no_msg, &results, None), shout.run(&hi, &results, None)).await;
    assert_eq!(long.unwrap_err(), CallError::Deadline(3_000));
    let waited = short.expect("shout").stats.waited;
    assert!(waited >= Duration::from_millis(50), "it waited for the sleeper's slice to end: {waited:?}");
    assert_eq!(finished_first, "second");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_waiting_on_the_broker_gives_its_seat_up() {
    // Redis paused: a kv read waits on it. With one seat and a wait that never runs out, a
    // call started meanwhile still runs, because the kv call gave its seat up.
    let redis = RedisServer::start();
    let broker = cannon_host::broker::connect(&redis.url(), "cannon").await.expect("broker");
    let engine = engine(RunnerOptions { seats: Some(1), wait: NEVER, slice: NEVER });
    let probe = load(&engine, &spec("kvprobe", &[], Limits { timeout_ms: 20_000, ..small() }, &[Capability::Kv]));
    let shout = load(&engine, &spec("shout", &[], small(), &[]));
    let kv = KvScope {
        store: broker.clone(),
        namespace: "cannon".into(),
        service: "svc".into(),
        quota: KvQuota::default(),
        streams: None,
    };
    let _: () = redis::cmd("CLIENT").arg("PAUSE").arg(2_000).arg("ALL").query(&mut redis.con()).expect("pause");
    let paused = Instant::now();
    let (get, hi, results) = (msg(&[("op", "get"), ("key", "k")]), msg(&[("text", "hi")]), Vec::new());
    let (finished_first, read, shouted) =
        race(probe.run(&get, &results, Some(kv)), shout.run(&hi, &results, None)).await;
    let read = read.expect("kv get answered once Redis resumed");
    assert!(paused.elapsed() >= Duration::from_millis(1_500), "Redis was paused while the probe read");
    assert_eq!(read.value.iter().find(|(k, _)| k == "found").map(|(_, v)| v.as_str()), Some("false"), "{read:?}");
    shouted.expect("shout");
    assert_eq!(finished_first, "second", "shout ran while the kv call waited on Redis");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_waiting_on_an_http_server_gives_its_seat_up() {
    // A server that answers each request 2 s late: the `fetcher` guest waits for it in
    // `wasi:http`. With one seat and no take-back, a call started meanwhile still runs.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                use std::io::{Read, Write};
                let mut head = [0u8; 4096];
                let _ = stream.read(&mut head);
                std::thread::sleep(Duration::from_secs(2));
                let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nlate");
            });
        }
    });
    let engine = engine(RunnerOptions { seats: Some(1), wait: NEVER, slice: NEVER });
    let grant = HttpGrant { patterns: vec![parse_pattern("http://127.0.0.1:*").expect("pattern")] };
    let fetcher = load(
        &engine,
        &ComponentSpec {
            http: Some(grant),
            limits: Limits { timeout_ms: 20_000, ..small() },
            ..spec("fetcher", &[], small(), &[])
        },
    );
    let shout = load(&engine, &spec("shout", &[], small(), &[]));
    let url = format!("http://127.0.0.1:{port}/slow");
    let (get, hi, results) = (msg(&[("url", &url)]), msg(&[("text", "hi")]), Vec::new());
    let (finished_first, fetched, shouted) =
        race(fetcher.run(&get, &results, None), shout.run(&hi, &results, None)).await;
    let fetched = fetched.expect("the late answer");
    assert!(fetched.value.contains(&("body".to_owned(), "late".to_owned())), "{:?}", fetched.value);
    shouted.expect("shout");
    assert_eq!(finished_first, "second", "shout ran while the fetcher waited on the server");
}
