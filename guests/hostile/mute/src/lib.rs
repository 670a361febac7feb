//! `mute` (hostile guest): a shell that traps when asked for its command list. torch asks
//! for it when a service starts, so `cannon-host check` must report it and `run` must
//! refuse the service with a clear error instead of serving a shell it cannot describe.

use cannon_guest::shell_world::Guest;
use cannon_guest::{Command, Message};

struct Mute;

impl Guest for Mute {
    fn commands() -> Vec<Command> {
        panic!("hostile shell refuses to list its commands")
    }

    fn call(_argv: Vec<String>, _msg: Message) -> Result<String, String> {
        Err("mute has no commands".to_owned())
    }
}

cannon_guest::shell_world::__export_shell_world!(Mute with_types_in cannon_guest::shell_world);
