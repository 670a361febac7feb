//! `run --metrics ADDR`: the Prometheus exposition at `/metrics` (scraped and parsed here,
//! not grepped) and the dashboard at `/`, loaded in a real headless Chromium.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::support::{Project, RedisServer, Running, add_messages, component, key, repo, wait_len};

/// A port free right now on loopback.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// `GET path` on `127.0.0.1:port`: (status line, body).
fn get(port: u16, path: &str) -> (String, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to the metrics listener");
    stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    write!(stream, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").expect("write");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("read");
    let text = String::from_utf8(raw).expect("utf-8 reply");
    let (head, body) = text.split_once("\r\n\r\n").expect("header end");
    let status = head.lines().next().unwrap_or_default().to_owned();
    // axum sends a fixed length here; a chunked body would need decoding.
    assert!(!head.to_ascii_lowercase().contains("transfer-encoding: chunked"), "{head}");
    (status, body.to_owned())
}

/// One sample of the exposition: metric name, labels, value.
#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// A parsed OpenMetrics/Prometheus text exposition.
#[derive(Debug, Default)]
struct Exposition {
    types: BTreeMap<String, String>,
    samples: Vec<Sample>,
}

/// Parses the text format: `# TYPE name type` lines and `name{k="v",...} value` samples
/// (label values with `\\`, `\"` and `\n` escapes); other comments are skipped.
fn parse(text: &str) -> Exposition {
    let mut out = Exposition::default();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE line");
            out.types.insert(name.to_owned(), kind.to_owned());
            continue;
        }
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let name_end = line.find(['{', ' ']).expect("sample line");
        let name = line[..name_end].to_owned();
        let mut labels = BTreeMap::new();
        let mut rest = &line[name_end..];
        if let Some(inner) = rest.strip_prefix('{') {
            let mut chars = inner.char_indices().peekable();
            let end = loop {
                // key
                let Some(&(start, c)) = chars.peek() else { panic!("unterminated labels: {line}") };
                if c == '}' {
                    break start + 1;
                }
                let mut key = String::new();
                for (_, c) in chars.by_ref() {
                    if c == '=' {
                        break;
                    }
                    key.push(c);
                }
                assert_eq!(chars.next().map(|(_, c)| c), Some('"'), "label value quote: {line}");
                let mut value = String::new();
                while let Some((_, c)) = chars.next() {
                    match c {
                        '\\' => match chars.next().map(|(_, c)| c) {
                            Some('n') => value.push('\n'),
                            Some(other) => value.push(other),
                            None => panic!("dangling escape: {line}"),
                        },
                        '"' => break,
                        c => value.push(c),
                    }
                }
                labels.insert(key, value);
                if let Some(&(_, ',')) = chars.peek() {
                    chars.next();
                }
            };
            rest = &inner[end..];
        }
        let value = rest.split_whitespace().next().expect("value");
        let value = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("value {v:?} in {line}")),
        };
        out.samples.push(Sample { name, labels, value });
    }
    out
}

impl Exposition {
    /// Samples of `name` whose labels include `want`.
    fn find(&self, name: &str, want: &[(&str, &str)]) -> Vec<&Sample> {
        self.samples
            .iter()
            .filter(|s| s.name == name && want.iter().all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v)))
            .collect()
    }

    /// The one value of `name` with labels `want` (summed when several match; 0 when none).
    fn value(&self, name: &str, want: &[(&str, &str)]) -> f64 {
        self.find(name, want).iter().map(|s| s.value).sum()
    }
}

fn scrape(port: u16) -> Exposition {
    let (status, body) = get(port, "/metrics");
    assert!(status.contains(" 200 "), "{status}\n{body}");
    assert!(body.trim_end().ends_with("# EOF"), "exposition does not end with # EOF:\n{body}");
    parse(&body)
}

/// Scrapes until `ready` holds, failing with the last exposition after `timeout`.
fn scrape_until(port: u16, timeout: Duration, ready: impl Fn(&Exposition) -> bool) -> Exposition {
    let deadline = Instant::now() + timeout;
    loop {
        let exposition = scrape(port);
        if ready(&exposition) {
            return exposition;
        }
        assert!(Instant::now() < deadline, "metrics did not settle: {:#?}", exposition.samples);
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `shout` (with a tick collector that fires once an hour, so only for `collector_up`) and
/// `bad`, whose task is `bad_task`: two attempts per message, then a dead letter.
fn project(metrics_port: u16, bad_task: &str) -> Project {
    component("shout");
    Project::new(&format!(
        "metrics: {{ listen: \"127.0.0.1:{metrics_port}\" }}\n\
         services:\n  \
           shout:\n    collector: {{ kind: tick, every: 1h }}\n    tasks: [ {{ file: shout }} ]\n    workers: {{ concurrency: 2 }}\n  \
           bad:\n    tasks: [ {bad_task} ]\n    limits: {{ timeout_ms: 500, memory_mb: 16 }}\n    retry: {{ max_attempts: 2, backoff_ms: 10 }}\n"
    ))
}

fn start(project: &Project, redis: &RedisServer, args: &[&str]) -> Running {
    let mut host = Running::start(project, redis, args);
    host.wait_for_log("metrics and dashboard listening", Duration::from_secs(120));
    host.wait_for_log("ready", Duration::from_secs(120));
    host
}

#[test]
fn metrics_count_messages_calls_and_broker_gauges() {
    component("crash");
    let redis = RedisServer::start();
    // The compose file names a port that is taken: `--metrics` must win over it.
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let project = project(taken.local_addr().expect("addr").port(), "{ file: crash }");
    let port = free_port();
    let mut host = start(&project, &redis, &["--metrics", &port.to_string()]);
    let mut con = redis.con();

    // Before any message: the service's series exist at zero, the collector is up.
    let before = scrape(port);
    assert_eq!(before.types.get("cannon_messages").map(String::as_str), Some("counter"), "{:?}", before.types);
    assert_eq!(before.types.get("cannon_message_duration_seconds").map(String::as_str), Some("histogram"));
    assert_eq!(before.types.get("cannon_pending").map(String::as_str), Some("gauge"));
    assert_eq!(before.value("cannon_messages_total", &[("service", "shout"), ("outcome", "ok")]), 0.0);
    assert_eq!(before.value("cannon_collector_up", &[("service", "shout"), ("kind", "tick")]), 1.0);

    let shout: Vec<_> = (0..12).map(|i| vec![("text", format!("hello {i}"))]).collect();
    add_messages(&mut con, "shout", &shout);
    add_messages(
        &mut con,
        "bad",
        &[vec![("text", "a".to_owned())], vec![("text", "b".to_owned())], vec![("text", "c".to_owned())]],
    );
    assert_eq!(wait_len(&mut con, &key("shout", "taskback"), 12, Duration::from_secs(60)), 12, "{}", host.log_text());
    assert_eq!(wait_len(&mut con, &key("bad", "dead"), 3, Duration::from_secs(60)), 3, "{}", host.log_text());

    // The broker-side gauges are sampled every 2 s: wait for them to catch up.
    let m = scrape_until(port, Duration::from_secs(30), |m| {
        m.value("cannon_dead_letters", &[("service", "bad")]) == 3.0
            && m.value("cannon_stream_length", &[("service", "shout"), ("stream", "taskback")]) == 12.0
    });
    let messages = |service, outcome| m.value("cannon_messages_total", &[("service", service), ("outcome", outcome)]);
    assert_eq!(messages("shout", "ok"), 12.0);
    assert_eq!(messages("shout", "dead"), 0.0);
    assert_eq!(messages("bad", "ok"), 0.0);
    assert_eq!(messages("bad", "retried"), 3.0, "one retry per message (max_attempts: 2)");
    assert_eq!(messages("bad", "dead"), 3.0);
    assert_eq!(m.value("cannon_taskbacks_total", &[("service", "shout")]), 12.0);
    assert_eq!(m.value("cannon_taskbacks_total", &[("service", "bad")]), 0.0);

    // Calls: labelled by service, component, version (a hash of the bytes) and outcome.
    let traps = m.find("cannon_calls_total", &[("service", "bad"), ("component", "crash"), ("outcome", "trap")]);
    assert_eq!(traps.len(), 1, "{traps:?}");
    assert_eq!(traps[0].value, 6.0, "two attempts of three messages");
    let version = &traps[0].labels["version"];
    assert!(version.len() == 12 && version.chars().all(|c| c.is_ascii_hexdigit()), "version {version:?}");
    assert_eq!(m.value("cannon_calls_total", &[("service", "shout"), ("component", "shout"), ("outcome", "ok")]), 12.0);
    assert_eq!(m.value("cannon_calls_total", &[("service", "shout"), ("outcome", "trap")]), 0.0);

    // Histograms: count matches, buckets are cumulative and end at +Inf = count.
    let shout_seconds = [("service", "shout")];
    assert_eq!(m.value("cannon_message_duration_seconds_count", &shout_seconds), 12.0);
    assert!(m.value("cannon_message_duration_seconds_sum", &shout_seconds) > 0.0);
    let mut buckets: Vec<(f64, f64)> = m
        .find("cannon_message_duration_seconds_bucket", &shout_seconds)
        .iter()
        .map(|s| (s.labels["le"].parse::<f64>().unwrap_or(f64::INFINITY), s.value))
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    assert!(buckets.len() > 5, "{buckets:?}");
    assert!(buckets.windows(2).all(|w| w[0].1 <= w[1].1), "not cumulative: {buckets:?}");
    assert_eq!(buckets.last().copied(), Some((f64::INFINITY, 12.0)));
    assert_eq!(m.value("cannon_message_duration_seconds_count", &[("service", "bad")]), 3.0);
    assert_eq!(m.value("cannon_call_seconds_count", &[("component", "crash")]), 6.0);
    assert_eq!(m.value("cannon_instantiate_seconds_count", &[("component", "shout")]), 12.0);
    assert_eq!(m.value("cannon_seat_wait_seconds_count", &[("component", "shout")]), 12.0);
    assert_eq!(m.value("cannon_guest_memory_peak_bytes_count", &[("component", "shout")]), 12.0);

    // Gauges: nothing in flight or pending any more; stream lengths from the broker.
    for service in ["shout", "bad"] {
        assert_eq!(m.value("cannon_in_flight", &[("service", service)]), 0.0, "{service}");
        assert_eq!(m.value("cannon_pending", &[("service", service)]), 0.0, "{service}");
    }
    assert_eq!(m.value("cannon_stream_length", &[("service", "shout"), ("stream", "data")]), 12.0);
    assert_eq!(m.value("cannon_stream_length", &[("service", "bad"), ("stream", "dead")]), 3.0);
    assert_eq!(m.value("cannon_dead_letters", &[("service", "shout")]), 0.0);
    assert_eq!(m.value("cannon_collector_up", &[("service", "shout"), ("kind", "tick")]), 1.0);
    assert!(m.value("cannon_process_resident_memory_bytes", &[]) > 1e6);

    // The status JSON the dashboard polls carries the same counts and the latest errors.
    let (status, body) = get(port, "/api/status");
    assert!(status.contains(" 200 "), "{status}");
    let json: serde_json::Value = serde_json::from_str(&body).expect("status JSON");
    let bad = json["services"].as_array().expect("services").iter().find(|s| s["name"] == "bad").expect("bad");
    assert_eq!(bad["dead"], 3);
    assert_eq!(bad["errors"].as_array().map(Vec::len), Some(3));
    let error = bad["errors"][0]["error"].as_str().map(crate::support::unversioned).unwrap_or_default();
    assert!(error.starts_with("crash: trap:"), "{bad}");

    let (status, _) = get(port, "/nope");
    assert!(status.contains(" 404 "), "{status}");
    assert!(host.terminate().success(), "{}", host.log_text());
}

#[test]
fn compose_file_sets_the_metrics_listener() {
    component("crash");
    let redis = RedisServer::start();
    let port = free_port();
    let project = project(port, "{ file: crash }");
    let mut host = start(&project, &redis, &["shout"]);
    let m = scrape(port);
    assert_eq!(m.value("cannon_collector_up", &[("service", "shout"), ("kind", "tick")]), 1.0);
    // Only the selected service runs: `bad` has no series.
    assert!(m.find("cannon_messages_total", &[("service", "bad")]).is_empty());
    assert!(host.terminate().success(), "{}", host.log_text());
}

/// `CANNON_METRICS=off` turns the per-message and per-call counting off while the listener and
/// the broker-side gauges keep working (the switch the metrics' A/B cost figure uses).
#[test]
fn metrics_off_counts_nothing_but_still_samples_the_broker() {
    component("crash");
    let redis = RedisServer::start();
    let port = free_port();
    let project = project(port, "{ file: crash }");
    let mut cmd = crate::support::host(&project, &redis);
    cmd.env("CANNON_METRICS", "off");
    let mut host = Running::start_cmd(cmd, &project, &["shout"]);
    host.wait_for_log("metrics and dashboard listening", Duration::from_secs(120));
    host.wait_for_log("ready", Duration::from_secs(120));
    let mut con = redis.con();
    let shout: Vec<_> = (0..5).map(|i| vec![("text", format!("hello {i}"))]).collect();
    add_messages(&mut con, "shout", &shout);
    assert_eq!(wait_len(&mut con, &key("shout", "taskback"), 5, Duration::from_secs(60)), 5, "{}", host.log_text());
    let m = scrape_until(port, Duration::from_secs(30), |m| {
        m.value("cannon_stream_length", &[("service", "shout"), ("stream", "taskback")]) == 5.0
    });
    assert_eq!(m.value("cannon_messages_total", &[("service", "shout"), ("outcome", "ok")]), 0.0);
    assert_eq!(m.value("cannon_message_duration_seconds_count", &[("service", "shout")]), 0.0);
    assert!(m.find("cannon_calls_total", &[("service", "shout")]).is_empty(), "no call series when off");
    assert!(host.terminate().success(), "{}", host.log_text());
}

/// Where the browser test leaves its screenshots.
fn output_dir() -> PathBuf {
    let dir = repo().join("target").join("test-output");
    std::fs::create_dir_all(&dir).expect("test output dir");
    dir
}

/// Debian's Chromium, installed by `scripts/ensure-chromium` when missing.
fn chromium() -> PathBuf {
    let out = Command::new(repo().join("scripts").join("ensure-chromium")).output().expect("run ensure-chromium");
    assert!(out.status.success(), "cannot install chromium: {}", String::from_utf8_lossy(&out.stderr));
    PathBuf::from(String::from_utf8(out.stdout).expect("path").trim())
}

/// Runs headless Chromium on `url` with `extra` arguments; returns its stdout.
fn browse(browser: &PathBuf, url: &str, extra: &[&str]) -> String {
    let profile = tempfile::tempdir().expect("profile dir");
    let out = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--virtual-time-budget=5000",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(extra)
        .arg(url)
        .output()
        .expect("run chromium");
    assert!(out.status.success(), "chromium failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The text of the first element after `marker` in `dom` (tags stripped, up to `</div>`).
fn stat_value<'a>(dom: &'a str, service_marker: &str, stat: &str) -> &'a str {
    let card = &dom[dom.find(service_marker).unwrap_or_else(|| panic!("no {service_marker} in {dom}"))..];
    let at = card.find(&format!("data-stat=\"{stat}\"")).unwrap_or_else(|| panic!("no stat {stat} in {card}"));
    let after = &card[at..];
    let v = after.find("class=\"v\">").expect("value div") + "class=\"v\">".len();
    let end = after[v..].find('<').expect("value end");
    &after[v..v + end]
}

#[test]
fn dashboard_shows_rates_and_dead_letters_in_a_browser() {
    component("failing");
    let browser = chromium();
    let redis = RedisServer::start();
    let port = free_port();
    let project = project(port, "{ file: failing }");
    let mut host = start(&project, &redis, &[]);

    // Messages flow to `shout` the whole time; `bad` fails with guest text that is HTML.
    let flowing = Arc::new(AtomicBool::new(true));
    let feeder = {
        let flowing = flowing.clone();
        let mut con = redis.con();
        std::thread::spawn(move || {
            let mut n = 0;
            while flowing.load(Ordering::Relaxed) {
                let batch: Vec<_> = (0..10).map(|i| vec![("text", format!("flow {n} {i}"))]).collect();
                add_messages(&mut con, "shout", &batch);
                n += 1;
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    let hostile = "<img src=x onerror=alert(1)><b>bold</b>";
    let mut con = redis.con();
    add_messages(&mut con, "bad", &[vec![("text", hostile.to_owned())]]);
    assert_eq!(wait_len(&mut con, &key("bad", "dead"), 1, Duration::from_secs(60)), 1, "{}", host.log_text());
    // Wait until the history holds a few samples with traffic and the dead letter is sampled.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, body) = get(port, "/api/status");
        let json: serde_json::Value = serde_json::from_str(&body).expect("status JSON");
        let services = json["services"].as_array().cloned().unwrap_or_default();
        let shout = services.iter().find(|s| s["name"] == "shout").cloned().unwrap_or_default();
        let bad = services.iter().find(|s| s["name"] == "bad").cloned().unwrap_or_default();
        let moving = shout["series"]
            .as_array()
            .is_some_and(|s| s.len() >= 3 && s.iter().rev().take(3).all(|p| p["rate"].as_f64() > Some(0.0)));
        if moving && bad["dead_letters"] == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "no traffic in the status: {json}");
        std::thread::sleep(Duration::from_millis(500));
    }

    let url = format!("http://127.0.0.1:{port}/");
    let dom = browse(&browser, &url, &["--dump-dom"]);
    let dir = output_dir();
    let wide = dir.join("dashboard.png");
    let phone = dir.join("dashboard-phone.png");
    let _ = std::fs::remove_file(&wide);
    let _ = std::fs::remove_file(&phone);
    browse(&browser, &url, &[&format!("--screenshot={}", wide.display()), "--window-size=1280,1000"]);
    browse(&browser, &url, &[&format!("--screenshot={}", phone.display()), "--window-size=390,1400"]);
    flowing.store(false, Ordering::Relaxed);
    feeder.join().expect("feeder");

    // The page rendered both services, shout's rate is above zero, bad's dead letter shows.
    let shout = "data-service=\"shout\"";
    let bad = "data-service=\"bad\"";
    assert!(dom.contains(shout) && dom.contains(bad), "{dom}");
    let rate = stat_value(&dom, shout, "msg/s");
    assert!(rate.parse::<f64>().is_ok_and(|r| r > 0.0), "shout's rate {rate:?} in {dom}");
    assert_eq!(stat_value(&dom, bad, "dead letters"), "1", "{dom}");
    assert_eq!(stat_value(&dom, bad, "dead"), "1", "{dom}");
    let card = &dom[dom.find(bad).expect("bad card")..];
    assert!(card.contains("class=\"dead-letter\""), "no dead-letter row: {card}");
    // The guest's HTML is shown as text, never parsed: escaped in the serialized DOM.
    assert!(dom.contains("&lt;img src=x onerror=alert(1)&gt;&lt;b&gt;bold&lt;/b&gt;"), "{dom}");
    assert!(!dom.contains("<img src=\"x\"") && !dom.contains("<b>bold</b>"), "guest HTML was parsed: {dom}");
    assert!(dom.contains("tick up"), "collector state missing: {dom}");
    assert!(dom.contains(">failing<"), "component missing: {dom}");
    for shot in [&wide, &phone] {
        let size = std::fs::metadata(shot).map(|m| m.len()).unwrap_or(0);
        assert!(size > 10_000, "screenshot {} missing or empty", shot.display());
    }
    assert!(host.terminate().success(), "{}", host.log_text());
}
