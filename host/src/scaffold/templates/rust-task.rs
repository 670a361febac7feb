//! {{name}}: a cannon task. It receives each message and the results of the tasks before
//! it, and returns its own results; here, a greeting for the message's `text` field (or
//! the field named by `conf: {kwargs: {field: ...}}` in the compose file).

// stdio, exit and clocks over WASI 0.2, so the component needs no preview-1 adapter (see the
// file; `cannon-host new` copies it from cannon's guest SDK).
#[cfg(target_arch = "wasm32")]
mod preview1;

// Generates `Guest` (the exports to implement), `Message`, `Fields` and the host imports
// under `cannon::platform` from the vendored WIT.
wit_bindgen::generate!({ world: "task-base", path: "wit" });

use cannon::platform::config;

struct Component;

impl Guest for Component {
    fn run(msg: Message, _results: Fields) -> Result<Fields, String> {
        let field = config::get("field").unwrap_or_else(|| "text".to_owned());
        let Some((_, text)) = msg.fields.iter().rev().find(|(key, _)| *key == field) else {
            return Err(format!("no field {field:?} in the message"));
        };
        Ok(vec![("greeting".to_owned(), format!("hello, {text}!"))])
    }
}

export!(Component);
