//! `kind: slack` against a local server speaking Slack's Web API and Socket Mode protocol
//! (`fake/slack.rs`), a real Redis and the real `dice` shell through torch.

use std::time::Duration;

use crate::fake::slack::{self, FakeSlack};
use crate::fake::wait_until;
use crate::support::{Project, RedisServer, Running, component, entries, field, host, key, wait_len};

const WAIT: Duration = Duration::from_secs(60);

fn project(fake: &FakeSlack, extra: &str) -> Project {
    Project::new(&format!(
        "services:
  dice:
    collector:
      kind: slack
      app_token: ${{SLACK_APP_TOKEN}}
      bot_token: ${{SLACK_BOT_TOKEN}}
      api_url: {}{extra}
    shell: {{ file: dice }}
    tasks:
      - torch: {{ in_key: text, out_key: text }}
",
        fake.api_url
    ))
}

fn start(project: &Project, redis: &RedisServer) -> Running {
    let mut cmd = host(project, redis);
    cmd.env("SLACK_APP_TOKEN", slack::APP_TOKEN).env("SLACK_BOT_TOKEN", slack::BOT_TOKEN);
    Running::start_cmd(cmd, project, &["dice"])
}

/// Waits until Slack holds no unacknowledged envelope (the bot's own echoes included).
fn wait_all_acked(fake: &FakeSlack) {
    wait_until(WAIT, "every envelope acknowledged", || {
        let st = fake.state.lock();
        (st.unacked.is_empty(), st.unacked.len())
    });
}

#[test]
fn slack_rolls_dice_in_channels_and_threads_and_ignores_its_own_posts() {
    component("dice");
    let (redis, fake) = (RedisServer::start(), FakeSlack::start());
    let project = project(&fake, "");
    let running = start(&project, &redis);
    fake.wait_connected(1, WAIT);

    fake.say("U1", "C1", "roll 2d6", None);
    let posts = fake.wait_posts(1, WAIT);
    assert_eq!(posts[0].channel, "C1");
    assert!(posts[0].text.contains("(total "), "{posts:?}");
    assert_eq!(posts[0].thread_ts, None, "a message outside a thread is answered in the channel");

    let parent = fake.say("U2", "C2", "hello", None);
    fake.say("U2", "C2", "<@UBOT> roll 3d6", Some(&parent));
    let posts = fake.wait_posts(3, WAIT);
    let in_thread: Vec<_> = posts.iter().filter(|p| p.thread_ts.as_deref() == Some(parent.as_str())).collect();
    assert_eq!(in_thread.len(), 1, "{posts:?}");
    assert_eq!(in_thread[0].channel, "C2");
    assert!(in_thread[0].text.contains("(total "), "the mention is stripped: {posts:?}");
    assert!(posts.iter().any(|p| p.text.contains("unknown command") || p.text.contains("hello")), "{posts:?}");

    // The bot's posts came back as events; none became a message, all were acknowledged.
    wait_all_acked(&fake);
    let mut con = redis.con();
    let data = entries(&mut con, &key("dice", "data"));
    assert_eq!(data.len(), 3, "only the three user messages: {data:?}");
    let (_, first) = &data[0];
    for (k, v) in [("user", "Alice"), ("user_id", "U1"), ("text", "roll 2d6"), ("server", slack::TEAM)] {
        assert_eq!(field(first, k), Some(v), "{first:?}");
    }
    assert_eq!((field(first, "channel"), field(first, "platform")), (Some("C1"), Some("slack")));
    let (_, threaded) = &data[2];
    assert_eq!((field(threaded, "thread"), field(threaded, "text")), (Some(parent.as_str()), Some("roll 3d6")));
    assert_eq!(fake.posts().len(), 3, "no reply to its own posts");
    let log = running.log_text();
    assert!(!log.contains(slack::BOT_TOKEN) && !log.contains(slack::APP_TOKEN), "a token reached the log");
}

#[test]
fn slack_reconnects_without_losing_or_repeating_a_message() {
    component("dice");
    let (redis, fake) = (RedisServer::start(), FakeSlack::start());
    let project = project(&fake, "");
    let _running = start(&project, &redis);
    fake.wait_connected(1, WAIT);

    // The socket dies right after an envelope was sent, before its ack can arrive: Slack
    // delivers it again on the next connection.
    fake.state.lock().drop_after_next = true;
    fake.say("U1", "C1", "roll 2d6", None);
    fake.wait_posts(1, WAIT);
    fake.wait_connected(2, WAIT);

    // Slack rotates the connection (`disconnect`), then a message.
    fake.disconnect();
    fake.wait_connected(3, WAIT);
    fake.say("U1", "C1", "roll 2d8", None);
    fake.wait_posts(2, WAIT);

    // A message said while the socket is down arrives after the reconnect.
    fake.drop_connection();
    fake.say("U2", "C1", "roll 2d10", None);
    fake.wait_posts(3, WAIT);
    wait_all_acked(&fake);

    let mut con = redis.con();
    assert_eq!(wait_len(&mut con, &key("dice", "data"), 3, WAIT), 3);
    std::thread::sleep(Duration::from_millis(500));
    let data = entries(&mut con, &key("dice", "data"));
    let texts: Vec<_> = data.iter().filter_map(|(_, f)| field(f, "text")).collect();
    assert_eq!(texts, ["roll 2d6", "roll 2d8", "roll 2d10"], "each message once");
    assert_eq!(fake.posts().len(), 3, "each answered once: {:?}", fake.posts());
    assert!(fake.state.lock().connections >= 4);
}

#[test]
fn slack_rate_limits_delay_replies_and_drop_none() {
    component("dice");
    let (redis, fake) = (RedisServer::start(), FakeSlack::start());
    {
        let mut st = fake.state.lock();
        st.limit_next = 2;
        st.retry_after_secs = 1;
    }
    let project = project(&fake, "");
    let _running = start(&project, &redis);
    fake.wait_connected(1, WAIT);
    for n in 1..=4 {
        fake.say("U1", "C1", &format!("roll {n}d6 --sum"), None);
    }
    let posts = fake.wait_posts(4, WAIT);
    assert!(posts.iter().all(|p| p.text.contains("(total ")), "{posts:?}");
    std::thread::sleep(Duration::from_millis(500));
    let st = fake.state.lock();
    assert_eq!(st.rate_limited, 2, "two posts were answered 429");
    assert_eq!(st.violations, 0, "no post was made before Retry-After had passed");
    assert_eq!(st.posts.len(), 4, "every reply posted once");
}

#[test]
fn slack_sends_a_taskback_to_a_user_as_a_direct_message() {
    component("iwant");
    let (redis, fake) = (RedisServer::start(), FakeSlack::start());
    let project = Project::new(&format!(
        "services:
  iwant:
    collector: {{ kind: slack, app_token: \"${{SLACK_APP_TOKEN}}\", bot_token: \"${{SLACK_BOT_TOKEN}}\", api_url: \"{}\" }}
    shell: {{ file: iwant, allow: [kv, taskback] }}
    tasks:
      - torch: {{ in_key: text, out_key: text, ignore_unknown: true }}
    workers: {{ concurrency: 1 }}
",
        fake.api_url
    ));
    let mut cmd = host(&project, &redis);
    cmd.env("SLACK_APP_TOKEN", slack::APP_TOKEN).env("SLACK_BOT_TOKEN", slack::BOT_TOKEN);
    let _running = Running::start_cmd(cmd, &project, &["iwant"]);
    fake.wait_connected(1, WAIT);
    fake.say("U1", "C1", "iwant coffee at +1h for 30m until +50m", None);
    fake.wait_posts(1, WAIT);
    fake.say("U2", "C1", "iwant coffee at +70m for 30m until +55m", None);
    // Bob's answer in the channel, and iwant's notice to Alice (`to: Alice`) in her DMs
    // (a user id as the channel).
    let posts = fake.wait_posts(3, WAIT);
    let dm: Vec<_> = posts.iter().filter(|p| p.channel == "U1").collect();
    assert_eq!(dm.len(), 1, "{posts:?}");
    assert!(dm[0].text.starts_with("@Alice: match #1: coffee with Bob at "), "{posts:?}");
    assert!(posts.iter().any(|p| p.channel == "C1" && p.text.contains("(MATCHED)")), "{posts:?}");
}

#[test]
fn slack_survives_broken_and_hostile_frames() {
    component("dice");
    let (redis, fake) = (RedisServer::start(), FakeSlack::start());
    let project = project(&fake, "");
    let mut running = start(&project, &redis);
    fake.wait_connected(1, WAIT);
    for frame in [
        "not json at all",
        "[1, 2, 3]",
        r#"{"type": "events_api"}"#,
        r#"{"type": "events_api", "envelope_id": "x1", "payload": "a string"}"#,
        r#"{"type": "events_api", "envelope_id": "x2", "payload": {"event": {"type": "message", "text": 5}}}"#,
        r#"{"type": "slash_commands", "envelope_id": "x3", "payload": {"command": "/roll"}}"#,
    ] {
        fake.send_raw(frame);
    }
    // A name with terminal escapes and a long text are stored as they are, bounded.
    fake.state.lock().users_insert("U3", "Eve\u{1b}[2J");
    fake.say("U3", "C1", &format!("roll 2d6 {}", "x".repeat(300_000)), None);
    fake.say("U1", "C1", "roll 2d6", None);
    let posts = fake.wait_posts(2, WAIT);
    assert!(posts.iter().any(|p| p.text.contains("(total ")), "{posts:?}");
    let mut con = redis.con();
    let data = entries(&mut con, &key("dice", "data"));
    let eve = data.iter().find(|(_, f)| field(f, "user_id") == Some("U3"));
    assert!(eve.is_none_or(|(_, f)| field(f, "text").is_some_and(|t| t.len() <= 160_000)), "bounded text");
    assert_eq!(fake.state.lock().connections, 1, "broken frames are skipped, not fatal");
    assert!(running.child.try_wait().expect("status").is_none(), "the host is still running");
    assert!(!running.log_text().contains('\u{1b}'), "no raw escape reached the log");
}
