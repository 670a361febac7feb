//! `http`: `POST /` with a JSON object body adds it as a message (string values as they
//! are, numbers and booleans as their text). Answers `202 {"id": ...}`; with `?wait=MS`,
//! `200` and the message's taskback as a JSON object, or `504` when none came in time.
//! `GET /healthz` answers `200`. Bad JSON, nested values or nulls get `400` naming the
//! problem, a message over `limits.message_kb` or `limits.max_fields` gets `413`, a broker
//! failure `503`. With `auth:`, `POST /` first passes [`crate::access::require`] (`401`
//! otherwise).
//!
//! Connections are served by `http_serve.rs`: at most `max_connections` at once (over
//! that, `/healthz` still answers and the rest get `503`), with header, body and idle
//! timeouts; a body not complete in time gets `408`. With `tls:`, each connection's TLS
//! handshake (under the header timeout) comes first, through [`crate::access::ReloadingAcceptor`].
//!
//! Taskbacks are read through the service's collector group by one dispatcher that hands
//! each to the request waiting for it (by the host-written `cannon.id`, the first pair)
//! and acknowledges every one, waited for or not. `?wait` therefore expects the service's
//! collector to run in one process.
//!
//! Receipts: a taskback that asks for one gets `ok` when a `?wait` request takes it (at
//! once, or a late one from the few kept), and `error` when nobody takes it: its request is
//! gone, it was pushed out of the kept ones by later taskbacks, or another taskback of the
//! same message was already kept.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use tokio::sync::oneshot;

use super::http_serve::{Routers, serve};
use crate::access::{self, Gate, ReloadingAcceptor};
use crate::broker::Fields;
use crate::collector::{AddError, Context, Exit, json_fields, to_json};
use crate::config::{CollectorKind, HttpAuth, HttpLimits};
use crate::fields::host_id;

/// Longest `?wait` accepted, in milliseconds.
const MAX_WAIT_MS: u64 = 300_000;
/// Taskbacks kept for a waiter that registers after its taskback was read (the window
/// between adding a message and registering is tiny, so a few suffice).
const UNCLAIMED_MAX: usize = 64;

/// A receipt's outcome: `ok` or `error`, with the detail.
type Outcome = Result<&'static str, &'static str>;
/// The detail of a receipt for a taskback handed to its `?wait` request.
const DELIVERED: &str = "delivered to the waiting request";

/// Requests waiting for taskbacks, by message id.
#[derive(Default)]
struct Waiters {
    waiting: HashMap<String, oneshot::Sender<Fields>>,
    unclaimed: HashMap<String, Fields>,
    order: VecDeque<String>,
}

struct Shared {
    ctx: Context,
    waiters: Mutex<Waiters>,
    body_limit: usize,
    limits: HttpLimits,
}

impl Shared {
    fn waiters(&self) -> std::sync::MutexGuard<'_, Waiters> {
        self.waiters.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Hands a taskback to its waiter, or keeps it briefly in case the waiter is late. The
    /// waiter is found by the id the host wrote (the first pair, [`host_id`]) only.
    /// Returns the taskbacks whose fate is settled, with the outcome for their receipts.
    fn deliver(&self, fields: Fields) -> Vec<(Fields, Outcome)> {
        let Some(id) = host_id(&fields).map(str::to_owned) else {
            return Vec::new();
        };
        let mut waiters = self.waiters();
        if let Some(tx) = waiters.waiting.remove(&id) {
            return match tx.send(fields) {
                Ok(()) => Vec::new(), // the request sends the receipt
                Err(fields) => vec![(fields, Err("the waiting request is gone"))],
            };
        }
        if waiters.unclaimed.contains_key(&id) {
            // A second taskback (sent by a task) of the same message: the first one answers.
            return vec![(fields, Err("another taskback of this message answers its request"))];
        }
        let mut settled = Vec::new();
        if waiters.order.len() >= UNCLAIMED_MAX
            && let Some(old) = waiters.order.pop_front()
            && let Some(evicted) = waiters.unclaimed.remove(&old)
        {
            settled.push((evicted, Err("no request waited for it")));
        }
        waiters.order.push_back(id.clone());
        waiters.unclaimed.insert(id, fields);
        settled
    }

    /// The taskback of `id` if it already came, else a receiver for it.
    fn register(&self, id: &str) -> Result<Fields, oneshot::Receiver<Fields>> {
        let mut waiters = self.waiters();
        if let Some(fields) = waiters.unclaimed.remove(id) {
            waiters.order.retain(|o| o != id);
            return Ok(fields);
        }
        let (tx, rx) = oneshot::channel();
        waiters.waiting.insert(id.to_owned(), tx);
        Err(rx)
    }
}

/// Removes a waiter whose request ended (timeout, shutdown or a client that went away).
struct WaitGuard<'a> {
    shared: &'a Shared,
    id: &'a str,
}

impl Drop for WaitGuard<'_> {
    fn drop(&mut self) {
        self.shared.waiters().waiting.remove(self.id);
    }
}

pub async fn run(ctx: Context, listen: &str, limits: HttpLimits) -> anyhow::Result<Exit> {
    let name = ctx.service.name.clone();
    // Access control (issue 23): TLS files are loaded before binding, so a bad pair fails here.
    let (auth, tls) = match &ctx.spec.kind {
        CollectorKind::Http { auth, tls, .. } => (auth.clone(), tls.clone()),
        _ => (None, None),
    };
    let what = format!("service {name:?} http collector");
    let tls = tls.map(|files| ReloadingAcceptor::load(&files)).transpose().with_context(|| what.clone())?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("service {name:?}: http collector cannot listen on {listen}"))?;
    let address = listener.local_addr().with_context(|| format!("service {name:?}: address of {listen}"))?;
    let message_bytes = usize::try_from(ctx.service.limits.message_kb.saturating_mul(1024)).unwrap_or(usize::MAX);
    let shared = Arc::new(Shared {
        ctx: ctx.clone(),
        waiters: Mutex::default(),
        // Room for JSON quoting and escapes; the decoded message is held to the exact limit.
        body_limit: message_bytes.saturating_mul(2).saturating_add(64 * 1024),
        limits,
    });
    let taskbacks = {
        let shared = shared.clone();
        ctx.spawn_taskbacks(move |entry| {
            let settled = shared.deliver(entry.fields);
            let shared = shared.clone();
            async move {
                for (taskback, outcome) in settled {
                    shared.ctx.receipt(&taskback, outcome).await;
                }
            }
        })
    };
    let mut app = Router::new().route("/", post(message));
    // Access control (issue 23): `auth:` guards `POST /` (not `/healthz`).
    if let Some(auth) = auth.filter(|a| *a != HttpAuth::Open) {
        let gate = Gate::new(what.clone(), auth, shared.body_limit);
        app = app.route_layer(axum::middleware::from_fn_with_state(gate, access::require));
    }
    let app = app
        .route("/healthz", get(healthz))
        .fallback(not_found)
        .method_not_allowed_fallback(wrong_method)
        .with_state(shared.clone());
    let overflow = Router::new().route("/healthz", get(healthz)).fallback(too_busy).with_state(shared.clone());
    let scheme = if tls.is_some() { "https" } else { "http" };
    tracing::info!(service = %name, address = %address, scheme, max_connections = limits.max_connections, "http collector listening");
    // Access control (issue 23): with `tls:`, certificates reload on SIGHUP or a file change.
    let watcher = ctx.shutdown.child_token();
    let _watch = tls.as_ref().map(|acceptor| acceptor.watch(what.clone(), watcher.clone()));
    serve(listener, Routers { app, overflow }, limits, tls, ctx.shutdown.clone()).await;
    watcher.cancel();
    taskbacks.finish(&name).await;
    Ok(Exit::Stopped)
}

fn reply(status: StatusCode, body: &Value) -> Response {
    // C1 and bidi characters as `\u` escapes, like every JSON cannon prints.
    let body = crate::text::for_json(body.to_string());
    (status, [(header::CONTENT_TYPE, "application/json")], format!("{body}\n")).into_response()
}

fn error(status: StatusCode, text: impl Into<String>) -> Response {
    reply(status, &json!({ "error": text.into() }))
}

async fn healthz(State(shared): State<Arc<Shared>>) -> Response {
    reply(StatusCode::OK, &json!({ "status": "ok", "service": shared.ctx.service.name }))
}

async fn too_busy(State(shared): State<Arc<Shared>>) -> Response {
    let text =
        format!("too many open connections (max_connections = {}); try again later", shared.limits.max_connections);
    closing(error(StatusCode::SERVICE_UNAVAILABLE, text))
}

async fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "no such path: POST / a JSON object, or GET /healthz")
}

async fn wrong_method() -> Response {
    error(StatusCode::METHOD_NOT_ALLOWED, "use POST / with a JSON object, or GET /healthz")
}

/// Whether reading a body failed because it is longer than the limit.
fn too_long(err: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = source {
        if e.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = e.source();
    }
    false
}

/// `response`, telling the client the connection closes (its body was not read whole).
fn closing(mut response: Response) -> Response {
    response.headers_mut().insert(header::CONNECTION, header::HeaderValue::from_static("close"));
    response
}

/// The `wait` query parameter, in milliseconds.
fn wait_ms(query: Option<&str>) -> Result<Option<u64>, String> {
    let Some(query) = query else { return Ok(None) };
    let mut wait = None;
    for pair in query.split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        if key == "wait" {
            match value.parse::<u64>() {
                Ok(ms) if ms <= MAX_WAIT_MS => wait = Some(ms),
                _ => return Err(format!("`wait` must be a number of milliseconds up to {MAX_WAIT_MS}, not {value:?}")),
            }
        }
    }
    Ok(wait)
}

async fn message(
    State(shared): State<Arc<Shared>>,
    RawQuery(query): RawQuery,
    headers: axum::http::HeaderMap,
    body: Body,
) -> Response {
    let wait = match wait_ms(query.as_deref()) {
        Ok(wait) => wait,
        Err(text) => return error(StatusCode::BAD_REQUEST, text),
    };
    let body_timeout = Duration::from_millis(shared.limits.body_timeout_ms);
    let body = match tokio::time::timeout(body_timeout, axum::body::to_bytes(body, shared.body_limit)).await {
        Ok(Ok(body)) => body,
        Ok(Err(err)) if too_long(&err) => {
            let text = format!("body is larger than {} bytes", shared.body_limit);
            return closing(error(StatusCode::PAYLOAD_TOO_LARGE, text));
        }
        Ok(Err(err)) => return closing(error(StatusCode::BAD_REQUEST, format!("cannot read the body: {err}"))),
        Err(_) => {
            let text = format!("body not complete within {} ms (body_timeout_ms)", shared.limits.body_timeout_ms);
            return closing(error(StatusCode::REQUEST_TIMEOUT, text));
        }
    };
    let mut fields = match json_fields(&body) {
        Ok(fields) => fields,
        Err(text) => return error(StatusCode::BAD_REQUEST, format!("body: {text}")),
    };
    trace_header(&headers, &mut fields);
    let ctx = &shared.ctx;
    let id = match ctx.add(fields).await {
        Ok(id) => id,
        Err(err @ (AddError::TooLarge { .. } | AddError::TooManyFields { .. })) => {
            return error(StatusCode::PAYLOAD_TOO_LARGE, err.to_string());
        }
        Err(err @ AddError::Empty) => return error(StatusCode::BAD_REQUEST, err.to_string()),
        Err(AddError::Broker(err)) => {
            tracing::error!(service = %ctx.service.name, error = %err, "cannot add a message from http");
            return error(StatusCode::SERVICE_UNAVAILABLE, format!("cannot queue the message: {err}"));
        }
    };
    tracing::debug!(service = %ctx.service.name, id = %id, "message from http");
    let Some(ms) = wait else {
        return reply(StatusCode::ACCEPTED, &json!({ "id": id }));
    };
    let rx = match shared.register(&id) {
        Ok(fields) => {
            delivered(&shared, &fields);
            return reply(StatusCode::OK, &to_json(&fields));
        }
        Err(rx) => rx,
    };
    let _guard = WaitGuard { shared: &shared, id: &id };
    tokio::select! {
        answer = tokio::time::timeout(Duration::from_millis(ms), rx) => match answer {
            Ok(Ok(fields)) => {
                delivered(&shared, &fields);
                reply(StatusCode::OK, &to_json(&fields))
            }
            _ => reply(StatusCode::GATEWAY_TIMEOUT, &json!({
                "id": id,
                "error": format!(
                    "no taskback within {ms} ms (a pipeline with empty results sends none; \
                     a failing one ends in the dead-letter stream)"
                ),
            })),
        },
        () = ctx.shutdown.cancelled() => reply(StatusCode::SERVICE_UNAVAILABLE, &json!({
            "id": id,
            "error": "the collector is shutting down; the message was queued",
        })),
    }
}

/// Sends the `ok` receipt of a taskback handed to its request, when it asks for one (in
/// the background: the answer does not wait for the broker).
/// With traces exported, a `traceparent` header continues the caller's trace (a
/// `traceparent` field in the body wins).
fn trace_header(headers: &axum::http::HeaderMap, fields: &mut Fields) {
    use crate::observe::trace::{TRACEPARENT, enabled};
    let Some(value) = headers.get(TRACEPARENT).and_then(|v| v.to_str().ok()) else { return };
    if enabled() && !fields.iter().any(|(k, _)| k == TRACEPARENT) {
        fields.push((TRACEPARENT.to_owned(), value.to_owned()));
    }
}

fn delivered(shared: &Arc<Shared>, fields: &Fields) {
    if crate::fields::wants_receipt(fields) {
        let shared = shared.clone();
        let fields = fields.clone();
        tokio::spawn(async move { shared.ctx.receipt(&fields, Ok(DELIVERED)).await });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_parameter() {
        assert_eq!(wait_ms(None), Ok(None));
        assert_eq!(wait_ms(Some("x=1")), Ok(None));
        assert_eq!(wait_ms(Some("x=1&wait=250")), Ok(Some(250)));
        assert!(wait_ms(Some("wait=soon")).is_err());
        assert!(wait_ms(Some("wait=")).is_err());
        assert!(wait_ms(Some("wait=999999999")).is_err());
    }
}
