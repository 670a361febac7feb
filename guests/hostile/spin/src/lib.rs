//! `spin` (hostile guest): never returns. With `how: loop` (the default) it burns CPU in
//! Wasm; with `how: sleep` it blocks in a host function (`wasi:io/poll`) for an hour.
//! The host must stop it at the deadline either way and keep serving everything else.

use cannon_guest::{config, Fields, Message, Task};

struct Spin;

impl Task for Spin {
    fn run(_msg: Message, _results: Fields) -> Result<Fields, String> {
        if config::get_or("how", "loop") == "sleep" {
            std::thread::sleep(std::time::Duration::from_secs(3600));
            return Err(
                "slept for an hour: the deadline did not stop a call blocked in the host".into(),
            );
        }
        let mut n: u64 = 0;
        loop {
            n = std::hint::black_box(n.wrapping_add(1));
        }
    }
}

cannon_guest::export_task!(Spin);
