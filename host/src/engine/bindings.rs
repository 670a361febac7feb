//! All `bindgen!` output for `wit/cannon.wit` lives here.
//!
//! The `task` world generates the shared interfaces (`types`, `log`, `config`, `kv`,
//! `taskback`, `streams`); the `shell` world reuses them through `with`, so the host implements
//! each import trait once.

#![expect(missing_docs, reason = "generated code")]

/// Bindings of the `task` world: `Task::call_run`, and the import traits.
pub mod task {
    wasmtime::component::bindgen!({
        world: "task",
        path: "../wit",
        imports: {
            "cannon:platform/kv": async,
            "cannon:platform/streams": async,
            default: trappable,
        },
        exports: { default: async },
    });
}

/// Bindings of the `shell` world: `Shell::call_commands`, `Shell::call_call`.
pub mod shell {
    wasmtime::component::bindgen!({
        world: "shell",
        path: "../wit",
        exports: { default: async },
        with: {
            "cannon:platform/types": super::task::cannon::platform::types,
            "cannon:platform/log": super::task::cannon::platform::log,
            "cannon:platform/config": super::task::cannon::platform::config,
            "cannon:platform/kv": super::task::cannon::platform::kv,
            "cannon:platform/taskback": super::task::cannon::platform::taskback,
            "cannon:platform/streams": super::task::cannon::platform::streams,
        },
    });
}

pub use task::cannon::platform::kv::Error as KvError;
pub use task::cannon::platform::log::Level;
pub use task::cannon::platform::streams::Error as StreamsError;
pub use task::cannon::platform::types::{Command, Message};
