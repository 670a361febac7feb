//! The `log`, `config` and `taskback` imports (`kv` has its own file).

use crate::engine::bindings::Level;
use crate::engine::bindings::task::cannon::platform::{config, log, taskback, types};
use crate::engine::state::HostState;

impl types::Host for HostState {}

impl log::Host for HostState {
    fn log(&mut self, level: Level, text: String) -> wasmtime::Result<()> {
        self.log_lines().log(level, &text);
        Ok(())
    }
}

impl config::Host for HostState {
    fn get(&mut self, key: String) -> wasmtime::Result<Option<String>> {
        Ok(self.config.get(&key).cloned())
    }

    fn get_all(&mut self) -> wasmtime::Result<Vec<(String, String)>> {
        Ok(self.config.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
    }
}

impl taskback::Host for HostState {
    fn send(&mut self, fields: Vec<(String, String)>) -> wasmtime::Result<Result<(), String>> {
        if self.taskbacks.len() >= self.max_taskbacks as usize {
            return Ok(Err(format!(
                "taskback limit reached: at most {} per call (limits.taskbacks)",
                self.max_taskbacks
            )));
        }
        if fields.len() > self.max_taskback_fields {
            return Ok(Err(format!(
                "taskback of {} fields exceeds limits.max_fields = {}",
                fields.len(),
                self.max_taskback_fields
            )));
        }
        let bytes = crate::vocab::fields::size(&fields);
        if bytes > self.max_taskback_bytes {
            return Ok(Err(format!(
                "taskback of {bytes} bytes exceeds limits.output_kb ({} bytes)",
                self.max_taskback_bytes
            )));
        }
        if fields.is_empty() {
            return Ok(Err("taskback has no fields".to_owned()));
        }
        self.taskbacks.push(fields);
        Ok(Ok(()))
    }
}
