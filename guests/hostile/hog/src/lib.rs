//! `hog` (hostile guest): allocates memory without bound, 1 MiB at a time, touching every
//! page. The host must refuse the growth past `limits.memory_mb` and fail the message with
//! `memory limit N MiB exceeded`.

use cannon_guest::{Fields, Message, Task};

struct Hog;

impl Task for Hog {
    fn run(_msg: Message, _results: Fields) -> Result<Fields, String> {
        let mut hoard: Vec<Vec<u8>> = Vec::new();
        loop {
            let chunk = vec![0xA5u8; 1 << 20];
            hoard.push(std::hint::black_box(chunk));
            if hoard.len() > 1 << 16 {
                return Err(format!(
                    "allocated {} MiB and was never stopped",
                    hoard.len()
                ));
            }
        }
    }
}

cannon_guest::export_task!(Hog);
