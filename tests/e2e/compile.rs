//! Loading untrusted components: compile bombs are refused by the sandboxed compile child
//! naming the limit they hit and never cached; `check` loads exactly as `run` does, so a
//! component `run` would refuse is reported by `check` first.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use cannon_host::config::ComponentSpec;
use cannon_host::engine::{Engine, EngineOptions, Message, World};

use crate::support::{Project, RedisServer, Running, add_messages, component, entries, field, host, key, wait_len};
use crate::wat;

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `cannon-host ARGS...` with its own component cache `cache`.
fn host_with_cache(project: &Project, redis: &RedisServer, cache: &Path) -> Command {
    let mut cmd = host(project, redis);
    cmd.env("CANNON_CACHE_DIR", cache).env("NO_COLOR", "1");
    cmd
}

fn output(mut cmd: Command, args: &[&str]) -> Output {
    cmd.args(args).output().expect("run cannon-host")
}

/// The lines of `check`'s stderr that are problems (`FILE:LINE: ...`).
fn problems(out: &Output, project: &Project) -> Vec<String> {
    let file = project.compose.display().to_string();
    text(&out.stderr).lines().filter(|l| l.starts_with(&format!("{file}:"))).map(str::to_owned).collect()
}

fn cache_files(cache: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(cache)
        .map(|dir| dir.filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned())).collect())
        .unwrap_or_default();
    names.sort();
    names
}

#[test]
fn compile_bombs_are_refused_naming_the_limit_and_never_cached() {
    component("shout");
    let redis = RedisServer::start();
    let project = Project::new(
        "\
services:
  shout:
    tasks: [ { file: shout } ]
  slow:
    tasks:
      - path: slow-bomb.wasm
        limits: { compile_s: 2 }
  greedy:
    tasks:
      - path: greedy-bomb.wasm
        limits: { compile_s: 600, compile_mb: 1024 }
",
    );
    // 26 KB that would take over 5 GB and minutes to compile.
    let bomb = wat::compile_bomb(1500, 1500);
    std::fs::write(project.path("slow-bomb.wasm"), &bomb).expect("write bomb");
    std::fs::write(project.path("greedy-bomb.wasm"), &bomb).expect("write bomb");
    let cache = tempfile::tempdir().expect("cache dir");
    let file = project.compose.display().to_string();

    let out = output(host_with_cache(&project, &redis, cache.path()), &["check"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let slow = "service \"slow\": component \"slow-bomb\": compile exceeded limits.compile_s = 2";
    let greedy = "service \"greedy\": component \"greedy-bomb\": compile exceeded limits.compile_mb = 1024";
    assert_eq!(problems(&out, &project), [format!("{file}:7: {slow}"), format!("{file}:11: {greedy}")]);
    // Only the compile that succeeded is cached.
    let cached = cache_files(cache.path());
    assert!(cached.len() == 1 && cached[0].ends_with(".cwasm"), "{cached:?}");
    assert!(text(&out.stderr).contains("compiled in a child process component=shout"), "{}", text(&out.stderr));

    // A worker of the good service, in its own process, while the bombs are refused; its
    // component comes from the cache, without a compile child.
    let mut shout = Running::start_cmd(host_with_cache(&project, &redis, cache.path()), &project, &["shout"]);
    shout.wait_for_log("ready", Duration::from_secs(60));
    assert!(!shout.log_text().contains("compiled in a child process"), "{}", shout.log_text());
    for (service, error) in [("slow", slow), ("greedy", greedy)] {
        let out = output(host_with_cache(&project, &redis, cache.path()), &["run", service]);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains(&format!("error: {error}")), "{stderr}");
    }
    let mut con = redis.con();
    let messages: Vec<_> = (0..10).map(|i| vec![("text", format!("still here {i}"))]).collect();
    let ids = add_messages(&mut con, "shout", &messages);
    assert_eq!(wait_len(&mut con, &key("shout", "taskback"), ids.len(), Duration::from_secs(30)), ids.len());
    for (_, fields) in entries(&mut con, &key("shout", "taskback")) {
        assert!(field(&fields, "text").is_some_and(|t| t.starts_with("STILL HERE ")), "{fields:?}");
    }
    assert_eq!(cache_files(cache.path()), cached, "refused compiles never enter the cache");
    assert!(shout.child.try_wait().expect("wait").is_none(), "the good service's host is still up");
}

#[test]
fn check_reports_what_run_would_refuse() {
    component("shout");
    let redis = RedisServer::start();
    let project = Project::new(
        "\
services:
  shout:
    tasks: [ { file: shout } ]
  memories:
    tasks: [ { path: two-memories.wasm } ]
  tables:
    tasks: [ { path: two-tables.wasm } ]
",
    );
    std::fs::write(project.path("two-memories.wasm"), wat::two_memories()).expect("write");
    std::fs::write(project.path("two-tables.wasm"), wat::two_tables()).expect("write");
    let cache = tempfile::tempdir().expect("cache dir");
    let file = project.compose.display().to_string();

    let out = output(host_with_cache(&project, &redis, cache.path()), &["check"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let found = problems(&out, &project);
    assert_eq!(found.len(), 2, "{found:?}");
    let expect = |line: &str, at: usize, service: &str, words: &[&str]| {
        let prefix = format!("{file}:{at}: service \"{service}\": component ");
        assert!(line.starts_with(&prefix) && line.contains("cannot be run by this host"), "{line}");
        for word in words {
            assert!(line.contains(word), "{word:?} not in {line}");
        }
    };
    expect(&found[0], 6, "memories", &["two-memories", "memor"]);
    expect(&found[1], 8, "tables", &["two-tables", "table"]);
    // Compiled, stored, refused when loaded: removed again; only shout's compile is kept.
    let cached = cache_files(cache.path());
    assert!(cached.len() == 1 && cached[0].ends_with(".cwasm"), "{cached:?}");

    // `run` refuses with the very same words.
    let out = output(host_with_cache(&project, &redis, cache.path()), &["run"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let first = found[0].strip_prefix(&format!("{file}:6: ")).expect("file:line: prefix");
    assert!(stderr.contains(&format!("error: {first}")), "{first}\nnot in\n{stderr}");
}

/// A fresh compile is loaded from the cache file it was stored in, as later starts load it:
/// its code and memory image are the file's pages (page cache, shared by every pool slot),
/// not a private copy the process keeps for its lifetime.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_compile_is_mapped_from_its_cache_file() {
    let cache = tempfile::tempdir().expect("cache dir");
    let engine = Engine::new(&EngineOptions {
        instances: 2,
        cache_dir: Some(cache.path().to_path_buf()),
        ..EngineOptions::default()
    })
    .expect("engine");
    let task = engine
        .load(&ComponentSpec::ungranted("shout", component("shout")), World::Task)
        .unwrap_or_else(|e| panic!("{e}"));
    let cached = cache_files(cache.path());
    assert!(cached.len() == 1 && cached[0].ends_with(".cwasm"), "{cached:?}");
    let file = cache.path().join(&cached[0]).display().to_string();
    let maps = std::fs::read_to_string("/proc/self/maps").expect("maps");
    assert!(maps.lines().any(|line| line.ends_with(&file)), "{file} is not mapped");
    let msg = Message { id: "1-0".into(), service: "s".into(), fields: vec![("text".into(), "hi".into())] };
    task.run(&msg, &Vec::new(), None).await.unwrap_or_else(|e| panic!("{e}"));
}

/// Both components are real, working tasks: only the pooling allocator refuses them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_multi_memory_components_work_without_the_pool() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine =
        Engine::new(&EngineOptions { instances: 0, cache_dir: None, ..EngineOptions::default() }).expect("engine");
    for (name, bytes) in [("two-memories", wat::two_memories()), ("two-tables", wat::two_tables())] {
        let path = dir.path().join(format!("{name}.wasm"));
        std::fs::write(&path, bytes).expect("write");
        let task = engine.load(&ComponentSpec::ungranted(name, path), World::Task).unwrap_or_else(|e| panic!("{e}"));
        let msg = Message { id: "1-0".into(), service: "s".into(), fields: vec![("text".into(), "hi".into())] };
        let out = task.run(&msg, &Vec::new(), None).await.unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(out.value.is_empty(), "{name}: {:?}", out.value);
    }
}
