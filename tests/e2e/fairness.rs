//! Per-sender fairness of a service, on both brokers: `workers.order_by` (one message at
//! a time per user, users in parallel) and `rate_limit` (flood protection counted in the
//! broker).

use std::sync::Arc;
use std::time::{Duration, Instant};

use cannon_host::broker::{BrokerAdmin, StreamKind};
use cannon_host::config::KvQuota;

use crate::conformance::Backend;
use crate::support::{Project, RedisServer, Running, component};

type Fields = Vec<(String, String)>;

fn get<'a>(fields: &'a Fields, key: &str) -> Option<&'a str> {
    fields.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

/// Adds `messages` to `service`'s data stream through the library, as another process would.
async fn add(broker: &Arc<dyn BrokerAdmin>, service: &str, messages: &[Fields]) {
    broker.prepare(service, 100_000).await.expect("prepare");
    for fields in messages {
        broker.add(service, StreamKind::Data, fields).await.expect("add");
    }
}

/// The first `n` taskbacks of `service`, in stream order (failing after 60 s).
async fn taskbacks(broker: &Arc<dyn BrokerAdmin>, service: &str, n: usize, host: &Running) -> Vec<Fields> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let found = broker.tail(service, StreamKind::Taskback, "0-0", n + 100, Duration::ZERO).await.expect("tail");
        if found.len() >= n {
            return found.into_iter().map(|e| e.fields).collect();
        }
        assert!(Instant::now() < deadline, "{} of {n} taskbacks within 60 s:\n{}", found.len(), host.log_text());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn msg(pairs: &[(&str, &str)]) -> Fields {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

/// Three users' messages interleaved; ann's first one is slow (`ms`), the rest are quick.
/// Returns the replies (`text`, upper-cased by `slow`) in the order they were written.
async fn interleaved(backend: Backend, project: &Project) -> Vec<String> {
    let plan = [
        ("ann", "1500", "a1"),
        ("bob", "0", "b1"),
        ("cy", "0", "c1"),
        ("ann", "0", "a2"),
        ("bob", "300", "b2"),
        ("cy", "0", "c2"),
        ("ann", "0", "a3"),
        ("bob", "0", "b3"),
        ("cy", "0", "c3"),
    ];
    let messages: Vec<Fields> =
        plan.iter().map(|(user, ms, text)| msg(&[("user", user), ("ms", ms), ("text", text)])).collect();
    let broker = backend.open().await;
    // Added before the worker starts, so it reads them all in one batch.
    add(&broker, "slow", &messages).await;
    let mut host = Running::start_cmd(backend.host(project), project, &["slow"]);
    host.wait_for_log("ready", Duration::from_secs(60));
    let replies = taskbacks(&broker, "slow", plan.len(), &host).await;
    assert!(host.terminate().success(), "{}", host.log_text());
    replies.iter().map(|t| get(t, "text").unwrap_or_default().to_owned()).collect()
}

fn slow_project(order_by: &str) -> Project {
    component("slow");
    Project::new(&format!(
        "services:\n  slow:\n    tasks: [ {{ file: slow }} ]\n    workers: {{ concurrency: 16{order_by} }}\n    limits: {{ timeout_ms: 10000 }}\n"
    ))
}

fn position(replies: &[String], text: &str) -> usize {
    replies.iter().position(|r| r == text).unwrap_or_else(|| panic!("no reply {text:?} in {replies:?}"))
}

async fn order_by_user(backend: impl FnOnce(&Project) -> Backend) {
    let project = slow_project(", order_by: user");
    let replies = interleaved(backend(&project), &project).await;
    for user in ["A", "B", "C"] {
        let mine: Vec<String> = replies.iter().filter(|r| r.starts_with(user)).cloned().collect();
        assert_eq!(mine, [format!("{user}1"), format!("{user}2"), format!("{user}3")], "{replies:?}");
    }
    // Users run in parallel: bob's and cy's quick messages, read after ann's slow first one,
    // were answered while it ran.
    assert!(position(&replies, "A1") > position(&replies, "C3"), "{replies:?}");
    assert!(position(&replies, "B1") < position(&replies, "B2"), "{replies:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn order_by_keeps_each_users_order_with_redis() {
    order_by_user(|_| Backend::Redis(RedisServer::start())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn order_by_keeps_each_users_order_embedded() {
    order_by_user(Backend::embedded).await;
}

/// The control: without `order_by`, ann's quick second message overtakes her slow first one
/// (what `order_by` prevents above).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_order_by_a_quick_message_overtakes() {
    let project = slow_project("");
    let replies = interleaved(Backend::Redis(RedisServer::start()), &project).await;
    assert!(position(&replies, "A2") < position(&replies, "A1"), "{replies:?}");
}

/// A message being retried still holds back the later ones of its user: ann's first message
/// fails once (`flaky`, retried after a backoff); her later ones, which succeed at once,
/// wait for it, while bob's is answered meanwhile.
async fn order_by_holds_through_retries(backend: impl FnOnce(&Project) -> Backend) {
    component("flaky");
    let project = Project::new(
        "services:\n  flaky:\n    tasks: [ { file: flaky, allow: [kv], conf: { kwargs: { fail_times: \"1\" } } } ]\n    workers: { concurrency: 16, order_by: user }\n    retry: { backoff_ms: 500 }\n",
    );
    let backend = backend(&project);
    let broker = backend.open().await;
    // `flaky` counts attempts per `key`: messages keyed `warm` have had their failure.
    broker.kv_increment("flaky", "attempts:warm", 1, &KvQuota::default()).await.expect("kv");
    let plan = [("ann", "cold", "a1"), ("ann", "warm", "a2"), ("bob", "warm", "b1"), ("ann", "warm", "a3")];
    let messages: Vec<Fields> =
        plan.iter().map(|(user, key, text)| msg(&[("user", user), ("key", key), ("text", text)])).collect();
    add(&broker, "flaky", &messages).await;
    let mut host = Running::start_cmd(backend.host(&project), &project, &["flaky"]);
    host.wait_for_log("ready", Duration::from_secs(60));
    let replies: Vec<String> = taskbacks(&broker, "flaky", plan.len(), &host)
        .await
        .iter()
        .map(|t| format!("{}@{}", get(t, "text").unwrap_or_default(), get(t, "attempt").unwrap_or_default()))
        .collect();
    assert!(host.terminate().success(), "{}", host.log_text());
    assert_eq!(
        replies.iter().filter(|r| r.starts_with('A')).collect::<Vec<_>>(),
        ["A1@2", "A2@3", "A3@4"],
        "{replies:?}"
    );
    assert_eq!(replies[0], "B1@2", "bob's message did not wait for ann's retry: {replies:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn order_by_holds_through_retries_with_redis() {
    order_by_holds_through_retries(|_| Backend::Redis(RedisServer::start())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn order_by_holds_through_retries_embedded() {
    order_by_holds_through_retries(Backend::embedded).await;
}

/// `rate_limit: {per: user, max: 3, every: 1h}` across two worker processes one after the
/// other: the second sees what the first counted. ann's six messages give three runs, one
/// polite refusal and two silent acknowledgements; bob, under the limit, is not affected;
/// nothing stays pending.
async fn rate_limit_per_user(backend: impl FnOnce(&Project) -> Backend) {
    component("echo");
    let project = Project::new(
        "services:\n  limited:\n    tasks: [ { file: echo, conf: { kwargs: { ran: \"yes\" } } } ]\n    rate_limit: { per: user, max: 3, every: 1h }\n",
    );
    let backend = backend(&project);
    let broker = backend.open().await;
    let batch = |users: &[&str], from: usize| -> Vec<Fields> {
        users.iter().enumerate().map(|(i, u)| msg(&[("user", u), ("text", &format!("m{}", from + i))])).collect()
    };
    let mut first = Running::start_cmd(backend.host(&project), &project, &["limited"]);
    first.wait_for_log("ready", Duration::from_secs(60));
    add(&broker, "limited", &batch(&["ann", "bob", "ann"], 0)).await;
    taskbacks(&broker, "limited", 3, &first).await;
    assert!(first.terminate().success(), "{}", first.log_text());

    let mut second = Running::start_cmd(backend.host(&project), &project, &["limited"]);
    second.wait_for_log("ready", Duration::from_secs(60));
    add(&broker, "limited", &batch(&["ann", "ann", "bob", "ann", "ann"], 3)).await;
    // ann: 3 runs and 1 refusal; bob: 2 runs.
    let replies = taskbacks(&broker, "limited", 6, &second).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !broker.pending("limited", StreamKind::Data, "cannon", None, 100).await.expect("pending").is_empty() {
        assert!(Instant::now() < deadline, "messages still pending:\n{}", second.log_text());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let ran =
        |user: &str| replies.iter().filter(|t| get(t, "user") == Some(user) && get(t, "ran") == Some("yes")).count();
    assert_eq!((ran("ann"), ran("bob")), (3, 2), "{replies:#?}");
    let refusals: Vec<&Fields> = replies.iter().filter(|t| get(t, "ran").is_none()).collect();
    assert_eq!(refusals.len(), 1, "{replies:#?}");
    assert_eq!(get(refusals[0], "user"), Some("ann"));
    let text = get(refusals[0], "text").unwrap_or_default();
    assert!(text.starts_with("rate limit: at most 3 messages per 1h per user; try again in "), "{text}");
    // Nothing more comes: the two messages over the limit were acknowledged silently.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let all = broker.tail("limited", StreamKind::Taskback, "0-0", 100, Duration::ZERO).await.expect("tail");
    assert_eq!(all.len(), 6, "{all:#?}");
    assert!(second.terminate().success(), "{}", second.log_text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_per_user_across_workers_with_redis() {
    rate_limit_per_user(|_| Backend::Redis(RedisServer::start())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_per_user_across_workers_embedded() {
    rate_limit_per_user(Backend::embedded).await;
}

/// The broker's counters: one window per bucket, starting with its first message, ending
/// after `window` (then counting restarts); buckets and services count apart.
async fn rate_windows(backend: impl FnOnce(&Project) -> Backend) {
    let project = Project::new("services:\n  s:\n    collector: { kind: stdin }\n");
    let backend = backend(&project);
    let broker = backend.open().await;
    let window = Duration::from_millis(1500);
    let first = broker.rate_count("s", "user=ann", window).await.expect("count");
    assert_eq!(first.count, 1);
    assert!(first.left_ms <= 1500 && first.left_ms > 0, "{first:?}");
    assert_eq!(broker.rate_count("s", "user=ann", window).await.expect("count").count, 2);
    assert_eq!(broker.rate_count("s", "user=bob", window).await.expect("count").count, 1);
    assert_eq!(broker.rate_count("t", "user=ann", window).await.expect("count").count, 1);
    tokio::time::sleep(Duration::from_millis(1600)).await;
    assert_eq!(broker.rate_count("s", "user=ann", window).await.expect("count").count, 1, "a new window");
}

#[tokio::test]
async fn rate_windows_with_redis() {
    rate_windows(|_| Backend::Redis(RedisServer::start())).await;
}

#[tokio::test]
async fn rate_windows_embedded() {
    rate_windows(Backend::embedded).await;
}
