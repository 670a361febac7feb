//! examples/branding: an autonomous daemon that applies the event of the day, rotates its
//! icons, re-applies nothing unchanged after a restart, and takes commands from chat with
//! torch permissions.

use std::time::Duration;

use super::STDIN;
use super::{day_month, fnv1a64_hex, reply, taskbacks_where, wait_taskbacks};
use crate::collectors::example;
use crate::conformance::Backend;
use crate::support::{Project, RedisServer, Running, component, field};

/// The schedule in the shipped compose file: daily at 00:00 UTC and once at start.
const SHIPPED_SCHEDULE: &str = r#"{ kind: tick, cron: "0 0 * * *", at_start: true }"#;
const BANNER: &str = "[banner] today's test banner";
/// The collector that performs the daemon's taskbacks, as a chat collector would: a program
/// (`uploader.py` beside the compose file) that "uploads" each asset and answers with a
/// receipt: an error once for the asset named in the file `fail-once`, if it exists.
const UPLOADER: &str = "      - { kind: exec, command: [python3, uploader.py] }\n";
const UPLOADER_PY: &str = r#"
import json, os, sys
for line in sys.stdin:
    taskback = json.loads(line)
    with open("uploads.log", "a") as log:
        log.write(line)
    if taskback.get("cannon.receipt") != "yes":
        continue
    ok, detail = True, "uploaded"
    if os.path.exists("fail-once") and open("fail-once").read() == taskback.get("asset"):
        os.remove("fail-once")
        ok, detail = False, "upload refused by the platform"
    receipt = {"receipt_for": taskback["cannon.id"], "receipt": "ok" if ok else "error", "detail": detail}
    if "receipt_ref" in taskback:
        receipt["receipt_ref"] = taskback["receipt_ref"]
    print(json.dumps(receipt), flush=True)
"#;

/// examples/branding/cannon-compose.yml as shipped, with [`UPLOADER`] for its stdin
/// collector, `schedule` as its tick collector and `rotate_every`, and an events directory (at
/// `events` beside the compose file, as `files: events` says) holding an event around
/// today and a fallback.
fn project(schedule: &str, rotate_every: &str) -> Project {
    component("branding");
    component("branding_clock");
    let project = example(
        "branding",
        &[
            (STDIN, UPLOADER),
            (SHIPPED_SCHEDULE, schedule),
            ("rotate_every: 3d", &format!("rotate_every: {rotate_every}")),
        ],
    );
    let write = |path: &str, text: &str| {
        let path = project.path("events").join(path);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, text).expect("write event file");
    };
    write(
        "today/event.conf",
        &format!(
            "name: Today\nstart: {}\nend: {}\ndescription: A test event\nbanner: banner.txt\n\
             icons: icons/one.txt, icons/two.txt\n",
            day_month(-1),
            day_month(1)
        ),
    );
    write("today/banner.txt", BANNER);
    write("today/icons/one.txt", "[icon] one");
    write("today/icons/two.txt", "[icon] two");
    write("everyday/event.conf", "name: Everyday\nfallback: yes\nbanner: banner.txt\nicons: icon.txt\n");
    write("everyday/banner.txt", "[banner] everyday");
    write("everyday/icon.txt", "[icon] everyday");
    std::fs::write(project.path("uploader.py"), UPLOADER_PY).expect("write uploader.py");
    project
}

fn start(backend: &Backend, project: &Project) -> Running {
    let mut host = Running::start_cmd(backend.host(project), project, &[]);
    host.wait_for_log("ready", Duration::from_secs(60));
    host
}

fn redis(backend: &Backend) -> &RedisServer {
    match backend {
        Backend::Redis(redis) => redis,
        _ => unreachable!("branding's tests read the taskback stream from Redis"),
    }
}

fn get<'a>(fields: &'a [(String, String)], name: &str) -> &'a str {
    field(fields, name).unwrap_or_else(|| panic!("no {name} in {fields:?}"))
}

#[test]
fn branding_applies_once_and_a_second_start_reapplies_nothing() {
    let project = project(SHIPPED_SCHEDULE, "3d");
    let backend = Backend::Redis(RedisServer::start());
    let redis = redis(&backend);
    let say = |user: &str, text: &str| reply(&backend, &project, "branding", user, text);

    // First start: the tick at start applies the banner and the first icon.
    let mut host = start(&backend, &project);
    let banner = wait_taskbacks(redis, "branding", "action", "set-banner", 1);
    let icon = wait_taskbacks(redis, "branding", "action", "set-icon", 1);
    assert_eq!((get(&banner[0], "event"), get(&banner[0], "asset")), ("today", "today/banner.txt"));
    assert_eq!(get(&banner[0], "hash"), fnv1a64_hex(BANNER.as_bytes()));
    assert_eq!(get(&icon[0], "asset"), "today/icons/one.txt");
    assert_eq!(get(&icon[0], "hash"), fnv1a64_hex(b"[icon] one"));
    assert_eq!(get(&icon[0], "text"), "branding: icon set to today/icons/one.txt (Today)");
    host.wait_for_log("branding tick: event today, rotated false, applied 2", Duration::from_secs(30));
    // Moving into the event is announced once; each asset counts as applied on its receipt.
    let announced = wait_taskbacks(redis, "branding", "action", "announce", 1);
    assert_eq!(get(&announced[0], "text"), "branding: Today has begun: A test event");
    host.wait_for_log("branding receipt: banner today/banner.txt applied (uploaded)", Duration::from_secs(30));
    host.wait_for_log("branding receipt: icon today/icons/one.txt applied (uploaded)", Duration::from_secs(30));

    let about = say("bob", "branding about");
    assert!(about.starts_with("event: Today ("), "{about}");
    assert!(about.contains("icon: today/icons/one.txt (1 of 2)") && about.ends_with("daemon: enabled"), "{about}");
    let calendar = say("bob", "branding calendar");
    assert!(
        calendar.contains("Today: A test event  <- today") && calendar.contains("fallback        Everyday"),
        "{calendar}"
    );
    let denied = say("bob", "branding sync");
    assert!(denied.starts_with("permission denied: `branding sync` is for moderators only"), "{denied}");
    assert!(host.terminate().success(), "{}", host.log_text());

    // Second start: the state in kv says everything is applied already.
    let mut host = start(&backend, &project);
    host.wait_for_log("branding tick: event today, rotated false, applied 0", Duration::from_secs(30));
    assert_eq!(taskbacks_where(redis, "branding", "action", "set-banner").len(), 1, "no banner re-applied");
    assert_eq!(taskbacks_where(redis, "branding", "action", "set-icon").len(), 1, "no icon re-applied");
    assert_eq!(taskbacks_where(redis, "branding", "action", "announce").len(), 1, "no second announcement");

    // A changed asset is applied again, and only that one.
    std::fs::write(project.path("events/today/banner.txt"), "[banner] a new look").expect("edit banner");
    assert_eq!(
        say("alice", "branding sync"),
        "Today is in force; sent today/banner.txt (each is confirmed when applied)"
    );
    let banners = taskbacks_where(redis, "branding", "action", "set-banner");
    assert_eq!(banners.len(), 2);
    assert_eq!(get(&banners[1], "hash"), fnv1a64_hex(b"[banner] a new look"));
    // The moderator hears from the receipt that it was applied.
    wait_taskbacks(redis, "branding", "text", "branding: banner today/banner.txt applied", 1);
    assert_eq!(say("alice", "branding sync"), "Today is in force and up to date: nothing to apply");
    assert_eq!(taskbacks_where(redis, "branding", "action", "set-icon").len(), 1);
    // --force puts everything back on, e.g. after staff changed the assets by hand.
    assert_eq!(
        say("alice", "branding sync --force"),
        "Today is in force; sent today/banner.txt, today/icons/one.txt (each is confirmed when applied)"
    );
    assert_eq!(taskbacks_where(redis, "branding", "action", "set-banner").len(), 3);
    assert_eq!(taskbacks_where(redis, "branding", "action", "set-icon").len(), 2);
    wait_taskbacks(redis, "branding", "text", "branding: banner today/banner.txt applied", 2);
    wait_taskbacks(redis, "branding", "text", "branding: icon today/icons/one.txt applied", 1);
    assert_eq!(taskbacks_where(redis, "branding", "action", "announce").len(), 1, "a manual sync announces nothing");
    let denied = say("bob", "branding sync --force");
    assert!(denied.starts_with("permission denied: `branding sync` is for moderators only"), "{denied}");
    assert!(host.terminate().success(), "{}", host.log_text());
}

#[test]
fn branding_rotates_icons_and_obeys_the_daemon_switch() {
    let project = project("{ kind: tick, every: 1s }", "2s");
    let backend = Backend::Redis(RedisServer::start());
    let redis = redis(&backend);
    let say = |user: &str, text: &str| reply(&backend, &project, "branding", user, text);
    let mut host = start(&backend, &project);

    // one -> two -> one: the icons rotate every 2 s; the banner is applied once.
    let icons = wait_taskbacks(redis, "branding", "action", "set-icon", 3);
    let assets: Vec<&str> = icons.iter().take(3).map(|f| get(f, "asset")).collect();
    assert_eq!(assets, ["today/icons/one.txt", "today/icons/two.txt", "today/icons/one.txt"]);
    assert_eq!(taskbacks_where(redis, "branding", "action", "set-banner").len(), 1);

    let denied = say("bob", "branding daemon disable");
    assert!(denied.starts_with("permission denied: `branding daemon` is for moderators only"), "{denied}");
    assert_eq!(say("alice", "branding daemon disable"), "the daemon is now disabled");
    let applied = taskbacks_where(redis, "branding", "action", "set-icon").len();
    host.wait_for_log("branding tick: daemon disabled, nothing done", Duration::from_secs(30));
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(taskbacks_where(redis, "branding", "action", "set-icon").len(), applied, "disabled: no rotation");
    assert!(say("bob", "branding about").ends_with("daemon: disabled"));

    // Enabling syncs at once: the reply says what it applied.
    let enabled = say("alice", "branding daemon enable");
    assert!(enabled.starts_with("the daemon is now enabled; Today is in force"), "{enabled}");
    wait_taskbacks(redis, "branding", "action", "set-icon", applied + 1);
    assert!(host.terminate().success(), "{}", host.log_text());
}

#[test]
fn a_failed_upload_is_not_recorded_and_is_sent_again_at_the_next_tick() {
    let project = project("{ kind: tick, every: 1s }", "1d");
    std::fs::write(project.path("fail-once"), "today/banner.txt").expect("write fail-once");
    let backend = Backend::Redis(RedisServer::start());
    let redis = redis(&backend);
    let say = |user: &str, text: &str| reply(&backend, &project, "branding", user, text);
    let mut host = start(&backend, &project);

    // The first banner upload fails: the chat hears it, and the next tick sends it again.
    let refused = "branding: banner today/banner.txt was not applied (upload refused by the platform); \
                   it is sent again at the next tick";
    wait_taskbacks(redis, "branding", "text", refused, 1);
    let banners = wait_taskbacks(redis, "branding", "action", "set-banner", 2);
    assert_eq!(get(&banners[0], "hash"), get(&banners[1], "hash"));
    host.wait_for_log("branding receipt: banner today/banner.txt applied (uploaded)", Duration::from_secs(30));
    // Applied now: later ticks send nothing more (the icon, applied at once, was sent once).
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(taskbacks_where(redis, "branding", "action", "set-banner").len(), 2);
    assert_eq!(taskbacks_where(redis, "branding", "action", "set-icon").len(), 1);
    assert_eq!(taskbacks_where(redis, "branding", "text", refused).len(), 1);
    let about = say("bob", "branding about");
    assert!(about.contains("banner: today/banner.txt\n"), "applied, awaiting nothing: {about}");
    let uploads = std::fs::read_to_string(project.path("uploads.log")).expect("uploads.log");
    assert_eq!(uploads.lines().filter(|l| l.contains("\"set-banner\"")).count(), 2, "{uploads}");
    assert!(host.terminate().success(), "{}", host.log_text());
}
