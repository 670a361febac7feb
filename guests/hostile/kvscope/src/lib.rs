//! `kvscope` (hostile guest): tries to read and write kv keys outside its service's scope
//! (the broker's absolute form of another service's keys). Every attempt must come back
//! as the typed `out-of-scope` error; the guest fails with what it got, so the test can
//! read it in the dead letter. Any other answer is reported as a breach.
//! Needs `allow: [kv]`.

use cannon_guest::{config, kv, Fields, Message, Task};

struct KvScope;

impl Task for KvScope {
    fn run(_msg: Message, _results: Fields) -> Result<Fields, String> {
        let victim = config::get_or("victim", "shout");
        let key = format!("cannon:kv:{victim}:secret");
        let mut seen = Vec::new();
        let mut breach = Vec::new();
        let mut note = |op: &str, result: Result<String, kv::Error>| match result {
            Err(kv::Error::OutOfScope(why)) => seen.push(format!("{op}: out-of-scope ({why})")),
            Err(other) => breach.push(format!("{op}: {other:?}")),
            Ok(value) => breach.push(format!("{op}: ok {value}")),
        };
        note("get", kv::get(&key).map(|v| format!("{v:?}")));
        note("set", kv::set(&key, b"pwned").map(|()| String::new()));
        note("increment", kv::increment(&key, 1).map(|n| n.to_string()));
        note("delete", kv::delete(&key).map(|b| b.to_string()));
        note(
            "list-keys",
            kv::list_keys(&format!("cannon:kv:{victim}:"), 10).map(|k| k.join(",")),
        );
        if breach.is_empty() {
            Err(format!(
                "all kv calls outside the scope were refused: {}",
                seen.join("; ")
            ))
        } else {
            Err(format!("BREACH: {}", breach.join("; ")))
        }
    }
}

cannon_guest::export_task!(KvScope);
