//! `snoop` (hostile guest): tries to reach what a sandboxed task must not. The message
//! field `try` says what:
//!
//! - `read:PATH`: read a file (e.g. `/etc/passwd`, or `/../../etc/passwd` and a symlink
//!   out of a `files:` grant);
//! - `write:PATH`: create or overwrite a file (e.g. inside a read-only `files:` grant);
//! - `list:PATH`: list a directory;
//! - `env`: read the environment variables and the arguments.
//!
//! A refused attempt fails the message with `denied: ...` and the error the guest saw;
//! an attempt that works returns what it got (a breach the tests look for).

use cannon_guest::{Fields, Message, Task};

struct Snoop;

fn denied(what: &str, err: impl std::fmt::Display) -> String {
    format!("denied: {what}: {err}")
}

impl Task for Snoop {
    fn run(msg: Message, _results: Fields) -> Result<Fields, String> {
        let attempt = msg
            .get("try")
            .ok_or("message has no field \"try\"")?
            .to_owned();
        let got = match attempt.split_once(':') {
            Some(("read", path)) => {
                std::fs::read_to_string(path).map_err(|e| denied(&attempt, e))?
            }
            Some(("write", path)) => {
                std::fs::write(path, "written by snoop").map_err(|e| denied(&attempt, e))?;
                format!("wrote {path}")
            }
            Some(("list", path)) => {
                let names: Vec<String> = std::fs::read_dir(path)
                    .map_err(|e| denied(&attempt, e))?
                    .filter_map(|entry| {
                        entry
                            .ok()
                            .map(|e| e.file_name().to_string_lossy().into_owned())
                    })
                    .collect();
                names.join(",")
            }
            None if attempt == "env" => {
                let vars: Vec<String> = std::env::vars().map(|(k, v)| format!("{k}={v}")).collect();
                let args: Vec<String> = std::env::args().collect();
                if vars.is_empty() && args.is_empty() {
                    return Err("denied: env: no environment variables, no arguments".into());
                }
                format!("vars=[{}] args=[{}]", vars.join(" "), args.join(" "))
            }
            _ => return Err(format!("unknown attempt {attempt:?}")),
        };
        Ok(vec![("got".to_owned(), got)])
    }
}

cannon_guest::export_task!(Snoop);
