//! `cannon-host bench SERVICE [-n N] [--concurrency C] [--rate R | --drain] [--json]`: drives
//! the real broker and the service's real workers in this process, and measures throughput,
//! latency (message added -> its taskback read), peak memory and where a message's time goes
//! (broker read, instantiate, call, merge, write).
//!
//! By default the workers start first and messages are added while they run. `--drain` adds
//! all N messages first, then starts the workers, and times from the first answer to the
//! last: the way task-queue peers are usually measured.
//!
//! The run uses a namespace of its own (`{namespace}-bench-{pid}`; for the embedded broker
//! also a temporary data directory), so it neither sees nor disturbs the service's real
//! streams, and removes its streams when done.

use std::collections::{HashMap, HashSet};
use std::io::Write as _;
use std::process::ExitCode;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;

use crate::broker::{BrokerAdmin, Fields, StreamKind};
use crate::cli::{Cli, connect, one_service};
use crate::engine::metrics;
use crate::fields::host_id;
use crate::worker::stages::{STAGES, StagesSnapshot};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The service to benchmark (its tasks must produce results: each message needs a taskback).
    pub service: String,
    /// Messages to send.
    #[arg(short = 'n', long, default_value_t = 10_000)]
    pub messages: usize,
    /// Messages processed at once (default: the service's `workers.concurrency`).
    #[arg(long)]
    pub concurrency: Option<usize>,
    /// Open loop: add this many messages per second (default: as fast as the broker takes them).
    #[arg(long, value_name = "PER_SECOND")]
    pub rate: Option<f64>,
    /// Fields of every message, `key=value` (default `text=hello world`).
    #[arg(long = "field", value_name = "KEY=VALUE")]
    pub fields: Vec<String>,
    /// Queue all messages first, then start the workers; throughput is timed from the
    /// first answer to the last.
    #[arg(long, conflicts_with = "rate")]
    pub drain: bool,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Send instants by message id, and the latencies measured so far.
#[derive(Default)]
struct Clock {
    sent: HashMap<String, Instant>,
    latencies: Vec<Duration>,
    /// Taskbacks whose id was not (yet) recorded as sent: matched when the id shows up.
    early: HashMap<String, Instant>,
    /// Messages whose (first) taskback was seen.
    answered: HashSet<String>,
    /// When the first and the last answer were read.
    first: Option<Instant>,
    last: Option<Instant>,
}

impl Clock {
    fn sent(&mut self, id: String, at: Instant) {
        match self.early.remove(&id) {
            Some(done) => self.latencies.push(done.saturating_duration_since(at)),
            None => {
                self.sent.insert(id, at);
            }
        }
    }

    /// Records the first taskback of message `id`; `false` for any later one (a task's
    /// extra taskbacks), which neither counts nor measures anything.
    fn answered(&mut self, id: String, at: Instant) -> bool {
        if !self.answered.insert(id.clone()) {
            return false;
        }
        if self.first.is_none() {
            self.first = Some(at);
        }
        self.last = Some(at);
        match self.sent.remove(&id) {
            Some(sent) => self.latencies.push(at.saturating_duration_since(sent)),
            None => {
                self.early.insert(id, at);
            }
        }
        true
    }
}

fn lock(clock: &Mutex<Clock>) -> std::sync::MutexGuard<'_, Clock> {
    clock.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Peak and current resident memory of this process, in MiB.
fn rss_mb() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kb = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (kb("VmHWM:") / 1024.0, kb("VmRSS:") / 1024.0)
}

/// CPU time (user + system) this process has used so far; zero where `/proc` has no answer.
fn cpu_time() -> Duration {
    // Fields 14 and 15 of /proc/self/stat, in clock ticks; the name (field 2) may hold
    // spaces, so count from the closing parenthesis.
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let rest = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let ticks: u64 = rest.split_whitespace().skip(11).take(2).filter_map(|n| n.parse::<u64>().ok()).sum();
    // USER_HZ, the unit of these fields, is 100 on every architecture Linux exports it for.
    Duration::from_millis(ticks.saturating_mul(10))
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)].as_secs_f64() * 1000.0
}

pub async fn run(cli: &Cli, args: &Args) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(args.messages > 0, "-n must be at least 1");
    let (mut compose, mut spec) = one_service(cli, &args.service)?;
    if let Some(concurrency) = args.concurrency {
        anyhow::ensure!(concurrency > 0, "--concurrency must be at least 1");
        spec.workers.concurrency = concurrency;
    }
    spec.collectors.clear();
    compose.namespace = format!("{}-bench-{}", compose.namespace, std::process::id());
    let scratch = std::env::temp_dir().join(format!("cannon-bench-{}", std::process::id()));
    compose.data_dir = scratch.clone();
    let fields: Fields = if args.fields.is_empty() {
        vec![("text".to_owned(), "hello world".to_owned())]
    } else {
        args.fields
            .iter()
            .map(|pair| {
                let (k, v) = pair.split_once('=').with_context(|| format!("--field {pair:?} is not KEY=VALUE"))?;
                Ok((k.to_owned(), v.to_owned()))
            })
            .collect::<anyhow::Result<_>>()?
    };

    let broker = connect(cli, &compose).await?;
    let outcome = measure(&compose, &spec, broker.clone(), &fields, args).await;
    if let Err(err) = broker.drop_service(&spec.name).await {
        tracing::warn!(error = %err, "cannot remove the benchmark's streams");
    }
    drop(broker);
    let _ = std::fs::remove_dir_all(&scratch);
    let report = outcome?;
    if args.json {
        println!("{}", report.json());
    } else {
        report.print();
    }
    Ok(ExitCode::SUCCESS)
}

struct Report {
    broker: String,
    messages: usize,
    concurrency: usize,
    rate: Option<f64>,
    drain: bool,
    /// Adding the messages (drain mode only).
    enqueue: Duration,
    /// From starting the workers to the first answer (drain mode only).
    first_answer: Duration,
    elapsed: Duration,
    latencies: Vec<Duration>,
    rss_peak_mb: f64,
    rss_mb: f64,
    calls: u64,
    failed: u64,
    instantiate_us: f64,
    call_us: f64,
    /// Waiting for a seat before the call (`engine/runners.rs`).
    wait_us: f64,
    /// Most calls alive at once (each holds a pool slot).
    live_peak: u64,
    read_us: f64,
    merge_us: f64,
    write_us: f64,
    /// Process CPU time per message (the benchmark's own producer and reader included).
    cpu_us: f64,
}

async fn measure(
    compose: &crate::config::Compose,
    spec: &crate::config::Service,
    broker: Arc<dyn BrokerAdmin>,
    fields: &Fields,
    args: &Args,
) -> anyhow::Result<Report> {
    let name = spec.name.clone();
    let options = crate::runner::Options {
        role: crate::runner::Role::Worker,
        compiler: crate::cli::sandboxed_compiler()?,
        consumer_suffix: "bench".to_owned(),
        min_maxlen: args.messages as u64 * 2,
        metrics: None,
        ..crate::runner::Options::default()
    };
    let shutdown = CancellationToken::new();
    let clock = Arc::new(Mutex::new(Clock::default()));
    let mut enqueue = Duration::ZERO;
    if args.drain {
        // The stream must keep every message until the workers come.
        broker.prepare(&name, options.min_maxlen).await?;
        let adding = Instant::now();
        produce(broker.clone(), name.clone(), fields.clone(), args.messages, None, clock.clone()).await?;
        enqueue = adding.elapsed();
        if !args.json {
            eprintln!("  {} messages queued in {:.2} s; starting the workers", args.messages, enqueue.as_secs_f64());
        }
    }
    STAGES.measure();
    let before = (metrics::snapshot(), STAGES.snapshot(), cpu_time());
    let starting = Instant::now();
    let workers = crate::runner::start(compose, &[spec], broker.clone(), &options, shutdown.clone()).await?;
    // Drain mode counts from starting the workers; otherwise from the first add, once
    // the workers run.
    let started = if args.drain { starting } else { Instant::now() };
    let producer = (!args.drain).then(|| {
        tokio::spawn(produce(broker.clone(), name.clone(), fields.clone(), args.messages, args.rate, clock.clone()))
    });

    let done = read_answers(&*broker, &name, &clock, args, started).await?;
    let mut elapsed = started.elapsed();
    let cpu = cpu_time().saturating_sub(before.2);
    if !args.json {
        eprintln!("\r  {done}/{} taskbacks{}", args.messages, " ".repeat(24));
    }
    if let Some(producer) = producer {
        producer.await.context("producer panicked")??;
    }
    let (first, last) = {
        let clock = lock(&clock);
        (clock.first.unwrap_or(started), clock.last.unwrap_or(started))
    };
    let first_answer = first.saturating_duration_since(started);
    if args.drain {
        elapsed = last.saturating_duration_since(first);
    }
    let (rss_peak_mb, rss_mb) = rss_mb();
    shutdown.cancel();
    anyhow::ensure!(workers.wait().await, "the benchmark's workers failed (see the log above)");
    let after = metrics::snapshot();
    let stages = STAGES.snapshot().since(&before.1);
    let before = before.0;
    let calls = after.calls.saturating_sub(before.calls);
    let per_call = |total: Duration| if calls == 0 { 0.0 } else { total.as_secs_f64() * 1e6 / calls as f64 };
    let instantiate = after.instantiate.saturating_sub(before.instantiate);
    let wall = after.wall.saturating_sub(before.wall);
    let mut latencies = std::mem::take(&mut lock(&clock).latencies);
    latencies.sort_unstable();
    Ok(Report {
        broker: broker.describe(),
        messages: args.messages,
        concurrency: spec.workers.concurrency,
        rate: args.rate,
        drain: args.drain,
        enqueue,
        first_answer,
        elapsed,
        latencies,
        rss_peak_mb,
        rss_mb,
        calls,
        failed: after.failed().saturating_sub(before.failed()),
        instantiate_us: per_call(instantiate),
        call_us: per_call(wall.saturating_sub(instantiate)),
        wait_us: per_call(after.waited.saturating_sub(before.waited)),
        live_peak: after.live_peak,
        read_us: StagesSnapshot::per_msg_us(stages.read, stages.read_msgs),
        merge_us: StagesSnapshot::per_msg_us(stages.merge, stages.merge_msgs),
        write_us: StagesSnapshot::per_msg_us(stages.write, stages.write_msgs),
        cpu_us: StagesSnapshot::per_msg_us(cpu, args.messages as u64),
    })
}

/// Reads taskbacks until every message has one, timing each message's first; fails when
/// the rest went to dead letters or nothing came for 10 s. Returns how many were answered.
async fn read_answers(
    broker: &dyn BrokerAdmin,
    name: &str,
    clock: &Mutex<Clock>,
    args: &Args,
    started: Instant,
) -> anyhow::Result<usize> {
    let mut after = "0-0".to_owned();
    let mut done = 0usize;
    let mut last_progress = Instant::now();
    let mut last_answer = Instant::now();
    while done < args.messages {
        let entries = broker.tail(name, StreamKind::Taskback, &after, 1000, Duration::from_millis(200)).await?;
        let now = Instant::now();
        let quiet = now.duration_since(last_answer);
        let dead = if entries.is_empty() && quiet > Duration::from_millis(500) {
            broker.stream_info(name, StreamKind::Dead).await.map(|i| i.length).unwrap_or(0)
        } else {
            0
        };
        if dead > 0 && done + dead as usize >= args.messages || quiet > Duration::from_secs(10) {
            anyhow::bail!(
                "{done} of {} messages answered, {dead} dead letters: does every message of \
                 service {name:?} produce results? (--field sets the message's fields)",
                args.messages
            );
        }
        {
            let mut clock = lock(clock);
            for entry in &entries {
                // Only the host-written id counts, and only a message's first taskback.
                if let Some(id) = host_id(&entry.fields)
                    && clock.answered(id.to_owned(), now)
                {
                    done += 1;
                }
            }
        }
        if let Some(last) = entries.last() {
            after = last.id.clone();
            last_answer = now;
        }
        if !args.json && now.duration_since(last_progress) >= Duration::from_millis(250) {
            last_progress = now;
            let rate = done as f64 / started.elapsed().as_secs_f64();
            eprint!("\r  {done}/{} taskbacks, {rate:.0} msg/s   ", args.messages);
            let _ = std::io::stderr().flush();
        }
    }
    Ok(done)
}

/// Adds `n` messages: as fast as the broker takes them (up to 256 adds in flight), or at
/// `rate` per second.
async fn produce(
    broker: Arc<dyn BrokerAdmin>,
    service: String,
    fields: Fields,
    n: usize,
    rate: Option<f64>,
    clock: Arc<Mutex<Clock>>,
) -> anyhow::Result<()> {
    let mut inflight = tokio::task::JoinSet::new();
    let mut ticker = rate.map(|r| {
        let mut interval = tokio::time::interval(Duration::from_secs_f64(1.0 / r.max(0.001)));
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        interval
    });
    for _ in 0..n {
        match ticker.as_mut() {
            Some(ticker) => {
                ticker.tick().await;
            }
            None => {
                while inflight.len() >= 256 {
                    if let Some(joined) = inflight.join_next().await {
                        joined.context("add panicked")??;
                    }
                }
            }
        }
        let (broker, service, fields, clock) = (broker.clone(), service.clone(), fields.clone(), clock.clone());
        inflight.spawn(async move {
            let at = Instant::now();
            let id = broker.add(&service, StreamKind::Data, &fields).await?;
            lock(&clock).sent(id, at);
            anyhow::Ok(())
        });
    }
    while let Some(joined) = inflight.join_next().await {
        joined.context("add panicked")??;
    }
    Ok(())
}

impl Report {
    /// Messages per second: all of them over the whole run, or in drain mode the ones
    /// after the first over the time from the first answer to the last.
    fn msgs_per_s(&self) -> f64 {
        let counted = if self.drain { self.messages.saturating_sub(1).max(1) } else { self.messages };
        counted as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    fn json(&self) -> serde_json::Value {
        let p = |q| (percentile(&self.latencies, q) * 1000.0).round() / 1000.0;
        serde_json::json!({
            "msgs_per_s": self.msgs_per_s().round(),
            "p50_ms": p(50.0),
            "p90_ms": p(90.0),
            "p99_ms": p(99.0),
            "max_ms": p(100.0),
            "rss_mb": (self.rss_peak_mb * 10.0).round() / 10.0,
            "instantiate_us": (self.instantiate_us * 10.0).round() / 10.0,
            "call_us": (self.call_us * 10.0).round() / 10.0,
            "wait_us": (self.wait_us * 10.0).round() / 10.0,
            "live_peak": self.live_peak,
            "read_us": (self.read_us * 10.0).round() / 10.0,
            "merge_us": (self.merge_us * 10.0).round() / 10.0,
            "write_us": (self.write_us * 10.0).round() / 10.0,
            "cpu_us": (self.cpu_us * 10.0).round() / 10.0,
            "drain": self.drain,
            "enqueue_s": (self.enqueue.as_secs_f64() * 1000.0).round() / 1000.0,
            "first_answer_s": (self.first_answer.as_secs_f64() * 1000.0).round() / 1000.0,
            "messages": self.messages,
            "concurrency": self.concurrency,
            "rate": self.rate,
            "calls": self.calls,
            "failed_calls": self.failed,
            "broker": self.broker,
        })
    }

    fn print(&self) {
        let p = |q| percentile(&self.latencies, q);
        let load = match self.rate {
            Some(rate) => format!("open loop at {rate} msg/s"),
            None if self.drain => "drain (queued first, timed first to last answer)".to_owned(),
            None => "as fast as possible".to_owned(),
        };
        println!("{} messages, {load}, concurrency {}, broker {}", self.messages, self.concurrency, self.broker);
        println!("  throughput      {:>10.0} msg/s  ({:.2} s)", self.msgs_per_s(), self.elapsed.as_secs_f64());
        println!("  latency (ms)    p50 {:.3}  p90 {:.3}  p99 {:.3}  max {:.3}", p(50.0), p(90.0), p(99.0), p(100.0));
        if self.drain {
            println!(
                "  drain           queued in {:.2} s, first answer {:.3} s after the workers started",
                self.enqueue.as_secs_f64(),
                self.first_answer.as_secs_f64()
            );
        }
        println!(
            "  per message µs  read {:.1} | wait for a seat {:.1} | instantiate {:.1} | call {:.1} | merge {:.1} | write {:.1}",
            self.read_us, self.wait_us, self.instantiate_us, self.call_us, self.merge_us, self.write_us
        );
        println!("  process CPU     {:.1} µs per message (this benchmark's producer and reader included)", self.cpu_us);
        println!(
            "  memory          peak RSS {:.1} MiB (now {:.1} MiB); at most {} calls alive at once",
            self.rss_peak_mb, self.rss_mb, self.live_peak
        );
        if self.failed > 0 {
            println!("  failed calls    {} of {}", self.failed, self.calls);
        }
    }
}
