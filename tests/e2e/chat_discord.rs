//! `kind: discord` against a local server speaking Discord's Gateway and REST protocol
//! (`fake/discord.rs`), a real Redis and the real `dice` shell through torch.

use std::time::Duration;

use crate::fake::discord::{self, CHANNEL, FakeDiscord, THREAD};
use crate::fake::wait_until;
use crate::support::{Project, RedisServer, Running, component, entries, field, host, key, wait_len};

const WAIT: Duration = Duration::from_secs(60);

fn start(fake: &FakeDiscord, redis: &RedisServer) -> (Project, Running) {
    let project = Project::new(&format!(
        "services:
  dice:
    collector: {{ kind: discord, token: \"${{DISCORD_TOKEN}}\", api_url: \"{}\" }}
    shell: {{ file: dice }}
    tasks:
      - torch: {{ in_key: text, out_key: text }}
",
        fake.api_url
    ));
    let mut cmd = host(&project, redis);
    cmd.env("DISCORD_TOKEN", discord::TOKEN);
    let running = Running::start_cmd(cmd, &project, &["dice"]);
    (project, running)
}

#[test]
fn discord_rolls_dice_in_channels_and_threads_and_ignores_its_own_posts() {
    component("dice");
    let (redis, fake) = (RedisServer::start(), FakeDiscord::start());
    let (_project, running) = start(&fake, &redis);
    fake.wait_live(1, 0, WAIT);

    let asked = fake.say("100", "Alice", CHANNEL, "roll 2d6");
    let posts = fake.wait_posts(1, WAIT);
    assert_eq!(posts[0].channel, CHANNEL);
    assert!(posts[0].content.contains("(total "), "{posts:?}");
    assert_eq!(posts[0].reply_to.as_deref(), Some(asked.as_str()), "a reply to the message it answers");
    assert!(posts[0].mentions_off, "replies ping nobody");

    let in_thread = fake.say("200", "Bob", THREAD, &format!("<@{}> roll 3d6", discord::BOT));
    let posts = fake.wait_posts(2, WAIT);
    assert_eq!(posts[1].channel, THREAD, "answered in the thread");
    assert_eq!(posts[1].reply_to.as_deref(), Some(in_thread.as_str()));
    assert!(posts[1].content.contains("(total "), "the mention is stripped: {posts:?}");

    let mut con = redis.con();
    let data = entries(&mut con, &key("dice", "data"));
    assert_eq!(data.len(), 2, "the bot's own posts are not messages: {data:?}");
    let (_, first) = &data[0];
    for (k, v) in [("user", "Alice"), ("user_id", "100"), ("text", "roll 2d6"), ("server", discord::GUILD)] {
        assert_eq!(field(first, k), Some(v), "{first:?}");
    }
    assert_eq!((field(first, "channel"), field(first, "platform")), (Some(CHANNEL), Some("discord")));
    let (_, threaded) = &data[1];
    assert_eq!((field(threaded, "channel"), field(threaded, "thread")), (Some(CHANNEL), Some(THREAD)));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(fake.posts().len(), 2, "no reply to its own posts");
    assert!(!running.log_text().contains(discord::TOKEN), "the token reached the log");
}

#[test]
fn discord_resumes_after_a_drop_without_losing_or_repeating_a_message() {
    component("dice");
    let (redis, fake) = (RedisServer::start(), FakeDiscord::start());
    // Short heartbeats, so several happen during the test.
    fake.state.lock().heartbeat_ms = 300;
    let (_project, _running) = start(&fake, &redis);
    fake.wait_live(1, 0, WAIT);
    fake.say("100", "Alice", CHANNEL, "roll 2d6");
    fake.wait_posts(1, WAIT);

    // The connection drops; a message is said meanwhile; the bot resumes and gets it.
    fake.drop_connection();
    fake.say("100", "Alice", CHANNEL, "roll 2d8");
    fake.wait_posts(2, WAIT);
    fake.wait_live(1, 1, WAIT);

    // Discord asks for a reconnect (op 7): resumed again.
    fake.ask_reconnect();
    fake.wait_live(1, 2, WAIT);
    fake.say("200", "Bob", CHANNEL, "roll 2d10");
    fake.wait_posts(3, WAIT);

    let mut con = redis.con();
    assert_eq!(wait_len(&mut con, &key("dice", "data"), 3, WAIT), 3);
    std::thread::sleep(Duration::from_millis(700));
    let data = entries(&mut con, &key("dice", "data"));
    let texts: Vec<_> = data.iter().filter_map(|(_, f)| field(f, "text")).collect();
    assert_eq!(texts, ["roll 2d6", "roll 2d8", "roll 2d10"], "each message once");
    assert_eq!(fake.posts().len(), 3, "each answered once: {:?}", fake.posts());
    let st = fake.state.lock();
    assert_eq!(st.identifies, 1, "one session, resumed: never identified again");
    assert!(st.heartbeats >= 2, "heartbeats: {}", st.heartbeats);
}

#[test]
fn discord_rate_limits_delay_replies_and_drop_none() {
    component("dice");
    let (redis, fake) = (RedisServer::start(), FakeDiscord::start());
    {
        let mut st = fake.state.lock();
        st.limit_next = 1;
        st.retry_after = 0.7;
    }
    let (_project, _running) = start(&fake, &redis);
    fake.wait_live(1, 0, WAIT);
    // More replies than the channel's bucket allows per second.
    let n = discord::BUCKET as usize * 2 + 1;
    for i in 1..=n {
        fake.say("100", "Alice", CHANNEL, &format!("roll {i}d6 --sum"));
    }
    let posts = fake.wait_posts(n, WAIT);
    assert!(posts.iter().all(|p| p.content.contains("(total ")), "{posts:?}");
    std::thread::sleep(Duration::from_millis(700));
    let st = wait_until(WAIT, "the rate limit state", || {
        let st = fake.state.lock();
        (true, (st.rate_limited, st.violations, st.posts.len()))
    });
    assert_eq!(st, (1, 0, n), "(429s sent, calls made too early, posts)");
}

#[test]
fn discord_sends_a_taskback_to_a_user_as_a_direct_message() {
    component("iwant");
    let (redis, fake) = (RedisServer::start(), FakeDiscord::start());
    let project = Project::new(&format!(
        "services:
  iwant:
    collector: {{ kind: discord, token: \"${{DISCORD_TOKEN}}\", api_url: \"{}\" }}
    shell: {{ file: iwant, allow: [kv, taskback] }}
    tasks:
      - torch: {{ in_key: text, out_key: text, ignore_unknown: true }}
    workers: {{ concurrency: 1 }}
",
        fake.api_url
    ));
    let mut cmd = host(&project, &redis);
    cmd.env("DISCORD_TOKEN", discord::TOKEN);
    let _running = Running::start_cmd(cmd, &project, &["iwant"]);
    fake.wait_live(1, 0, WAIT);
    fake.say("100", "Alice", CHANNEL, "iwant coffee at +1h for 30m until +50m");
    fake.wait_posts(1, WAIT);
    // Discord fails twice to open Alice's DM channel (a 502): the notice waits and is
    // posted, not refused for good.
    fake.state.lock().fail_dm_opens = 2;
    fake.say("200", "Bob", CHANNEL, "iwant coffee at +70m for 30m until +55m");
    // Bob's answer in the channel, and iwant's notice to Alice (`to: Alice`) in her DMs.
    let posts = fake.wait_posts(3, WAIT);
    assert_eq!(fake.state.lock().dm_opens, 3, "two 502s, then the channel");
    let dm: Vec<_> = posts.iter().filter(|p| p.channel == "dm-100").collect();
    assert_eq!(dm.len(), 1, "{posts:?}");
    assert!(dm[0].content.starts_with("@Alice: match #1: coffee with Bob at "), "{posts:?}");
    assert!(posts.iter().any(|p| p.channel == CHANNEL && p.content.contains("(MATCHED)")), "{posts:?}");
}

#[test]
fn discord_applies_the_branding_examples_taskbacks_to_the_guild() {
    component("branding");
    component("branding_clock");
    let (redis, fake) = (RedisServer::start(), FakeDiscord::start());
    let discord = format!(
        "      - {{ kind: discord, token: \"${{DISCORD_TOKEN}}\", api_url: \"{}\", branding: {{ guild: \"{}\", assets: events }} }}\n",
        fake.api_url,
        discord::GUILD
    );
    let project = crate::collectors::example("branding", &[(crate::examples::STDIN, &discord)]);
    // One fallback event whose banner and icon are images (tiny PNG headers).
    let png = |tag: &str| [b"\x89PNG\r\n\x1a\n".as_slice(), tag.as_bytes()].concat();
    let events = project.path("events").join("everyday");
    std::fs::create_dir_all(events.join("icons")).expect("mkdir");
    std::fs::write(
        events.join("event.conf"),
        "name: Everyday\nfallback: yes\nbanner: banner.png\nicons: icons/a.png\n",
    )
    .expect("event.conf");
    std::fs::write(events.join("banner.png"), png("banner")).expect("banner");
    std::fs::write(events.join("icons/a.png"), png("icon")).expect("icon");

    let mut cmd = host(&project, &redis);
    cmd.env("DISCORD_TOKEN", discord::TOKEN);
    let _running = Running::start_cmd(cmd, &project, &["branding"]);
    // The tick at start applies the banner and the icon: two guild changes, no posts.
    let changes = wait_until(WAIT, "the banner and the icon applied", || {
        let changes = fake.state.lock().guild_changes.clone();
        (changes.len() >= 2, changes)
    });
    let field_of = |name: &str| changes.iter().find(|(_, f, _)| f == name).map(|(g, _, v)| (g.clone(), v.clone()));
    let (guild, banner) = field_of("banner").expect("banner changed");
    assert_eq!(guild, discord::GUILD);
    assert!(banner.starts_with("data:image/png;base64,iVBORw0KGgpiYW5uZXI"), "{banner}");
    assert!(field_of("icon").expect("icon changed").1.starts_with("data:image/png;base64,"));
    std::thread::sleep(Duration::from_millis(500));
    assert!(fake.posts().is_empty(), "branding taskbacks are not chat posts: {:?}", fake.posts());
}

#[test]
fn discord_survives_broken_and_hostile_frames() {
    component("dice");
    let (redis, fake) = (RedisServer::start(), FakeDiscord::start());
    let (_project, mut running) = start(&fake, &redis);
    fake.wait_live(1, 0, WAIT);
    for frame in [
        "not json at all",
        r#"{"op": 99, "d": {}}"#,
        r#"{"op": 0, "t": "MESSAGE_CREATE", "s": null, "d": "a string"}"#,
        r#"{"op": 0, "t": "MESSAGE_CREATE", "d": {"id": 5, "author": {"id": []}, "content": {}}}"#,
        r#"{"op": 0, "t": "GUILD_CREATE", "d": {"threads": [{"id": 1}, "x", {"id": "T", "parent_id": null}]}}"#,
    ] {
        fake.send_raw(frame);
    }
    fake.say("300", "Eve\u{1b}[2J", CHANNEL, "roll 2d6\u{202e}");
    fake.say("100", "Alice", CHANNEL, "roll 2d6");
    let posts = fake.wait_posts(2, WAIT);
    assert!(posts.iter().any(|p| p.content.contains("(total ")), "{posts:?}");
    let st = fake.state.lock();
    assert_eq!((st.identifies, st.resumes), (1, 0), "broken frames are skipped, not fatal");
    drop(st);
    assert!(running.child.try_wait().expect("status").is_none(), "the host is still running");
    assert!(!running.log_text().contains('\u{1b}'), "no raw escape reached the log");
}

#[test]
fn discord_replaces_a_connection_whose_heartbeats_go_unacknowledged() {
    component("dice");
    let (redis, fake) = (RedisServer::start(), FakeDiscord::start());
    fake.state.lock().heartbeat_ms = 300;
    let (_project, _running) = start(&fake, &redis);
    fake.wait_live(1, 0, WAIT);
    // The Gateway stops acknowledging: the client takes the connection for dead and resumes.
    fake.state.lock().skip_acks = true;
    wait_until(WAIT, "a RESUME after unacknowledged heartbeats", || {
        let st = fake.state.lock();
        (st.resumes >= 1, (st.heartbeats, st.resumes))
    });
    fake.state.lock().skip_acks = false;
    fake.say("100", "Alice", CHANNEL, "roll 2d6");
    let posts = fake.wait_posts(1, WAIT);
    assert!(posts[0].content.contains("(total "), "{posts:?}");
    assert_eq!(fake.state.lock().identifies, 1, "the session was resumed, not replaced");
}
