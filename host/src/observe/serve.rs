//! The metrics listener: `GET /metrics` (Prometheus/OpenMetrics text), `GET /api/status`
//! (JSON for the dashboard) and `GET /` (the dashboard page, embedded in the binary); and
//! the sampler of broker-side gauges.
//!
//! [`bind`] and [`serve`] are separate so that the accept loop can later be swapped (for
//! one with TLS or auth) without touching the routes.

use std::sync::Arc;

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::{OBSERVE, SAMPLE_EVERY, Sample, lock, rss_bytes};
use crate::access::{ReloadingAcceptor, TlsListener};
use crate::broker::{Broker, StreamKind, WORKER_GROUP};
use crate::text::for_json;
use crate::time::now_ms;

/// Samples kept per service: ten minutes at [`SAMPLE_EVERY`].
const HISTORY: usize = 300;

const DASHBOARD: &str = include_str!("dashboard.html");

pub use crate::config::parse_addr;

/// Binds the metrics listener.
pub async fn bind(text: &str) -> anyhow::Result<TcpListener> {
    let addr = parse_addr(text).map_err(anyhow::Error::msg)?;
    TcpListener::bind(addr).await.map_err(|e| anyhow::anyhow!("cannot listen for metrics on {addr}: {e}"))
}

/// The routes.
pub fn router() -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/api/status", get(status))
        .route("/", get(|| async { Html(DASHBOARD) }))
}

/// Serves `router` on `listener` until `shutdown`; over TLS with `tls` (its certificate
/// reloaded on SIGHUP or when its files change, as the http collector's).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    tls: Option<Arc<ReloadingAcceptor>>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let addr = listener.local_addr()?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    tracing::info!(%addr, scheme, "metrics and dashboard listening");
    let stop = shutdown.clone().cancelled_owned();
    match tls {
        None => axum::serve(listener, router).with_graceful_shutdown(stop).await?,
        Some(acceptor) => {
            let watcher = shutdown.child_token();
            let _watch = acceptor.watch("metrics listener".to_owned(), watcher.clone());
            let listener = TlsListener::new(listener, acceptor)?;
            let served = axum::serve(listener, router).with_graceful_shutdown(stop).await;
            watcher.cancel();
            served?;
        }
    }
    Ok(())
}

async fn metrics() -> Response {
    OBSERVE.rss.set(i64::try_from(rss_bytes()).unwrap_or(i64::MAX));
    let mut body = String::with_capacity(16 << 10);
    if let Err(err) = prometheus_client::encoding::text::encode(&mut body, super::registry()) {
        return (StatusCode::INTERNAL_SERVER_ERROR, format!("cannot encode metrics: {err}")).into_response();
    }
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], body).into_response()
}

async fn status() -> Response {
    // Guest text (errors) is in here: serde_json escapes quotes and controls, `for_json`
    // the bidi and C1 characters; the page only ever puts it in `textContent`.
    let body = for_json(status_json().to_string());
    ([(header::CONTENT_TYPE, "application/json"), (header::CACHE_CONTROL, "no-store")], body).into_response()
}

/// What the dashboard shows.
pub fn status_json() -> Value {
    let o = &*OBSERVE;
    let services: Vec<_> = lock(&o.services).clone();
    let components: Vec<_> = lock(&o.components).clone();
    let collectors: Vec<Value> = lock(&o.collectors)
        .iter()
        .map(|c| json!({ "service": c.service, "kind": c.kind, "up": c.up.get() == 1 }))
        .collect();
    let services: Vec<Value> = services
        .iter()
        .map(|s| {
            let history = lock(&s.history);
            let bounds = s.duration.bounds();
            let series: Vec<Value> = history
                .iter()
                .zip(history.iter().skip(1))
                .map(|(a, b)| {
                    let secs = (b.at_ms.saturating_sub(a.at_ms) as f64 / 1000.0).max(0.001);
                    let latency = b.latency.since(&a.latency);
                    json!({
                        "t": b.at_ms,
                        "rate": b.finished.saturating_sub(a.finished) as f64 / secs,
                        "p50": latency.quantile(bounds, 0.5),
                        "p90": latency.quantile(bounds, 0.9),
                        "p99": latency.quantile(bounds, 0.99),
                    })
                })
                .collect();
            let errors: Vec<Value> = lock(&s.errors)
                .iter()
                .rev()
                .map(|e| json!({ "id": e.id, "error": e.error, "attempts": e.attempts, "at_ms": e.at_ms }))
                .collect();
            let comps: Vec<Value> = components
                .iter()
                .filter(|c| c.service == s.name)
                .map(|c| {
                    let outcomes: serde_json::Map<String, Value> =
                        c.outcomes().into_iter().map(|(k, n)| (k.to_owned(), json!(n))).collect();
                    json!({ "name": c.component, "version": c.version, "calls": outcomes })
                })
                .collect();
            json!({
                "name": s.name,
                "ok": s.ok.get(),
                "retried": s.retried.get(),
                "dead": s.dead.get(),
                "taskbacks": s.taskbacks.get(),
                "in_flight": s.in_flight.get(),
                "pending": s.pending.get(),
                "dead_letters": s.dead_letters.get(),
                "streams": {
                    "data": s.streams[0].get(),
                    "taskback": s.streams[1].get(),
                    "dead": s.streams[2].get(),
                },
                "series": series,
                "errors": errors,
                "components": comps,
                "collectors": collectors.iter().filter(|c| c["service"] == s.name.as_str()).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_s": o.started.elapsed().as_secs(),
        "rss_bytes": rss_bytes(),
        "sample_every_ms": SAMPLE_EVERY.as_millis() as u64,
        "services": services,
    })
}

/// Every [`SAMPLE_EVERY`] until `shutdown`: reads the broker-side gauges of `services`
/// and appends a point to each service's history.
pub async fn sample_loop(broker: Arc<dyn Broker>, services: Vec<String>, shutdown: CancellationToken) {
    let handles: Vec<_> = services.iter().map(|name| super::service(name)).collect();
    let mut ticker = tokio::time::interval(SAMPLE_EVERY);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            () = shutdown.cancelled() => return,
        }
        OBSERVE.rss.set(i64::try_from(rss_bytes()).unwrap_or(i64::MAX));
        for service in &handles {
            for (i, kind) in [StreamKind::Data, StreamKind::Taskback, StreamKind::Dead].into_iter().enumerate() {
                match broker.stream_info(&service.name, kind).await {
                    Ok(info) => {
                        let length = i64::try_from(info.length).unwrap_or(i64::MAX);
                        service.streams[i].set(length);
                        match kind {
                            StreamKind::Data => {
                                let pending: u64 =
                                    info.groups.iter().filter(|g| g.name == WORKER_GROUP).map(|g| g.pending).sum();
                                service.pending.set(i64::try_from(pending).unwrap_or(i64::MAX));
                            }
                            StreamKind::Dead => {
                                service.dead_letters.set(length);
                            }
                            _ => {}
                        }
                    }
                    Err(err) => {
                        tracing::debug!(service = %service.name, error = %err, "cannot sample the broker for metrics");
                    }
                }
            }
        }
        let at_ms = now_ms();
        for service in lock(&OBSERVE.services).iter() {
            let sample =
                Sample { at_ms, finished: service.ok.get() + service.dead.get(), latency: service.duration.counts() };
            let mut history = lock(&service.history);
            if history.len() >= HISTORY {
                history.pop_front();
            }
            history.push_back(sample);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;

    #[test]
    fn addresses_default_to_loopback() {
        assert_eq!(parse_addr("9464").unwrap(), SocketAddr::from(([127, 0, 0, 1], 9464)));
        assert_eq!(parse_addr("0.0.0.0:9464").unwrap(), SocketAddr::from(([0, 0, 0, 0], 9464)));
        assert!(parse_addr("localhost").unwrap_err().contains("not HOST:PORT"));
    }
}
