//! Hostile guests and messages that play with fields (issue 12, items 3 and 5), in a real
//! `cannon-host run`:
//!
//! - `forger` forges `cannon.id` (several times, in look-alike spellings, in taskbacks, in
//!   results and in its own message) with the ids of messages pending at that moment; the
//!   victims, waiting with `send --wait` and the http collector's `?wait`, get only their
//!   own answers, and every entry carries exactly one host id, first.
//! - `fieldflood` returns and sends field counts an attacker chooses; each fails only its
//!   own message with a bounded error, and the http collector refuses a 64,000-key body.

use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::collectors::{http, plain};
use crate::support::{
    Project, RedisServer, Running, add_messages, component, entries, field, host, key, wait_len, xlen,
};

/// Messages the well-behaved `shout` service gets while the hostile ones run.
const SHOUT_MESSAGES: usize = 40;

/// The port the http collector of `service` logged (`address=127.0.0.1:PORT`).
fn logged_port(host: &mut Running, service: &str) -> u16 {
    host.wait_for_log("http collector listening", Duration::from_secs(120));
    let log = plain(&host.log_text());
    let line = log
        .lines()
        .find(|l| l.contains("http collector listening") && l.contains(&format!("service={service}")))
        .unwrap_or_else(|| panic!("no listening line for {service}:\n{log}"));
    let address = line.split_whitespace().find_map(|w| w.strip_prefix("address=")).expect("address= in the line");
    address.rsplit(':').next().and_then(|p| p.parse().ok()).unwrap_or_else(|| panic!("no port in {line}"))
}

/// Waits for the data-stream entry of `service` whose `text` is `text`; returns its id.
fn id_of(con: &mut redis::Connection, service: &str, text: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let found = entries(con, &key(service, "data")).into_iter().find(|(_, f)| field(f, "text") == Some(text));
        if let Some((id, _)) = found {
            return id;
        }
        assert!(Instant::now() < deadline, "no message {text:?} in {service}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The taskback of a victim: its own answer, its own id, nothing forged.
fn assert_own_answer(taskback: &serde_json::Value, id: &str) {
    assert_eq!(taskback["cannon.id"], id, "{taskback}");
    assert_eq!(taskback["answer"], format!("own answer for {id}"), "{taskback}");
    assert!(!taskback.to_string().contains("FORGED"), "a forged answer reached the victim: {taskback}");
}

/// Exactly one host-owned key in `fields`, `cannon.id`, first; returns its value.
fn host_id(fields: &[(String, String)]) -> &str {
    assert_eq!(fields.first().map(|(k, _)| k.as_str()), Some("cannon.id"), "{fields:?}");
    let host_keys = fields.iter().filter(|(k, _)| k.to_ascii_lowercase().starts_with("cannon.")).count();
    assert_eq!(host_keys, 1, "a forged host key got through: {fields:?}");
    &fields[0].1
}

#[test]
fn forged_ids_answer_nobody_else() {
    component("forger");
    let redis = RedisServer::start();
    let project = Project::new(
        "\
services:
  forge:
    collector: { kind: http, listen: \"127.0.0.1:0\" }
    tasks: [ { file: forger, allow: [taskback] } ]
    limits: { timeout_ms: 20000 }
    retry: { max_attempts: 1, backoff_ms: 10 }
    workers: { concurrency: 8 }
",
    );
    let mut running = Running::start(&project, &redis, &[]);
    let port = logged_port(&mut running, "forge");
    let mut con = redis.con();

    // Two victims, slow enough that the attack happens while they are pending.
    let mut send = host(&project, &redis);
    send.args(["send", "forge", "text=victim-send", "sleep_ms=3000", "--wait", "--timeout-ms", "60000"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let send = send.spawn().expect("spawn send --wait");
    let waiter = std::thread::spawn(move || {
        http(port, "POST", "/?wait=60000", br#"{"text": "victim-http", "sleep_ms": "3000"}"#)
    });
    let send_id = id_of(&mut con, "forge", "victim-send");
    let http_id = id_of(&mut con, "forge", "victim-http");

    // The attack: taskbacks and results forging both ids, and messages carrying them.
    let victims = format!("{send_id},{http_id}");
    let attackers = add_messages(
        &mut con,
        "forge",
        &[
            vec![("text", "attacker".to_owned()), ("victim", victims.clone()), ("cannon.id", send_id.clone())],
            vec![
                ("text", "attacker".to_owned()),
                ("victim", victims.clone()),
                ("cannon.id", http_id.clone()),
                ("Cannon.ID", send_id.clone()),
                ("fail", "yes".to_owned()),
            ],
        ],
    );

    let out = send.wait_with_output().expect("send --wait");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let taskback: serde_json::Value = serde_json::from_str(stdout.trim()).expect("send --wait prints JSON");
    assert_own_answer(&taskback, &send_id);
    let (status, body) = waiter.join().expect("http waiter");
    assert_eq!(status, 200, "{body}");
    assert_own_answer(&serde_json::from_str(body.trim()).expect("JSON"), &http_id);

    // The forgeries were written, and before the victims' answers: the waiters saw them.
    let taskbacks = entries(&mut con, &key("forge", "taskback"));
    let position = |id: &str| taskbacks.iter().position(|(_, f)| host_id(f) == id);
    let first_forgery = position(&attackers[0]).expect("the attacker's taskbacks");
    assert!(first_forgery < position(&send_id).expect("victim's taskback"), "{taskbacks:?}");
    assert!(first_forgery < position(&http_id).expect("victim's taskback"), "{taskbacks:?}");
    // 3 taskbacks per victim plus the results; each carries the attacker's id alone.
    let forged: Vec<_> = taskbacks.iter().filter(|(_, f)| host_id(f) == attackers[0]).collect();
    assert_eq!(forged.len(), 7, "{forged:?}");
    assert!(forged.iter().all(|(_, f)| f.iter().any(|(_, v)| v.contains("FORGED"))), "{forged:?}");
    // A look-alike key is an ordinary key: kept, and never read as an id.
    assert!(forged.iter().all(|(_, f)| field(f, " cannon.id").is_some()), "{forged:?}");
    for (_, fields) in &taskbacks {
        host_id(fields);
    }

    // The failing attacker: its dead letter names its own id, once, with the real error.
    assert_eq!(wait_len(&mut con, &key("forge", "dead"), 1, Duration::from_secs(30)), 1);
    let dead = entries(&mut con, &key("forge", "dead"));
    let letter = &dead[0].1;
    assert_eq!(letter[0], ("cannon.id".to_owned(), attackers[1].clone()), "{letter:?}");
    let host_keys: Vec<&str> =
        letter.iter().map(|(k, _)| k.as_str()).filter(|k| k.to_ascii_lowercase().starts_with("cannon.")).collect();
    assert_eq!(host_keys, ["cannon.id", "cannon.error", "cannon.attempts", "cannon.failed_at"], "{letter:?}");
    assert_eq!(letter.iter().take(4).map(|(k, _)| k.as_str()).collect::<Vec<_>>(), host_keys);
    let error = crate::support::unversioned(field(letter, "cannon.error").unwrap_or_default());
    assert_eq!(error, "forger: failing on purpose after forging 2 ids");
    assert_eq!(field(letter, "text"), Some("attacker"));
    assert_eq!(xlen(&mut con, &key("forge", "taskback")), taskbacks.len());
    assert!(running.terminate().success(), "{}", running.log_text());
}

#[test]
fn field_floods_fail_only_their_own_message() {
    for name in ["fieldflood", "shout"] {
        component(name);
    }
    let redis = RedisServer::start();
    let service = |name: &str, task: &str, limits: &str| {
        format!(
            "  {name}:\n    tasks: [ {task} ]\n    limits: {limits}\n    retry: {{ max_attempts: 1, backoff_ms: 10 }}\n"
        )
    };
    let small = "{ timeout_ms: 2000, output_kb: 16 }";
    let body = [
        "services:\n  shout:\n    tasks: [ { file: shout } ]\n".to_owned(),
        "  webhook:\n    collector: { kind: http, listen: \"127.0.0.1:0\" }\n    tasks: [ { file: shout } ]\n    limits: { message_kb: 4096 }\n".to_owned(),
        service("keys", "{ file: fieldflood, allow: [taskback] }", small),
        service("emptykeys", "{ file: fieldflood, allow: [taskback], conf: { kwargs: { entries: \"900\" } } }", small),
        service(
            "tbmany",
            "{ file: fieldflood, allow: [taskback], conf: { kwargs: { how: taskbacks } } }",
            "{ timeout_ms: 5000, output_kb: 16, memory_mb: 64 }",
        ),
        service(
            "tbfields",
            "{ file: fieldflood, allow: [taskback], conf: { kwargs: { how: taskbacks, pairs: \"20000\" } } }",
            small,
        ),
        service(
            "tbempty",
            "{ file: fieldflood, allow: [taskback], conf: { kwargs: { how: taskbacks, pairs: \"900\" } } }",
            small,
        ),
        service("manymsg", "{ file: shout }", "{ message_kb: 4096 }"),
    ]
    .concat();
    let project = Project::new(&body);
    let mut running = Running::start(&project, &redis, &[]);
    let port = logged_port(&mut running, "webhook");
    running.wait_for_log("ready", Duration::from_secs(120));
    let mut con = redis.con();
    let one = vec![vec![("text", "go".to_owned())]];
    for name in ["keys", "emptykeys", "tbmany", "tbfields", "tbempty"] {
        add_messages(&mut con, name, &one);
    }
    let mut many: Vec<(&str, String)> = vec![("text", "many".to_owned())];
    let names: Vec<String> = (0..1500).map(|i| format!("f{i}")).collect();
    many.extend(names.iter().map(|n| (n.as_str(), String::new())));
    add_messages(&mut con, "manymsg", &[many]);
    let shout: Vec<_> = (0..SHOUT_MESSAGES).map(|i| vec![("text", format!("calm message {i}"))]).collect();
    let shout_ids = add_messages(&mut con, "shout", &shout);

    let only_error = |con: &mut redis::Connection, service: &str| {
        assert_eq!(wait_len(con, &key(service, "dead"), 1, Duration::from_secs(60)), 1, "{service}");
        let dead = entries(con, &key(service, "dead"));
        assert_eq!(dead.len(), 1, "{dead:?}");
        assert_eq!(xlen(con, &key(service, "taskback")), 0, "{service}: nothing delivered");
        let get = |k: &str| field(&dead[0].1, k).unwrap_or_default().to_owned();
        (crate::support::unversioned(&get("cannon.error")), get("cannon.attempts"))
    };
    // 20,000 distinct short keys: refused by count, at once.
    let (error, _) = only_error(&mut con, "keys");
    assert_eq!(error, "fieldflood: output limit exceeded: 20000 fields exceed limits.max_fields = 1000");
    // 900 keys with empty values: each pair costs its bytes plus 32 (1764 bytes of keys).
    let (error, _) = only_error(&mut con, "emptykeys");
    assert_eq!(error, "fieldflood: output limit exceeded: results of 30564 bytes exceed limits.output_kb = 16");
    // Taskbacks of 300,000 empty pairs: refused while lifting, before the host holds them.
    let (error, _) = only_error(&mut con, "tbmany");
    assert_eq!(
        error,
        "fieldflood: output limit exceeded: the guest passed more than 1048576 bytes to the host at once"
    );
    // 20,000 empty pairs fit that transfer bound; the field cap refuses them.
    let (error, _) = only_error(&mut con, "tbfields");
    assert_eq!(
        error,
        "fieldflood: taskback.send refused after 0 taskbacks: taskback of 20000 fields exceeds limits.max_fields = 1000"
    );
    // 900 empty pairs are not free either.
    let (error, _) = only_error(&mut con, "tbempty");
    assert_eq!(
        error,
        "fieldflood: taskback.send refused after 0 taskbacks: taskback of 28800 bytes exceeds limits.output_kb (16384 bytes)"
    );
    // A message of 1501 fields written straight to the stream is buried unrun.
    let (error, attempts) = only_error(&mut con, "manymsg");
    assert_eq!(error, r#"message of 1501 fields exceeds limits.max_fields = 1000 of service "manymsg"; not run"#);
    assert_eq!(attempts, "0");

    // The http collector refuses 64,000 keys (under its byte limits) with the field cap.
    let body: String = (0..64_000).map(|i| format!(r#""k{i}":"""#)).collect::<Vec<_>>().join(",");
    let (status, reply) = http(port, "POST", "/?wait=5000", format!("{{{body}}}").as_bytes());
    assert_eq!(status, 413, "{reply}");
    assert!(
        reply.contains(r#"message of 64000 fields exceeds limits.max_fields = 1000 of service \"webhook\""#),
        "{reply}"
    );
    // At the cap, a message is taken and answered.
    let body: String = (0..999).map(|i| format!(r#""k{i}":"""#)).collect::<Vec<_>>().join(",");
    let (status, reply) = http(port, "POST", "/?wait=20000", format!(r#"{{"text":"edge",{body}}}"#).as_bytes());
    assert_eq!(status, 200, "{reply}");
    assert!(reply.contains(r#""text":"EDGE""#), "{reply}");
    assert_eq!(xlen(&mut con, &key("webhook", "data")), 1, "the refused body never reached the stream");

    // The well-behaved service in the same process answered every message.
    assert_eq!(wait_len(&mut con, &key("shout", "taskback"), SHOUT_MESSAGES, Duration::from_secs(60)), SHOUT_MESSAGES);
    let taskbacks = entries(&mut con, &key("shout", "taskback"));
    for id in &shout_ids {
        assert!(taskbacks.iter().any(|(_, f)| field(f, "cannon.id") == Some(id)), "no taskback for {id}");
    }
    assert!(running.terminate().success(), "{}", running.log_text());
}
