//! `fail` (test task): fails every message with config `error` (default
//! `failed on purpose`), so tests can check what a failing task does to a pipeline.

use cannon_guest::{config, Fields, Message, Task};

struct Fail;

impl Task for Fail {
    fn run(_msg: Message, _results: Fields) -> Result<Fields, String> {
        Err(config::get_or("error", "failed on purpose"))
    }
}

cannon_guest::export_task!(Fail);
