//! The whole pipeline in-process: messages added to the embedded broker, consumed by the
//! service's real workers (fresh instance per message), taskbacks written and read back.
//!
//! `cargo bench --bench pipeline` (build the guests first: `guests/build.sh rust`). One
//! iteration is one message end to end; criterion adds a batch concurrently and times until
//! the batch's last taskback has been read.

use std::path::Path;
use std::time::{Duration, Instant};

use cannon_host::broker::StreamKind;
use cannon_host::{config, runner};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tokio_util::sync::CancellationToken;

const COMPOSE: &str = "services:\n  shout:\n    tasks: [ { file: shout } ]\n    workers: { concurrency: 64 }\n";

fn bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let app = Path::new(env!("CARGO_MANIFEST_DIR")).join("../app");
    assert!(app.join("shout.wasm").is_file(), "run guests/build.sh rust first");
    let text = format!("app_dir: {}\ndata_dir: {}\n{COMPOSE}", app.display(), dir.path().join("data").display());
    let compose = config::parse(&text, &dir.path().join("cannon-compose.yml"), &|_| None).expect("compose");
    let spec = compose.services["shout"].clone();

    let (broker, shutdown) = runtime.block_on(async {
        let broker = cannon_host::broker::open_embedded(&compose.data_dir, &compose.namespace).await.expect("broker");
        let options = runner::Options {
            role: runner::Role::Worker,
            consumer_suffix: "bench".to_owned(),
            min_maxlen: 1_000_000,
            ..runner::Options::default()
        };
        let shutdown = CancellationToken::new();
        let running =
            cannon_host::start(&compose, &[&spec], broker.clone(), &options, shutdown.clone()).await.expect("service");
        tokio::spawn(running.wait());
        (broker, shutdown)
    });

    let fields = vec![("text".to_owned(), "hello world".to_owned())];
    let mut after = "0-0".to_owned();
    let mut group = c.benchmark_group("pipeline (embedded broker)");
    group.throughput(Throughput::Elements(1));
    group.measurement_time(Duration::from_secs(8));
    group.bench_function("shout", |b| {
        b.iter_custom(|iters| {
            runtime.block_on(async {
                let started = Instant::now();
                // Added concurrently, as many collectors (or one busy one) would.
                let mut adds = tokio::task::JoinSet::new();
                for _ in 0..iters {
                    let (broker, fields) = (broker.clone(), fields.clone());
                    adds.spawn(async move { broker.add("shout", StreamKind::Data, &fields).await.expect("add") });
                }
                adds.join_all().await;
                let mut seen = 0u64;
                while seen < iters {
                    let got = broker
                        .tail("shout", StreamKind::Taskback, &after, 1000, Duration::from_millis(100))
                        .await
                        .expect("tail");
                    seen += got.len() as u64;
                    if let Some(last) = got.last() {
                        after = last.id.clone();
                    }
                }
                started.elapsed()
            })
        })
    });
    group.finish();
    shutdown.cancel();
}

criterion_group!(benches, bench);
criterion_main!(benches);
