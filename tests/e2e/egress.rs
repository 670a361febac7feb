//! Outbound HTTP (issue 17): the `fetcher` test guest and the `weather` example against
//! real HTTP servers on loopback, run by a real `cannon-host` on a real `redis-server`.
//!
//! The API server is axum (hyper) in a tokio runtime of the test; the chunked and silent
//! servers are plain sockets, so the host meets a body without a length and a peer that
//! never answers.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Query, Request};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};

use crate::support::{Project, RedisServer, Running, add_messages, component, entries, field, host, key, run_host};

type Fields = Vec<(String, String)>;

/// The local API: `/hello`, `/echo` (method, `x-custom` header, body), `/redirect?to=URL`,
/// `/big` (1 MiB with a length), `/slow` (answers after a minute), `/auth` (200 only for
/// `Bearer TOKEN`), `/weather?city=C` (JSON, also behind the token). Every request's
/// headers are kept in `seen`.
struct Api {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<HeaderMap>>>,
    _runtime: tokio::runtime::Runtime,
}

impl Api {
    fn start(token: &str) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("rt");
        let seen: Arc<Mutex<Vec<HeaderMap>>> = Arc::default();
        let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).expect("bind");
        let addr = listener.local_addr().expect("addr");
        let bearer = format!("Bearer {token}");
        let (log, auth, weather_auth) = (seen.clone(), bearer.clone(), bearer);
        let app = axum::Router::new()
            .route("/hello", get(|| async { "hello from the api" }))
            .route("/echo", any(echo))
            .route("/redirect", get(|Query(q): Query<Vec<(String, String)>>| async move { redirect(&q) }))
            .route("/big", get(|| async { vec![b'x'; 1 << 20] }))
            .route(
                "/slow",
                get(|| async {
                    tokio::time::sleep(Duration::from_secs(60)).await;
                    "too late"
                }),
            )
            .route("/auth", get(move |h: HeaderMap| async move { authorized(&h, &auth, "authorized") }))
            .route(
                "/weather",
                get(move |h: HeaderMap, Query(q): Query<Vec<(String, String)>>| async move {
                    let city = q.iter().find(|(k, _)| k == "city").map_or("", |(_, v)| v.as_str()).to_owned();
                    let body = format!(
                        r#"{{"city":"{city}","temp_c":18.5,"wind_kmh":12,"conditions":"light rain","ignored":[1,2]}}"#
                    );
                    authorized(&h, &weather_auth, &body)
                }),
            )
            .layer(axum::middleware::from_fn(move |req: Request, next: axum::middleware::Next| {
                let log = log.clone();
                async move {
                    log.lock().expect("lock").push(req.headers().clone());
                    next.run(req).await
                }
            }));
        runtime.spawn(async move { axum::serve(listener, app).await });
        Api { addr, seen, _runtime: runtime }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

async fn echo(req: Request) -> String {
    let method = req.method().to_string();
    let custom = req.headers().get("x-custom").and_then(|v| v.to_str().ok()).unwrap_or("-").to_owned();
    let body = axum::body::to_bytes(req.into_body(), 1 << 20).await.unwrap_or_default();
    format!("{method} {custom} {}", String::from_utf8_lossy(&body))
}

fn redirect(query: &[(String, String)]) -> Response {
    let to = query.iter().find(|(k, _)| k == "to").map_or("/hello", |(_, v)| v.as_str());
    (StatusCode::FOUND, [(header::LOCATION, to.to_owned())]).into_response()
}

fn authorized(headers: &HeaderMap, bearer: &str, body: &str) -> Response {
    if headers.get(header::AUTHORIZATION).is_some_and(|v| v.as_bytes() == bearer.as_bytes()) {
        body.to_owned().into_response()
    } else {
        (StatusCode::UNAUTHORIZED, "who are you?").into_response()
    }
}

/// A server that answers every connection with `kib` KiB, chunked (no length) or with a
/// `Content-Length`.
fn raw_server(kib: usize, chunked: bool) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let mut head = [0u8; 4096];
            let _ = stream.read(&mut head);
            let chunk = vec![b'y'; 1024];
            if !chunked {
                let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", kib * 1024);
                let _ = stream.write_all(head.as_bytes());
                for _ in 0..kib {
                    if stream.write_all(&chunk).is_err() {
                        break;
                    }
                }
                continue;
            }
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
            for _ in 0..kib {
                let sent = stream.write_all(b"400\r\n").and_then(|()| stream.write_all(&chunk));
                if sent.and_then(|()| stream.write_all(b"\r\n")).is_err() {
                    break;
                }
            }
            let _ = stream.write_all(b"0\r\n\r\n");
        }
    });
    addr
}

/// A service running the `fetcher` guest.
fn fetcher(name: &str, extra: &str, limits: &str) -> String {
    format!(
        "  {name}:\n    tasks: [ {{ file: fetcher{extra} }} ]\n    limits: {{ {limits} }}\n    retry: {{ max_attempts: 1, backoff_ms: 10 }}\n"
    )
}

/// `cannon-host run` with `env`, ready.
fn start(project: &Project, redis: &RedisServer, env: &[(&str, &str)]) -> Running {
    let mut cmd = host(project, redis);
    cmd.env("NO_COLOR", "1");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut running = Running::start_cmd(cmd, project, &[]);
    running.wait_for_log("ready", Duration::from_secs(120));
    running
}

/// Adds one message to `service`; returns its id.
fn send(redis: &RedisServer, service: &str, fields: &[(&str, &str)]) -> String {
    let fields: Vec<(&str, String)> = fields.iter().map(|(k, v)| (*k, (*v).to_owned())).collect();
    add_messages(&mut redis.con(), service, &[fields]).remove(0)
}

/// The taskback of message `id` (`Ok`) or its dead letter's error (`Err`).
fn outcome(redis: &RedisServer, service: &str, id: &str, host: &Running) -> Result<Fields, String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut con = redis.con();
    loop {
        for (stream, ok) in [("taskback", true), ("dead", false)] {
            let found =
                entries(&mut con, &key(service, stream)).into_iter().find(|(_, f)| field(f, "cannon.id") == Some(id));
            if let Some((_, fields)) = found {
                return if ok {
                    Ok(fields)
                } else {
                    Err(field(&fields, "cannon.error").unwrap_or_default().to_owned())
                };
            }
        }
        assert!(Instant::now() < deadline, "no outcome for {service} {id}:\n{}", host.log_text());
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn ok_body(result: Result<Fields, String>) -> String {
    let fields = result.unwrap_or_else(|e| panic!("expected an answer, got the dead letter {e:?}"));
    assert_eq!(field(&fields, "status"), Some("200"), "{fields:?}");
    field(&fields, "body").unwrap_or_default().to_owned()
}

fn refusal(result: Result<Fields, String>) -> String {
    // Dead-letter errors name the step that failed: `fetcher: ...`, `torch: ...`.
    let result = result.map_err(|e| e.split_once(": ").map_or(e.clone(), |(_, rest)| rest.to_owned()));
    result.err().unwrap_or_else(|| panic!("expected a refusal"))
}

#[test]
fn the_allow_list_holds_for_every_request_redirect_and_resolved_address() {
    component("fetcher");
    let api = Api::start("unused-token-123");
    let port = api.addr.port();
    let closed = TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let redis = RedisServer::start();
    let project = Project::new(&format!(
        "services:\n{}{}{}",
        fetcher(
            "api",
            &format!(", allow: [{{http: [\"http://127.0.0.1:{port}\"]}}]"),
            "timeout_ms: 5000, http_requests: 2"
        ),
        fetcher("named", ", allow: [{http: [\"http://localhost:*\"]}]", "timeout_ms: 5000"),
        fetcher(
            "named_ok",
            ", allow: [{http: [\"http://localhost:*\", \"http://127.0.0.1:*\", \"http://[::1]:*\"]}]",
            "timeout_ms: 5000"
        ),
    ));
    let host = start(&project, &redis, &[]);

    let hello = send(&redis, "api", &[("url", &api.url("/hello"))]);
    let echo = send(
        &redis,
        "api",
        &[("url", &api.url("/echo")), ("method", "PUT"), ("body", "payload"), ("header", "x-custom: kept")],
    );
    let evil = send(&redis, "api", &[("url", "http://api.evil.com/steal")]);
    let other_port = send(&redis, "api", &[("url", &format!("http://127.0.0.1:{closed}/"))]);
    let to_evil = api.url("/redirect?to=http://evil.example/x");
    let redirect_evil = send(&redis, "api", &[("url", &to_evil)]);
    let redirect_ok = send(&redis, "api", &[("url", &api.url("/redirect?to=/hello"))]);
    let too_many = send(&redis, "api", &[("url", &api.url("/hello")), ("repeat", "3")]);
    let rebound = send(&redis, "named", &[("url", &format!("http://localhost:{port}/hello"))]);
    let granted_ip = send(&redis, "named_ok", &[("url", &format!("http://localhost:{port}/hello"))]);

    assert_eq!(ok_body(outcome(&redis, "api", &hello, &host)), "hello from the api");
    assert_eq!(ok_body(outcome(&redis, "api", &echo, &host)), "PUT kept payload");
    let err = refusal(outcome(&redis, "api", &evil, &host));
    assert_eq!(err, "request 1: http: host api.evil.com not allowed by allow.http");
    let err = refusal(outcome(&redis, "api", &other_port, &host));
    assert_eq!(err, format!("request 1: http: http://127.0.0.1:{closed} not allowed by allow.http"));
    let err = refusal(outcome(&redis, "api", &redirect_evil, &host));
    assert_eq!(err, "request 1: http: host evil.example not allowed by allow.http");
    assert_eq!(ok_body(outcome(&redis, "api", &redirect_ok, &host)), "hello from the api");
    let err = refusal(outcome(&redis, "api", &too_many, &host));
    assert_eq!(err, "request 3: http: request limit reached: at most 2 per call (limits.http_requests)");
    let err = refusal(outcome(&redis, "named", &rebound, &host));
    assert!(err.starts_with("request 1: http: host localhost resolves to "), "{err}");
    assert!(err.ends_with(", a loopback address not allowed by allow.http"), "{err}");
    assert_eq!(ok_body(outcome(&redis, "named_ok", &granted_ip, &host)), "hello from the api");

    // Refused requests never reached the server: only the answered ones (and the hops of
    // the redirects, which the server itself answered) are in its log.
    let seen = api.seen.lock().expect("lock").len();
    assert_eq!(seen, 1 + 1 + 1 + 2 + 2 + 1, "requests the api saw");
    let log = host.log_text();
    assert!(log.contains("http: host api.evil.com not allowed by allow.http"), "{log}");
}

#[test]
fn response_size_first_byte_and_the_call_deadline_bound_a_request() {
    component("fetcher");
    let api = Api::start("unused-token-123");
    let chunked = raw_server(1024, true);
    let sized = raw_server(1024, false);
    let redis = RedisServer::start();
    let grant = ", allow: [{http: [\"http://127.0.0.1:*\"]}]";
    let project = Project::new(&format!(
        "services:\n{}{}{}",
        fetcher("small", grant, "timeout_ms: 5000, http_response_kb: 64"),
        fetcher("impatient", grant, "timeout_ms: 5000, http_first_byte_ms: 200"),
        fetcher("deadline", grant, "timeout_ms: 700"),
    ));
    let host = start(&project, &redis, &[]);

    let big = send(&redis, "small", &[("url", &api.url("/big"))]);
    let declared = send(&redis, "small", &[("url", &format!("http://{sized}/"))]);
    let stream = send(&redis, "small", &[("url", &format!("http://{chunked}/"))]);
    let fits = send(&redis, "small", &[("url", &api.url("/hello"))]);
    let slow = send(&redis, "impatient", &[("url", &api.url("/slow"))]);
    let late = send(&redis, "deadline", &[("url", &api.url("/slow"))]);
    let after = send(&redis, "deadline", &[("url", &api.url("/hello"))]);

    let over = format!("http: response from 127.0.0.1:{} over limits.http_response_kb = 64", api.addr.port());
    assert_eq!(refusal(outcome(&redis, "small", &big, &host)), format!("request 1: {over}"));
    let over = format!("http: response from {sized} over limits.http_response_kb = 64");
    assert_eq!(refusal(outcome(&redis, "small", &declared, &host)), format!("request 1: {over}"));
    let over = format!("http: response from {chunked} over limits.http_response_kb = 64");
    assert_eq!(refusal(outcome(&redis, "small", &stream, &host)), format!("request 1: {over}"));
    assert_eq!(ok_body(outcome(&redis, "small", &fits, &host)), "hello from the api");
    let err = refusal(outcome(&redis, "impatient", &slow, &host));
    let port = api.addr.port();
    assert_eq!(
        err,
        format!("request 1: http: no response from 127.0.0.1:{port} within limits.http_first_byte_ms = 200")
    );
    assert_eq!(refusal(outcome(&redis, "deadline", &late, &host)), "deadline exceeded after 700 ms");
    // The worker is free again at once: the next message of the same service is answered.
    assert_eq!(ok_body(outcome(&redis, "deadline", &after, &host)), "hello from the api");
}

#[test]
fn a_secret_reaches_its_component_alone_and_is_masked_everywhere() {
    component("fetcher");
    let token = format!("tok-{}-{}", std::process::id(), Instant::now().elapsed().as_nanos() ^ 0x5eed);
    let api = Api::start(&token);
    let redis = RedisServer::start();
    let grant = format!("allow: [{{http: [\"http://127.0.0.1:{}\"]}}]", api.addr.port());
    let project = Project::new(&format!(
        "services:\n{}{}",
        fetcher("holder", &format!(", {grant}, secrets: {{ API_TOKEN: \"${{EGRESS_TOKEN}}\" }}"), "timeout_ms: 5000"),
        fetcher("other", &format!(", {grant}"), "timeout_ms: 5000"),
    ));
    let env = [("EGRESS_TOKEN", token.as_str())];
    let host = start(&project, &redis, &env);

    let used = send(&redis, "holder", &[("url", &api.url("/auth")), ("auth", "API_TOKEN")]);
    let stranger = send(&redis, "other", &[("url", &api.url("/auth")), ("auth", "API_TOKEN")]);
    let leak = send(&redis, "holder", &[("url", &api.url("/auth")), ("auth", "API_TOKEN"), ("leak", "yes")]);

    let fields = outcome(&redis, "holder", &used, &host).expect("answered");
    assert_eq!((field(&fields, "status"), field(&fields, "body")), (Some("200"), Some("authorized")));
    assert_eq!(field(&fields, "secret"), Some("seen"));
    let fields = outcome(&redis, "other", &stranger, &host).expect("answered");
    assert_eq!((field(&fields, "status"), field(&fields, "secret")), (Some("401"), Some("absent")));
    assert_eq!(refusal(outcome(&redis, "holder", &leak, &host)), "leaking *** on purpose");

    // The guest logged it and printed it: masked in the log; nowhere in any stream.
    let log = host.log_text();
    assert!(log.contains("the token is ***") && log.contains("stdout token ***"), "{log}");
    let mut con = redis.con();
    for service in ["holder", "other"] {
        for stream in ["data", "taskback", "dead"] {
            let all = format!("{:?}", entries(&mut con, &key(service, stream)));
            assert!(!all.contains(&token), "{service}:{stream} holds the secret: {all}");
        }
    }
    for args in [&["ls"][..], &["info", "holder"], &["check"]] {
        let mut cmd = host_cmd(&project, &redis, &env);
        let out = cmd.args(args).output().expect("run");
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "{args:?}: {text}");
        assert!(!text.contains(&token), "{args:?} printed the secret: {text}");
    }
    assert!(!host.log_text().contains(&token), "the host log holds the secret");
    // The api saw the token exactly once: the holder's request (the stranger sent none).
    let seen = api.seen.lock().expect("lock");
    let with_token = seen.iter().filter(|h| h.get(header::AUTHORIZATION).is_some()).count();
    assert_eq!(with_token, 1);
}

fn host_cmd(project: &Project, redis: &RedisServer, env: &[(&str, &str)]) -> std::process::Command {
    let mut cmd = host(project, redis);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

#[test]
fn a_component_importing_outgoing_handler_without_the_grant_is_refused_at_load() {
    component("fetcher");
    let redis = RedisServer::start();
    let project = Project::new(&format!("services:\n{}", fetcher("sneaky", "", "timeout_ms: 1000")));
    for args in [&["check"][..], &["run", "sneaky"]] {
        let out = run_host(&project, &redis, args, None);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}: {stderr}");
        let expected = "service \"sneaky\": component \"fetcher\" imports `wasi:http/";
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
        assert!(stderr.contains("which is not granted; add `allow: [{http: [\"https://HOST\"]}]`"), "{stderr}");
    }
}

#[test]
fn weather_example_answers_from_a_local_api() {
    component("weather");
    let token = "weather-token-for-the-test";
    let api = Api::start(token);
    let redis = RedisServer::start();
    let project = crate::collectors::example(
        "weather",
        &[("    collector: { kind: stdin, conf: { kwargs: { server: local } } }\n", "")],
    );
    let base = format!("http://{}", api.addr);
    let host = start(&project, &redis, &[("WEATHER_API", &base), ("WEATHER_TOKEN", token)]);
    let paris = send(&redis, "weather", &[("user", "ann"), ("text", "weather Paris")]);
    let york = send(&redis, "weather", &[("user", "ann"), ("text", "weather New York")]);
    let fields = outcome(&redis, "weather", &paris, &host).expect("answered");
    assert_eq!(field(&fields, "text"), Some("Paris: 18.5 °C, light rain, wind 12 km/h"));
    let fields = outcome(&redis, "weather", &york, &host).expect("answered");
    assert_eq!(field(&fields, "text"), Some("New York: 18.5 °C, light rain, wind 12 km/h"));
    drop(host);

    // A wrong token: the API refuses, the command fails with a clear error.
    let wrong = start(&project, &redis, &[("WEATHER_API", &base), ("WEATHER_TOKEN", "not-the-right-token")]);
    let refused = send(&redis, "weather", &[("user", "ann"), ("text", "weather Oslo")]);
    assert_eq!(refusal(outcome(&redis, "weather", &refused, &wrong)), "the weather API refused the token");
}

/// An HTTPS server on loopback with a certificate from `ca` (for 127.0.0.1 and localhost),
/// answering `hello over tls` to everything.
fn tls_server(ca: &crate::support::TestCa, runtime: &tokio::runtime::Runtime) -> SocketAddr {
    use hyper_util::rt::TokioIo;
    let (cert, key) = ca.issue("api");
    let config = cannon_host::access::server_config(&cannon_host::config::TlsFiles { cert, key }).expect("tls config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).expect("bind");
    let addr = listener.local_addr().expect("addr");
    runtime.spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else { return };
                let service = hyper::service::service_fn(|_req| async {
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(http_body_util::Full::new(
                        bytes::Bytes::from_static(b"hello over tls"),
                    )))
                });
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tls), service).await;
            });
        }
    });
    addr
}

#[test]
fn https_is_verified_against_the_trusted_roots() {
    component("fetcher");
    let ca = crate::support::TestCa::new();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("rt");
    let tls = tls_server(&ca, &runtime);
    let plain = Api::start("unused-token-123");
    let redis = RedisServer::start();
    let grant = ", allow: [{http: [\"https://127.0.0.1:*\"]}]";
    let project = Project::new(&format!("services:\n{}", fetcher("secure", grant, "timeout_ms: 5000")));
    let host = start(&project, &redis, &[("SSL_CERT_FILE", &ca.cert_text())]);
    let hello = send(&redis, "secure", &[("url", &format!("https://{tls}/"))]);
    // TLS is really spoken: a plain HTTP server on the other end fails the handshake.
    let not_tls = send(&redis, "secure", &[("url", &format!("https://{}/hello", plain.addr))]);
    assert_eq!(ok_body(outcome(&redis, "secure", &hello, &host)), "hello over tls");
    let err = refusal(outcome(&redis, "secure", &not_tls, &host));
    assert!(err.starts_with("request 1: http: TLS with 127.0.0.1 failed: "), "{err}");
}

/// A JavaScript guest (`guests/js/fetch`, `// cannon-allow: http`) calls the same API with
/// `fetch()`; the allow-list holds for it as for Rust.
#[test]
fn javascript_fetch_goes_through_the_same_allow_list() {
    component("fetch-js");
    let api = Api::start("unused-token-123");
    let redis = RedisServer::start();
    let grant = format!("{{ file: fetch-js, allow: [{{http: [\"http://127.0.0.1:{}\"]}}] }}", api.addr.port());
    let project = Project::new(&format!(
        "services:\n  js:\n    tasks: [ {grant} ]\n    limits: {{ timeout_ms: 20000 }}\n    retry: {{ max_attempts: 1 }}\n"
    ));
    let host = start(&project, &redis, &[]);
    let hello = send(&redis, "js", &[("url", &api.url("/hello"))]);
    let evil = send(&redis, "js", &[("url", "http://api.evil.com/")]);
    assert_eq!(ok_body(outcome(&redis, "js", &hello, &host)), "hello from the api");
    let err = refusal(outcome(&redis, "js", &evil, &host));
    // componentize-js's fetch() reports every network failure alike; the host's reason is
    // in its log.
    assert_eq!(err, "fetch: NetworkError when attempting to fetch resource");
    assert!(host.log_text().contains("http: host api.evil.com not allowed by allow.http"), "{}", host.log_text());
}
