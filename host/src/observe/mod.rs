//! Observability: Prometheus metrics and a live dashboard, served by `run --metrics ADDR`
//! (or `metrics: {listen: ADDR}` in the compose file).
//!
//! Every metric lives in one process-wide registry ([`registry`]). The hot paths hold
//! handles resolved once per service, component or collector ([`service`], [`component`],
//! [`collector`]), so counting a message or a call is a few relaxed atomic operations with
//! no label lookup. Broker-side gauges (pending, stream lengths, dead letters) are sampled
//! every [`SAMPLE_EVERY`] by [`serve::sample_loop`], which also keeps the short history the
//! dashboard draws.
//!
//! ## Layout
//! - `mod.rs`: the registry and the handles the worker, engine and collectors call.
//! - `hist.rs`: a lock-free fixed-bucket histogram readable for percentiles.
//! - `serve.rs`: the listener (`/metrics`, `/api/status`, `/`), the broker sampler.
//! - `dashboard.html`: the dashboard page, embedded in the binary.
//! - `trace.rs`: W3C trace context on messages, spans exported over OTLP/HTTP.

mod hist;
pub mod serve;
pub mod trace;

use std::collections::VecDeque;
use std::sync::{Arc, LazyLock, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::engine::{CallStats, FailureKind};
pub use hist::{Counts, Hist};

/// How often the broker-side gauges are sampled and the dashboard's history grows.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(2);
/// Latest dead letters kept per service for the dashboard.
const RECENT_ERRORS: usize = 10;
/// Longest error text kept for the dashboard, bytes.
const ERROR_TEXT_MAX: usize = 500;

type Labels = Vec<(&'static str, String)>;
type HistFamily = Family<Labels, Hist, fn() -> Hist>;

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The process-wide metrics.
pub struct Observe {
    registry: Registry,
    messages: Family<Labels, Counter>,
    taskbacks: Family<Labels, Counter>,
    calls: Family<Labels, Counter>,
    fuel: Family<Labels, Counter>,
    message_seconds: HistFamily,
    instantiate_seconds: HistFamily,
    seat_wait_seconds: HistFamily,
    call_seconds: HistFamily,
    memory_peak: HistFamily,
    in_flight: Family<Labels, Gauge>,
    pending: Family<Labels, Gauge>,
    stream_length: Family<Labels, Gauge>,
    dead_letters: Family<Labels, Gauge>,
    collector_up: Family<Labels, Gauge>,
    rss: Gauge,
    started: Instant,
    services: Mutex<Vec<Arc<ServiceMetrics>>>,
    components: Mutex<Vec<Arc<CallMetrics>>>,
    collectors: Mutex<Vec<CollectorState>>,
}

static OBSERVE: LazyLock<Observe> = LazyLock::new(Observe::new);

/// `CANNON_METRICS=off` in the environment turns counting off in the hot paths (calls and
/// messages are not counted, timed or kept for the dashboard), so the cost of the metrics can
/// be measured against a process without them (docs/performance.md). Read once.
static COUNTING: LazyLock<bool> =
    LazyLock::new(|| !std::env::var("CANNON_METRICS").is_ok_and(|v| v.eq_ignore_ascii_case("off")));

/// Whether the hot paths count (see `CANNON_METRICS=off`).
pub fn counting() -> bool {
    *COUNTING
}

/// The registry every metric is in.
pub fn registry() -> &'static Registry {
    &OBSERVE.registry
}

fn labels(pairs: &[(&'static str, &str)]) -> Labels {
    pairs.iter().map(|(k, v)| (*k, (*v).to_owned())).collect()
}

impl Observe {
    fn new() -> Self {
        let mut registry = Registry::with_prefix("cannon");
        let messages = Family::<Labels, Counter>::default();
        registry.register(
            "messages",
            "Messages finished, by outcome (ok, retried: one failed attempt that is retried, dead)",
            messages.clone(),
        );
        let taskbacks = Family::<Labels, Counter>::default();
        registry.register("taskbacks", "Taskbacks written", taskbacks.clone());
        let calls = Family::<Labels, Counter>::default();
        registry.register("calls", "Component calls, by outcome (ok or the failure kind)", calls.clone());
        let fuel = Family::<Labels, Counter>::default();
        registry.register("fuel_consumed", "Fuel consumed by calls (when limits.fuel is set)", fuel.clone());
        let hist = |registry: &mut Registry, name: &str, help: &str, make: fn() -> Hist| {
            let family = HistFamily::new_with_constructor(make);
            registry.register(name, help, family.clone());
            family
        };
        let message_seconds = hist(
            &mut registry,
            "message_duration_seconds",
            "Message read to handed to the writer (all attempts)",
            Hist::seconds,
        );
        let instantiate_seconds =
            hist(&mut registry, "instantiate_seconds", "Instantiation time of component calls", Hist::seconds);
        let seat_wait_seconds = hist(
            &mut registry,
            "seat_wait_seconds",
            "Time component calls waited for a seat (one per core) before they started",
            Hist::seconds,
        );
        let call_seconds = hist(&mut registry, "call_seconds", "Wall time of component calls", Hist::seconds);
        let memory_peak =
            hist(&mut registry, "guest_memory_peak_bytes", "Largest linear memory a call reached", Hist::bytes);
        let gauge = |registry: &mut Registry, name: &str, help: &str| {
            let family = Family::<Labels, Gauge>::default();
            registry.register(name, help, family.clone());
            family
        };
        let in_flight = gauge(&mut registry, "in_flight", "Messages this process is running now");
        let pending = gauge(&mut registry, "pending", "Messages read by some worker and not yet acked (sampled)");
        let stream_length = gauge(&mut registry, "stream_length", "Entries in a stream of the service (sampled)");
        let dead_letters = gauge(&mut registry, "dead_letters", "Entries in the dead-letter stream (sampled)");
        let collector_up =
            gauge(&mut registry, "collector_up", "1 while the collector runs, 0 while it restarts or after it ended");
        let rss = Gauge::default();
        registry.register("process_resident_memory_bytes", "Resident set size of this process", rss.clone());
        Self {
            registry,
            messages,
            taskbacks,
            calls,
            fuel,
            message_seconds,
            instantiate_seconds,
            seat_wait_seconds,
            call_seconds,
            memory_peak,
            in_flight,
            pending,
            stream_length,
            dead_letters,
            collector_up,
            rss,
            started: Instant::now(),
            services: Mutex::default(),
            components: Mutex::default(),
            collectors: Mutex::default(),
        }
    }
}

/// A dead letter as the dashboard lists it. The error is guest text: whoever shows it
/// must escape it.
#[derive(Debug, Clone)]
pub struct RecentError {
    /// The message's id.
    pub id: String,
    /// Why it failed (guest text: escape it).
    pub error: String,
    /// Deliveries spent on it.
    pub attempts: u32,
    /// When it failed, in milliseconds since the Unix epoch.
    pub at_ms: u64,
}

/// The handles of one service.
pub struct ServiceMetrics {
    /// The service's name.
    pub name: String,
    ok: Counter,
    retried: Counter,
    dead: Counter,
    taskbacks: Counter,
    duration: Hist,
    in_flight: Gauge,
    pending: Gauge,
    dead_letters: Gauge,
    /// Data, taskback, dead.
    streams: [Gauge; 3],
    errors: Mutex<VecDeque<RecentError>>,
    history: Mutex<VecDeque<Sample>>,
}

/// The handles of one service, created on first use.
pub fn service(name: &str) -> Arc<ServiceMetrics> {
    let o = &*OBSERVE;
    let mut services = lock(&o.services);
    if let Some(found) = services.iter().find(|s| s.name == name) {
        return found.clone();
    }
    let outcome = |outcome| o.messages.get_or_create(&labels(&[("service", name), ("outcome", outcome)])).clone();
    let one = |family: &Family<Labels, Gauge>| family.get_or_create(&labels(&[("service", name)])).clone();
    let stream = |stream| o.stream_length.get_or_create(&labels(&[("service", name), ("stream", stream)])).clone();
    let created = Arc::new(ServiceMetrics {
        name: name.to_owned(),
        ok: outcome("ok"),
        retried: outcome("retried"),
        dead: outcome("dead"),
        taskbacks: o.taskbacks.get_or_create(&labels(&[("service", name)])).clone(),
        duration: o.message_seconds.get_or_create(&labels(&[("service", name)])).clone(),
        in_flight: one(&o.in_flight),
        pending: one(&o.pending),
        dead_letters: one(&o.dead_letters),
        streams: [stream("data"), stream("taskback"), stream("dead")],
        errors: Mutex::default(),
        history: Mutex::default(),
    });
    services.push(created.clone());
    created
}

/// Counts a message in flight until dropped (nothing when counting is off).
pub struct InFlight<'a> {
    counted: Option<(&'a ServiceMetrics, Instant)>,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if let Some((service, _)) = self.counted {
            service.in_flight.dec();
        }
    }
}

impl InFlight<'_> {
    /// The message finished and its `taskbacks` go to the writer.
    pub fn done(self, taskbacks: usize) {
        let Some((service, started)) = self.counted else { return };
        service.ok.inc();
        service.taskbacks.inc_by(taskbacks as u64);
        service.duration.observe(started.elapsed().as_secs_f64());
    }

    /// The message goes to the dead letters.
    pub fn dead(self, id: &str, error: &str, attempts: u32, at_ms: u64) {
        let Some((service, started)) = self.counted else { return };
        service.dead.inc();
        service.duration.observe(started.elapsed().as_secs_f64());
        let mut end = error.len().min(ERROR_TEXT_MAX);
        while !error.is_char_boundary(end) {
            end -= 1;
        }
        let error = error[..end].to_owned();
        let mut errors = lock(&service.errors);
        if errors.len() >= RECENT_ERRORS {
            errors.pop_front();
        }
        errors.push_back(RecentError { id: id.to_owned(), error, attempts, at_ms });
    }
}

impl ServiceMetrics {
    /// A message starts running.
    pub fn start(&self) -> InFlight<'_> {
        if !counting() {
            return InFlight { counted: None };
        }
        self.in_flight.inc();
        InFlight { counted: Some((self, Instant::now())) }
    }

    /// An attempt failed and will be retried.
    pub fn retried(&self) {
        if counting() {
            self.retried.inc();
        }
    }
}

/// The handles of one component of one service.
pub struct CallMetrics {
    /// The service's name.
    pub service: String,
    /// The component's name.
    pub component: String,
    /// Short hash of the component's bytes.
    pub version: String,
    /// `ok`, then indexed like [`FailureKind::ALL`].
    outcomes: Vec<Counter>,
    fuel: Counter,
    instantiate: Hist,
    seat_wait: Hist,
    call: Hist,
    memory_peak: Hist,
}

/// The handles of `component` (whose bytes hash to `version`) in `service`.
pub fn component(service: &str, component: &str, version: &str) -> Arc<CallMetrics> {
    let o = &*OBSERVE;
    let outcome = |outcome: &str| {
        o.calls
            .get_or_create(&labels(&[
                ("service", service),
                ("component", component),
                ("version", version),
                ("outcome", outcome),
            ]))
            .clone()
    };
    let outcomes = std::iter::once("ok").chain(FailureKind::ALL.iter().map(|k| k.as_str())).map(outcome).collect();
    let by_component = labels(&[("component", component)]);
    let created = Arc::new(CallMetrics {
        service: service.to_owned(),
        component: component.to_owned(),
        version: version.to_owned(),
        outcomes,
        fuel: o.fuel.get_or_create(&by_component).clone(),
        instantiate: o.instantiate_seconds.get_or_create(&by_component).clone(),
        seat_wait: o.seat_wait_seconds.get_or_create(&by_component).clone(),
        call: o.call_seconds.get_or_create(&by_component).clone(),
        memory_peak: o.memory_peak.get_or_create(&by_component).clone(),
    });
    lock(&o.components).push(created.clone());
    created
}

impl CallMetrics {
    /// Counts one finished call.
    pub fn record(&self, stats: &CallStats, failure: Option<FailureKind>) {
        let index = match failure {
            None => 0,
            Some(kind) => FailureKind::ALL.iter().position(|k| *k == kind).map_or(0, |i| i + 1),
        };
        if let Some(counter) = self.outcomes.get(index) {
            counter.inc();
        }
        self.call.observe(stats.wall.as_secs_f64());
        self.instantiate.observe(stats.instantiate.as_secs_f64());
        self.seat_wait.observe(stats.waited.as_secs_f64());
        self.memory_peak.observe(stats.memory_peak as f64);
        if let Some(fuel) = stats.fuel {
            self.fuel.inc_by(fuel);
        }
    }

    /// Calls by outcome, only outcomes that happened.
    fn outcomes(&self) -> Vec<(&'static str, u64)> {
        std::iter::once("ok")
            .chain(FailureKind::ALL.iter().map(|k| k.as_str()))
            .zip(&self.outcomes)
            .map(|(name, counter)| (name, counter.get()))
            .filter(|(_, n)| *n > 0)
            .collect()
    }
}

struct CollectorState {
    service: String,
    kind: &'static str,
    up: Gauge,
}

/// The `up` gauge of a collector of `kind` in `service` (several of one kind share it).
pub fn collector(service: &str, kind: &'static str) -> Gauge {
    let o = &*OBSERVE;
    let up = o.collector_up.get_or_create(&labels(&[("service", service), ("kind", kind)])).clone();
    let mut collectors = lock(&o.collectors);
    if !collectors.iter().any(|c| c.service == service && c.kind == kind) {
        collectors.push(CollectorState { service: service.to_owned(), kind, up: up.clone() });
    }
    up
}

/// Resident set size of this process, bytes (0 where /proc is missing).
pub fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or(0);
    kib.saturating_mul(1024)
}

/// One point of a service's history.
#[derive(Debug, Clone)]
struct Sample {
    at_ms: u64,
    finished: u64,
    latency: Counts,
}
