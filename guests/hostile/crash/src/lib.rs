//! `crash` (hostile guest): fails the hard way. `how: panic` (the default) panics (with
//! `panic = "abort"` that is a Wasm `unreachable` trap after the message is printed to
//! stderr); `how: unreachable` executes `unreachable` directly. Each must fail that message only,
//! with a trap error.

use cannon_guest::{config, Fields, Message, Task};

struct Crash;

impl Task for Crash {
    fn run(_msg: Message, _results: Fields) -> Result<Fields, String> {
        match config::get_or("how", "panic").as_str() {
            "unreachable" => core::arch::wasm32::unreachable(),
            _ => panic!("hostile guest panicked on purpose"),
        }
    }
}

cannon_guest::export_task!(Crash);
