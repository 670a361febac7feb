//! The `matrix` collector against a real Synapse homeserver (PyPI, `scripts/ensure-synapse`;
//! SQLite, loopback, registration by shared secret), started once for this test binary and
//! shared (each test registers its own users). A test user speaks the client-server API.

use std::future::Future;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::collectors::{example, wait_plain};
use crate::support::{Project, RedisServer, Running, entries, field, free_port, host, key, repo};

const SECRET: &str = "cannon-test-shared-secret";
const WAIT: Duration = Duration::from_secs(30);

/// The shared homeserver: stopped (and its directory removed) by a watchdog shell when
/// this test process ends.
pub struct Synapse {
    pub url: String,
    venv: String,
    /// The watchdog shell (it outlives nothing: it ends with this process).
    _watchdog: std::process::Child,
}

fn synapse() -> &'static Synapse {
    static SERVER: OnceLock<Synapse> = OnceLock::new();
    SERVER.get_or_init(start_synapse)
}

fn start_synapse() -> Synapse {
    let out = Command::new(repo().join("scripts/ensure-synapse")).output().expect("run scripts/ensure-synapse");
    assert!(out.status.success(), "scripts/ensure-synapse: {}", String::from_utf8_lossy(&out.stderr));
    let venv = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let dir = repo().join("target").join(format!("cannon-synapse-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("synapse dir");
    let port = free_port();
    let d = dir.display();
    let limit = "{per_second: 1000, burst_count: 1000}";
    let config = format!(
        "server_name: localhost\n\
         listeners:\n  - port: {port}\n    bind_addresses: ['127.0.0.1']\n    type: http\n    tls: false\n    \
         x_forwarded: false\n    resources:\n      - names: [client]\n        compress: false\n\
         database:\n  name: sqlite3\n  args:\n    database: {d}/homeserver.db\n\
         media_store_path: {d}/media\nregistration_shared_secret: {SECRET}\nreport_stats: false\n\
         signing_key_path: {d}/signing.key\ntrusted_key_servers: []\nsuppress_key_server_warning: true\n\
         rc_message: {limit}\nrc_registration: {limit}\n\
         rc_login: {{address: {limit}, account: {limit}, failed_attempts: {limit}}}\n\
         rc_joins: {{local: {limit}, remote: {limit}}}\n\
         rc_invites: {{per_room: {limit}, per_user: {limit}, per_issuer: {limit}}}\n"
    );
    let config_path = dir.join("homeserver.yaml");
    std::fs::write(&config_path, config).expect("write homeserver.yaml");
    let python = format!("{venv}/bin/python");
    let keys = Command::new(&python)
        .args(["-m", "synapse.app.homeserver", "-c"])
        .arg(&config_path)
        .arg("--generate-keys")
        .output()
        .expect("run synapse --generate-keys");
    assert!(keys.status.success(), "synapse --generate-keys: {}", String::from_utf8_lossy(&keys.stderr));
    // The watchdog stops Synapse when this test process is gone.
    let script = format!(
        "\"{python}\" -m synapse.app.homeserver -c \"{}\" >\"{d}/synapse.log\" 2>&1 & child=$!\n\
         while kill -0 {parent} 2>/dev/null && kill -0 $child 2>/dev/null; do sleep 1; done\n\
         kill $child 2>/dev/null; wait $child; rm -rf \"{d}\"\n",
        config_path.display(),
        parent = std::process::id(),
    );
    let watchdog = Command::new("sh").arg("-c").arg(script).stdin(Stdio::null()).spawn().expect("spawn synapse");
    let url = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let up = block(async {
            reqwest::get(format!("{url}/_matrix/client/versions")).await.is_ok_and(|r| r.status().is_success())
        });
        if up {
            break;
        }
        let log = std::fs::read_to_string(dir.join("synapse.log")).unwrap_or_default();
        assert!(Instant::now() < deadline, "synapse did not start:\n{log}");
        std::thread::sleep(Duration::from_millis(100));
    }
    Synapse { url, venv, _watchdog: watchdog }
}

fn block<F: Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime").block_on(future)
}

impl Synapse {
    /// Registers a new user with a unique name (`NAME_PID_N`); returns (name, password).
    fn user(&self, name: &str) -> (String, String) {
        self.register(name, "--no-admin")
    }

    /// Like [`Synapse::user`], a server admin.
    fn admin(&self, name: &str) -> (String, String) {
        self.register(name, "--admin")
    }

    fn register(&self, name: &str, admin: &str) -> (String, String) {
        static N: AtomicUsize = AtomicUsize::new(0);
        let user = format!("{name}{}x{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed));
        let password = format!("pw-{user}");
        let out = Command::new(format!("{}/bin/register_new_matrix_user", self.venv))
            .args(["-u", &user, "-p", &password, admin, "-k", SECRET, &self.url])
            .output()
            .expect("run register_new_matrix_user");
        assert!(out.status.success(), "register {user}: {}", String::from_utf8_lossy(&out.stderr));
        (user, password)
    }
}

/// A person on Matrix.
struct Person {
    base: String,
    token: String,
    user_id: String,
    txn: AtomicUsize,
}

impl Person {
    fn login(server: &Synapse, user: &str, password: &str) -> Self {
        let base = format!("{}/_matrix/client/v3", server.url);
        let body = json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": user}, "password": password});
        let answer = call("POST", &format!("{base}/login"), None, Some(body));
        let text = |k: &str| answer[k].as_str().expect(k).to_owned();
        Person { token: text("access_token"), user_id: text("user_id"), base, txn: AtomicUsize::new(0) }
    }

    fn create_room(&self, invite: &str) -> String {
        let body = json!({"preset": "private_chat", "invite": [invite]});
        let answer = call("POST", &format!("{}/createRoom", self.base), Some(&self.token), Some(body));
        answer["room_id"].as_str().expect("room_id").to_owned()
    }

    /// Sends a text (in the thread of `thread` when given); returns its event id.
    fn say(&self, room: &str, text: &str, thread: Option<&str>) -> String {
        let mut content = json!({"msgtype": "m.text", "body": text});
        if let Some(root) = thread {
            content["m.relates_to"] = json!({"rel_type": "m.thread", "event_id": root});
        }
        let txn = self.txn.fetch_add(1, Ordering::Relaxed);
        let url = format!("{}/rooms/{}/send/m.room.message/t{txn}", self.base, enc(room));
        call("PUT", &url, Some(&self.token), Some(content))["event_id"].as_str().expect("event_id").to_owned()
    }

    fn members(&self, room: &str) -> Vec<String> {
        let answer = call("GET", &format!("{}/rooms/{}/joined_members", self.base, enc(room)), Some(&self.token), None);
        answer["joined"].as_object().map(|m| m.keys().cloned().collect()).unwrap_or_default()
    }

    /// The room's text messages from `sender`, oldest first.
    fn messages_from(&self, room: &str, sender: &str) -> Vec<Value> {
        let url = format!("{}/rooms/{}/messages?dir=b&limit=200", self.base, enc(room));
        let answer = call("GET", &url, Some(&self.token), None);
        let mut out: Vec<Value> = answer["chunk"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["type"] == "m.room.message" && e["sender"] == sender)
            .cloned()
            .collect();
        out.reverse();
        out
    }

    /// Waits until `sender` has posted `n` messages in the room; returns them all.
    fn wait_messages(&self, room: &str, sender: &str, n: usize) -> Vec<Value> {
        let deadline = Instant::now() + WAIT;
        loop {
            let got = self.messages_from(room, sender);
            if got.len() >= n {
                return got;
            }
            assert!(Instant::now() < deadline, "{sender} posted {} of {n} messages: {got:?}", got.len());
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn enc(segment: &str) -> String {
    segment.replace('!', "%21").replace(':', "%3A").replace('#', "%23")
}

fn call(method: &str, url: &str, token: Option<&str>, body: Option<Value>) -> Value {
    block(async {
        let client = reqwest::Client::new();
        let mut request = client.request(method.parse().expect("method"), url);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap_or_else(|e| panic!("{method} {url}: {e}"));
        let status = response.status();
        let value: Value = response.json().await.unwrap_or(Value::Null);
        assert!(status.is_success(), "{method} {url}: {status} {value}");
        value
    })
}

fn body(event: &Value) -> &str {
    event["content"]["body"].as_str().unwrap_or_default()
}

fn start(project: &Project, redis: &RedisServer, password: &str, service: &str) -> Running {
    let mut cmd = host(project, redis);
    cmd.env("MATRIX_PASSWORD", password);
    let mut running = Running::start_cmd(cmd, project, &[service]);
    wait_plain(&mut running, "matrix: logged in", WAIT);
    running
}

#[test]
fn matrix_dice_bot_joins_on_invite_and_answers_in_the_room_and_the_thread() {
    let server = synapse();
    let redis = RedisServer::start();
    let (bot, bot_pw) = server.user("dicebot");
    let (alice, alice_pw) = server.user("alice");
    let project = Project::new(&format!(
        r#"namespace: cannon
services:
  dice:
    collector: {{ kind: matrix, homeserver: "{}", user: {bot}, password: "${{MATRIX_PASSWORD}}" }}
    shell: {{ file: dice }}
    tasks:
      - torch: {{ in_key: text, out_key: text }}
"#,
        server.url
    ));
    let _host = start(&project, &redis, &bot_pw, "dice");
    let alice = Person::login(server, &alice, &alice_pw);
    let bot_id = format!("@{bot}:localhost");
    let room = alice.create_room(&bot_id);
    let deadline = Instant::now() + WAIT;
    while !alice.members(&room).contains(&bot_id) {
        assert!(Instant::now() < deadline, "the bot did not join on invite");
        std::thread::sleep(Duration::from_millis(100));
    }

    let asked = alice.say(&room, "roll 2d6", None);
    let replies = alice.wait_messages(&room, &bot_id, 1);
    assert!(body(&replies[0]).contains("total"), "{:?}", replies[0]);
    assert!(replies[0]["content"].get("m.relates_to").is_none(), "not in a thread: {:?}", replies[0]);

    // In a thread, the reply stays in the thread (the root's own reply does not).
    let root = alice.say(&room, "flip", None);
    let threaded = alice.say(&room, "roll 3d6", Some(&root));
    let replies = alice.wait_messages(&room, &bot_id, 3);
    let in_thread: Vec<&Value> = replies.iter().filter(|r| r["content"].get("m.relates_to").is_some()).collect();
    assert_eq!(in_thread.len(), 1, "{replies:?}");
    let relation = &in_thread[0]["content"]["m.relates_to"];
    assert_eq!(relation["rel_type"], "m.thread", "{:?}", in_thread[0]);
    assert_eq!(relation["event_id"], root.as_str());
    assert!(body(in_thread[0]).contains("total"));

    let mut con = redis.con();
    let stored = entries(&mut con, &key("dice", "data"));
    let by_id = |id: &str| stored.iter().find(|(_, f)| field(f, "message_id") == Some(id)).map(|(_, f)| f.clone());
    let first = by_id(&asked).expect("the first line is a message");
    for (k, want) in [
        ("user", alice.user_id.trim_start_matches('@').split(':').next().unwrap_or_default()),
        ("user_id", &alice.user_id),
        ("channel", &room),
        ("platform", "matrix"),
        ("text", "roll 2d6"),
    ] {
        assert_eq!(field(&first, k), Some(want), "{k} in {first:?}");
    }
    assert_eq!(field(&by_id(&threaded).expect("threaded line"), "thread"), Some(root.as_str()));
    assert!(stored.iter().all(|(_, f)| field(f, "user_id") != Some(bot_id.as_str())), "own messages are ignored");
}

#[test]
fn matrix_remember_resumes_after_a_restart_without_loss_or_duplicates() {
    let server = synapse();
    let redis = RedisServer::start();
    let (bot, bot_pw) = server.user("memo");
    let (alice, alice_pw) = server.user("alice");
    let alice = Person::login(server, &alice, &alice_pw);
    let bot_id = format!("@{bot}:localhost");
    let room = alice.create_room(&bot_id);
    let collector = format!(
        "collector: {{ kind: matrix, homeserver: \"{}\", user: {bot}, password: \"${{MATRIX_PASSWORD}}\", rooms: [\"{room}\"] }}",
        server.url
    );
    let project =
        example("remember", &[("collector: { kind: stdin, conf: { kwargs: { server: local } } }", &collector)]);
    let mut host = start(&project, &redis, &bot_pw, "remember");
    let deadline = Instant::now() + WAIT;
    while !alice.members(&room).contains(&bot_id) {
        assert!(Instant::now() < deadline, "the bot did not join its configured room");
        std::thread::sleep(Duration::from_millis(100));
    }
    alice.say(&room, ".remember meeting is at 10", None);
    let replies = alice.wait_messages(&room, &bot_id, 1);
    assert!(body(&replies[0]).contains("remember that meeting is at 10"), "{:?}", replies[0]);
    assert_eq!(host.terminate().code(), Some(0));

    // Said while the bot is down: picked up from the stored sync position after the restart.
    let missed = alice.say(&room, ".recall meeting", None);
    let mut host = start(&project, &redis, &bot_pw, "remember");
    let replies = alice.wait_messages(&room, &bot_id, 2);
    assert!(body(&replies[1]).contains("meeting is at 10"), "{:?}", replies[1]);
    // A crash after a message was added but before the sync position was saved: the
    // position is put back to before `.remembered`; the restart must not add it again.
    std::thread::sleep(Duration::from_secs(1));
    let mut con = redis.con();
    let cursor_key = format!("{{cannon:remember}}:kv:chat:kv:matrix:{bot_id}");
    let before: Vec<u8> = redis::cmd("GET").arg(&cursor_key).query(&mut con).expect("the stored sync position");
    assert!(String::from_utf8_lossy(&before).contains("since"), "{}", String::from_utf8_lossy(&before));
    let again = alice.say(&room, ".remembered", None);
    let replies = alice.wait_messages(&room, &bot_id, 3);
    assert!(body(&replies[2]).contains("meeting"), "{:?}", replies[2]);
    assert_eq!(host.terminate().code(), Some(0));
    let () = redis::cmd("SET").arg(&cursor_key).arg(&before).query(&mut con).expect("put the position back");
    let host = start(&project, &redis, &bot_pw, "remember");
    alice.say(&room, ".recall meeting", None);
    let replies = alice.wait_messages(&room, &bot_id, 4);
    assert!(body(&replies[3]).contains("meeting is at 10"), "{:?}", replies[3]);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(alice.messages_from(&room, &bot_id).len(), 4, "every line answered once");
    let stored = entries(&mut con, &key("remember", "data"));
    for id in [&missed, &again] {
        let copies = stored.iter().filter(|(_, f)| field(f, "message_id") == Some(id.as_str())).count();
        assert_eq!(copies, 1, "{id} is added once: {stored:?}");
    }
    drop(host);
}

#[test]
fn matrix_replies_wait_out_the_homeservers_rate_limit_and_none_is_dropped() {
    let server = synapse();
    let redis = RedisServer::start();
    let (bot, bot_pw) = server.user("busybot");
    let (alice, alice_pw) = server.user("alice");
    let (admin, admin_pw) = server.admin("admin");
    let admin = Person::login(server, &admin, &admin_pw);
    let bot_id = format!("@{bot}:localhost");
    // Synapse's own per-user limit for the bot: one message, then one a second (HTTP 429
    // with retry_after_ms beyond). The collector's pacing is set out of the way.
    let url = format!("{}/_synapse/admin/v1/users/{}/override_ratelimit", server.url, enc(&bot_id));
    call("POST", &url, Some(&admin.token), Some(json!({"messages_per_second": 1, "burst_count": 1})));
    let project = Project::new(&format!(
        r#"namespace: cannon
services:
  dice:
    collector: {{ kind: matrix, homeserver: "{}", user: {bot}, password: "${{MATRIX_PASSWORD}}", replies: {{ burst: 100, every: 10ms }} }}
    shell: {{ file: dice }}
    tasks:
      - torch: {{ in_key: text, out_key: text }}
"#,
        server.url
    ));
    let mut host = start(&project, &redis, &bot_pw, "dice");
    let alice = Person::login(server, &alice, &alice_pw);
    let room = alice.create_room(&bot_id);
    let deadline = Instant::now() + WAIT;
    while !alice.members(&room).contains(&bot_id) {
        assert!(Instant::now() < deadline, "the bot did not join on invite");
        std::thread::sleep(Duration::from_millis(100));
    }
    for _ in 0..4 {
        alice.say(&room, "roll 2d6", None);
    }
    let replies = alice.wait_messages(&room, &bot_id, 4);
    assert!(replies.iter().all(|r| body(r).contains("total")), "{replies:?}");
    wait_plain(&mut host, "matrix: rate limited; waiting", WAIT);
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(alice.messages_from(&room, &bot_id).len(), 4, "each reply posted once");
}
