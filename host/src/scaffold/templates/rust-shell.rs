//! {{name}}: a cannon shell, a table of commands that the built-in `torch` task calls with
//! a chat line split into words (`hello Ada` calls `hello` with `["hello", "Ada"]`).

// stdio, exit and clocks over WASI 0.2, so the component needs no preview-1 adapter (see the
// file; `cannon-host new` copies it from cannon's guest SDK).
#[cfg(target_arch = "wasm32")]
mod preview1;

// Generates `Guest` (the exports to implement), `Message`, `Command` and the host imports
// under `cannon::platform` from the vendored WIT.
wit_bindgen::generate!({ world: "shell-base", path: "wit" });


struct Component;

impl Guest for Component {
    fn commands() -> Vec<Command> {
        vec![Command {
            name: "hello".to_owned(),
            summary: "say hello".to_owned(),
            usage: "hello [NAME]".to_owned(),
        }]
    }

    fn call(argv: Vec<String>, msg: Message) -> Result<String, String> {
        let user = msg.fields.iter().rev().find(|(key, _)| key == "user").map(|(_, v)| v.clone());
        match argv.first().map(String::as_str) {
            Some("hello") => {
                let name = argv.get(1).cloned().or(user).unwrap_or_else(|| "world".to_owned());
                Ok(format!("hello, {name}!"))
            }
            Some(other) => Err(format!("unknown command {other:?}")),
            None => Err("no command".to_owned()),
        }
    }
}

export!(Component);
