//! Deploying components to running workers (`deploy`, `versions`, `rollback`, `sha256:`
//! pins, `run --watch`): real `cannon-host` processes on a real `redis-server` (and the
//! embedded broker), with two versions of one task that answer differently
//! (`guests/test/version-a`, `version-b`).

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::support::{
    Project, RedisServer, Running, add_messages, component, entries, field, host, key, wait_len, xlen,
};

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

fn sha256(path: &Path) -> String {
    use sha2::Digest as _;
    let bytes = std::fs::read(path).expect("read component");
    sha2::Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// `cannon-host ARGS...` against the test's Redis, to completion.
fn cli(project: &Project, redis: &RedisServer, args: &[&str]) -> Output {
    host(project, redis).args(args).stdin(Stdio::null()).output().expect("run cannon-host")
}

/// Like [`cli`], failing the test unless it succeeded; returns stdout.
fn ok(project: &Project, redis: &RedisServer, args: &[&str]) -> String {
    let out = cli(project, redis, args);
    assert!(out.status.success(), "{args:?} failed:\n{}\n{}", text(&out.stdout), text(&out.stderr));
    text(&out.stdout)
}

/// A project whose service `ver` runs the task `ver` (a copy of `version-a` in the project).
fn version_project(extra: &str) -> Project {
    let project = Project::new(&format!(
        "\
services:
  ver:
    tasks:
      - path: ver.wasm
{extra}    workers: {{ concurrency: 4 }}
    retry: {{ max_attempts: 1 }}
"
    ));
    std::fs::copy(component("version_a"), project.path("ver.wasm")).expect("copy version-a");
    project
}

/// Sends one message through Redis and returns its taskback's fields.
fn ask(redis: &RedisServer, service: &str) -> Vec<(String, String)> {
    let mut con = redis.con();
    let before = xlen(&mut con, &key(service, "taskback"));
    let ids = add_messages(&mut con, service, &[vec![("q", "?".to_owned())]]);
    assert_eq!(wait_len(&mut con, &key(service, "taskback"), before + 1, Duration::from_secs(30)), before + 1);
    let all = entries(&mut con, &key(service, "taskback"));
    all.into_iter().find(|(_, f)| field(f, "cannon.id") == Some(ids[0].as_str())).expect("taskback").1
}

fn version_of(redis: &RedisServer) -> String {
    field(&ask(redis, "ver"), "version").expect("version field").to_owned()
}

/// The acceptance test of issue 15: 10,000 messages through a service with two worker
/// processes while its task is deployed 20 times, alternating two versions. Every message
/// is answered exactly once, none fails, and each answer comes from the version that was
/// active when its message started: a message sent after a deploy was acknowledged by both
/// workers, and whose call began before the next deploy started, must show that deploy's
/// version.
#[test]
fn ten_thousand_messages_through_twenty_deploys() {
    const MESSAGES: usize = 10_000;
    const DEPLOYS: usize = 20;
    let redis = RedisServer::start();
    let project = version_project("");
    let files = [component("version_b"), component("version_a")];
    let mut workers: Vec<Running> =
        (0..2).map(|_| Running::start(&project, &redis, &["ver", "--role", "worker"])).collect();
    for worker in &mut workers {
        worker.wait_for_log("ready", Duration::from_secs(120));
    }

    // The sender spreads the messages over the deploys: before deploy k is done it sends at
    // most (k + 1) / (DEPLOYS + 1) of them, in small batches, each stamped with when it was sent.
    let deploys_done = Arc::new(AtomicUsize::new(0));
    let finished = Arc::new(AtomicBool::new(false));
    let sender = {
        let (done, finished, client) = (deploys_done.clone(), finished.clone(), redis.client());
        std::thread::spawn(move || {
            let mut con = client.get_connection().expect("connect");
            let mut sent = 0;
            while sent < MESSAGES {
                let quota = (done.load(Ordering::SeqCst) + 1) * MESSAGES / (DEPLOYS + 1);
                if sent >= quota && !finished.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                }
                let batch: Vec<Vec<(&str, String)>> = (sent..(sent + 20).min(MESSAGES))
                    .map(|n| vec![("n", n.to_string()), ("sent_ms", now_ms().to_string())])
                    .collect();
                sent += batch.len();
                add_messages(&mut con, "ver", &batch);
                std::thread::sleep(Duration::from_millis(8));
            }
        })
    };

    // (started, acknowledged, version) of each deploy.
    let mut timeline: Vec<(u64, u64, &str)> = Vec::new();
    for k in 0..DEPLOYS {
        let (file, version) = (&files[k % 2], ["b", "a"][k % 2]);
        std::thread::sleep(Duration::from_millis(150));
        let started = now_ms();
        let out = ok(&project, &redis, &["deploy", "ver", "ver", &file.display().to_string(), "--wait-s", "60"]);
        let acknowledged = now_ms();
        assert!(out.contains("2 of 2 running workers acknowledged it"), "deploy {k}: {out}");
        timeline.push((started, acknowledged, version));
        deploys_done.fetch_add(1, Ordering::SeqCst);
    }
    finished.store(true, Ordering::SeqCst);
    sender.join().expect("sender");

    let mut con = redis.con();
    let got = wait_len(&mut con, &key("ver", "taskback"), MESSAGES, Duration::from_secs(300));
    assert_eq!(got, MESSAGES, "taskbacks");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(xlen(&mut con, &key("ver", "taskback")), MESSAGES, "no message answered twice");
    assert_eq!(xlen(&mut con, &key("ver", "dead")), 0, "no message failed");

    check_answers(&entries(&mut con, &key("ver", "taskback")), &timeline, MESSAGES);
    for mut worker in workers {
        assert!(worker.terminate().success(), "{}", worker.log_text());
        let log = worker.log_text();
        assert!(!log.contains("cannot load this version"), "{log}");
    }
}

/// Every message answered exactly once, and by the version active for the whole of
/// [sent, began] when one was: deploy k's version after it was acknowledged and before
/// deploy k + 1 started (`timeline`: started, acknowledged, version), `a` before any deploy.
fn check_answers(taskbacks: &[(String, Vec<(String, String)>)], timeline: &[(u64, u64, &str)], messages: usize) {
    let mut answered: HashMap<String, usize> = HashMap::new();
    let (mut checked, mut seen) = (0, HashMap::<String, usize>::new());
    for (_, fields) in taskbacks {
        let get = |k: &str| field(fields, k).unwrap_or_else(|| panic!("no {k} in {fields:?}")).to_owned();
        *answered.entry(get("n")).or_default() += 1;
        let (sent, began, version) = (get("sent_ms").parse::<u64>().expect("ms"), get("started_ms"), get("version"));
        let began: u64 = began.parse().expect("started_ms");
        *seen.entry(version.clone()).or_default() += 1;
        // Which version was active for the whole of [sent, began], if one was.
        let mut expected = (began < timeline[0].0).then_some("a");
        for (k, (_, acknowledged, v)) in timeline.iter().enumerate() {
            let next = timeline.get(k + 1).map_or(u64::MAX, |t| t.0);
            if sent > *acknowledged && began < next {
                expected = Some(v);
            }
        }
        if let Some(expected) = expected {
            assert_eq!(version, expected, "message {fields:?} (timeline {timeline:?})");
            checked += 1;
        }
    }
    let spans: Vec<u64> = timeline.iter().map(|(s, a, _)| a - s).collect();
    eprintln!("checked {checked} of {messages} answers; versions seen {seen:?}; deploy-to-ack ms {spans:?}");
    assert_eq!(answered.len(), messages, "every message answered");
    assert!(answered.values().all(|n| *n == 1), "every message answered exactly once");
    assert!(checked >= messages / 4, "only {checked} answers fell in a window with one active version");
    assert!(seen.get("a").copied().unwrap_or(0) > 1000 && seen.get("b").copied().unwrap_or(0) > 1000, "{seen:?}");
}

/// Refused deploys (an import the compose file does not grant, a compile over the limits)
/// leave the running version serving; `versions` lists what was deployed; `rollback` (to
/// the previous version, and `--to HASH`) swaps back; a failing version's dead letters name
/// `component@version`; `info` shows the running version.
#[test]
fn refused_deploys_keep_the_old_version_and_rollback_swaps_back() {
    let redis = RedisServer::start();
    let project = version_project("        limits: { compile_s: 2 }\n");
    let mut worker = Running::start(&project, &redis, &["ver"]);
    worker.wait_for_log("ready", Duration::from_secs(120));
    assert_eq!(version_of(&redis), "a");

    let kvprobe = component("kvprobe").display().to_string();
    let out = cli(&project, &redis, &["deploy", "ver", "ver", &kvprobe]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("refused; nothing was deployed"), "{stderr}");
    assert!(stderr.contains("which is not granted; add `allow: [kv]`"), "{stderr}");

    let bomb = project.path("bomb.wasm");
    std::fs::write(&bomb, crate::wat::compile_bomb(1500, 1500)).expect("write bomb");
    let out = cli(&project, &redis, &["deploy", "ver", "ver", &bomb.display().to_string()]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("compile exceeded limits.compile_s = 2"), "{stderr}");
    assert!(ok(&project, &redis, &["versions", "ver"]).contains("no deployed version"), "nothing was stored");
    assert_eq!(version_of(&redis), "a", "the old version keeps serving");

    let (a, b) = (component("version_a"), component("version_b"));
    let (sha_a, sha_b) = (sha256(&a), sha256(&b));
    let out = ok(&project, &redis, &["deploy", "ver", "ver", &b.display().to_string(), "--note", "first b"]);
    assert!(out.contains(&format!("deployed ver/ver version {} (sha256:{sha_b}", &sha_b[..12])), "{out}");
    assert!(out.contains("1 of 1 running workers acknowledged it"), "{out}");
    assert_eq!(version_of(&redis), "b");
    ok(&project, &redis, &["deploy", "ver", "ver", &a.display().to_string(), "--note", "back to a"]);
    assert_eq!(version_of(&redis), "a");

    let listed = ok(&project, &redis, &["versions", "ver"]);
    let line = |sha: &str| listed.lines().find(|l| l.contains(&sha[..12])).unwrap_or_default().to_owned();
    assert!(line(&sha_a).starts_with("  * ") && line(&sha_a).contains("1 workers  active"), "{listed}");
    assert!(line(&sha_a).contains("\"back to a\""), "{listed}");
    assert!(line(&sha_b).contains("0 workers") && line(&sha_b).contains("\"first b\""), "{listed}");
    let info = ok(&project, &redis, &["info", "ver"]);
    assert!(
        info.contains(&format!("component ver: deployed version {}; running ver@{} on 1", &sha_a[..12], &sha_a[..12])),
        "{info}"
    );

    let out = ok(&project, &redis, &["rollback", "ver", "ver"]);
    assert!(out.contains(&format!("rolled back ver/ver to version {}", &sha_b[..12])), "{out}");
    assert!(out.contains("1 of 1 running workers acknowledged it"), "{out}");
    assert_eq!(version_of(&redis), "b");
    ok(&project, &redis, &["rollback", "ver", "ver", "--to", &sha_a[..8]]);
    assert_eq!(version_of(&redis), "a");

    // A version that fails: its dead letter names it.
    let fail = component("fail");
    ok(&project, &redis, &["deploy", "ver", "ver", &fail.display().to_string()]);
    let mut con = redis.con();
    add_messages(&mut con, "ver", &[vec![("q", "?".to_owned())]]);
    assert_eq!(wait_len(&mut con, &key("ver", "dead"), 1, Duration::from_secs(30)), 1);
    let dead = entries(&mut con, &key("ver", "dead"));
    let error = field(&dead[0].1, "cannon.error").unwrap_or_default().to_owned();
    assert_eq!(error, format!("ver@{}: failed on purpose", &sha256(&fail)[..12]));
    assert!(worker.log_text().contains(&format!("version={}", &sha256(&fail)[..12])), "call log line");
    assert!(worker.terminate().success(), "{}", worker.log_text());
}

/// A worker that cannot load a deployed version (here: the compose file it runs pins
/// another hash) keeps its version and says so, in its log and in `versions`.
#[test]
fn a_pin_refuses_other_bytes_in_check_run_deploy_and_workers() {
    let redis = RedisServer::start();
    let sha_a = sha256(&component("version_a"));
    let b = component("version_b");
    let sha_b = sha256(&b);
    let pinned = version_project(&format!("        sha256: {sha_b}\n"));
    let out = cli(&pinned, &redis, &["check"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let both = format!("is pinned to sha256:{sha_b} but {} has sha256:{sha_a}", pinned.path("ver.wasm").display());
    assert!(stderr.contains(&both), "{stderr}");
    let out = cli(&pinned, &redis, &["run", "ver"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains(&both), "{}", text(&out.stderr));

    // Pinned to what the file holds: runs; a deploy of other bytes is refused.
    let project = version_project(&format!("        sha256: \"sha256:{sha_a}\"\n"));
    assert!(ok(&project, &redis, &["check"]).contains("1 service OK"));
    let out = cli(&project, &redis, &["deploy", "ver", "ver", &b.display().to_string()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains(&format!("is pinned to sha256:{sha_a} but")), "{}", text(&out.stderr));

    // A worker of the pinned project, while an unpinned copy of the file deploys b to the
    // same service: the worker keeps a and reports why.
    let mut worker = Running::start(&project, &redis, &["ver"]);
    worker.wait_for_log("ready", Duration::from_secs(120));
    let unpinned = version_project("");
    let out = ok(&unpinned, &redis, &["deploy", "ver", "ver", &b.display().to_string()]);
    assert!(out.contains("0 of 1 running workers acknowledged it"), "{out}");
    assert!(out.contains("could not load it and keeps version"), "{out}");
    worker.wait_for_log("cannot load this version; the running one stays", Duration::from_secs(10));
    assert_eq!(version_of(&redis), "a");
    let listed = ok(&project, &redis, &["versions", "ver"]);
    assert!(listed.contains(&format!("failed to load {} (runs {})", &sha_b[..12], &sha_a[..12])), "{listed}");
    let ls = ok(&project, &redis, &["ls"]);
    assert!(ls.contains(&format!("ver@{} (deployed)", &sha_b[..12])), "{ls}");
    // `check` loads the deployed version as `run` would, and refuses it under the pin.
    let out = cli(&project, &redis, &["check"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let short_b = &sha_b[..12];
    assert!(stderr.contains(&format!("deployed version {short_b} of \"ver\"")), "{stderr}");
    assert!(
        stderr.contains(&format!("pinned to sha256:{sha_a} but deployed version {short_b} has sha256:{sha_b}")),
        "{stderr}"
    );
    assert!(ok(&unpinned, &redis, &["check"]).contains(&format!("tasks [ver@{short_b} (deployed)]")), "check names it");
}

/// `run --watch` reloads a component whose file changed, through the same swap; a file
/// that does not load leaves the running version.
#[test]
fn watch_reloads_a_changed_file() {
    let redis = RedisServer::start();
    let project = version_project("");
    let mut worker = Running::start(&project, &redis, &["ver", "--watch"]);
    worker.wait_for_log("ready", Duration::from_secs(120));
    assert_eq!(version_of(&redis), "a");
    let replace = |from: &Path| {
        let tmp = project.path("ver.wasm.tmp");
        std::fs::copy(from, &tmp).expect("copy");
        std::fs::rename(&tmp, project.path("ver.wasm")).expect("rename");
    };
    replace(&component("version_b"));
    worker.wait_for_log("swapped in a new version", Duration::from_secs(30));
    assert_eq!(version_of(&redis), "b");
    std::fs::write(project.path("ver.wasm"), b"not a component").expect("write");
    worker.wait_for_log("cannot load this version; the running one stays", Duration::from_secs(30));
    assert_eq!(version_of(&redis), "b");
    assert!(worker.terminate().success(), "{}", worker.log_text());
}

/// The same deploy, versions and rollback on the embedded broker (no Redis).
#[test]
fn deploy_and_rollback_on_the_embedded_broker() {
    let project = version_project("");
    let data = project.path("data");
    let embedded = |args: &[&str]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_cannon-host"));
        cmd.arg("-f")
            .arg(&project.compose)
            .arg("--broker")
            .arg("embedded")
            .arg("--data-dir")
            .arg(&data)
            .env("CANNON_CACHE_DIR", crate::support::cache_dir())
            .env("CANNON_LOG", "info,cannon_host=debug")
            .env_remove("CANNON_BROKER")
            .current_dir(project.dir.path())
            .args(args);
        cmd
    };
    let run = |args: &[&str]| {
        let out = embedded(args).stdin(Stdio::null()).output().expect("run cannon-host");
        assert!(out.status.success(), "{args:?}: {}\n{}", text(&out.stdout), text(&out.stderr));
        text(&out.stdout)
    };
    let ask = || {
        let out = run(&["send", "ver", "q=?", "--wait"]);
        let taskback: serde_json::Value = serde_json::from_str(out.trim()).expect("taskback JSON");
        taskback["version"].as_str().unwrap_or_default().to_owned()
    };
    let mut worker = Running::start_cmd(embedded(&[]), &project, &["ver"]);
    worker.wait_for_log("ready", Duration::from_secs(120));
    assert_eq!(ask(), "a");
    let b = component("version_b").display().to_string();
    let out = run(&["deploy", "ver", "ver", &b]);
    assert!(out.contains("1 of 1 running workers acknowledged it"), "{out}");
    assert_eq!(ask(), "b");
    let a = component("version_a").display().to_string();
    run(&["deploy", "ver", "ver", &a]);
    assert_eq!(ask(), "a");
    let out = run(&["rollback", "ver", "ver"]);
    assert!(out.contains("1 of 1 running workers acknowledged it"), "{out}");
    assert_eq!(ask(), "b");
    let listed = run(&["versions", "ver", "--json"]);
    let listed: serde_json::Value = serde_json::from_str(listed.trim()).expect("versions JSON");
    let versions = listed["components"][0]["versions"].as_array().cloned().unwrap_or_default();
    assert_eq!(versions.len(), 2, "{listed}");
    let active: Vec<&serde_json::Value> = versions.iter().filter(|v| v["active"] == true).collect();
    assert_eq!(active.len(), 1, "{listed}");
    assert_eq!(active[0]["sha256"], sha256(&component("version_b")), "{listed}");
    assert_eq!(active[0]["workers"], 1, "{listed}");
    assert!(worker.terminate().success(), "{}", worker.log_text());
}

/// Runs the `build.sh` of a project written by `cannon-host new`, reusing the toolchains
/// `guests/build.sh` installed (the guests' target dir with its std, their venv with
/// componentize-py, zig and wasm-tools, their npm packages, wit-bindgen and the WASI
/// adapter) so the test does not download them again. Returns the built component.
fn build_scaffold(dir: &Path, name: &str, lang: &str) -> std::path::PathBuf {
    let repo = crate::support::repo();
    let mut build = Command::new(dir.join("build.sh"));
    build.env("CARGO_TARGET_DIR", repo.join("guests/target"));
    let venv = repo.join("guests/.venv");
    if venv.join("bin/componentize-py").is_file() {
        build.env("COMPONENTIZE_PY", venv.join("bin/componentize-py"));
    }
    if venv.join("bin/wasm-tools").is_file() {
        build.env("VENV", &venv);
    }
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| Path::new(&home).join(".cargo")));
    if let Some(bindgen) = cargo_home.map(|home| home.join("bin/wit-bindgen")).filter(|p| p.is_file()) {
        build.env("WIT_BINDGEN", bindgen);
    }
    let adapter = repo.join("guests/c/.cache/wasi_snapshot_preview1.reactor-48.0.8.wasm");
    if adapter.is_file() {
        build.env("WASI_ADAPTER", adapter);
    }
    let componentize_js = repo.join("guests/js/node_modules/.bin/componentize-js");
    if componentize_js.is_file() {
        build.env("COMPONENTIZE_JS", componentize_js);
    }
    let out = build.output().expect("run build.sh");
    assert!(out.status.success(), "{lang} build failed:\n{}\n{}", text(&out.stdout), text(&out.stderr));
    let wasm = dir.join(format!("{name}.wasm"));
    assert!(wasm.is_file(), "{lang}: build.sh wrote no {name}.wasm");
    wasm
}

/// The fields of a project's `message.json`, as `(key, value)` pairs.
fn test_message(dir: &Path) -> Vec<(String, String)> {
    let message = std::fs::read_to_string(dir.join("message.json")).expect("message.json");
    let message: serde_json::Value = serde_json::from_str(&message).expect("message.json is JSON");
    let object = message.as_object().expect("message.json holds an object");
    object.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned())).collect()
}

/// For each language, `cannon-host new KIND NAME --lang LANG` writes a project whose own
/// `build.sh` produces a component; `deploy` accepts it into a running service (started on a
/// copy of `start_with` as `NAME.wasm`), and the project's test message gets the answer its
/// README names (`expect_key: hello, Ada!`). The task and shell tests use different names:
/// they share the guests' target dir, where a crate's output is named after it.
fn scaffolds_build_deploy_and_answer(kind: &str, name: &str, compose: &str, start_with: &str, expect_key: &str) {
    let redis = RedisServer::start();
    let project = Project::new(compose);
    std::fs::copy(component(start_with), project.path(&format!("{name}.wasm"))).expect("copy a component");
    let mut worker = Running::start(&project, &redis, &["hello"]);
    worker.wait_for_log("ready", Duration::from_secs(120));
    for lang in ["rust", "python", "js", "c"] {
        let dir = project.path(&format!("{name}-{lang}"));
        let out = ok(&project, &redis, &["new", kind, name, "--lang", lang, &dir.display().to_string()]);
        assert!(out.contains("build.sh"), "{out}");
        assert!(dir.join("wit/cannon.wit").is_file() && dir.join("README.md").is_file());
        let wasm = build_scaffold(&dir, name, lang);
        if lang == "rust" {
            // The project's `src/preview1.rs` answers std's preview-1 calls, so wit-component
            // adds no adapter: no core module imports `wasi_snapshot_preview1` (the name as
            // a wasm string, its length byte first; the shim's own export names only contain it).
            let bytes = std::fs::read(&wasm).expect("read the component");
            let adapter = b"\x16wasi_snapshot_preview1";
            assert!(
                !bytes.windows(adapter.len()).any(|w| w == adapter),
                "{kind}: the Rust scaffold carries the adapter"
            );
        }
        let out = ok(&project, &redis, &["deploy", "hello", name, &wasm.display().to_string(), "--wait-s", "120"]);
        assert!(out.contains("1 of 1 running workers acknowledged it"), "{kind} {lang}: {out}");
        let mut con = redis.con();
        let before = xlen(&mut con, &key("hello", "taskback"));
        let fields = test_message(&dir);
        let fields: Vec<(&str, String)> = fields.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
        let ids = add_messages(&mut con, "hello", &[fields]);
        assert_eq!(wait_len(&mut con, &key("hello", "taskback"), before + 1, Duration::from_secs(60)), before + 1);
        let answers = entries(&mut con, &key("hello", "taskback"));
        let answer = &answers.iter().find(|(_, f)| field(f, "cannon.id") == Some(ids[0].as_str())).expect("answer").1;
        assert_eq!(field(answer, expect_key), Some("hello, Ada!"), "{kind} {lang}: {answer:?}");
        let listed = ok(&project, &redis, &["versions", "hello", "--json"]);
        let listed: serde_json::Value = serde_json::from_str(listed.trim()).expect("versions JSON");
        assert_eq!(listed["components"][0]["active"], sha256(&wasm), "{kind} {lang}: {listed}");
    }
    assert!(worker.terminate().success(), "{}", worker.log_text());
}

/// `cannon-host new task` in Rust, Python, JavaScript and C: built, deployed, answering.
#[test]
fn scaffolded_tasks_in_four_languages_build_deploy_and_answer() {
    let compose = "\
services:
  hello:
    tasks:
      - path: greeter.wasm
";
    scaffolds_build_deploy_and_answer("task", "greeter", compose, "version_a", "greeting");
}

/// `cannon-host new shell` in Rust, Python, JavaScript and C: built, deployed as the
/// service's shell, answering `hello Ada` through torch.
#[test]
fn scaffolded_shells_in_four_languages_build_deploy_and_answer() {
    let compose = "\
services:
  hello:
    shell: { path: hello-shell.wasm }
    tasks:
      - torch: { in_key: text, out_key: text }
";
    scaffolds_build_deploy_and_answer("shell", "hello-shell", compose, "dice", "text");
}
