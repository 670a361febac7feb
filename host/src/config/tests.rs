//! Unit tests of the loader on valid files; broken files live in `tests/compose/broken`
//! (see `tests_fixtures.rs`).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use super::*;

/// A scratch directory holding a compose file's components, removed on drop.
pub(super) struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new() -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("cannon-config-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create temp dir");
        Self(dir)
    }

    /// Creates an empty file (and its parents); the loader only checks that it exists.
    pub fn touch(&self, rel: &str) -> &Self {
        let path = self.0.join(rel);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("create parents");
        std::fs::write(&path, b"").expect("write file");
        self
    }

    pub fn mkdir(&self, rel: &str) -> &Self {
        std::fs::create_dir_all(self.0.join(rel)).expect("create dir");
        self
    }

    pub fn parse(&self, text: &str, vars: &[(&str, &str)]) -> Result<Compose, ConfigError> {
        let env = |name: &str| vars.iter().find(|(k, _)| *k == name).map(|(_, v)| (*v).to_owned());
        parse(text, &self.0.join("cannon-compose.yml"), &env)
    }

    pub fn ok(&self, text: &str, vars: &[(&str, &str)]) -> Compose {
        match self.parse(text, vars) {
            Ok(compose) => compose,
            Err(e) => panic!("expected a valid file, got:\n{e}"),
        }
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Everything the file accepts, once.
pub(super) const FULL: &str = r#"
namespace: prod.bots
broker: redis://${REDIS_HOST}:6379
app_dir: wasm
data_dir: /var/lib/cannon
groups: { moderators: [alice, 42], empty: }
params:
  dice-conf: { sides: 6, fair: true, name: d6 }
services:
  dice:
    collector: { kind: stdin, conf: { kwargs: { user: me } } }
    shell:
      file: dice
      conf: { key: dice-conf, kwargs: { sides: "20", extra: "1" } }
      allow: [kv, taskback, kv]
      files: assets
      permissions: { reset: [moderators], roll: [] }
      limits: { timeout_ms: 500 }
    tasks:
      - torch: { in_key: cmd, out_key: reply, user_key: from }
      - file: shout
        conf: { kwargs: { field: text } }
      - path: extra/x.wasm
        allow: [kv]
    workers: { concurrency: 4, batch: 8, block_ms: 200, drain_timeout_ms: 5000 }
    limits:  { timeout_ms: 2000, memory_mb: 64, output_kb: 128, log_kb: 8, taskbacks: 2, fuel: 1000000, message_kb: 32 }
    retry:   { max_attempts: 5, visibility_timeout_ms: 60000, backoff_ms: 50 }
    stream:  { maxlen: 5000 }
    kv:      { max_keys: 10, max_bytes: 2048, max_value_kb: 1, list_limit: 5 }
  web:
    collector: { kind: http, listen: "127.0.0.1:8080", conf: { key: dice-conf } }
    tasks: { shout: }
  clock:
    collector: { kind: tick, cron: "*/5 * * * *", at_start: true }
    tasks: [shout]
  clock2:
    collector: { kind: tick, every: 250ms }
    tasks: [shout]
  clock3:
    collector: { kind: tick, every: 7 }
    tasks: [shout]
  follow:
    collector: { kind: stream, from: dice, stream: data }
    tasks: [shout]
  bridge:
    collector: { kind: exec, command: python3 bot.py --fast }
  bridge2:
    collector: { kind: exec, command: ["python3", "bot.py"] }
"#;

fn full_dir() -> TempDir {
    let dir = TempDir::new();
    dir.touch("wasm/dice.wasm").touch("wasm/shout.wasm").touch("extra/x.wasm").mkdir("assets");
    dir
}

fn kwargs(pairs: &[(&str, &str)]) -> Kwargs {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

#[test]
fn full_file() {
    let dir = full_dir();
    let c = dir.ok(FULL, &[("REDIS_HOST", "db")]);
    assert_eq!(c.path, dir.0.join("cannon-compose.yml"));
    assert_eq!(c.namespace, "prod.bots");
    assert_eq!(c.broker.as_ref().map(|b| b.expose()), Some("redis://db:6379"));
    assert!(!format!("{c:?}").contains("redis://db"), "Debug shows no broker URL");
    assert_eq!(c.app_dir, dir.0.join("wasm"));
    assert_eq!(c.data_dir, PathBuf::from("/var/lib/cannon"));
    assert_eq!(c.groups["moderators"], ["alice", "42"]);
    assert!(c.groups["empty"].is_empty());
    assert_eq!(c.params["dice-conf"], kwargs(&[("sides", "6"), ("fair", "true"), ("name", "d6")]));
    let names: Vec<&str> = c.services.keys().map(String::as_str).collect();
    assert_eq!(names, ["dice", "web", "clock", "clock2", "clock3", "follow", "bridge", "bridge2"]);

    let dice = &c.services["dice"];
    assert_eq!((dice.name.as_str(), dice.line), ("dice", 10));
    let col = dice.collectors.first().expect("collector");
    assert!(matches!(col.kind, CollectorKind::Stdin));
    assert_eq!((col.kwargs.clone(), col.line), (kwargs(&[("user", "me")]), 11));
    let shell = dice.shell.as_ref().expect("shell");
    assert_eq!(shell.name, "dice");
    assert_eq!(shell.path, dir.0.join("wasm/dice.wasm"));
    assert_eq!(shell.config, kwargs(&[("sides", "20"), ("fair", "true"), ("name", "d6"), ("extra", "1")]));
    assert_eq!(shell.allow, [Capability::Kv, Capability::Taskback]);
    assert_eq!(shell.files.as_deref(), Some(dir.0.join("assets").as_path()));
    assert_eq!(shell.permissions["reset"], ["moderators"]);
    assert!(shell.permissions["roll"].is_empty());
    assert_eq!(shell.limits.timeout_ms, 500);
    assert_eq!(shell.line, 13);
    assert_eq!(dice.tasks.len(), 3);
    let TaskSpec::Torch(torch) = &dice.tasks[0] else { panic!("torch first") };
    assert_eq!((torch.in_key.as_str(), torch.out_key.as_str(), torch.user_key.as_str()), ("cmd", "reply", "from"));
    assert_eq!(torch.line, 20);
    let TaskSpec::Wasm(shout) = &dice.tasks[1] else { panic!("wasm second") };
    assert_eq!((shout.name.as_str(), shout.config.clone()), ("shout", kwargs(&[("field", "text")])));
    assert_eq!(shout.path, dir.0.join("wasm/shout.wasm"));
    assert!(shout.allow.is_empty() && shout.files.is_none() && shout.permissions.is_empty());
    let TaskSpec::Wasm(x) = &dice.tasks[2] else { panic!("wasm third") };
    assert_eq!((x.name.as_str(), x.path.clone()), ("x", dir.0.join("extra/x.wasm")));
    let w = &dice.workers;
    assert_eq!((w.concurrency, w.batch, w.block_ms, w.drain_timeout_ms), (4, 8, 200, 5000));
    let limits = Limits {
        timeout_ms: 2000,
        memory_mb: 64,
        output_kb: 128,
        log_kb: 8,
        taskbacks: 2,
        fuel: Some(1_000_000),
        message_kb: 32,
        max_fields: 1000,
        ..Limits::default()
    };
    assert_eq!(dice.limits, limits);
    assert_eq!(x.limits, limits, "a component without limits: takes the service's");
    let r = dice.retry;
    assert_eq!((r.max_attempts, r.visibility_timeout_ms, r.backoff_ms), (5, 60_000, 50));
    assert_eq!(dice.stream.maxlen, 5000);
    let kv = dice.kv;
    assert_eq!((kv.max_keys, kv.max_bytes, kv.max_value_kb, kv.list_limit), (10, 2048, 1, 5));
}

/// The collector kinds of the full file, each with its options.
#[test]
fn full_file_collectors() {
    let dir = full_dir();
    let c = dir.ok(FULL, &[("REDIS_HOST", "db")]);
    let web = &c.services["web"];
    let col = web.collectors.first().expect("collector");
    assert!(matches!(&col.kind, CollectorKind::Http { listen, .. } if listen == "127.0.0.1:8080"));
    assert_eq!(col.kwargs, c.params["dice-conf"]);
    assert!(matches!(&web.tasks[..], [TaskSpec::Wasm(s)] if s.name == "shout"));
    let kind = |s: &str| c.services[s].collectors.first().map(|c| c.kind.clone());
    assert!(
        matches!(kind("clock"), Some(CollectorKind::Tick { schedule: TickSchedule::Cron(e), at_start: true }) if e == "*/5 * * * *")
    );
    let every = |s: &str| match kind(s) {
        Some(CollectorKind::Tick { schedule: TickSchedule::Every(d), at_start: false }) => d,
        other => panic!("{other:?}"),
    };
    assert_eq!((every("clock2"), every("clock3")), (Duration::from_millis(250), Duration::from_secs(7)));
    assert!(
        matches!(kind("follow"), Some(CollectorKind::Stream { service, stream: StreamKind::Data }) if service == "dice")
    );
    let argv = |s: &str| match kind(s) {
        Some(CollectorKind::Exec { command, .. }) => command,
        other => panic!("{other:?}"),
    };
    assert_eq!(argv("bridge"), ["python3", "bot.py", "--fast"]);
    assert_eq!(argv("bridge2"), ["python3", "bot.py"]);
    assert!(c.services["bridge"].tasks.is_empty());
}

#[test]
fn defaults() {
    let dir = TempDir::new();
    dir.touch("app/d.wasm");
    let c = dir.ok(
        "services:\n  s:\n    collector: { kind: stream, from: t }\n    shell: { file: d }\n    tasks: [torch]\n  t:\n    tasks: [{torch: }]\n    shell: { path: app/d.wasm }\n",
        &[],
    );
    assert_eq!(c.namespace, "cannon");
    assert_eq!(c.broker, None);
    assert_eq!(c.app_dir, dir.0.join("app"));
    assert_eq!(c.data_dir, dir.0.join(".cannon"));
    assert!(c.groups.is_empty() && c.params.is_empty());
    let s = &c.services["s"];
    assert!(matches!(
        &s.collectors.first().expect("collector").kind,
        CollectorKind::Stream { stream: StreamKind::Taskback, .. }
    ));
    assert!(s.collectors.first().expect("collector").kwargs.is_empty());
    for task in s.tasks.iter().chain(&c.services["t"].tasks) {
        let TaskSpec::Torch(t) = task else { panic!("torch") };
        assert_eq!((t.in_key.as_str(), t.out_key.as_str(), t.user_key.as_str()), ("text", "text", "user"));
    }
    let shell = s.shell.as_ref().expect("shell");
    assert!(shell.config.is_empty() && shell.allow.is_empty() && shell.files.is_none() && shell.permissions.is_empty());
    assert_eq!(shell.limits, Limits::default());
    assert_eq!(c.services["t"].shell.as_ref().map(|s| s.name.as_str()), Some("d"));
    assert_eq!(s.limits, Limits::default());
    let (w, wd) = (&s.workers, Workers::default());
    assert_eq!(
        (w.concurrency, w.batch, w.block_ms, w.drain_timeout_ms),
        (wd.concurrency, wd.batch, wd.block_ms, wd.drain_timeout_ms)
    );
    let (r, rd) = (s.retry, Retry::default());
    assert_eq!(
        (r.max_attempts, r.visibility_timeout_ms, r.backoff_ms),
        (rd.max_attempts, rd.visibility_timeout_ms, rd.backoff_ms)
    );
    assert_eq!(s.stream.maxlen, StreamSettings::default().maxlen);
    assert_eq!(s.kv.max_keys, KvQuota::default().max_keys);
}

#[test]
fn env_substitution() {
    let dir = TempDir::new();
    let text = "namespace: ${NS}\nservices:\n  s:\n    collector: { kind: http, listen: \"${HOST}:${PORT}\", auth: none, conf: { kwargs: { price: $$5, raw: '$${X}', n: \"${PORT}\" } } }\n    limits:\n      timeout_ms: ${T}\n";
    let c = dir.ok(text, &[("NS", "ns1"), ("HOST", "0.0.0.0"), ("PORT", "80"), ("T", "250")]);
    assert_eq!(c.namespace, "ns1");
    let s = &c.services["s"];
    assert_eq!(s.limits.timeout_ms, 250, "substituted before type resolution");
    let col = s.collectors.first().expect("collector");
    assert!(matches!(&col.kind, CollectorKind::Http { listen, .. } if listen == "0.0.0.0:80"));
    assert_eq!(col.kwargs, kwargs(&[("price", "$5"), ("raw", "${X}"), ("n", "80")]));

    let err = dir.parse(text, &[("NS", "ns1"), ("PORT", "80")]).expect_err("missing vars");
    let messages: Vec<(usize, &str)> = err.diagnostics.iter().map(|d| (d.line, d.message.as_str())).collect();
    assert_eq!(
        messages,
        [(4, "environment variable `HOST` is not set"), (6, "environment variable `T` is not set")],
        "one message each, nothing more about the values that could not be read"
    );
}

#[test]
fn task_forms_agree() {
    let dir = TempDir::new();
    dir.touch("app/sh.wasm").touch("app/shout.wasm");
    let list = "services:\n  s:\n    shell: { file: sh }\n    tasks:\n      - file: torch\n        in_key: cmd\n      - file: shout\n        conf: { kwargs: { f: text } }\n        limits: { memory_mb: 8 }\n";
    let map = "services:\n  s:\n    shell: { file: sh }\n    tasks:\n      torch: { in_key: cmd }\n      shout:\n        conf: { kwargs: { f: text } }\n        limits: { memory_mb: 8 }\n";
    let (a, b) = (dir.ok(list, &[]), dir.ok(map, &[]));
    for c in [&a, &b] {
        let tasks = &c.services["s"].tasks;
        assert!(matches!(&tasks[0], TaskSpec::Torch(t) if t.in_key == "cmd" && t.out_key == "text"));
        let TaskSpec::Wasm(shout) = &tasks[1] else { panic!("wasm") };
        assert_eq!((shout.name.as_str(), shout.path.clone()), ("shout", dir.0.join("app/shout.wasm")));
        assert_eq!((shout.config.clone(), shout.limits.memory_mb), (kwargs(&[("f", "text")]), 8));
    }
}

#[test]
fn params_are_shared_and_kwargs_overwrite() {
    let dir = TempDir::new();
    dir.touch("app/a.wasm").touch("app/b.wasm");
    let c = dir.ok(
        "params: { p: { x: 1, y: 2 } }\nservices:\n  s:\n    tasks:\n      - { file: a, conf: { key: p } }\n      - { file: b, conf: { key: p, kwargs: { y: three, z: 4 } } }\n",
        &[],
    );
    let configs: Vec<Kwargs> = c.services["s"]
        .tasks
        .iter()
        .map(|t| match t {
            TaskSpec::Wasm(c) => c.config.clone(),
            TaskSpec::Torch(_) => panic!("no torch here"),
        })
        .collect();
    assert_eq!(configs, [kwargs(&[("x", "1"), ("y", "2")]), kwargs(&[("x", "1"), ("y", "three"), ("z", "4")])]);
}

#[test]
fn component_limits_inherit_the_service() {
    let dir = TempDir::new();
    dir.touch("app/a.wasm");
    let c = dir.ok(
        "services:\n  s:\n    limits: { timeout_ms: 5000, memory_mb: 100, fuel: 9 }\n    tasks:\n      - { file: a, limits: { memory_mb: 10, output_kb: 1 } }\n",
        &[],
    );
    let TaskSpec::Wasm(a) = &c.services["s"].tasks[0] else { panic!("wasm") };
    let expected = Limits { timeout_ms: 5000, memory_mb: 10, output_kb: 1, fuel: Some(9), ..Limits::default() };
    assert_eq!(a.limits, expected);
    assert_eq!(c.services["s"].limits.memory_mb, 100);
}

#[test]
fn unreadable_file_names_it() {
    let err = load(Path::new("/nonexistent/cannon-compose.yml")).expect_err("no such file");
    assert_eq!(err.diagnostics.len(), 1);
    let shown = err.to_string();
    assert!(
        shown.starts_with("/nonexistent/cannon-compose.yml: cannot read file /nonexistent/cannon-compose.yml: "),
        "{shown}"
    );
}

#[test]
fn anchors_are_copied() {
    let dir = TempDir::new();
    let c = dir.ok(
        "services:\n  a: &svc\n    collector: { kind: stdin }\n    workers: &w { concurrency: 3 }\n  b: *svc\n  c:\n    collector: { kind: stdin }\n    workers: *w\n",
        &[],
    );
    assert_eq!(c.services["b"].workers.concurrency, 3);
    assert_eq!(c.services["c"].workers.concurrency, 3);
}

#[test]
fn diagnostic_display() {
    let d = Diagnostic { file: "x.yml".into(), line: 3, column: 7, message: "bad".into() };
    let e = ConfigError { diagnostics: vec![d.clone(), Diagnostic { line: 4, ..d.clone() }] };
    assert_eq!(e.to_string(), "x.yml:3:7: bad\nx.yml:4:7: bad");
}
