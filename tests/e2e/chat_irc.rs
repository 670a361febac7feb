//! The `irc` collector against a real IRC server: Debian's ngIRCd (`scripts/ensure-ircd`),
//! started per test on free loopback ports with its own configuration, and a test user
//! speaking raw IRC. The bot is the real `dice` shell through torch, and the `remember`
//! example across a restart of cannon and of the IRC server.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use irc_proto::{Command as Irc, Message};

use crate::support::{Project, RedisServer, Running, TestCa, free_port, repo};

/// An ngIRCd of this test's own, stopped on drop.
pub struct Ngircd {
    child: Child,
    dir: tempfile::TempDir,
    pub port: u16,
    pub tls_port: Option<u16>,
}

impl Ngircd {
    /// A plain-text server; with `ca`, also a TLS port with a certificate it issued.
    pub fn start(ca: Option<&TestCa>) -> Self {
        Self::start_with(ca, 120)
    }

    /// [`Ngircd::start`] with the server's idle time before it PINGs a client (and the time
    /// it then waits for the PONG before cutting the client off), in seconds (at least 5).
    pub fn start_with(ca: Option<&TestCa>, ping_timeout: u32) -> Self {
        let out = Command::new(repo().join("scripts/ensure-ircd")).output().expect("run scripts/ensure-ircd");
        assert!(out.status.success(), "scripts/ensure-ircd: {}", String::from_utf8_lossy(&out.stderr));
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let mut tls_port = None;
        let mut ssl = String::new();
        if let Some(ca) = ca {
            let (cert, key) = ca.issue("ircd");
            let (cert_copy, key_copy) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
            std::fs::copy(cert, &cert_copy).expect("copy cert");
            std::fs::copy(key, &key_copy).expect("copy key");
            let p = free_port();
            tls_port = Some(p);
            ssl = format!("[SSL]\nCertFile = {}\nKeyFile = {}\nPorts = {p}\n", cert_copy.display(), key_copy.display());
        }
        let conf = dir.path().join("ngircd.conf");
        let text = format!(
            "[Global]\nName = irc.cannon.test\nInfo = cannon test server\nListen = 127.0.0.1\nPorts = {port}\n\
             MotdPhrase = cannon test\n[Limits]\nPingTimeout = {ping_timeout}\nPongTimeout = {ping_timeout}\n\
             [Options]\nPAM = no\nIdent = no\nDNS = no\n{ssl}"
        );
        std::fs::write(&conf, text).expect("write ngircd.conf");
        let mut server = Ngircd { child: spawn(&conf, dir.path()), dir, port, tls_port };
        server.wait_ready();
        server
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("ngircd exited with {status}: {}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("ngircd did not listen on {}: {}", self.port, self.log());
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("ngircd.log")).unwrap_or_default()
    }

    /// Stops the server (every client is cut off).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts it again on the same ports after [`Ngircd::stop`].
    pub fn start_again(&mut self) {
        self.child = spawn(&self.dir.path().join("ngircd.conf"), self.dir.path());
        self.wait_ready();
    }
}

fn spawn(conf: &Path, dir: &Path) -> Child {
    let log = std::fs::OpenOptions::new().create(true).append(true).open(dir.join("ngircd.log")).expect("log");
    Command::new("/usr/sbin/ngircd")
        .arg("-n")
        .arg("-f")
        .arg(conf)
        .stdin(Stdio::null())
        .stdout(Stdio::from(log.try_clone().expect("log")))
        .stderr(Stdio::from(log))
        .spawn()
        .expect("spawn ngircd")
}

impl Drop for Ngircd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A person on IRC, speaking the protocol by hand.
pub struct User {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    pub nick: String,
}

impl User {
    pub fn connect(port: u16, nick: &str) -> Self {
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to ngircd");
        stream.set_read_timeout(Some(Duration::from_millis(200))).expect("timeout");
        let writer = stream.try_clone().expect("clone");
        let mut user = User { reader: BufReader::new(stream), writer, nick: nick.to_owned() };
        user.send(&format!("NICK {nick}"));
        user.send(&format!("USER {nick} 0 * :{nick}"));
        user.expect(Duration::from_secs(10), |m| {
            matches!(&m.command, Irc::Response(irc_proto::Response::RPL_WELCOME, _))
        });
        user
    }

    pub fn send(&mut self, line: &str) {
        self.writer.write_all(format!("{line}\r\n").as_bytes()).expect("write to ngircd");
    }

    pub fn join(&mut self, channel: &str) {
        self.send(&format!("JOIN {channel}"));
        self.expect(Duration::from_secs(10), |m| {
            matches!(&m.command, Irc::Response(irc_proto::Response::RPL_ENDOFNAMES, _))
        });
    }

    pub fn say(&mut self, target: &str, text: &str) {
        self.send(&format!("PRIVMSG {target} :{text}"));
    }

    /// The next message (answering PINGs); `None` after `timeout`.
    pub fn next(&mut self, timeout: Duration) -> Option<Message> {
        let deadline = Instant::now() + timeout;
        let mut line = String::new();
        while Instant::now() < deadline {
            match self.reader.read_line(&mut line) {
                Ok(0) => panic!("{}: the server closed the connection", self.nick),
                Ok(_) if line.ends_with('\n') => {
                    let message: Message = line.trim_end().parse().expect("parse a server line");
                    line.clear();
                    if let Irc::PING(a, b) = &message.command {
                        let pong = Message::from(Irc::PONG(a.clone(), b.clone())).to_string();
                        self.send(pong.trim_end());
                        continue;
                    }
                    return Some(message);
                }
                Ok(_) => {}
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
                Err(e) => panic!("{}: read: {e}", self.nick),
            }
        }
        None
    }

    /// Waits for a message matching `want`, failing with what came instead.
    pub fn expect(&mut self, timeout: Duration, mut want: impl FnMut(&Message) -> bool) -> Message {
        let deadline = Instant::now() + timeout;
        let mut seen = Vec::new();
        while Instant::now() < deadline {
            if let Some(message) = self.next(deadline - Instant::now()) {
                if want(&message) {
                    return message;
                }
                seen.push(message.to_string());
            }
        }
        panic!("{}: no expected message within {timeout:?}; got:\n{}", self.nick, seen.concat());
    }

    /// The next `PRIVMSG` from `from` to `to`: its text and when it arrived.
    pub fn reply(&mut self, from: &str, to: &str, timeout: Duration) -> (String, Instant) {
        let message = self.expect(timeout, |m| {
            m.source_nickname() == Some(from) && matches!(&m.command, Irc::PRIVMSG(t, _) if t == to)
        });
        match message.command {
            Irc::PRIVMSG(_, text) => (text, Instant::now()),
            _ => unreachable!(),
        }
    }

    /// Waits until `nick` joins `channel`.
    pub fn sees_join(&mut self, nick: &str, channel: &str, timeout: Duration) {
        self.expect(timeout, |m| {
            m.source_nickname() == Some(nick) && matches!(&m.command, Irc::JOIN(c, _, _) if c == channel)
        });
    }
}

const WAIT: Duration = Duration::from_secs(30);
/// A channel whose long name leaves less room in each line for the text.
const LONG: &str = "#a-long-channel-name-so-that-lines-must-be-cut-now";

fn dice_bot(server: &str, extra: &str, torch: &str) -> Project {
    Project::new(&format!(
        r##"namespace: cannon
services:
  dice:
    collector:
      kind: irc
      server: "{server}"
      nick: cannon
      channels: ["#bots", "{LONG}"]
      replies: {{ burst: 2, every: 300ms }}
{extra}
    shell: {{ file: dice }}
    tasks:
      - torch: {{ in_key: text, out_key: text{torch} }}
"##
    ))
}

#[test]
fn irc_dice_bot_answers_in_its_channel_and_in_private() {
    let ircd = Ngircd::start(None);
    let redis = RedisServer::start();
    // Someone already holds the nick: the bot falls back to `cannon_`.
    let _squatter = User::connect(ircd.port, "cannon");
    let mut alice = User::connect(ircd.port, "alice");
    alice.join("#bots");
    let project = dice_bot(&format!("irc://127.0.0.1:{}", ircd.port), "", "");
    let host = Running::start(&project, &redis, &["dice"]);
    alice.sees_join("cannon_", "#bots", WAIT);

    alice.say("#bots", "roll 2d6");
    let (text, _) = alice.reply("cannon_", "#bots", WAIT);
    let numbers: Vec<u32> = text.replace(['(', ')'], " ").split_whitespace().filter_map(|w| w.parse().ok()).collect();
    assert_eq!(numbers.len(), 3, "two dice and a total: {text:?}");
    assert_eq!(numbers[0] + numbers[1], numbers[2], "{text:?}");
    assert!(text.contains("total"), "{text:?}");

    // A multi-line reply arrives as several lines, in order, paced (burst 2, then 300 ms).
    alice.say("#bots", "help");
    let mut lines = vec![alice.reply("cannon_", "#bots", WAIT)];
    while let Some(next) = alice.next(Duration::from_secs(3)) {
        if let Irc::PRIVMSG(_, text) = next.command {
            lines.push((text, Instant::now()));
        }
    }
    let texts: Vec<&str> = lines.iter().map(|(t, _)| t.as_str()).collect();
    assert!(texts.len() >= 3, "help is several lines: {texts:?}");
    assert!(texts.iter().any(|t| t.contains("roll")) && texts.iter().any(|t| t.contains("flip")), "{texts:?}");
    let span = lines[lines.len() - 1].1 - lines[0].1;
    let paced = Duration::from_millis(300 * (lines.len() as u64 - 2) * 8 / 10);
    assert!(span >= paced, "{} lines in {span:?}: not paced", lines.len());

    // A long reply is cut to fit IRC's 512-byte lines (with the sender's prefix the server
    // adds); nothing is lost.
    alice.join(LONG);
    alice.say(LONG, "roll 100d1000");
    let mut parts = vec![alice.reply("cannon_", LONG, WAIT).0];
    while !parts.last().is_some_and(|p| p.contains("total")) {
        parts.push(alice.reply("cannon_", LONG, WAIT).0);
    }
    assert!(parts.iter().all(|p| p.len() + LONG.len() + 90 <= 512), "{parts:?}");
    assert!(parts.len() >= 2, "a 100-dice roll does not fit one line: {parts:?}");
    let all = parts.join(" ");
    let numbers: Vec<u32> = all.replace(['(', ')'], " ").split_whitespace().filter_map(|w| w.parse().ok()).collect();
    assert_eq!(numbers.len(), 101, "100 dice and the total: {all}");
    assert_eq!(numbers[..100].iter().sum::<u32>(), numbers[100]);

    // A private message is answered privately.
    alice.say("cannon_", "flip");
    let (text, _) = alice.reply("cannon_", "alice", WAIT);
    assert!(text == "heads" || text == "tails", "{text:?}");
    drop(host);
}

#[test]
fn irc_over_tls_with_a_private_ca_and_a_prefix() {
    let ca = TestCa::new();
    let ircd = Ngircd::start(Some(&ca));
    let redis = RedisServer::start();
    let mut bob = User::connect(ircd.port, "bob");
    bob.join("#bots");
    let tls_port = ircd.tls_port.expect("tls port");
    let extra = format!("      ca_file: {}\n      prefix: \"!\"", ca.cert().display());
    let project = dice_bot(&format!("ircs://127.0.0.1:{tls_port}"), &extra, ", prefix: \"!\"");
    let mut host = Running::start(&project, &redis, &["dice"]);
    bob.sees_join("cannon", "#bots", WAIT);
    crate::collectors::wait_plain(&mut host, "irc: registered", WAIT);

    // Chatter without the prefix is ignored by the collector (never stored); torch's own
    // `prefix` strips it from the command line.
    bob.say("#bots", "just chatting");
    bob.say("#bots", "!roll 3d6");
    let (text, _) = bob.reply("cannon", "#bots", WAIT);
    assert!(text.contains("total"), "{text:?}");
    let mut con = redis.con();
    let stored = crate::support::entries(&mut con, &crate::support::key("dice", "data"));
    let texts: Vec<&str> = stored.iter().filter_map(|(_, f)| crate::support::field(f, "text")).collect();
    assert_eq!(texts, ["!roll 3d6"], "only the prefixed line becomes a message");
    let fields = &stored[0].1;
    for (key, want) in [("user", "bob"), ("channel", "#bots"), ("platform", "irc"), ("server", "127.0.0.1")] {
        assert_eq!(crate::support::field(fields, key), Some(want), "{key} in {fields:?}");
    }
    assert!(crate::support::field(fields, "user_id").is_some_and(|id| id.starts_with("bob!")), "{fields:?}");
}

#[test]
fn irc_remember_survives_a_restart_of_cannon_and_of_the_server() {
    let mut ircd = Ngircd::start(None);
    let redis = RedisServer::start();
    let mut alice = User::connect(ircd.port, "alice");
    alice.join("#bots");
    let project = crate::collectors::example(
        "remember",
        &[(
            "collector: { kind: stdin, conf: { kwargs: { server: local } } }",
            &format!(
                "collector: {{ kind: irc, server: \"irc://127.0.0.1:{}\", nick: memo, channels: [\"#bots\"] }}",
                ircd.port
            ),
        )],
    );
    let mut host = Running::start(&project, &redis, &["remember"]);
    alice.sees_join("memo", "#bots", WAIT);
    alice.say("#bots", ".remember meeting is at 10");
    let (text, _) = alice.reply("memo", "#bots", WAIT);
    assert!(text.contains("remember that meeting is at 10"), "{text:?}");
    assert_eq!(host.terminate().code(), Some(0), "{}", host.log_text());

    let mut host = Running::start(&project, &redis, &["remember"]);
    alice.sees_join("memo", "#bots", WAIT);
    alice.say("#bots", ".recall meeting");
    let (text, _) = alice.reply("memo", "#bots", WAIT);
    assert!(text.contains("meeting is at 10") && text.contains("alice"), "{text:?}");

    // The server goes away. A reply due meanwhile waits in the taskback stream (a message
    // added directly, as if said just before the server went down).
    ircd.stop();
    crate::collectors::wait_plain(&mut host, "chat connection lost; reconnecting", WAIT);
    let mut con = redis.con();
    let fields: Vec<(&str, String)> =
        [("user", "alice"), ("user_id", "alice!~alice@127.0.0.1"), ("text", ".recall meeting")]
            .into_iter()
            .chain([("server", "127.0.0.1"), ("channel", "#bots"), ("platform", "irc")])
            .map(|(k, v)| (k, v.to_owned()))
            .collect();
    crate::support::add_messages(&mut con, "remember", &[fields]);
    crate::support::wait_len(&mut con, &crate::support::key("remember", "taskback"), 3, WAIT);
    // It comes back: the bot reconnects (with backoff), rejoins, and posts the reply.
    ircd.start_again();
    let mut carol = User::connect(ircd.port, "carol");
    carol.join("#bots");
    // The bot reconnects with backoff, rejoins and posts the reply queued meanwhile. Under load
    // carol may join after the bot has posted it: then the collector's acknowledgement of the
    // taskback (it acknowledges only what the server took) is the proof instead.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = false;
    while !seen && Instant::now() < deadline {
        if let Some(m) = carol.next(Duration::from_secs(1)) {
            seen = m.source_nickname() == Some("memo")
                && matches!(&m.command, Irc::PRIVMSG(t, text) if t == "#bots" && text.contains("meeting is at 10"));
        } else if taskbacks_pending(&mut con) == 0 && bot_in_channel(&mut carol) {
            break;
        }
    }
    assert!(
        seen || taskbacks_pending(&mut con) == 0,
        "the reply queued while the server was down was neither seen nor acknowledged:\n{}",
        host.log_text()
    );
    carol.say("#bots", ".recall meeting");
    let (text, _) = carol.reply("memo", "#bots", WAIT);
    assert!(text.contains("meeting is at 10"), "{text:?}");
}

/// Taskbacks of `remember` read by the collector and not acknowledged yet.
fn taskbacks_pending(con: &mut redis::Connection) -> usize {
    let key = crate::support::key("remember", "taskback");
    let summary: redis::Value = redis::cmd("XPENDING").arg(&key).arg("collector").query(con).expect("XPENDING");
    match summary {
        redis::Value::Array(items) => match items.first() {
            Some(redis::Value::Int(n)) => *n as usize,
            _ => 0,
        },
        _ => 0,
    }
}

/// Whether `memo` is in `#bots`, by `NAMES`.
fn bot_in_channel(user: &mut User) -> bool {
    user.send("NAMES #bots");
    let names =
        user.expect(WAIT, |m| matches!(&m.command, Irc::Response(r, _) if matches!(r, irc_proto::Response::RPL_NAMREPLY | irc_proto::Response::RPL_ENDOFNAMES)));
    matches!(&names.command, Irc::Response(r, args) if *r == irc_proto::Response::RPL_NAMREPLY && args.last().is_some_and(|n| n.split(' ').any(|n| n.trim_start_matches(['@', '+']) == "memo")))
}

/// `examples/chat/irc-compose.yml` on this test's server and broker, with `mention_only`.
#[test]
fn irc_chat_example_answers_only_lines_addressed_to_it_when_mention_only() {
    let ircd = Ngircd::start(None);
    let redis = RedisServer::start();
    let path = repo().join("examples/chat/irc-compose.yml");
    let text = std::fs::read_to_string(&path).expect("examples/chat/irc-compose.yml");
    let body: String = text
        .lines()
        .filter(|l| !l.starts_with("app_dir:") && !l.starts_with("broker:"))
        .map(|l| format!("{l}\n"))
        .collect();
    let server = format!("irc://127.0.0.1:{}", ircd.port);
    for from in ["irc://127.0.0.1:6667", "mention_only: false"] {
        assert!(body.contains(from), "{from} is not in {}", path.display());
    }
    let body = body.replace("irc://127.0.0.1:6667", &server).replace("mention_only: false", "mention_only: true");
    let project = Project::new(&body);
    let mut dave = User::connect(ircd.port, "dave");
    dave.join("#bots");
    let _host = Running::start(&project, &redis, &["chat"]);
    dave.sees_join("cannon", "#bots", WAIT);
    dave.say("#bots", "roll 1d6");
    dave.say("#bots", "Cannon: roll 2d6");
    let (text, _) = dave.reply("cannon", "#bots", WAIT);
    assert!(text.contains("total"), "{text:?}");
    let mut con = redis.con();
    let stored = crate::support::entries(&mut con, &crate::support::key("chat", "data"));
    let texts: Vec<&str> = stored.iter().filter_map(|(_, f)| crate::support::field(f, "text")).collect();
    assert_eq!(texts, ["roll 2d6"], "only the addressed line, without the address");
}

#[test]
fn irc_bot_answers_the_servers_pings_and_stays_connected() {
    // The server PINGs a client idle for 5 s and cuts it off without a PONG within 5 s.
    let ircd = Ngircd::start_with(None, 5);
    let redis = RedisServer::start();
    let project = dice_bot(&format!("irc://127.0.0.1:{}", ircd.port), "", "");
    let mut host = Running::start(&project, &redis, &["dice"]);
    crate::collectors::wait_plain(&mut host, "irc: joined", WAIT);
    std::thread::sleep(Duration::from_secs(16));
    let mut erin = User::connect(ircd.port, "erin");
    erin.join("#bots");
    erin.say("#bots", "roll 2d6");
    let (text, _) = erin.reply("cannon", "#bots", WAIT);
    assert!(text.contains("total"), "{text:?}");
    let log = crate::collectors::plain(&host.log_text());
    assert!(!log.contains("chat connection lost"), "the bot was cut off:\n{log}");
    assert_eq!(log.matches("irc: registered").count(), 1, "{log}");
}

#[test]
fn irc_receipts_say_what_was_posted_and_what_was_refused() {
    let ircd = Ngircd::start(None);
    let redis = RedisServer::start();
    crate::support::component("receipts");
    let project = Project::new(&format!(
        "services:\n  r:\n    collector: {{ kind: irc, server: \"irc://127.0.0.1:{}\", nick: rcpt, channels: [\"#bots\"] }}\n    \
         tasks: [ {{ file: receipts }} ]\n",
        ircd.port
    ));
    let mut frank = User::connect(ircd.port, "frank");
    frank.join("#bots");
    let _host = Running::start(&project, &redis, &["r"]);
    frank.sees_join("rcpt", "#bots", WAIT);
    frank.say("#bots", "hello");
    assert_eq!(frank.reply("rcpt", "#bots", WAIT).0, "HELLO");
    // A reply for a channel the bot is not in (a message added directly) is refused.
    let mut con = redis.con();
    let fields: Vec<(&str, String)> = [
        ("user", "frank"),
        ("text", "elsewhere"),
        ("channel", "#elsewhere"),
        ("platform", "irc"),
        ("server", "127.0.0.1"),
    ]
    .into_iter()
    .map(|(k, v)| (k, v.to_owned()))
    .collect();
    crate::support::add_messages(&mut con, "r", &[fields]);
    let data_key = crate::support::key("r", "data");
    crate::support::wait_len(&mut con, &data_key, 4, WAIT);
    let data = crate::support::entries(&mut con, &data_key);
    let receipt = |text: &str| {
        let line = data.iter().find(|(_, f)| crate::support::field(f, "text") == Some(text)).expect("the line");
        let receipt = data
            .iter()
            .find(|(_, f)| crate::support::field(f, "cannon.receipt_for") == Some(line.0.as_str()))
            .unwrap_or_else(|| panic!("no receipt for {text}: {data:?}"));
        let get = |k: &str| crate::support::field(&receipt.1, k).unwrap_or_default().to_owned();
        (get("cannon.receipt"), get("cannon.receipt_detail"))
    };
    assert_eq!(receipt("hello"), ("ok".to_owned(), "posted 1 line(s) to #bots".to_owned()));
    assert_eq!(receipt("elsewhere"), ("error".to_owned(), "not in channel #elsewhere".to_owned()));
}
