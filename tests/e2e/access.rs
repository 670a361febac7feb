//! Who may talk to cannon (issue 23): http collector `auth:` (bearer, GitHub-style and
//! Slack-style signatures), `check` refusing open collectors on other interfaces, HTTPS
//! with certificate reloads, Redis with TLS and a password never printed, and the per-service
//! ACL user.

use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac as _};
use sha2::Sha256;

use crate::collectors::{count, plain, wait_count};
use crate::support::{
    Project, RedisServer, Running, TestCa, cache_dir, component, entries, field, key, run_host, wait_len, xlen,
};

const TOKEN: &str = "tok-0123456789abcdef-xyz";
const SECRET: &str = "sig-secret-0123456789abcdef";

/// The port the http collector logged (`address=127.0.0.1:PORT`).
fn logged_port(host: &mut Running) -> u16 {
    host.wait_for_log("http collector listening", Duration::from_secs(60));
    let log = plain(&host.log_text());
    let line = log.lines().find(|l| l.contains("http collector listening")).expect("listening line");
    let address = line.split_whitespace().find_map(|w| w.strip_prefix("address=")).expect("address= in the line");
    address.rsplit(':').next().and_then(|p| p.parse().ok()).unwrap_or_else(|| panic!("no port in {line}"))
}

/// One HTTP/1.1 `POST` with extra headers over any stream; returns status and body.
fn exchange(
    stream: impl std::io::Read + std::io::Write,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String) {
    exchange_method(stream, "POST", target, headers, body)
}

/// One HTTP/1.1 request of any method with extra headers; returns status and body.
fn exchange_method(
    mut stream: impl std::io::Read + std::io::Write,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String) {
    let mut head = format!(
        "{method} {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).expect("write request");
    stream.write_all(body).expect("write body");
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (status, body)
}

fn post(port: u16, target: &str, headers: &[(&str, &str)], body: &[u8]) -> (u16, String) {
    let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(60))).expect("timeout");
    exchange(stream, target, headers, body)
}

fn hmac_hex(parts: &[&[u8]]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).expect("key");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect()
}

/// A project with one http collector (`auth` and more as YAML flow entries) in front of shout.
fn hook(extra: &str) -> Project {
    component("shout");
    Project::new(&format!(
        "services:\n  hook:\n    collector: {{ kind: http, listen: \"127.0.0.1:0\", {extra} }}\n    tasks: [ {{ file: shout }} ]\n"
    ))
}

fn start(project: &Project, redis: &RedisServer) -> Running {
    let mut cmd = crate::support::host(project, redis);
    cmd.env("HOOK_TOKEN", TOKEN).env("HOOK_SECRET", SECRET);
    Running::start_cmd(cmd, project, &["hook"])
}

#[test]
fn bearer_tokens_are_required_and_refusals_logged_once_per_burst() {
    let redis = RedisServer::start();
    let project = hook("auth: { bearer: \"${HOOK_TOKEN}\" }");
    let mut host = start(&project, &redis);
    let port = logged_port(&mut host);
    let body = br#"{"text": "hi"}"#;
    let wrong = format!("Bearer {TOKEN}x");
    let basic = format!("Basic {TOKEN}");
    for headers in [vec![], vec![("Authorization", wrong.as_str())], vec![("Authorization", basic.as_str())]] {
        let (status, text) = post(port, "/", &headers, body);
        assert_eq!((status, text.trim()), (401, r#"{"error":"unauthorized"}"#), "{headers:?}");
    }
    let mut con = redis.con();
    assert_eq!(xlen(&mut con, &key("hook", "data")), 0, "nothing refused was added");
    let good = format!("Bearer {TOKEN}");
    let (status, text) = post(port, "/?wait=20000", &[("Authorization", &good)], body);
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("HI"), "{text}");
    assert_eq!(xlen(&mut con, &key("hook", "data")), 1);
    // `/healthz` stays open for load balancers.
    let (status, _) = crate::collectors::http(port, "GET", "/healthz", b"");
    assert_eq!(status, 200);
    // Three refusals, one log line (a burst), counted; the token never appears.
    let log = plain(&host.log_text());
    assert_eq!(count(&host, "request refused (401)"), 1, "{log}");
    assert!(log.contains("reason=\"missing credentials\""), "{log}");
    assert!(!log.contains(TOKEN), "the token leaked into the log:\n{log}");
}

#[test]
fn hub_signatures_must_match_the_raw_body() {
    let redis = RedisServer::start();
    let project = hook("auth: { hmac_sha256: { secret: \"${HOOK_SECRET}\" } }");
    let mut host = start(&project, &redis);
    let port = logged_port(&mut host);
    let body = br#"{"text": "signed"}"#;
    let good = format!("sha256={}", hmac_hex(&[body]));
    let other_body = format!("sha256={}", hmac_hex(&[b"{}"]));
    let refused: [Vec<(&str, &str)>; 4] = [
        vec![],
        vec![("X-Hub-Signature-256", other_body.as_str())],
        vec![("X-Hub-Signature-256", &good[7..])],
        vec![("X-Hub-Signature-256", "sha256=00")],
    ];
    for headers in &refused {
        assert_eq!(post(port, "/", headers, body).0, 401, "{headers:?}");
    }
    let mut con = redis.con();
    assert_eq!(xlen(&mut con, &key("hook", "data")), 0);
    assert_eq!(post(port, "/", &[("X-Hub-Signature-256", &good)], body).0, 202);
    let data = entries(&mut con, &key("hook", "data"));
    assert_eq!(data.len(), 1);
    assert_eq!(field(&data[0].1, "text"), Some("signed"));
    assert!(!host.log_text().contains(SECRET));
}

#[test]
fn slack_signatures_refuse_stale_and_replayed_requests() {
    let redis = RedisServer::start();
    let project = hook("auth: { slack: { secret: \"${HOOK_SECRET}\", window: 5m } }");
    let mut host = start(&project, &redis);
    let port = logged_port(&mut host);
    let now = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_secs();
    let body = br#"{"text": "from slack"}"#;
    let signed = |stamp: u64, body: &[u8]| {
        let stamp = stamp.to_string();
        (format!("v0={}", hmac_hex(&[b"v0:", stamp.as_bytes(), b":", body])), stamp)
    };
    let send = |(sig, stamp): &(String, String), body: &[u8]| {
        post(port, "/", &[("X-Slack-Signature", sig), ("X-Slack-Request-Timestamp", stamp)], body).0
    };
    let fresh = signed(now, body);
    assert_eq!(send(&fresh, body), 202);
    assert_eq!(send(&fresh, body), 401, "the same request again is a replay");
    assert_eq!(send(&signed(now - 600, body), body), 401, "signed, but ten minutes old");
    assert_eq!(send(&fresh, br#"{"text": "tampered"}"#), 401, "another body under the same signature");
    assert_eq!(send(&(fresh.0.clone(), (now - 1).to_string()), body), 401, "another timestamp");
    assert_eq!(post(port, "/", &[], body).0, 401);
    assert_eq!(send(&signed(now - 1, br#"{"text": "second"}"#), br#"{"text": "second"}"#), 202);
    let mut con = redis.con();
    let texts: Vec<String> = entries(&mut con, &key("hook", "data"))
        .iter()
        .filter_map(|(_, f)| field(f, "text").map(str::to_owned))
        .collect();
    assert_eq!(texts, ["from slack", "second"]);
}

#[test]
fn check_and_run_refuse_an_open_collector_on_other_interfaces() {
    let redis = RedisServer::start();
    component("shout");
    let body =
        "services:\n  hook:\n    collector: { kind: http, listen: \"0.0.0.0:0\" }\n    tasks: [ { file: shout } ]\n";
    let project = Project::new(body);
    for verb in ["check", "run"] {
        let out = run_host(&project, &redis, &[verb], None);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{verb}: {stderr}");
        assert!(stderr.contains("reachable from other machines"), "{verb}: {stderr}");
        assert!(stderr.contains("auth: none"), "{verb}: {stderr}");
    }
    let open = Project::new(&body.replace("listen: \"0.0.0.0:0\"", "listen: \"0.0.0.0:0\", auth: none"));
    let out = run_host(&open, &redis, &["check"], None);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // A secret that is too short is refused without being shown.
    let short =
        Project::new(&body.replace("listen: \"0.0.0.0:0\"", "listen: \"0.0.0.0:0\", auth: { bearer: \"${SHORT}\" }"));
    let mut cmd = crate::support::host(&short, &redis);
    let out = cmd.arg("check").env("SHORT", "hunter2").output().expect("check");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("too short"), "{stderr}");
    assert!(!stderr.contains("hunter2"), "{stderr}");
}

/// A TLS client trusting only `ca`; returns the server's certificate and the answer.
fn tls_post(ca: &TestCa, port: u16, target: &str, headers: &[(&str, &str)], body: &[u8]) -> (Vec<u8>, u16, String) {
    tls_request(ca, port, "POST", target, headers, body)
}

/// One HTTPS request trusting only the test CA; returns the server's certificate, status, body.
fn tls_request(
    ca: &TestCa,
    port: u16,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (Vec<u8>, u16, String) {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, ServerName};
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from_pem_file(ca.cert()).expect("ca pem")).expect("ca");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = ServerName::try_from("127.0.0.1").expect("name");
    let conn = rustls::ClientConnection::new(Arc::new(config), name).expect("client");
    let tcp = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    tcp.set_read_timeout(Some(Duration::from_secs(60))).expect("timeout");
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    while tls.conn.is_handshaking() {
        tls.conn.complete_io(&mut tls.sock).expect("tls handshake");
    }
    let peer = tls.conn.peer_certificates().and_then(|c| c.first()).expect("server certificate").to_vec();
    let (status, text) = exchange_method(&mut tls, method, target, headers, body);
    (peer, status, text)
}

fn der(pem: &std::path::Path) -> Vec<u8> {
    use rustls::pki_types::pem::PemObject as _;
    rustls::pki_types::CertificateDer::from_pem_file(pem).expect("pem").to_vec()
}

#[test]
fn https_collector_serves_and_reloads_its_certificate() {
    let redis = RedisServer::start();
    let ca = TestCa::new();
    let (cert, key_file) = ca.issue("hook");
    let (live_cert, live_key) = (ca.dir.path().join("live.pem"), ca.dir.path().join("live.key"));
    std::fs::copy(&cert, &live_cert).expect("copy");
    std::fs::copy(&key_file, &live_key).expect("copy");
    let tls = format!(
        "auth: {{ bearer: \"${{HOOK_TOKEN}}\" }}, tls: {{ cert: {}, key: {} }}",
        live_cert.display(),
        live_key.display()
    );
    let project = hook(&tls);
    let mut host = start(&project, &redis);
    let port = logged_port(&mut host);
    assert!(plain(&host.log_text()).contains("scheme=\"https\""), "{}", host.log_text());
    let bearer = format!("Bearer {TOKEN}");
    let (peer, status, text) =
        tls_post(&ca, port, "/?wait=20000", &[("Authorization", &bearer)], br#"{"text": "secure"}"#);
    assert_eq!((status, peer == der(&cert)), (200, true), "{text}");
    assert!(text.contains("SECURE"), "{text}");
    let (_, status, _) = tls_post(&ca, port, "/", &[], br#"{"text": "no token"}"#);
    assert_eq!(status, 401, "TLS does not replace auth");
    // Plain HTTP on the TLS port gets no answer.
    let (status, _) = crate::collectors::http(port, "POST", "/", br#"{"text": "plain"}"#);
    assert!(![200, 202].contains(&status), "plain HTTP was served: {status}");

    // SIGHUP reloads (the same files here).
    let kill = |sig: &str| Command::new("kill").arg(sig).arg(host.child.id().to_string()).status().expect("kill");
    assert!(kill("-HUP").success());
    wait_count(&mut host, "trigger=\"SIGHUP\"", 1, Duration::from_secs(20));
    // New files are picked up without a signal; a broken file keeps the old certificate.
    let (cert2, key2) = ca.issue("hook");
    std::fs::write(&live_cert, "not a certificate").expect("write");
    wait_count(&mut host, "tls reload failed", 1, Duration::from_secs(20));
    assert_eq!(tls_post(&ca, port, "/", &[("Authorization", &bearer)], b"{\"a\": \"1\"}").0, der(&cert));
    std::fs::copy(&key2, &live_key).expect("copy");
    std::fs::copy(&cert2, &live_cert).expect("copy");
    wait_count(&mut host, "trigger=\"files changed\"", 1, Duration::from_secs(20));
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (peer, status, _) = tls_post(&ca, port, "/", &[("Authorization", &bearer)], b"{\"a\": \"2\"}");
        assert_eq!(status, 202);
        if peer == der(&cert2) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the new certificate was never served:\n{}", host.log_text());
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(!host.log_text().contains(TOKEN));
}

/// `cannon-host` against `broker` (not the harness's plain URL), with the test CA trusted.
fn host_with(project: &Project, broker: &str, ca: &TestCa) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cannon-host"));
    cmd.arg("-f")
        .arg(&project.compose)
        .arg("--broker")
        .arg(broker)
        .env("CANNON_CACHE_DIR", cache_dir())
        .env_remove("CANNON_BROKER")
        .env("SSL_CERT_FILE", ca.cert())
        .env("CANNON_LOG", "debug,wasmtime=warn,cranelift=warn")
        .current_dir(project.dir.path());
    cmd
}

#[test]
fn worker_runs_on_redis_with_tls_and_a_password_it_never_prints() {
    let ca = TestCa::new();
    let password = "pw-never-printed-4711";
    let redis = RedisServer::start_secure(&ca, password);
    component("shout");
    let project = Project::new("services:\n  shout:\n    tasks: [ { file: shout } ]\n");
    let tls_port = redis.tls_port.expect("tls port");
    let url = format!("rediss://:{password}@127.0.0.1:{tls_port}");
    let mut host = Running::start_cmd(host_with(&project, &url, &ca), &project, &["shout", "--role", "worker"]);
    host.wait_for_log("ready", Duration::from_secs(60));
    let mut con = redis.con();
    crate::support::add_messages(&mut con, "shout", &[vec![("text", "over tls".to_owned())]]);
    assert_eq!(wait_len(&mut con, &key("shout", "taskback"), 1, Duration::from_secs(30)), 1, "{}", host.log_text());
    let taskback = entries(&mut con, &key("shout", "taskback"));
    assert_eq!(field(&taskback[0].1, "text"), Some("OVER TLS"));

    let shown = format!("rediss://:***@127.0.0.1:{tls_port}");
    let out = host_with(&project, &url, &ca).args(["info", "shout", "--json"]).output().expect("info");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && stdout.contains(&shown), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    let mut printed = stdout.into_owned();
    for args in [&["info", "shout"][..], &["ls"], &["check"], &["pending", "shout"]] {
        let out = host_with(&project, &url, &ca).args(args).output().expect("cannon-host");
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        printed += &String::from_utf8_lossy(&out.stdout);
        printed += &String::from_utf8_lossy(&out.stderr);
    }
    // Errors: a wrong password, plain text to the TLS port, an unknown CA.
    let wrong = format!("rediss://:{password}x@127.0.0.1:{tls_port}");
    let plain_url = format!("redis://:{password}@127.0.0.1:{tls_port}");
    for bad in [&wrong, &plain_url] {
        let out = host_with(&project, bad, &ca).args(["info", "shout"]).stdin(Stdio::null()).output().expect("info");
        assert!(!out.status.success(), "{bad} worked");
        printed += &String::from_utf8_lossy(&out.stderr);
    }
    let mut untrusted = host_with(&project, &url, &ca);
    let out = untrusted.env("SSL_CERT_FILE", "/dev/null").args(["info", "shout"]).output().expect("info");
    assert!(!out.status.success(), "a server certificate from an unknown CA was accepted");
    printed += &String::from_utf8_lossy(&out.stderr);
    // The password from `${ENV}` in the compose file's `broker:` works the same way.
    let from_env = Project::new(&format!(
        "broker: \"rediss://:${{REDIS_PW}}@127.0.0.1:{tls_port}\"\nservices:\n  shout:\n    tasks: [ {{ file: shout }} ]\n"
    ));
    let out = Command::new(env!("CARGO_BIN_EXE_cannon-host"))
        .args(["-f", &from_env.compose.display().to_string(), "info", "shout"])
        .env("REDIS_PW", password)
        .env("SSL_CERT_FILE", ca.cert())
        .env("CANNON_CACHE_DIR", cache_dir())
        .env_remove("CANNON_BROKER")
        .output()
        .expect("info");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && stdout.contains(&shown), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    printed += &stdout;
    // Help shows where the URL comes from, never its value.
    let out = host_with(&project, &url, &ca).env("CANNON_BROKER", &url).arg("--help").output().expect("help");
    printed += &String::from_utf8_lossy(&out.stdout);
    assert_eq!(host.terminate().code(), Some(0));
    printed += &host.log_text();
    assert!(printed.contains("***"), "{printed}");
    assert!(!printed.contains(password), "the password was printed:\n{printed}");
}

#[test]
fn acl_user_runs_its_service_and_cannot_touch_another() {
    let redis = RedisServer::start();
    component("shout");
    component("kvprobe");
    let project = Project::new(
        "services:\n  probe:\n    tasks: [ { file: kvprobe, allow: [kv] } ]\n    workers: { concurrency: 1 }\n  other:\n    tasks: [ { file: shout } ]\n",
    );
    let password = "acl-user-password-0815";
    let out = crate::support::host(&project, &redis)
        .args(["acl", "probe", "--password-env", "PROBE_PW"])
        .env("PROBE_PW", password)
        .output()
        .expect("acl");
    let rule = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(rule.starts_with("ACL SETUSER cannon-probe reset on #"), "{rule}");
    assert!(!rule.contains(password), "{rule}");
    let mut admin = redis.con();
    let mut setuser = redis::Cmd::new();
    for arg in rule.split(' ') {
        setuser.arg(arg);
    }
    let () = setuser.query(&mut admin).expect("ACL SETUSER as printed");
    // Another service's data, and its kv keys.
    crate::support::add_messages(&mut admin, "other", &[vec![("text", "private".to_owned())]]);
    let _: () = redis::cmd("SET").arg("{cannon:other}:kv:secret").arg("x").query(&mut admin).expect("SET");

    let url = format!("redis://cannon-probe:{password}@127.0.0.1:{}", redis.port);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cannon-host"));
    cmd.arg("-f")
        .arg(&project.compose)
        .arg("--broker")
        .arg(&url)
        .env("CANNON_CACHE_DIR", cache_dir())
        .env_remove("CANNON_BROKER")
        .env("CANNON_LOG", "info,cannon_host=debug")
        .current_dir(project.dir.path());
    let mut host = Running::start_cmd(cmd, &project, &["probe"]);
    host.wait_for_log("ready", Duration::from_secs(60));
    let ops: Vec<Vec<(&str, String)>> = vec![
        vec![("op", "set".into()), ("key", "a".into()), ("value", "1".into())],
        vec![("op", "set".into()), ("key", "t".into()), ("value", "2".into()), ("ttl_ms", "60000".into())],
        vec![("op", "incr".into()), ("key", "n".into()), ("delta", "5".into())],
        vec![("op", "get".into()), ("key", "a".into())],
        vec![("op", "list".into()), ("prefix", "".into())],
        vec![("op", "delete".into()), ("key", "a".into())],
    ];
    crate::support::add_messages(&mut admin, "probe", &ops);
    let n = wait_len(&mut admin, &key("probe", "taskback"), ops.len(), Duration::from_secs(30));
    assert_eq!(n, ops.len(), "{}", host.log_text());
    let results = entries(&mut admin, &key("probe", "taskback"));
    assert!(results.iter().all(|(_, f)| field(f, "ok") == Some("true")), "{results:?}");
    let got = results.iter().find(|(_, f)| field(f, "op") == Some("get")).expect("the get");
    assert_eq!(field(&got.1, "value"), Some("1"), "{results:?}");
    assert_eq!(xlen(&mut admin, &key("probe", "dead")), 0);
    assert_eq!(host.terminate().code(), Some(0));
    let log = host.log_text();
    assert!(!log.to_lowercase().contains("noperm") && !log.contains(password), "{log}");

    // The same user, on its own, cannot read or write the other service.
    let mut user = redis::Client::open(url.as_str()).expect("url").get_connection().expect("log in as cannon-probe");
    // Commands it may run, on keys it may not touch: refused for the key.
    let denied_key = |cmd: &mut redis::Cmd, con: &mut redis::Connection| {
        let err = cmd.query::<redis::Value>(con).expect_err("allowed");
        let text = err.to_string().to_lowercase();
        assert!(text.contains("noperm") && text.contains("key"), "{err}");
    };
    denied_key(redis::cmd("XLEN").arg(key("other", "data")), &mut user);
    denied_key(redis::cmd("XINFO").arg("STREAM").arg(key("other", "data")), &mut user);
    denied_key(redis::cmd("XADD").arg(key("other", "data")).arg("*").arg("text").arg("forged"), &mut user);
    denied_key(redis::cmd("GET").arg("{cannon:other}:kv:secret"), &mut user);
    denied_key(
        redis::cmd("XREADGROUP").arg("GROUP").arg("cannon").arg("x").arg("STREAMS").arg(key("other", "data")).arg(">"),
        &mut user,
    );
    // Commands a worker never sends: refused outright.
    let denied = |cmd: &mut redis::Cmd, con: &mut redis::Connection| {
        let err = cmd.query::<redis::Value>(con).expect_err("allowed");
        assert!(err.to_string().to_lowercase().contains("noperm"), "{err}");
    };
    denied(redis::cmd("XRANGE").arg(key("other", "data")).arg("-").arg("+"), &mut user);
    denied(redis::cmd("KEYS").arg("*"), &mut user);
    denied(&mut redis::cmd("FLUSHALL"), &mut user);
    let _: redis::Value = redis::cmd("XLEN").arg(key("probe", "data")).query(&mut user).expect("its own stream");
    assert_eq!(xlen(&mut admin, &key("other", "data")), 1);
}

/// Issue 23.5: the metrics listener takes `auth: {bearer}` and `tls:` like the http
/// collector; `check` and `run` refuse it off loopback without `auth:` (compose file or
/// `--metrics`), and only `bearer` or `none` fit a scrape.
#[test]
fn metrics_listener_takes_bearer_and_tls_and_is_never_opened_by_accident() {
    let redis = RedisServer::start();
    component("shout");
    let ca = TestCa::new();
    let (cert, key_file) = ca.issue("metrics");
    let project = Project::new(&format!(
        "metrics: {{ listen: \"127.0.0.1:0\", auth: {{ bearer: \"${{HOOK_TOKEN}}\" }}, tls: {{ cert: {}, key: {} }} }}\nservices:\n  shout:\n    tasks: [ {{ file: shout }} ]\n",
        cert.display(),
        key_file.display()
    ));
    let mut cmd = crate::support::host(&project, &redis);
    cmd.env("HOOK_TOKEN", TOKEN);
    let mut host = Running::start_cmd(cmd, &project, &["shout"]);
    host.wait_for_log("metrics and dashboard listening", Duration::from_secs(60));
    let log = plain(&host.log_text());
    let line = log.lines().find(|l| l.contains("metrics and dashboard listening")).expect("listening line");
    assert!(line.contains("scheme=\"https\""), "{line}");
    let port: u16 = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("addr="))
        .and_then(|a| a.rsplit(':').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {line}"));
    let bearer = format!("Bearer {TOKEN}");
    let (peer, status, text) = tls_request(&ca, port, "GET", "/metrics", &[("Authorization", &bearer)], b"");
    assert_eq!((status, peer == der(&cert)), (200, true), "{text}");
    assert!(text.contains("cannon_messages_total"), "{text}");
    for path in ["/metrics", "/api/status", "/"] {
        let (_, status, text) = tls_request(&ca, port, "GET", path, &[], b"");
        assert_eq!(status, 401, "{path} without a token: {text}");
        let wrong = format!("Bearer {TOKEN}x");
        assert_eq!(tls_request(&ca, port, "GET", path, &[("Authorization", &wrong)], b"").1, 401, "{path}");
    }
    let (status, _) = crate::collectors::http(port, "GET", "/metrics", b"");
    assert_ne!(status, 200, "plain HTTP was served on the TLS port");
    assert!(host.terminate().success());
    assert!(!host.log_text().contains(TOKEN), "the token was logged");

    // Off loopback without `auth:`: refused by check and run, in the file or by the flag.
    let open =
        Project::new("metrics: { listen: \"0.0.0.0:0\" }\nservices:\n  shout:\n    tasks: [ { file: shout } ]\n");
    let out = run_host(&open, &redis, &["check"], None);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("metrics.listen") && err.contains("reachable from other machines"),
        "{err}"
    );
    let plain_file = Project::new("services:\n  shout:\n    tasks: [ { file: shout } ]\n");
    let out = run_host(&plain_file, &redis, &["run", "shout", "--metrics", "0.0.0.0:0"], None);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("reachable from other machines"), "{err}");
    // `auth: none` opens it on purpose; a signature scheme does not fit a GET.
    let signed = Project::new(&format!(
        "metrics: {{ listen: \"0.0.0.0:0\", auth: {{ hmac_sha256: {{ secret: \"{SECRET}\" }} }} }}\nservices:\n  shout:\n    tasks: [ {{ file: shout }} ]\n"
    ));
    let out = run_host(&signed, &redis, &["check"], None);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("expected `bearer` or `none`"), "{err}");
    let none = Project::new(
        "metrics: { listen: \"0.0.0.0:0\", auth: none }\nservices:\n  shout:\n    tasks: [ { file: shout } ]\n",
    );
    let out = run_host(&none, &redis, &["check"], None);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}
