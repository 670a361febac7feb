//! `spin` (hostile guest): loops forever. The host must stop it at the deadline and keep
//! serving everything else.

use cannon_guest::{Fields, Message, Task};

struct Spin;

impl Task for Spin {
    fn run(_msg: Message, _results: Fields) -> Result<Fields, String> {
        let mut n: u64 = 0;
        loop {
            n = std::hint::black_box(n.wrapping_add(1));
        }
    }
}

cannon_guest::export_task!(Spin);
