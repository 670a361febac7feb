//! The example services of `examples/` (remember, iwant, branding) end to end: their real
//! guests from `guests/examples/`, a real `cannon-host`, a real broker, and a restart in
//! the middle of each, since the point of all three is state that survives one.

mod branding;
mod iwant;
mod remember;

use std::process::Output;
use std::time::{Duration, Instant};

use cannon_host::time::civil_from_days;
use serde_json::Value;

use crate::conformance::Backend;
use crate::support::{Project, RedisServer, entries, field, key, repo};

/// The stdin collector of the example compose files: the tests drop it (they send chat
/// lines with `cannon-host send`, and the end of standard input would stop the host).
pub const STDIN: &str = "      - { kind: stdin, conf: { kwargs: { server: local } } }\n";

/// One taskback, as (field, value) pairs.
pub type Fields = Vec<(String, String)>;

/// `cannon-host send SERVICE user=USER server=SERVER text=TEXT --wait`: the reply's
/// taskback, or `None` when no reply came within `timeout_ms` (the line was not a command).
pub fn say(
    backend: &Backend,
    project: &Project,
    service: &str,
    user: &str,
    text: &str,
    timeout_ms: u64,
) -> Option<Value> {
    let (user, text, timeout) = (format!("user={user}"), format!("text={text}"), timeout_ms.to_string());
    let args = ["send", service, "server=test", &user, &text, "--wait", "--timeout-ms", &timeout];
    let out: Output = backend.run(project, &args);
    match out.status.code() {
        Some(0) => Some(serde_json::from_slice(&out.stdout).expect("one JSON object")),
        Some(2) => None,
        _ => panic!("{args:?}: {:?}\n{}", out.status, String::from_utf8_lossy(&out.stderr)),
    }
}

/// The reply text to `text` from `user`, failing when there is none.
pub fn reply(backend: &Backend, project: &Project, service: &str, user: &str, text: &str) -> String {
    let answer = say(backend, project, service, user, text, 15_000).unwrap_or_else(|| panic!("no reply to {text:?}"));
    answer["text"].as_str().unwrap_or_else(|| panic!("reply without text: {answer}")).to_owned()
}

/// The taskbacks of `service` that have `name` = `value`.
pub fn taskbacks_where(redis: &RedisServer, service: &str, name: &str, value: &str) -> Vec<Fields> {
    let mut con = redis.con();
    entries(&mut con, &key(service, "taskback"))
        .into_iter()
        .map(|(_, fields)| fields)
        .filter(|fields| field(fields, name) == Some(value))
        .collect()
}

/// Waits until `service` has at least `n` taskbacks with `name` = `value`; returns them.
pub fn wait_taskbacks(redis: &RedisServer, service: &str, name: &str, value: &str, n: usize) -> Vec<Fields> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let found = taskbacks_where(redis, service, name, value);
        if found.len() >= n {
            return found;
        }
        if Instant::now() > deadline {
            let all = entries(&mut redis.con(), &key(service, "taskback"));
            panic!("fewer than {n} taskbacks with {name}={value} within 30 s; all taskbacks: {all:#?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// FNV-1a 64, as the branding guest hashes assets (here to check its taskbacks).
pub fn fnv1a64_hex(bytes: &[u8]) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{hash:016x}")
}

/// `DD-MM` of the UTC day `offset` days from today.
pub fn day_month(offset: i64) -> String {
    let days = i64::try_from(cannon_host::time::now_ms() / 86_400_000).expect("days");
    let (_, month, day) = civil_from_days(days + offset);
    format!("{day:02}-{month:02}")
}

/// Every example's compose file loads and its components pass `cannon-host check`.
#[test]
fn the_example_compose_files_check() {
    let mut examples: Vec<_> = std::fs::read_dir(repo().join("examples"))
        .expect("list examples/")
        .map(|entry| entry.expect("examples/ entry").path().join("cannon-compose.yml"))
        .filter(|compose| compose.is_file())
        .collect();
    examples.sort();
    assert!(examples.len() >= 3, "found only {examples:?}");
    for compose in examples {
        let example = compose.display();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_cannon-host"))
            .arg("-f")
            .arg(&compose)
            .arg("check")
            .env("CANNON_CACHE_DIR", crate::support::cache_dir())
            .env_remove("CANNON_BROKER")
            .output()
            .expect("run cannon-host check");
        assert!(
            out.status.success(),
            "{example}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Known dates (epoch, leap days, century rules) and today as the system's `date` prints it.
#[test]
fn civil_dates_are_right() {
    assert_eq!(civil_from_days(0), (1970, 1, 1));
    assert_eq!(civil_from_days(-1), (1969, 12, 31));
    assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    assert_eq!(civil_from_days(19_782), (2024, 2, 29));
    assert_eq!(civil_from_days(19_783), (2024, 3, 1));
    assert_eq!(civil_from_days(47_541), (2100, 3, 1));
    let date = std::process::Command::new("date").args(["-u", "+%d-%m"]).output().expect("run date");
    let system = String::from_utf8_lossy(&date.stdout).trim().to_string();
    let ours = day_month(0);
    // Tolerate the run crossing midnight between the two readings.
    assert!(
        system == ours || system == day_month(-1) || system == day_month(1),
        "date says {system}, day_month(0) says {ours}"
    );
}
