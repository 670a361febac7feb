//! # cannon-guest: tasks and shells for cannon, in plain Rust
//!
//! A cannon **task** is one step of a service's pipeline: it receives the message and the
//! results of the tasks before it, and returns its own results. A **shell** is a set of
//! named commands that the built-in `torch` task dispatches into (`roll 2d6` calls the
//! shell's `roll` command). Each call runs in a fresh instance, so global state never
//! survives from one message to the next; use [`kv`] for state that must.
//!
//! ## Layout
//! - [`Task`] and [`export_task!`]: write a task as one function.
//! - [`Shell`], [`Cmd`], [`Args`], [`CmdError`] and [`export_shell!`]: a command table with
//!   summaries, usage text and `--flag value` / `--flag=value` option parsing.
//! - [`log`], [`config`], [`kv`], [`taskback`], [`streams`]: the host's imports, wrapped
//!   (`streams`: read other services' streams, `allow: [{streams: [SERVICE]}]`).
//! - [`Message`] and [`Fields`]: what a component receives, with lookup helpers.
//! - [`receipt`]: ask for, and read, the receipt of a taskback.
//! - `http` (cargo feature `http`): `http::get`, `http::post`, `http::Request`: outbound HTTP
//!   to the hosts the compose file grants (`allow: [{http: [...]}]`).
//!
//! ## A task
//! ```ignore
//! use cannon_guest::{config, Fields, Message, Task};
//!
//! struct Shout;
//!
//! impl Task for Shout {
//!     fn run(msg: Message, _results: Fields) -> Result<Fields, String> {
//!         let field = config::get_or("field", "text");
//!         let text = msg.get(&field).ok_or_else(|| format!("no field {field:?}"))?;
//!         Ok(vec![(field, text.to_uppercase())])
//!     }
//! }
//!
//! cannon_guest::export_task!(Shout);
//! ```
//!
//! ## A shell
//! ```ignore
//! use cannon_guest::{Args, Cmd, CmdError, Message, Shell};
//!
//! struct Greeter;
//!
//! impl Shell for Greeter {
//!     const COMMANDS: &'static [Cmd] = &[Cmd {
//!         name: "greet",
//!         summary: "say hello",
//!         usage: "greet NAME [--times N] [--loud]",
//!         options: &["times"],
//!         flags: &["loud"],
//!         run: greet,
//!     }];
//! }
//!
//! fn greet(args: &Args, _msg: &Message) -> Result<String, CmdError> {
//!     let name = args.required(0, "NAME")?;
//!     let times: usize = args.parse_option("times")?.unwrap_or(1);
//!     let hello = format!("hello, {name}! ").repeat(times);
//!     Ok(if args.flag("loud") { hello.to_uppercase() } else { hello })
//! }
//!
//! cannon_guest::export_shell!(Greeter);
//! ```
//!
//! ## Building
//! Add `crate-type = ["cdylib"]` and build for `wasm32-wasip2`; the result is a component
//! that `cannon-host` runs. In this repository, `guests/build.sh` does that for every guest.

mod args;
#[cfg(feature = "http")]
pub mod http;
mod imports;
#[cfg(target_arch = "wasm32")]
mod preview1;
pub mod receipt;
mod shell;

pub use args::{Args, CmdError};
pub use imports::{config, kv, log, streams, taskback};
pub use shell::{Cmd, Shell};

#[doc(hidden)]
#[allow(
    clippy::too_many_arguments,
    reason = "generated: `kv.compare-and-swap` and `streams.between` lower to 8 arguments"
)]
pub mod task_world {
    wit_bindgen::generate!({
        world: "task",
        path: "../../wit",
        pub_export_macro: true,
        export_macro_name: "__export_task_world",
        default_bindings_module: "cannon_guest::task_world",
    });
}

#[doc(hidden)]
#[allow(
    clippy::too_many_arguments,
    reason = "generated: `kv.compare-and-swap` and `streams.between` lower to 8 arguments"
)]
pub mod shell_world {
    wit_bindgen::generate!({
        world: "shell",
        path: "../../wit",
        pub_export_macro: true,
        export_macro_name: "__export_shell_world",
        default_bindings_module: "cannon_guest::shell_world",
        with: {
            "cannon:platform/types@0.1.0": crate::task_world::cannon::platform::types,
            "cannon:platform/log@0.1.0": crate::task_world::cannon::platform::log,
            "cannon:platform/config@0.1.0": crate::task_world::cannon::platform::config,
            "cannon:platform/kv@0.1.0": crate::task_world::cannon::platform::kv,
            "cannon:platform/taskback@0.1.0": crate::task_world::cannon::platform::taskback,
            "cannon:platform/streams@0.1.0": crate::task_world::cannon::platform::streams,
        },
    });
}

/// The message a component receives: broker id, service name and the collector's fields.
pub use task_world::cannon::platform::types::Message;

/// A shell command as listed to the host (built from [`Cmd`] by [`export_shell!`]).
pub use task_world::cannon::platform::types::Command;

/// Ordered `key -> value` pairs: message fields, results, taskbacks.
pub type Fields = Vec<(String, String)>;

/// Lookup helpers for [`Fields`].
pub trait FieldsExt {
    /// The value of the last pair named `key` (later pairs overwrite earlier ones).
    fn get(&self, key: &str) -> Option<&str>;
}

impl FieldsExt for [(String, String)] {
    fn get(&self, key: &str) -> Option<&str> {
        self.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

impl Message {
    /// The value of message field `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        FieldsExt::get(self.fields.as_slice(), key)
    }
}

/// A pipeline step. Implement it on a unit struct and export it with [`export_task!`].
pub trait Task {
    /// Returns this task's results; `Err` fails the message (it is retried, then dead-lettered).
    fn run(msg: Message, results: Fields) -> Result<Fields, String>;
}

/// Exports a [`Task`] implementation as the component's `run` function.
#[macro_export]
macro_rules! export_task {
    ($task:ty) => {
        const _: () = {
            struct __CannonTask;
            impl $crate::task_world::Guest for __CannonTask {
                fn run(
                    msg: $crate::Message,
                    results: $crate::Fields,
                ) -> ::core::result::Result<$crate::Fields, ::std::string::String> {
                    <$task as $crate::Task>::run(msg, results)
                }
            }
    $crate::task_world::__export_task_world!(__CannonTask with_types_in $crate::task_world);
        };
    };
}

/// Exports a [`Shell`] implementation as the component's `commands` and `call` functions.
#[macro_export]
macro_rules! export_shell {
    ($shell:ty) => {
        const _: () = {
            struct __CannonShell;
            impl $crate::shell_world::Guest for __CannonShell {
                fn commands() -> ::std::vec::Vec<$crate::Command> {
                    $crate::__shell_commands::<$shell>()
                }
                fn call(
                    argv: ::std::vec::Vec<::std::string::String>,
                    msg: $crate::Message,
                ) -> ::core::result::Result<::std::string::String, ::std::string::String> {
                    $crate::__shell_call::<$shell>(argv, msg)
                }
            }
    $crate::shell_world::__export_shell_world!(__CannonShell with_types_in $crate::shell_world);
        };
    };
}

#[doc(hidden)]
pub use shell::{__shell_call, __shell_commands};
