//! Traces: W3C trace context carried by a message's `traceparent` field, continued by each
//! hop, and exported over OTLP/HTTP when `OTEL_EXPORTER_OTLP_ENDPOINT` (or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set.
//!
//! One trace per message: `collect` (the collector adds the message; a `traceparent` it was
//! given, as a field or an http header, is its parent) → `message` (a worker runs it, every
//! attempt) → `call COMPONENT` (each task, torch's shell call included) and `taskback`
//! (the answers written). The collector writes its own span's context into the message's
//! `traceparent`, so the worker on any machine continues the same trace.
//!
//! Off (no endpoint), every function here is a load of one `OnceLock` and returns at once:
//! no span is built and no field is written.
//!
//! The exporter's batch processor runs on its own thread, outside the async runtime; its
//! HTTP client ([`OnRuntime`]) hands each request to the runtime, so the host keeps one HTTP
//! stack (hyper) instead of adding a blocking client.

use std::collections::HashMap;
use std::future::Future;
use std::sync::OnceLock;

use opentelemetry::propagation::TextMapPropagator as _;
use opentelemetry::trace::{FutureExt as _, Span as _, Status, TraceContextExt as _, Tracer as _, TracerProvider as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};

use crate::vocab::Fields;

/// The message field that carries the trace context (W3C `traceparent`).
pub const TRACEPARENT: &str = "traceparent";

static TRACER: OnceLock<SdkTracer> = OnceLock::new();

/// Whether spans are exported.
pub fn enabled() -> bool {
    TRACER.get().is_some()
}

/// Export is on for the life of this value; dropping it flushes the spans still queued.
pub struct Exporting {
    provider: SdkTracerProvider,
}

impl Drop for Exporting {
    fn drop(&mut self) {
        if let Err(err) = self.provider.shutdown() {
            tracing::warn!(error = %err, "traces: flushing the last spans failed");
        }
    }
}

/// Starts the OTLP exporter when the environment asks for it (`OTEL_EXPORTER_OTLP_ENDPOINT`
/// or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`; the other `OTEL_EXPORTER_OTLP_*` and
/// `OTEL_BSP_*` variables are read by the exporter). Must run inside the async runtime.
pub fn init_from_env() -> Result<Option<Exporting>, String> {
    let set = |name: &str| std::env::var(name).is_ok_and(|v| !v.trim().is_empty());
    if !set("OTEL_EXPORTER_OTLP_ENDPOINT") && !set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") {
        return Ok(None);
    }
    use opentelemetry_otlp::{WithExportConfig as _, WithHttpConfig as _};
    let client = OnRuntime::new().map_err(|e| format!("traces: {e}"))?;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(client)
        .with_timeout(std::time::Duration::from_secs(10))
        .build()
        .map_err(|e| format!("traces: cannot build the OTLP exporter: {e}"))?;
    let service_name = std::env::var("OTEL_SERVICE_NAME").unwrap_or_else(|_| "cannon-host".to_owned());
    let resource = opentelemetry_sdk::Resource::builder().with_service_name(service_name).build();
    let provider = SdkTracerProvider::builder().with_batch_exporter(exporter).with_resource(resource).build();
    let tracer = provider.tracer("cannon-host");
    if TRACER.set(tracer).is_err() {
        return Err("traces: the exporter was started twice".to_owned());
    }
    Ok(Some(Exporting { provider }))
}

/// The context a `traceparent` value names (`None` when it is absent or malformed: a
/// hostile value starts a new trace rather than failing the message).
fn parent_of(traceparent: Option<&str>) -> Context {
    let Some(value) = traceparent else { return Context::new() };
    let carrier = HashMap::from([(TRACEPARENT.to_owned(), value.to_owned())]);
    TraceContextPropagator::new().extract(&carrier)
}

/// The `traceparent` value of `cx`'s span.
fn traceparent_of(cx: &Context) -> Option<String> {
    let mut carrier: HashMap<String, String> = HashMap::new();
    TraceContextPropagator::new().inject_context(cx, &mut carrier);
    carrier.remove(TRACEPARENT)
}

fn field<'a>(fields: &'a Fields, key: &str) -> Option<&'a str> {
    fields.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

/// The collector's span: a child of the message's `traceparent` (or a new trace), ended at
/// once; the message's `traceparent` becomes this span's context (the first such field
/// replaced, later ones removed).
pub fn collect(service: &str, kind: &str, fields: &mut Fields) {
    let Some(tracer) = TRACER.get() else { return };
    let parent = parent_of(field(fields, TRACEPARENT));
    let mut span = tracer.start_with_context(format!("collect {service}"), &parent);
    span.set_attribute(KeyValue::new("cannon.service", service.to_owned()));
    span.set_attribute(KeyValue::new("cannon.collector", kind.to_owned()));
    let cx = parent.with_span(span);
    if let Some(value) = traceparent_of(&cx) {
        let mut seen = false;
        fields.retain_mut(|(k, v)| {
            if k != TRACEPARENT {
                return true;
            }
            if seen {
                return false;
            }
            seen = true;
            *v = value.clone();
            true
        });
        if !seen {
            fields.push((TRACEPARENT.to_owned(), value));
        }
    }
    cx.span().end();
}

/// A worker's span for one message, from its read to its outcome.
pub struct MessageSpan {
    cx: Context,
}

impl MessageSpan {
    /// `None` when export is off.
    pub fn start(service: &str, id: &str, fields: &Fields) -> Option<MessageSpan> {
        let tracer = TRACER.get()?;
        let parent = parent_of(field(fields, TRACEPARENT));
        let mut span = tracer.start_with_context(format!("message {service}"), &parent);
        span.set_attribute(KeyValue::new("cannon.service", service.to_owned()));
        span.set_attribute(KeyValue::new("cannon.message_id", id.to_owned()));
        Some(MessageSpan { cx: parent.with_span(span) })
    }

    /// Records an attempt that failed and will be retried.
    pub fn retried(&self, attempt: u32, error: &str) {
        self.cx.span().add_event(
            "retried",
            vec![KeyValue::new("cannon.attempt", i64::from(attempt)), KeyValue::new("error", error.to_owned())],
        );
    }

    /// The `taskback` span: `count` taskbacks written for the message.
    pub fn taskbacks(&self, count: usize) {
        let Some(tracer) = TRACER.get() else { return };
        let mut span = tracer.start_with_context("taskback", &self.cx);
        span.set_attribute(KeyValue::new("cannon.taskbacks", count as i64));
        span.end();
    }

    /// Ends the span: `Ok` or the dead letter's error.
    pub fn end(self, outcome: Result<(), &str>) {
        let span = self.cx.span();
        match outcome {
            Ok(()) => span.set_status(Status::Ok),
            Err(error) => span.set_status(Status::error(error.to_owned())),
        }
        span.end();
    }
}

/// Runs `fut` with the message's span current, so each call inside gets its child span.
pub async fn within<F: Future>(span: Option<&MessageSpan>, fut: F) -> F::Output {
    match span {
        Some(span) => fut.with_context(span.cx.clone()).await,
        None => fut.await,
    }
}

/// A `call COMPONENT` span, child of the current message span; ended on drop.
pub struct CallSpan(Option<Context>);

impl CallSpan {
    /// A no-op when export is off or no message span is current.
    pub fn start(component: &str) -> CallSpan {
        let Some(tracer) = TRACER.get() else { return CallSpan(None) };
        let parent = Context::current();
        if !parent.has_active_span() {
            return CallSpan(None);
        }
        let mut span = tracer.start_with_context(format!("call {component}"), &parent);
        span.set_attribute(KeyValue::new("cannon.component", component.to_owned()));
        CallSpan(Some(parent.with_span(span)))
    }

    /// Marks the call failed.
    pub fn fail(&self, error: &str) {
        if let Some(cx) = &self.0 {
            cx.span().set_status(Status::error(error.to_owned()));
        }
    }
}

impl Drop for CallSpan {
    fn drop(&mut self) {
        if let Some(cx) = &self.0 {
            cx.span().end();
        }
    }
}

/// The exporter's HTTP client: hyper (with rustls for `https://`) driven on the runtime that
/// started the exporter, awaited from the batch processor's own thread.
#[derive(Debug, Clone)]
struct OnRuntime {
    runtime: tokio::runtime::Handle,
    client: opentelemetry_http::hyper::HyperClient<
        hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    >,
}

impl OnRuntime {
    fn new() -> Result<OnRuntime, String> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|e| format!("no async runtime: {e}"))?;
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_native_roots(rustls::crypto::ring::default_provider())
            .map_err(|e| format!("cannot read the system's CA certificates: {e}"))?
            .https_or_http()
            .enable_http1()
            .build();
        let timeout = std::time::Duration::from_secs(10);
        Ok(OnRuntime { runtime, client: opentelemetry_http::hyper::HyperClient::new(connector, timeout, None) })
    }
}

#[async_trait::async_trait]
impl HttpClient for OnRuntime {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let client = self.client.clone();
        self.runtime
            .spawn(async move { client.send_bytes(request).await })
            .await
            .map_err(|e| Box::new(e) as HttpError)?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_traceparent_round_trips_and_garbage_starts_a_new_trace() {
        let value = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let cx = parent_of(Some(value));
        assert!(cx.span().span_context().is_valid());
        assert_eq!(traceparent_of(&cx).as_deref(), Some(value));
        for garbage in ["", "00-xyz", "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "\u{1b}[2J"] {
            assert!(!parent_of(Some(garbage)).span().span_context().is_valid(), "{garbage:?}");
        }
        assert!(!parent_of(None).span().span_context().is_valid());
    }

    #[test]
    fn off_touches_nothing() {
        assert!(!enabled());
        let mut fields = vec![("text".to_owned(), "hi".to_owned())];
        collect("svc", "stdin", &mut fields);
        assert_eq!(fields, vec![("text".to_owned(), "hi".to_owned())]);
        assert!(MessageSpan::start("svc", "1-0", &fields).is_none());
        assert!(CallSpan::start("shout").0.is_none());
    }
}
