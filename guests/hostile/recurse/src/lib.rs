//! `recurse` (hostile guest): recurses without end. The Wasm stack overflows and the host
//! must turn it into a trap (`call stack exhausted`) that fails the message only. `depth`
//! (default: no limit) stops it earlier, to show the same code works when it is shallow.

use cannon_guest::{config, Fields, Message, Task};

struct Recurse;

#[inline(never)]
fn dive(depth: u64, max: u64, pad: [u64; 8]) -> u64 {
    let pad = std::hint::black_box(pad);
    if depth >= max {
        return depth;
    }
    let below = dive(depth + 1, max, [depth; 8]);
    std::hint::black_box(below.wrapping_add(pad[(depth % 8) as usize]))
}

impl Task for Recurse {
    fn run(_msg: Message, _results: Fields) -> Result<Fields, String> {
        let max = config::parse_or("depth", u64::MAX)?;
        std::hint::black_box(dive(0, max, [0; 8]));
        Ok(vec![("depth".to_owned(), max.to_string())])
    }
}

cannon_guest::export_task!(Recurse);
