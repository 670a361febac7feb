//! `bigresult` (hostile guest): returns far more than the host accepts.
//!
//! - `how: many` (default): `entries` pairs (default 1000) of `value_bytes` each
//!   (default 1024): an honest result map larger than `limits.output_kb`.
//! - `how: alias`: one 4 MiB string and `entries` pairs (default 100000) that all point
//!   at it. The canonical ABI lets lists alias guest memory, so a host that copied the
//!   result before checking it would allocate `entries` x 4 MiB (here 400 GB).
//! - `how: error`: fails with an error text of `value_bytes` bytes (default 4 MiB), which
//!   would otherwise end up whole in the dead-letter stream.
//!
//! `tbflood` plays the aliasing trick through `taskback.send`.

use cannon_guest::{config, Fields, Message, Task};

struct BigResult;

/// `count` strings that share one `len`-byte buffer. They must never be dropped (that
/// would free the buffer `count` times), so callers `mem::forget` what holds them.
fn aliased(len: usize, count: usize) -> Fields {
    let mut buffer = "x".repeat(len).into_bytes().into_boxed_slice();
    let ptr = buffer.as_mut_ptr();
    std::mem::forget(buffer);
    (0..count)
        .map(|_| {
            // SAFETY: hostile on purpose. Every `String` aliases the same leaked buffer
            // with capacity == length, so lowering never reallocates it; the caller
            // forgets them instead of dropping them.
            let value = unsafe { String::from_raw_parts(ptr, len, len) };
            ("k".to_owned(), value)
        })
        .collect()
}

impl Task for BigResult {
    fn run(_msg: Message, _results: Fields) -> Result<Fields, String> {
        let how = config::get_or("how", "many");
        match how.as_str() {
            "alias" => {
                let entries = config::parse_or("entries", 100_000usize)?;
                Ok(aliased(4 << 20, entries))
            }
            "error" => {
                let bytes = config::parse_or("value_bytes", 4usize << 20)?;
                Err("E".repeat(bytes))
            }
            _ => {
                let entries = config::parse_or("entries", 1000usize)?;
                let bytes = config::parse_or("value_bytes", 1024usize)?;
                Ok((0..entries)
                    .map(|i| (format!("key{i}"), "v".repeat(bytes)))
                    .collect())
            }
        }
    }
}

cannon_guest::export_task!(BigResult);
