//! The broker conformance suite: one set of scenarios, written once against
//! `Arc<dyn BrokerAdmin>` (and its `KvStore` side) through the library API, run for Redis (a
//! real redis-server per test), for a Redis Cluster (`cluster::every_scenario`: one local
//! cluster, a namespace per scenario) and for the embedded broker (a temp data directory).
//!
//! Also home of [`Backend`], which lets the other end-to-end tests run `cannon-host`
//! against either broker.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::Duration;

use cannon_host::broker::{
    self, BrokerAdmin, Completion, DEAD_FIELDS, DeadLetter, Delivery, KvFailure, KvStore, StreamKind, WORKER_GROUP,
};
use cannon_host::config::KvQuota;

use crate::support::{Project, RedisServer, cache_dir};

/// A broker for a test: its own redis-server, or the embedded broker in a data directory.
pub enum Backend {
    Redis(RedisServer),
    Embedded(PathBuf),
    /// A local Redis Cluster (`redis+cluster://`).
    Cluster(crate::support::RedisCluster),
}

impl Backend {
    /// The embedded broker in the project's default data directory (`.cannon` beside the
    /// compose file), as `cannon-host` uses it without `--broker`.
    pub fn embedded(project: &Project) -> Self {
        Backend::Embedded(project.path(".cannon"))
    }

    /// `cannon-host -f COMPOSE` for this broker (Redis: `--broker URL`; embedded: nothing,
    /// the compose file has no `broker:`).
    pub fn host(&self, project: &Project) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_cannon-host"));
        cmd.arg("-f")
            .arg(&project.compose)
            .env("CANNON_CACHE_DIR", cache_dir())
            .env_remove("CANNON_BROKER")
            .env_remove("CANNON_DATA_DIR")
            .env("CANNON_LOG", "info,cannon_host=debug")
            .current_dir(project.dir.path());
        match self {
            Backend::Redis(redis) => drop(cmd.arg("--broker").arg(redis.url())),
            Backend::Cluster(cluster) => drop(cmd.arg("--broker").arg(cluster.url())),
            Backend::Embedded(_) => {}
        }
        cmd
    }

    /// Runs `cannon-host ARGS...` to completion.
    pub fn run(&self, project: &Project, args: &[&str]) -> Output {
        self.host(project)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .expect("run cannon-host")
    }

    /// The same broker through the library, as another process sees it.
    pub async fn open(&self) -> Arc<dyn BrokerAdmin> {
        match self {
            Backend::Redis(redis) => broker::connect(&redis.url(), "cannon").await.expect("connect"),
            Backend::Cluster(cluster) => broker::connect(&cluster.url(), "cannon").await.expect("connect"),
            Backend::Embedded(dir) => broker::open_embedded(dir, "cannon").await.expect("open embedded"),
        }
    }
}

/// A fresh broker of each kind for one scenario.
struct Fixture {
    broker: Arc<dyn BrokerAdmin>,
    _redis: Option<RedisServer>,
    _dir: Option<tempfile::TempDir>,
}

async fn redis_fixture() -> Fixture {
    let redis = RedisServer::start();
    let broker = broker::connect(&redis.url(), "cannon").await.expect("connect");
    Fixture { broker, _redis: Some(redis), _dir: None }
}

async fn embedded_fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = broker::open_embedded(&dir.path().join("data"), "cannon").await.expect("open embedded");
    Fixture { broker, _redis: None, _dir: Some(dir) }
}

macro_rules! conformance {
    ($($scenario:ident),* $(,)?) => {
        mod redis {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    let fixture = super::redis_fixture().await;
                    super::$scenario(fixture.broker.clone()).await;
                }
            )*
        }
        mod embedded {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    let fixture = super::embedded_fixture().await;
                    super::$scenario(fixture.broker.clone()).await;
                }
            )*
        }
        /// Every scenario on one local Redis Cluster (3 masters, 3 replicas), each in a
        /// namespace of its own, so its services hash to slots of their own.
        mod cluster {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn every_scenario() {
                let cluster = crate::support::RedisCluster::start();
                $(
                    eprintln!("cluster scenario {}", stringify!($scenario));
                    let broker = super::broker::connect(&cluster.url(), stringify!($scenario)).await.expect("connect");
                    super::$scenario(broker).await;
                )*
            }
        }
    };
}

conformance!(
    add_read_complete_ack,
    blocked_read_wakes_on_add,
    reclaim_takes_idle_entries_and_counts_deliveries,
    refresh_claims_reports_ownership,
    claim_only_from_the_named_consumer,
    dead_letters_and_replay,
    only_the_holder_writes_and_only_once,
    a_holder_of_many_writes_all_it_finishes,
    a_message_finished_twice_in_one_call_is_written_once,
    last_id_and_tail,
    create_group_and_read_group,
    own_pending_is_read_again_after_a_restart,
    stream_info_and_pending,
    streams_are_trimmed_to_about_maxlen,
    trimming_spares_what_groups_still_need,
    kv_get_set_delete_increment_list,
    kv_ttl_expires,
    kv_huge_ttl_is_clamped,
    kv_quotas,
    kv_is_scoped_per_service,
);

const NO_WAIT: Duration = Duration::ZERO;
const SVC: &str = "svc";

fn f(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

fn ids(deliveries: &[Delivery]) -> Vec<String> {
    deliveries.iter().map(|d| d.id.clone()).collect()
}

async fn add_n(b: &dyn BrokerAdmin, n: usize) -> Vec<String> {
    let mut out = Vec::new();
    for i in 0..n {
        out.push(b.add(SVC, StreamKind::Data, &f(&[("n", &i.to_string())])).await.expect("add"));
    }
    out
}

/// The fields of the first ten taskbacks, oldest first.
async fn taskback_fields(b: &dyn BrokerAdmin) -> Vec<Vec<(String, String)>> {
    let taskbacks = b.tail(SVC, StreamKind::Taskback, "0-0", 10, NO_WAIT).await.expect("tail");
    taskbacks.into_iter().map(|e| e.fields).collect()
}

async fn pending_ids(b: &dyn BrokerAdmin, consumer: Option<&str>) -> Vec<String> {
    let rows = b.pending(SVC, StreamKind::Data, WORKER_GROUP, consumer, 100).await.expect("pending");
    rows.into_iter().map(|p| p.id).collect()
}

async fn add_read_complete_ack(b: Arc<dyn BrokerAdmin>) {
    b.prepare(SVC, 1000).await.expect("prepare");
    let sent = add_n(&*b, 3).await;
    let got = b.read(SVC, "c1", 10, NO_WAIT).await.expect("read");
    assert_eq!(ids(&got), sent, "entries in order");
    assert_eq!(got[1].fields, f(&[("n", "1")]));
    assert!(got.iter().all(|d| d.deliveries == 1));
    assert_eq!(pending_ids(&*b, Some("c1")).await, sent);

    let done = vec![
        Completion { id: sent[0].clone(), taskbacks: vec![f(&[("text", "A"), ("cannon.id", &sent[0])])] },
        Completion { id: sent[1].clone(), taskbacks: vec![] },
    ];
    assert_eq!(b.complete(SVC, "c1", &done).await.expect("complete"), 0);
    assert_eq!(pending_ids(&*b, None).await, vec![sent[2].clone()]);
    let taskbacks = b.tail(SVC, StreamKind::Taskback, "0-0", 10, NO_WAIT).await.expect("tail");
    assert_eq!(taskbacks.len(), 1);
    assert_eq!(taskbacks[0].fields, f(&[("text", "A"), ("cannon.id", &sent[0])]));
    assert!(b.read(SVC, "c1", 10, Duration::from_millis(50)).await.expect("read").is_empty());

    b.ack(SVC, StreamKind::Data, WORKER_GROUP, std::slice::from_ref(&sent[2])).await.expect("ack");
    assert!(pending_ids(&*b, None).await.is_empty());
}

async fn blocked_read_wakes_on_add(b: Arc<dyn BrokerAdmin>) {
    b.prepare(SVC, 1000).await.expect("prepare");
    let reader = {
        let b = b.clone();
        tokio::spawn(async move { b.read(SVC, "c1", 10, Duration::from_secs(20)).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let id = b.add(SVC, StreamKind::Data, &f(&[("late", "yes")])).await.expect("add");
    let got = reader.await.expect("join").expect("read");
    assert_eq!(ids(&got), vec![id]);
}

async fn reclaim_takes_idle_entries_and_counts_deliveries(b: Arc<dyn BrokerAdmin>) {
    b.prepare(SVC, 1000).await.expect("prepare");
    let sent = add_n(&*b, 2).await;
    b.read(SVC, "c1", 10, NO_WAIT).await.expect("read");
    let early = b.reclaim(SVC, "c2", Duration::from_secs(60), 10).await.expect("reclaim");
    assert!(early.is_empty(), "nothing is idle for a minute yet: {early:?}");
    tokio::time::sleep(Duration::from_millis(250)).await;
    let got = b.reclaim(SVC, "c2", Duration::from_millis(100), 10).await.expect("reclaim");
    assert_eq!(ids(&got), sent);
    assert!(got.iter().all(|d| d.deliveries == 2), "{got:?}");
    assert_eq!(got[0].fields, f(&[("n", "0")]));
    assert_eq!(pending_ids(&*b, Some("c2")).await, sent);
    assert!(pending_ids(&*b, Some("c1")).await.is_empty());
}

async fn refresh_claims_reports_ownership(b: Arc<dyn BrokerAdmin>) {
    b.prepare(SVC, 1000).await.expect("prepare");
    let sent = add_n(&*b, 2).await;
    b.read(SVC, "c1", 10, NO_WAIT).await.expect("read");
    tokio::time::sleep(Duration::from_millis(250)).await;
    let kept = b.refresh_claims(SVC, "c1", std::slice::from_ref(&sent[0])).await.expect("keep");
    assert_eq!(kept, vec![sent[0].clone()]);
    // Only the entry that was not kept fresh is idle long enough to be reclaimed.
    let got = b.reclaim(SVC, "c2", Duration::from_millis(200), 10).await.expect("reclaim");
    assert_eq!(ids(&got), vec![sent[1].clone()]);
    assert_eq!(b.refresh_claims(SVC, "c1", &sent).await.expect("keep"), vec![sent[0].clone()]);
    b.complete(SVC, "c1", &[Completion { id: sent[0].clone(), taskbacks: vec![] }]).await.expect("complete");
    assert!(b.refresh_claims(SVC, "c1", &sent).await.expect("keep").is_empty(), "acknowledged entries are no one's");
    let pending = b.pending(SVC, StreamKind::Data, WORKER_GROUP, None, 10).await.expect("pending");
    assert_eq!(pending.len(), 1);
    assert_eq!((pending[0].consumer.as_str(), pending[0].deliveries), ("c2", 2));
}

async fn claim_only_from_the_named_consumer(b: Arc<dyn BrokerAdmin>) {
    b.prepare(SVC, 1000).await.expect("prepare");
    let sent = add_n(&*b, 3).await;
    b.read(SVC, "c1", 10, NO_WAIT).await.expect("read");
    let got = b.claim(SVC, "c2", "c1", &sent[..2]).await.expect("claim");
    assert_eq!(ids(&got), sent[..2].to_vec());
    assert!(got.iter().all(|d| d.deliveries == 2));
    assert_eq!(got[1].fields, f(&[("n", "1")]));
    assert!(b.claim(SVC, "c3", "c1", &sent[..1]).await.expect("claim").is_empty(), "c1 no longer holds it");
    assert_eq!(pending_ids(&*b, Some("c1")).await, vec![sent[2].clone()]);

    let info = b.stream_info(SVC, StreamKind::Data).await.expect("info");
    let group = info.groups.iter().find(|g| g.name == WORKER_GROUP).expect("worker group");
    let names: Vec<&str> = group.consumers.iter().map(|c| c.name.as_str()).collect();
    assert!(names.contains(&"c1") && names.contains(&"c2"), "{names:?}");
    b.remove_consumer(SVC, StreamKind::Data, WORKER_GROUP, "c1").await.expect("remove");
    let info = b.stream_info(SVC, StreamKind::Data).await.expect("info");
    let group = info.groups.iter().find(|g| g.name == WORKER_GROUP).expect("worker group");
    assert!(group.consumers.iter().all(|c| c.name != "c1"), "{group:?}");
    assert_eq!(group.pending, 2, "c1's entry went with it; c2's two remain");
}

async fn dead_letters_and_replay(b: Arc<dyn BrokerAdmin>) {
    b.prepare(SVC, 1000).await.expect("prepare");
    let sent = add_n(&*b, 1).await;
    b.read(SVC, "c1", 10, NO_WAIT).await.expect("read");
    let letter = DeadLetter {
        id: sent[0].clone(),
        // A message may carry host-owned keys of its own: they never reach the dead letter.
        fields: f(&[("cannon.id", "forged"), ("n", "0"), ("Cannon.Error", "forged")]),
        error: "boom".into(),
        attempts: 3,
        failed_at_ms: 1_700_000_000_000,
    };
    assert_eq!(b.dead_letter(SVC, "c1", &[letter]).await.expect("bury"), 0);
    assert!(pending_ids(&*b, None).await.is_empty(), "a dead letter is acknowledged");
    let dead = b.tail(SVC, StreamKind::Dead, "0-0", 10, NO_WAIT).await.expect("tail");
    assert_eq!(dead.len(), 1);
    assert_eq!(
        dead[0].fields,
        f(&[
            (DEAD_FIELDS[0], &sent[0]),
            (DEAD_FIELDS[1], "boom"),
            (DEAD_FIELDS[2], "3"),
            (DEAD_FIELDS[3], "1700000000000"),
            ("n", "0"),
        ])
    );

    let moved = b.replay(SVC, &[dead[0].id.clone()]).await.expect("replay");
    assert_eq!(moved.len(), 1);
    assert_eq!(moved[0].0, dead[0].id);
    assert!(b.tail(SVC, StreamKind::Dead, "0-0", 10, NO_WAIT).await.expect("tail").is_empty());
    let again = b.read(SVC, "c1", 10, NO_WAIT).await.expect("read");
    assert_eq!(ids(&again), vec![moved[0].1.clone()]);
    assert_eq!(again[0].fields, f(&[("n", "0")]), "replayed without the dead-letter fields");
    assert!(b.replay(SVC, &[dead[0].id.clone()]).await.expect("replay").is_empty(), "replayed once only");
}

/// A message is written (taskbacks or dead letter, and its ack) only by the consumer that
/// holds it, and only once: a repeated write, or one by a worker whose message was taken
/// over, is left alone. Entries too large for Redis's script path take the other path.
async fn only_the_holder_writes_and_only_once(b: Arc<dyn BrokerAdmin>) {
    b.prepare(SVC, 1000).await.expect("prepare");
    let sent = add_n(&*b, 4).await;
    b.read(SVC, "c1", 10, NO_WAIT).await.expect("read");
    b.claim(SVC, "c2", "c1", &sent[..1]).await.expect("claim");
    // A taskback with more field pairs than one Lua call can unpack.
    let large: Vec<(String, String)> = (0..5000).map(|i| (format!("k{i}"), i.to_string())).collect();
    let done = vec![
        Completion { id: sent[0].clone(), taskbacks: vec![f(&[("by", "c1")])] },
        Completion { id: sent[1].clone(), taskbacks: vec![f(&[("by", "c1")]), f(&[("extra", "1")])] },
        Completion { id: sent[2].clone(), taskbacks: vec![large.clone()] },
    ];
    assert_eq!(b.complete(SVC, "c1", &done).await.expect("complete"), 1, "c2 holds the first now");
    assert_eq!(b.complete(SVC, "c1", &done).await.expect("complete again"), 3, "nothing twice");
    let letter = |id: &String| DeadLetter {
        id: id.clone(),
        fields: f(&[("n", "3")]),
        error: "boom".into(),
        attempts: 3,
        failed_at_ms: 1,
    };
    assert_eq!(b.dead_letter(SVC, "c2", &[letter(&sent[3])]).await.expect("bury"), 1, "c1 holds it");
    assert_eq!(b.dead_letter(SVC, "c1", &[letter(&sent[3])]).await.expect("bury"), 0);
    assert_eq!(b.dead_letter(SVC, "c1", &[letter(&sent[3])]).await.expect("bury again"), 1);

    assert_eq!(taskback_fields(&*b).await, vec![f(&[("by", "c1")]), f(&[("extra", "1")]), large]);
    assert_eq!(b.tail(SVC, StreamKind::Dead, "0-0", 10, NO_WAIT).await.expect("tail").len(), 1);
    assert_eq!(pending_ids(&*b, None).await, vec![sent[0].clone()], "only c2's message is left");
    assert_eq!(pending_ids(&*b, Some("c2")).await, vec![sent[0].clone()]);
}

/// A consumer holding more entries between the first and the last it finishes than Redis's
/// finish script asks `XPENDING` for in one range (four per message plus 256) still writes
/// every one it holds: what the range could not cover is asked about alone.
async fn a_holder_of_many_writes_all_it_finishes(b: Arc<dyn BrokerAdmin>) {
    b.prepare(SVC, 10_000).await.expect("prepare");
    let sent = add_n(&*b, 400).await;
    assert_eq!(b.read(SVC, "c1", 400, NO_WAIT).await.expect("read").len(), 400);
    let done = vec![
        Completion { id: sent[0].clone(), taskbacks: vec![f(&[("at", "first")])] },
        Completion { id: sent[399].clone(), taskbacks: vec![f(&[("at", "last")])] },
    ];
    assert_eq!(b.complete(SVC, "c1", &done).await.expect("complete"), 0, "c1 holds both");
    assert_eq!(taskback_fields(&*b).await, vec![f(&[("at", "first")]), f(&[("at", "last")])]);
    let pending = b.pending(SVC, StreamKind::Data, WORKER_GROUP, Some("c1"), 1000).await.expect("pending");
    assert_eq!(pending.len(), 398, "both acknowledged, the rest still held");
}

/// The same message twice in one `complete` (the broker must not rely on its caller never
/// doing that): the first is written and acknowledged, the second finds it no longer held.
async fn a_message_finished_twice_in_one_call_is_written_once(b: Arc<dyn BrokerAdmin>) {
    b.prepare(SVC, 1000).await.expect("prepare");
    let sent = add_n(&*b, 2).await;
    assert_eq!(b.read(SVC, "c1", 2, NO_WAIT).await.expect("read").len(), 2);
    let done = vec![
        Completion { id: sent[0].clone(), taskbacks: vec![f(&[("n", "first")])] },
        Completion { id: sent[0].clone(), taskbacks: vec![f(&[("n", "again")])] },
        Completion { id: sent[1].clone(), taskbacks: vec![f(&[("n", "other")])] },
    ];
    assert_eq!(b.complete(SVC, "c1", &done).await.expect("complete"), 1, "the repeat is left alone");
    assert_eq!(taskback_fields(&*b).await, vec![f(&[("n", "first")]), f(&[("n", "other")])]);
    assert!(pending_ids(&*b, Some("c1")).await.is_empty());
}

async fn last_id_and_tail(b: Arc<dyn BrokerAdmin>) {
    assert_eq!(b.last_id(SVC, StreamKind::Taskback).await.expect("last id"), "0-0");
    let first = b.add(SVC, StreamKind::Taskback, &f(&[("a", "1")])).await.expect("add");
    let second = b.add(SVC, StreamKind::Taskback, &f(&[("a", "2")])).await.expect("add");
    assert_eq!(b.last_id(SVC, StreamKind::Taskback).await.expect("last id"), second);
    let after_first = b.tail(SVC, StreamKind::Taskback, &first, 10, NO_WAIT).await.expect("tail");
    assert_eq!(after_first.len(), 1);
    assert_eq!((after_first[0].id.as_str(), after_first[0].fields.clone()), (second.as_str(), f(&[("a", "2")])));
    assert!(b.tail(SVC, StreamKind::Taskback, &second, 10, Duration::from_millis(100)).await.expect("tail").is_empty());
    let waiter = {
        let (b, second) = (b.clone(), second.clone());
        tokio::spawn(async move { b.tail(SVC, StreamKind::Taskback, &second, 10, Duration::from_secs(20)).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let third = b.add(SVC, StreamKind::Taskback, &f(&[("a", "3")])).await.expect("add");
    let got = waiter.await.expect("join").expect("tail");
    assert_eq!(got.iter().map(|e| e.id.clone()).collect::<Vec<_>>(), vec![third]);
}

async fn create_group_and_read_group(b: Arc<dyn BrokerAdmin>) {
    let old = b.add(SVC, StreamKind::Taskback, &f(&[("a", "old")])).await.expect("add");
    b.create_group(SVC, StreamKind::Taskback, "new-only", "$").await.expect("group");
    b.create_group(SVC, StreamKind::Taskback, "everything", "0").await.expect("group");
    b.create_group(SVC, StreamKind::Taskback, "everything", "0").await.expect("creating twice is fine");
    let new = b.add(SVC, StreamKind::Taskback, &f(&[("a", "new")])).await.expect("add");

    let got = b.read_group(SVC, StreamKind::Taskback, "new-only", "x", 10, NO_WAIT).await.expect("read");
    assert_eq!(got.iter().map(|e| e.id.clone()).collect::<Vec<_>>(), vec![new.clone()]);
    let got = b.read_group(SVC, StreamKind::Taskback, "everything", "x", 10, NO_WAIT).await.expect("read");
    assert_eq!(got.iter().map(|e| e.id.clone()).collect::<Vec<_>>(), vec![old.clone(), new.clone()]);
    assert_eq!(got[0].fields, f(&[("a", "old")]));

    let pending = b.pending(SVC, StreamKind::Taskback, "everything", None, 10).await.expect("pending");
    assert_eq!(pending.len(), 2);
    b.ack(SVC, StreamKind::Taskback, "everything", &[old]).await.expect("ack");
    let pending = b.pending(SVC, StreamKind::Taskback, "everything", None, 10).await.expect("pending");
    assert_eq!(pending.iter().map(|p| p.id.clone()).collect::<Vec<_>>(), vec![new]);
    // Groups are independent: the other group still holds its own entry.
    assert_eq!(b.pending(SVC, StreamKind::Taskback, "new-only", None, 10).await.expect("pending").len(), 1);
    let blocked = b.read_group(SVC, StreamKind::Taskback, "new-only", "x", 10, Duration::from_millis(100));
    assert!(blocked.await.expect("read").is_empty());
}

async fn own_pending_is_read_again_after_a_restart(b: Arc<dyn BrokerAdmin>) {
    b.create_group(SVC, StreamKind::Taskback, "g", "$").await.expect("group");
    let first = b.add(SVC, StreamKind::Taskback, &f(&[("n", "1")])).await.expect("add");
    let second = b.add(SVC, StreamKind::Taskback, &f(&[("n", "2")])).await.expect("add");
    // A consumer reads both, handles (acks) the first, then dies.
    let got = b.read_group(SVC, StreamKind::Taskback, "g", "stable", 10, NO_WAIT).await.expect("read");
    assert_eq!(got.len(), 2);
    b.ack(SVC, StreamKind::Taskback, "g", std::slice::from_ref(&first)).await.expect("ack");
    // Restarted under the same name, it gets back exactly what it had not acknowledged.
    let again = b.read_own_pending(SVC, StreamKind::Taskback, "g", "stable", 10).await.expect("own pending");
    assert_eq!(again.iter().map(|e| e.id.clone()).collect::<Vec<_>>(), vec![second.clone()]);
    assert_eq!(again[0].fields, f(&[("n", "2")]));
    // Another consumer's pending entries are not handed out, and new reads skip them.
    assert!(b.read_own_pending(SVC, StreamKind::Taskback, "g", "other", 10).await.expect("own").is_empty());
    assert!(b.read_group(SVC, StreamKind::Taskback, "g", "stable", 10, NO_WAIT).await.expect("read").is_empty());
    b.ack(SVC, StreamKind::Taskback, "g", &[second]).await.expect("ack");
    assert!(b.read_own_pending(SVC, StreamKind::Taskback, "g", "stable", 10).await.expect("own").is_empty());
}

async fn stream_info_and_pending(b: Arc<dyn BrokerAdmin>) {
    let missing = b.stream_info("nothing-here", StreamKind::Data).await.expect("info");
    assert_eq!((missing.length, missing.last_id.as_str(), missing.groups.len()), (0, "0-0", 0));
    b.prepare(SVC, 1000).await.expect("prepare");
    let sent = add_n(&*b, 4).await;
    b.read(SVC, "c1", 3, NO_WAIT).await.expect("read");
    let info = b.stream_info(SVC, StreamKind::Data).await.expect("info");
    assert_eq!(info.length, 4);
    assert_eq!(info.last_id, sent[3]);
    let group = info.groups.iter().find(|g| g.name == WORKER_GROUP).expect("worker group");
    assert_eq!(group.pending, 3);
    assert_eq!(group.last_delivered, sent[2]);
    let c1 = group.consumers.iter().find(|c| c.name == "c1").expect("c1");
    assert_eq!(c1.pending, 3);
    let rows = b.pending(SVC, StreamKind::Data, WORKER_GROUP, None, 2).await.expect("pending");
    assert_eq!(rows.iter().map(|p| p.id.clone()).collect::<Vec<_>>(), sent[..2].to_vec(), "oldest first, bounded");
    assert!(rows.iter().all(|p| p.consumer == "c1" && p.deliveries == 1));
    // The taskback stream gets groups only from the collectors that read it (so a service
    // without collectors does not keep its taskbacks forever).
    let taskback = b.stream_info(SVC, StreamKind::Taskback).await.expect("info");
    assert!(taskback.groups.is_empty(), "{:?}", taskback.groups);
}

async fn streams_are_trimmed_to_about_maxlen(b: Arc<dyn BrokerAdmin>) {
    b.prepare(SVC, 10).await.expect("prepare");
    for i in 0..1000 {
        b.add(SVC, StreamKind::Taskback, &f(&[("i", &i.to_string())])).await.expect("add");
    }
    // A taskback stream no collector reads has no groups: it is trimmed by length alone.
    b.trim(SVC).await.expect("trim");
    let info = b.stream_info(SVC, StreamKind::Taskback).await.expect("info");
    // Approximate trimming: at least maxlen entries stay, far fewer than were added.
    assert!((10..300).contains(&info.length), "length {}", info.length);
    let newest = b.tail(SVC, StreamKind::Taskback, "0-0", 1000, NO_WAIT).await.expect("tail");
    assert_eq!(newest.last().map(|e| e.fields.clone()), Some(f(&[("i", "999")])), "the newest entries are kept");
}

async fn trimming_spares_what_groups_still_need(b: Arc<dyn BrokerAdmin>) {
    b.prepare(SVC, 10).await.expect("prepare");
    let ids = add_n(&*b, 200).await;
    let length =
        |b: Arc<dyn BrokerAdmin>| async move { b.stream_info(SVC, StreamKind::Data).await.expect("info").length };
    // Nothing read yet: all 200 are backlog, far beyond maxlen, and all stay.
    b.trim(SVC).await.expect("trim");
    assert_eq!(length(b.clone()).await, 200);
    // 100 read, the first 60 done: the 40 read-but-unfinished and the 100 unread stay.
    let got = b.read(SVC, "w", 100, NO_WAIT).await.expect("read");
    assert_eq!(got.len(), 100);
    let done: Vec<Completion> =
        ids[..60].iter().map(|id| Completion { id: id.clone(), taskbacks: Vec::new() }).collect();
    b.complete(SVC, "w", &done).await.expect("complete");
    b.trim(SVC).await.expect("trim");
    assert!(length(b.clone()).await >= 140);
    let rest = b.read(SVC, "w", 1000, NO_WAIT).await.expect("read the rest");
    assert_eq!(rest.len(), 100, "no unread entry was trimmed away");
    // Everything done: the next add (embedded) or trim (Redis) brings it back to about maxlen.
    let done: Vec<Completion> =
        ids[60..].iter().map(|id| Completion { id: id.clone(), taskbacks: Vec::new() }).collect();
    b.complete(SVC, "w", &done).await.expect("complete");
    b.add(SVC, StreamKind::Data, &f(&[("i", "last")])).await.expect("add");
    b.trim(SVC).await.expect("trim");
    let left = length(b.clone()).await;
    assert!(left <= 101, "length {left}");
    let unread = b.read(SVC, "w", 10, NO_WAIT).await.expect("read");
    assert_eq!(unread.iter().map(|d| d.fields.clone()).collect::<Vec<_>>(), vec![f(&[("i", "last")])]);
}

fn quota(max_keys: u64, max_bytes: u64) -> KvQuota {
    KvQuota { max_keys, max_bytes, ..KvQuota::default() }
}

async fn kv_get_set_delete_increment_list(b: Arc<dyn BrokerAdmin>) {
    let kv: Arc<dyn KvStore> = b;
    let q = KvQuota::default();
    assert_eq!(kv.kv_get(SVC, "a").await, Ok(None));
    kv.kv_set(SVC, "a", b"one", None, &q).await.expect("set");
    kv.kv_set(SVC, "a", b"\x00bytes\xff", None, &q).await.expect("overwrite");
    assert_eq!(kv.kv_get(SVC, "a").await, Ok(Some(b"\x00bytes\xff".to_vec())), "values are bytes");
    assert_eq!(kv.kv_increment(SVC, "n", 5, &q).await, Ok(5));
    assert_eq!(kv.kv_increment(SVC, "n", -7, &q).await, Ok(-2));
    assert_eq!(kv.kv_get(SVC, "n").await, Ok(Some(b"-2".to_vec())));
    assert!(matches!(kv.kv_increment(SVC, "a", 1, &q).await, Err(KvFailure::NotANumber(_))));
    kv.kv_set(SVC, "big", i64::MAX.to_string().as_bytes(), None, &q).await.expect("set");
    assert!(matches!(kv.kv_increment(SVC, "big", 1, &q).await, Err(KvFailure::NotANumber(_))), "overflow");
    for key in ["user:b", "user:a", "user:c", "other"] {
        kv.kv_set(SVC, key, b"x", None, &q).await.expect("set");
    }
    assert_eq!(kv.kv_list(SVC, "user:", 10).await, Ok(vec!["user:a".into(), "user:b".into(), "user:c".into()]));
    assert_eq!(kv.kv_list(SVC, "user:", 2).await, Ok(vec!["user:a".into(), "user:b".into()]), "bounded");
    assert_eq!(kv.kv_list(SVC, "", 3).await, Ok(vec!["a".into(), "big".into(), "n".into()]), "sorted");
    assert_eq!(kv.kv_delete(SVC, "a").await, Ok(true));
    assert_eq!(kv.kv_delete(SVC, "a").await, Ok(false));
    assert_eq!(kv.kv_get(SVC, "a").await, Ok(None));
}

async fn kv_ttl_expires(b: Arc<dyn BrokerAdmin>) {
    let kv: Arc<dyn KvStore> = b;
    let q = quota(2, 1 << 20);
    kv.kv_set(SVC, "t", b"soon gone", Some(Duration::from_millis(300)), &q).await.expect("set");
    kv.kv_set(SVC, "keep", b"stays", None, &q).await.expect("set");
    assert_eq!(kv.kv_get(SVC, "t").await, Ok(Some(b"soon gone".to_vec())));
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(kv.kv_get(SVC, "t").await, Ok(None));
    assert_eq!(kv.kv_list(SVC, "", 10).await, Ok(vec!["keep".into()]));
    // The expired key no longer counts against max_keys = 2.
    kv.kv_set(SVC, "another", b"fits", None, &q).await.expect("expired keys free their quota");
    // Setting without a TTL removes an earlier one.
    kv.kv_delete(SVC, "another").await.expect("delete");
    kv.kv_set(SVC, "p", b"1", Some(Duration::from_millis(200)), &q).await.expect("set");
    kv.kv_set(SVC, "p", b"2", None, &q).await.expect("set");
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(kv.kv_get(SVC, "p").await, Ok(Some(b"2".to_vec())));
}

/// Issue 13.6: a `ttl-ms` up to `u64::MAX` gets the same answer on both brokers: accepted,
/// clamped to `broker::MAX_KV_TTL`, the key readable (Redis used to refuse it as unavailable).
async fn kv_huge_ttl_is_clamped(b: Arc<dyn BrokerAdmin>) {
    let kv: Arc<dyn KvStore> = b;
    let q = quota(10, 1 << 20);
    for (key, ms) in [("max", u64::MAX), ("i64", i64::MAX as u64), ("2^53", 1 << 53), ("cap", 1 << 42)] {
        let set = kv.kv_set(SVC, key, b"v", Some(Duration::from_millis(ms)), &q).await;
        assert_eq!(set, Ok(()), "ttl of {ms} ms");
        assert_eq!(kv.kv_get(SVC, key).await, Ok(Some(b"v".to_vec())), "ttl of {ms} ms");
    }
    assert_eq!(broker::kv_ttl_ms(Duration::from_millis(u64::MAX)), broker::MAX_KV_TTL.as_millis() as u64);
    assert_eq!(kv.kv_list(SVC, "", 10).await.map(|k| k.len()), Ok(4));
}

async fn kv_quotas(b: Arc<dyn BrokerAdmin>) {
    let kv: Arc<dyn KvStore> = b;
    let q = quota(2, 20);
    kv.kv_set(SVC, "k1", b"12345", None, &q).await.expect("set");
    kv.kv_set(SVC, "k2", b"12345", None, &q).await.expect("set");
    assert!(matches!(kv.kv_set(SVC, "k3", b"1", None, &q).await, Err(KvFailure::QuotaExceeded(_))), "max_keys");
    assert!(matches!(kv.kv_increment(SVC, "k3", 1, &q).await, Err(KvFailure::QuotaExceeded(_))), "max_keys");
    assert_eq!(kv.kv_get(SVC, "k3").await, Ok(None), "a refused write leaves nothing behind");
    kv.kv_set(SVC, "k1", b"1234567", None, &q).await.expect("overwriting within max_bytes (9 + 7 = 16)");
    let refused = kv.kv_set(SVC, "k1", b"123456789012345", None, &q).await;
    assert!(matches!(refused, Err(KvFailure::QuotaExceeded(ref m)) if m.contains("max_bytes")), "{refused:?}");
    assert_eq!(kv.kv_get(SVC, "k1").await, Ok(Some(b"1234567".to_vec())), "unchanged after a refusal");
    kv.kv_delete(SVC, "k2").await.expect("delete");
    kv.kv_set(SVC, "k3", b"1", None, &q).await.expect("a delete frees a key");
}

async fn kv_is_scoped_per_service(b: Arc<dyn BrokerAdmin>) {
    let kv: Arc<dyn KvStore> = b;
    let q = KvQuota::default();
    kv.kv_set("one", "shared", b"1", None, &q).await.expect("set");
    kv.kv_set("two", "shared", b"2", None, &q).await.expect("set");
    assert_eq!(kv.kv_get("one", "shared").await, Ok(Some(b"1".to_vec())));
    assert_eq!(kv.kv_get("two", "shared").await, Ok(Some(b"2".to_vec())));
    assert_eq!(kv.kv_list("one", "", 10).await, Ok(vec!["shared".into()]));
    kv.kv_delete("one", "shared").await.expect("delete");
    assert_eq!(kv.kv_get("two", "shared").await, Ok(Some(b"2".to_vec())));
}

/// Redis undoes no script that fails halfway. When one entry of a finish batch cannot be
/// added (here an entry with no fields, which `XADD` refuses; the host never sends one, every
/// taskback has `cannon.id`), the messages before it are written and acknowledged, that one
/// and the ones after are neither, and the retry writes each of those once and nothing twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_a_finish_that_fails_halfway_keeps_what_it_wrote_and_writes_nothing_twice() {
    let fixture = redis_fixture().await;
    let b = fixture.broker.clone();
    b.prepare(SVC, 1000).await.expect("prepare");
    let sent = add_n(&*b, 4).await;
    assert_eq!(b.read(SVC, "c1", 4, NO_WAIT).await.expect("read").len(), 4);
    let taskback = |i: usize| vec![f(&[("n", &i.to_string())])];
    let mut done: Vec<Completion> =
        (0..4).map(|i| Completion { id: sent[i].clone(), taskbacks: taskback(i) }).collect();
    done[2].taskbacks = vec![Vec::new()];
    let err = b.complete(SVC, "c1", &done).await.expect_err("XADD refuses an entry without fields");
    assert!(err.to_string().contains("args"), "Redis's own refusal comes back: {err}");
    let written = |entries: Vec<broker::Entry>| -> Vec<String> {
        entries.into_iter().map(|e| e.fields.into_iter().map(|(_, v)| v).collect::<Vec<_>>().join(",")).collect()
    };
    let taskbacks = b.tail(SVC, StreamKind::Taskback, "0-0", 10, NO_WAIT).await.expect("tail");
    assert_eq!(written(taskbacks), ["0", "1"], "the two before the failure are written");
    assert_eq!(pending_ids(&*b, Some("c1")).await, sent[2..], "and acknowledged; the failed one and the next are not");
    done[2].taskbacks = taskback(2);
    assert_eq!(b.complete(SVC, "c1", &done).await.expect("retry"), 2, "0 and 1 are no longer held: left alone");
    let taskbacks = b.tail(SVC, StreamKind::Taskback, "0-0", 10, NO_WAIT).await.expect("tail");
    assert_eq!(written(taskbacks), ["0", "1", "2", "3"], "each written once");
    assert!(pending_ids(&*b, Some("c1")).await.is_empty());
}
