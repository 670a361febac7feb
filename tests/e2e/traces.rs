//! Traces: a message's W3C `traceparent` (a field, or an http header) is continued by the
//! collector, the worker, each call and the taskback, and the spans reach a real OTLP/HTTP
//! receiver (a local server decoding the protobuf export requests).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message as _;

use crate::collectors::logged_port;
use crate::support::{Project, RedisServer, Running, component, entries, field, host, key};

/// One exported span: (trace id, span id, parent span id, name, status code), ids in hex.
#[derive(Debug, Clone)]
struct Span {
    trace: String,
    id: String,
    parent: String,
    name: String,
    status: i32,
}

/// An OTLP/HTTP receiver on a free loopback port: answers `200` to every `POST /v1/traces`
/// and keeps the spans it decodes.
struct Receiver {
    port: u16,
    spans: Arc<Mutex<Vec<Span>>>,
}

impl Receiver {
    fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the OTLP receiver");
        let port = listener.local_addr().expect("local addr").port();
        let spans = Arc::new(Mutex::new(Vec::new()));
        let kept = spans.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let kept = kept.clone();
                std::thread::spawn(move || serve(stream, &kept));
            }
        });
        Receiver { port, spans }
    }

    fn spans(&self) -> Vec<Span> {
        self.spans.lock().expect("spans").clone()
    }
}

/// Serves the requests of one connection (the exporter keeps it alive).
fn serve(stream: TcpStream, spans: &Mutex<Vec<Span>>) {
    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
    let mut writer = stream;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut length = 0;
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).unwrap_or(0) == 0 {
                return;
            }
            if header.trim().is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        assert!(line.starts_with("POST /v1/traces "), "unexpected request {line:?}");
        let request = ExportTraceServiceRequest::decode(body.as_slice()).expect("an OTLP trace export");
        let hex = |bytes: &[u8]| bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
        let mut kept = spans.lock().expect("spans");
        for span in request.resource_spans.iter().flat_map(|r| &r.scope_spans).flat_map(|s| &s.spans) {
            kept.push(Span {
                trace: hex(&span.trace_id),
                id: hex(&span.span_id),
                parent: hex(&span.parent_span_id),
                name: span.name.clone(),
                status: span.status.as_ref().map_or(0, |s| s.code),
            });
        }
        drop(kept);
        let answer = "HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\nContent-Length: 0\r\n\r\n";
        if writer.write_all(answer.as_bytes()).is_err() {
            return;
        }
    }
}

/// `POST /?wait=5000` with a `traceparent` header; the status.
fn post_traced(port: u16, traceparent: &str, body: &str) -> u16 {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to the http collector");
    stream.set_read_timeout(Some(Duration::from_secs(60))).expect("timeout");
    let head = format!(
        "POST /?wait=5000 HTTP/1.1\r\nHost: 127.0.0.1\r\ntraceparent: {traceparent}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(head.as_bytes()).expect("write request");
    let mut raw = String::new();
    let _ = stream.read_to_string(&mut raw);
    raw.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0)
}

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

#[test]
fn a_traceparent_is_continued_from_collector_to_worker_to_each_call_and_exported_over_otlp() {
    let redis = RedisServer::start();
    let receiver = Receiver::start();
    component("shout");
    component("fail");
    let project = Project::new(
        "services:\n  s:\n    collector: { kind: http, listen: \"127.0.0.1:0\" }\n    tasks: [ { file: shout } ]\n  \
         f:\n    collector: { kind: tick, every: 1h, at_start: true }\n    tasks: [ { file: fail } ]\n    \
         retry: { max_attempts: 2, backoff_ms: 10 }\n",
    );
    let mut cmd = host(&project, &redis);
    cmd.env("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://127.0.0.1:{}", receiver.port))
        .env("OTEL_BSP_SCHEDULE_DELAY", "100");
    let mut running = Running::start_cmd(cmd, &project, &["s", "f"]);
    let port = logged_port(&mut running);

    // From a caller's trace: the http header is the parent of the collector's span.
    assert_eq!(post_traced(port, &format!("00-{TRACE}-{CALLER_SPAN}-01"), r#"{"text": "hi"}"#), 200);
    // Without one: a new trace, the collector's span its root.
    assert_eq!(crate::collectors::http(port, "POST", "/?wait=5000", br#"{"text": "ho"}"#).0, 200);
    // The failing task: retried once, then dead-lettered.
    running.wait_for_log("moving to dead letters", Duration::from_secs(60));
    std::thread::sleep(Duration::from_millis(500));
    assert!(running.terminate().success(), "{}", running.log_text());

    let spans = receiver.spans();
    let in_trace: Vec<&Span> = spans.iter().filter(|s| s.trace == TRACE).collect();
    let named = |name: &str| -> &Span {
        let found: Vec<&&Span> = in_trace.iter().filter(|s| s.name == name).collect();
        assert_eq!(found.len(), 1, "one {name:?} span in the caller's trace: {spans:#?}");
        found[0]
    };
    let collect = named("collect s");
    let message = named("message s");
    let call = named("call shout");
    let taskback = named("taskback");
    assert_eq!(collect.parent, CALLER_SPAN);
    assert_eq!(message.parent, collect.id, "the worker continues the collector's span");
    assert_eq!((call.parent.as_str(), taskback.parent.as_str()), (message.id.as_str(), message.id.as_str()));
    assert_eq!(in_trace.len(), 4, "{in_trace:#?}");
    // The stored message carries the collector's span, so a worker anywhere continues it.
    let mut con = redis.con();
    let data = entries(&mut con, &key("s", "data"));
    let traced = data.iter().find(|(_, f)| field(f, "text") == Some("hi")).expect("the traced message");
    assert_eq!(field(&traced.1, "traceparent"), Some(format!("00-{TRACE}-{}-01", collect.id).as_str()));

    // The untraced message got a trace of its own, rooted at its collector.
    let ho_collect = spans
        .iter()
        .find(|s| s.name == "collect s" && s.trace != TRACE)
        .unwrap_or_else(|| panic!("the second message's collect span: {spans:#?}"));
    assert!(ho_collect.parent.chars().all(|c| c == '0'), "a root span: {ho_collect:?}");
    let ho_trace: Vec<&str> = spans.iter().filter(|s| s.trace == ho_collect.trace).map(|s| s.name.as_str()).collect();
    assert!(ho_trace.contains(&"message s") && ho_trace.contains(&"call shout"), "{ho_trace:?}");

    // The dead letter: its message span is an error (status code 2), its calls too.
    let dead = spans.iter().find(|s| s.name == "message f").unwrap_or_else(|| panic!("no message f span: {spans:#?}"));
    assert_eq!(dead.status, 2, "{dead:?}");
    let failed_calls = spans.iter().filter(|s| s.name == "call fail" && s.trace == dead.trace && s.status == 2).count();
    assert_eq!(failed_calls, 2, "one failed call per attempt: {spans:#?}");
}
