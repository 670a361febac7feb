//! `cannon-host new`: a ready project for a task or a shell, for authors outside this
//! repository. The templates are compiled into the binary (`templates/`, `include_str!`),
//! with the WIT of `cannon:platform` vendored, so writing a project needs no network; its
//! build needs only the language's own registry (crates.io, PyPI, npm).
//!
//! Each project builds against the world `task-base` or `shell-base` (the `log` and
//! `config` imports only), so `deploy` accepts what it builds without any `allow:`.

use std::path::{Path, PathBuf};

use anyhow::Context as _;

/// The world a project implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    /// A task (the `task` world).
    Task,
    /// A shell (the `shell` world).
    Shell,
}

/// The language of a project.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Lang {
    /// Rust.
    Rust,
    /// Python.
    Python,
    /// JavaScript.
    Js,
    /// C.
    C,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Task => "task",
            Kind::Shell => "shell",
        }
    }
}

impl Lang {
    fn as_str(self) -> &'static str {
        match self {
            Lang::Rust => "rust",
            Lang::Python => "python",
            Lang::Js => "js",
            Lang::C => "c",
        }
    }
}

const WIT: &str = include_str!("../../../wit/cannon.wit");
const README: &str = include_str!("templates/README.md");

/// Longest project name, in bytes.
const MAX_NAME: usize = 48;

/// Whether `name` can name a project, a crate and a component: a lower-case letter, then
/// lower-case letters, digits and single dashes.
fn check_name(name: &str) -> anyhow::Result<()> {
    let ok = name.len() <= MAX_NAME
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.ends_with('-')
        && !name.contains("--");
    anyhow::ensure!(
        ok,
        "{:?} cannot name a component: use a lower-case letter, then lower-case letters, digits \
         and single dashes (at most {MAX_NAME})",
        crate::text::for_terminal(name)
    );
    Ok(())
}

/// The files of a project: (path in the project, contents, executable).
fn files(kind: Kind, lang: Lang, name: &str) -> Vec<(&'static str, String, bool)> {
    let source = match (lang, kind) {
        (Lang::Rust, Kind::Task) => include_str!("templates/rust-task.rs"),
        (Lang::Rust, Kind::Shell) => include_str!("templates/rust-shell.rs"),
        (Lang::Python, Kind::Task) => include_str!("templates/python-task.py"),
        (Lang::Python, Kind::Shell) => include_str!("templates/python-shell.py"),
        (Lang::Js, Kind::Task) => include_str!("templates/js-task.js"),
        (Lang::Js, Kind::Shell) => include_str!("templates/js-shell.js"),
        (Lang::C, Kind::Task) => include_str!("templates/c-task.c"),
        (Lang::C, Kind::Shell) => include_str!("templates/c-shell.c"),
    };
    let (source_path, build, build_notes) = match lang {
        Lang::Rust => (
            "src/lib.rs",
            include_str!("templates/rust-build.sh"),
            "Needs rustup's `wasm32-wasip2` target, or Debian's `rustc-web cargo-web rust-web-src \
             wasi-libc lld-22`; wit-bindgen and wasi come from crates.io. `src/preview1.rs` answers \
             std's stdio, exit and clock calls over WASI 0.2, so the component carries no preview-1 \
             adapter (one core module less to instantiate with every call).",
        ),
        Lang::Python => {
            ("app.py", include_str!("templates/python-build.sh"), "Needs Python 3; componentize-py comes from PyPI.")
        }
        Lang::Js => ("app.js", include_str!("templates/js-build.sh"), "Needs Node.js; componentize-js comes from npm."),
        Lang::C => (
            "app.c",
            include_str!("templates/c-build.sh"),
            "Needs Python 3 (zig and wasm-tools come from PyPI) and cargo (wit-bindgen and the WASI \
             adapter come from crates.io); no C toolchain of the system is used.",
        ),
    };
    let (compose, send, answer) = match kind {
        Kind::Task => (
            format!("    tasks:\n      - path: {name}/{name}.wasm"),
            "text=Ada",
            "answers with a taskback holding `greeting: hello, Ada!`.",
        ),
        Kind::Shell => (
            format!(
                "    shell: {{ path: {name}/{name}.wasm }}\n    tasks:\n      - torch: {{ in_key: text, out_key: text }}"
            ),
            "\"text=hello Ada\"",
            "answers with a taskback holding `text: hello, Ada!`.",
        ),
    };
    let message = match kind {
        Kind::Task => "{ \"text\": \"Ada\" }\n",
        Kind::Shell => "{ \"text\": \"hello Ada\" }\n",
    };
    let fill = |text: &str| {
        text.replace("{{name}}", name)
            .replace("{{crate}}", &name.replace('-', "_"))
            .replace("{{world}}", kind.as_str())
            .replace("{{lang}}", lang.as_str())
            .replace("{{build_notes}}", build_notes)
            .replace("{{compose_snippet}}", &compose)
            .replace("{{send_args}}", send)
            .replace("{{answer_note}}", answer)
            .replace("{{source_row}}", &format!("`{source_path}` | the {}", kind.as_str()))
    };
    let mut out = vec![
        ("wit/cannon.wit", WIT.to_owned(), false),
        (source_path, fill(source), false),
        ("build.sh", fill(build), true),
        ("README.md", fill(README), false),
        ("message.json", message.to_owned(), false),
        (".gitignore", "/target\n/.venv\n/.cache\n/node_modules\n*.wasm\n".to_owned(), false),
    ];
    match lang {
        Lang::Rust => {
            out.push(("Cargo.toml", fill(include_str!("templates/rust-Cargo.toml")), false));
            // The guest SDK's own file, so both build the same lean component (docs/guests.md).
            out.push(("src/preview1.rs", include_str!("../../../guests/sdk/src/preview1.rs").to_owned(), false));
        }
        Lang::Js => out.push(("package.json", fill(include_str!("templates/js-package.json")), false)),
        Lang::Python | Lang::C => {}
    }
    out
}

/// Writes a new project for a `kind` component called `name` in `dir` (default: `./NAME`),
/// refusing to touch a directory that exists and is not empty. Returns the directory.
pub fn write(kind: Kind, lang: Lang, name: &str, dir: Option<&Path>) -> anyhow::Result<PathBuf> {
    check_name(name)?;
    let dir = dir.map_or_else(|| PathBuf::from(name), Path::to_path_buf);
    if dir.exists() {
        let empty = std::fs::read_dir(&dir).map(|mut d| d.next().is_none()).unwrap_or(false);
        anyhow::ensure!(empty, "{} exists and is not empty; give another directory", dir.display());
    }
    for (path, contents, executable) in files(kind, lang, name) {
        let file = dir.join(path);
        if let Some(parent) = file.parent() {
            std::fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
        }
        std::fs::write(&file, contents).with_context(|| format!("cannot write {}", file.display()))?;
        if executable {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o755))
                .with_context(|| format!("cannot make {} executable", file.display()))?;
        }
    }
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        for good in ["greeter", "dice-2", "a"] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in ["", "Greeter", "2dice", "a--b", "a-", "a_b", "a/b", "é", &"a".repeat(49)] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn every_placeholder_is_filled() {
        for kind in [Kind::Task, Kind::Shell] {
            for lang in [Lang::Rust, Lang::Python, Lang::Js, Lang::C] {
                for (path, contents, _) in files(kind, lang, "my-greeter") {
                    assert!(!contents.contains("{{"), "{path} of {kind:?}/{lang:?} keeps a placeholder");
                }
            }
        }
        let rust = files(Kind::Task, Lang::Rust, "my-greeter");
        let build = rust.iter().find(|(p, _, _)| *p == "build.sh").map(|(_, c, _)| c.clone()).unwrap_or_default();
        assert!(build.contains("release/my_greeter.wasm") && build.contains("my-greeter.wasm"), "{build}");
    }
}
