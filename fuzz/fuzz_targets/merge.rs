//! Any bytes as a message, the results of pipeline steps and the taskbacks they send, drawn
//! from a small set of keys (host-owned ones and look-alikes among them) so keys collide:
//! `fields::merge` agrees with the obvious quadratic merge (a later key overwrites in
//! place, a new one is appended), and every taskback `Outcome::taskbacks` builds starts
//! with the host's `cannon.id`, holds no other host-owned key and no key twice.

#![no_main]

use cannon_host::broker::Fields;
use cannon_host::engine::Message;
use cannon_host::fields::{ENTRY_OVERHEAD, host_id, is_host_key, merge, size};
use cannon_host::pipeline::Outcome;
use libfuzzer_sys::fuzz_target;

const KEYS: [&str; 12] = [
    "text",
    "a",
    "b",
    "",
    "cannon.id",
    "Cannon.ID",
    "cannon.error",
    " cannon.id",
    "cannon.id ",
    "cannon.",
    "cannon",
    "é",
];

/// The merge as it was before it was made linear: the reference.
fn naive(into: &mut Fields, new: &[(String, String)]) {
    for (key, value) in new {
        match into.iter_mut().find(|(k, _)| k == key) {
            Some(slot) => slot.1 = value.clone(),
            None => into.push((key.clone(), value.clone())),
        }
    }
}

/// Splits `data` into groups (at 0xFF); each byte of a group is one pair.
fn groups(data: &[u8]) -> Vec<Fields> {
    data.split(|&b| b == 0xFF)
        .map(|group| {
            group
                .iter()
                .enumerate()
                .map(|(i, &b)| (KEYS[usize::from(b) % KEYS.len()].to_owned(), format!("{i}:{b}")))
                .collect()
        })
        .collect()
}

fuzz_target!(|data: &[u8]| {
    let mut groups = groups(data);
    let message = groups.remove(0);

    let mut fast = Fields::new();
    let mut slow = Fields::new();
    for group in &groups {
        merge(&mut fast, group.clone());
        naive(&mut slow, group);
        assert_eq!(fast, slow, "merge differs from the reference");
    }
    assert!(size(&fast) >= fast.len() * ENTRY_OVERHEAD);

    let (results, extra) = groups.split_first().map_or((Fields::new(), Vec::new()), |(r, e)| (r.clone(), e.to_vec()));
    let msg = Message { id: "1-0".to_owned(), service: "fuzz".to_owned(), fields: message };
    let had_results = !results.is_empty();
    let outcome = Outcome { results, extra_taskbacks: extra.clone(), ..Outcome::default() };
    let taskbacks = outcome.taskbacks(&msg);
    assert_eq!(taskbacks.len(), usize::from(had_results) + extra.len());
    for taskback in &taskbacks {
        assert_eq!(host_id(taskback), Some("1-0"), "{taskback:?}");
        assert!(taskback[1..].iter().all(|(k, _)| !is_host_key(k)), "a forged host key got through: {taskback:?}");
        let mut keys: Vec<&str> = taskback.iter().map(|(k, _)| k.as_str()).collect();
        keys.sort_unstable();
        assert!(keys.windows(2).all(|w| w[0] != w[1]), "a key twice: {taskback:?}");
    }
});
