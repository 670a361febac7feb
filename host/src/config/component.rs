//! Shells and tasks: Wasm component specs, the built-in torch, and both spellings of a
//! service's `tasks:` (a list, or botcannon's `name -> options` mapping).

use std::path::{Path, PathBuf};

use indexmap::IndexMap;

use super::de::join;
use super::error::{did_you_mean, one_of};
use super::http_grant;
use super::limits::{ServiceLimits, check_limits};
use super::loader::{Loader, field};
use super::model::{ComponentSpec, Kwargs, Limits, TaskSpec, TorchSpec};
use super::yaml::{Key, Node, Value};

const SHELL_KEYS: &[&str] = &["file", "path", "sha256", "conf", "allow", "secrets", "files", "permissions", "limits"];
const TASK_KEYS: &[&str] = &["file", "path", "sha256", "conf", "allow", "secrets", "files", "limits"];
const TORCH_KEYS: &[&str] = &["in_key", "out_key", "user_key", "prefix", "ignore_unknown"];
const CONF_KEYS: &[&str] = &["key", "kwargs"];

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Role {
    Shell,
    Task,
}

/// A task and the position it was written at.
pub(crate) type Located<T> = (T, (usize, usize));

/// A shell or Wasm task. `implied` is the key of a map-form task, which names the file
/// (so `file:` is not accepted beside it).
pub(crate) fn component(
    ctx: &mut Loader,
    node: &Node,
    path: &str,
    role: Role,
    implied: Option<&Key>,
    service: &ServiceLimits<'_>,
) -> Option<ComponentSpec> {
    let keys = if role == Role::Shell { SHELL_KEYS } else { TASK_KEYS };
    let keys: Vec<&str> = keys.iter().copied().filter(|k| implied.is_none() || *k != "file").collect();
    let fields = ctx.map(node, path, &keys)?;
    let get = |k: &str| field(fields, k);

    let source = source(ctx, node, path, implied, fields);
    let config = get("conf").map(|n| conf(ctx, n, &join(path, "conf"))).unwrap_or_default();
    let http_grant::Allow { caps: allow, http, streams } =
        get("allow").map(|n| http_grant::allow(ctx, n, &join(path, "allow"))).unwrap_or_default();
    let secrets =
        get("secrets").map(|n| http_grant::secrets(ctx, n, &join(path, "secrets"), &config)).unwrap_or_default();
    let files = get("files").and_then(|n| files(ctx, n, &join(path, "files")));
    let permissions = get("permissions").map(|n| permissions(ctx, n, &join(path, "permissions"))).unwrap_or_default();
    let limits = component_limits(ctx, get("limits"), &join(path, "limits"), service);
    let sha256 = get("sha256").and_then(|n| pin(ctx, n, &join(path, "sha256")));
    source.map(|src| ComponentSpec {
        name: src.name,
        path: src.abs,
        sha256,
        config,
        allow,
        http,
        streams,
        secrets,
        files,
        permissions,
        limits,
        line: implied.map_or(node.line, |key| key.line),
    })
}

/// Where a component's file is: `file:` (in app_dir), `path:`, or the key of a map-form
/// task; a problem when it is missing or not a file.
fn source(ctx: &mut Loader, node: &Node, path: &str, implied: Option<&Key>, fields: &[(Key, Node)]) -> Option<Source> {
    let get = |k: &str| field(fields, k);
    let source = match (implied, get("file"), get("path")) {
        (None, Some(_), Some(_)) => {
            ctx.error(node, path, "give either `file:` or `path:`, not both");
            None
        }
        (None, None, None) => {
            ctx.error(node, path, "missing `file:` (a component in app_dir) or `path:`");
            None
        }
        (_, _, Some(p)) => ctx.name(p, &join(path, "path")).map(|text| {
            let stem = Path::new(&text).file_stem().map(|s| s.to_string_lossy().into_owned());
            Source {
                name: implied.map(|k| k.text.clone()).or(stem).unwrap_or_else(|| text.clone()),
                abs: ctx.base.join(&text),
                shown: PathBuf::from(&text),
                origin: format!("path: {text}"),
            }
        }),
        (Some(key), _, None) => Some(Source::in_app_dir(ctx, key.text.clone())),
        (None, Some(f), None) => ctx.name(f, &join(path, "file")).map(|file| Source::in_app_dir(ctx, file)),
    };
    if let Some(src) = &source {
        let at = match (get("path").or(get("file")), implied) {
            (Some(n), _) => (n.line, n.column),
            (None, Some(key)) => (key.line, key.column),
            (None, None) => (node.line, node.column),
        };
        let shown = src.shown.display();
        if !src.abs.exists() {
            let msg = format!("component file {shown} not found (from `{}`)", src.origin);
            ctx.error_at(at.0, at.1, path, msg);
        } else if !src.abs.is_file() {
            let msg = format!("component file {shown} is not a file (from `{}`)", src.origin);
            ctx.error_at(at.0, at.1, path, msg);
        }
    }
    source
}

/// `files: DIR`, preopened read-only: it must be a directory.
fn files(ctx: &mut Loader, node: &Node, path: &str) -> Option<PathBuf> {
    let text = ctx.name(node, path)?;
    let abs = ctx.base.join(&text);
    if !abs.exists() {
        ctx.error(node, path, format!("directory {text} not found"));
    } else if !abs.is_dir() {
        ctx.error(node, path, format!("{text} is not a directory"));
    }
    Some(abs)
}

/// `sha256: HEX`: the SHA-256 the component's bytes must have, 64 hex digits (stored in
/// lower case; a `sha256:` prefix, as `versions` prints it, is accepted).
fn pin(ctx: &mut Loader, node: &Node, path: &str) -> Option<String> {
    let text = ctx.text(node, path)?;
    let hex = text.strip_prefix("sha256:").unwrap_or(&text).to_ascii_lowercase();
    if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        Some(hex)
    } else {
        ctx.error(
            node,
            path,
            "expected the SHA-256 of the component: 64 hex digits (as `cannon-host versions` prints it)",
        );
        None
    }
}

/// Where a component's `.wasm` comes from.
struct Source {
    /// `ComponentSpec::name`.
    name: String,
    abs: PathBuf,
    /// As the file wrote it, so messages do not depend on where the checkout lives.
    shown: PathBuf,
    /// `file: dice` or `path: x.wasm`, for messages.
    origin: String,
}

impl Source {
    /// `file: NAME` -> `app_dir/NAME.wasm`.
    fn in_app_dir(ctx: &Loader, file: String) -> Self {
        let leaf = format!("{file}.wasm");
        Source {
            abs: ctx.app_dir.join(&leaf),
            shown: Path::new(&ctx.app_dir_text).join(leaf),
            origin: format!("file: {file}"),
            name: file,
        }
    }
}

/// `conf: {key: PARAMS, kwargs: {...}}`: the params entry first, then kwargs overwrite.
pub(crate) fn conf(ctx: &mut Loader, node: &Node, path: &str) -> Kwargs {
    let mut out = Kwargs::new();
    let Some(fields) = ctx.map(node, path, CONF_KEYS) else { return out };
    if let Some(k) = field(fields, "key") {
        let key_path = join(path, "key");
        if let Some(name) = ctx.string(k, &key_path) {
            match ctx.params.get(&name) {
                Some(params) => out.extend(params.clone()),
                None if ctx.params.is_empty() => {
                    ctx.error(k, &key_path, format!("unknown params entry `{name}` (no `params:` are defined)"));
                }
                None => {
                    let known: Vec<&str> = ctx.params.keys().map(String::as_str).collect();
                    let hint = did_you_mean(&name, known.iter().copied());
                    let msg = format!("unknown params entry `{name}`{hint}; defined: {}", one_of(&known));
                    ctx.error(k, &key_path, msg);
                }
            }
        }
    }
    if let Some(kwargs) = field(fields, "kwargs") {
        let kwargs = ctx.kwargs(kwargs, &join(path, "kwargs"));
        out.extend(kwargs);
    }
    out
}

/// `permissions: {command: [group, ...]}`; every group must be defined under `groups:`.
fn permissions(ctx: &mut Loader, node: &Node, path: &str) -> IndexMap<String, Vec<String>> {
    let mut out = IndexMap::new();
    for (command, groups) in ctx.named(node, path) {
        let p = join(path, &command.text);
        if command.text.trim().is_empty() {
            ctx.error_at(command.line, command.column, path, "command name must not be empty");
        }
        let mut names = Vec::new();
        for (group, at) in ctx.texts(groups, &p) {
            if !ctx.groups.contains_key(&group) {
                let known: Vec<&str> = ctx.groups.keys().map(String::as_str).collect();
                let msg = if known.is_empty() {
                    format!("unknown group `{group}` (no `groups:` are defined)")
                } else {
                    let hint = did_you_mean(&group, known.iter().copied());
                    format!("unknown group `{group}`{hint}; defined: {}", one_of(&known))
                };
                ctx.error(at, &p, msg);
            }
            names.push(group);
        }
        out.insert(command.text.clone(), names);
    }
    out
}

/// A component's `limits:` on top of its service's: the service's entries, overridden by
/// the component's, over the global defaults.
fn component_limits(ctx: &mut Loader, node: Option<&Node>, path: &str, service: &ServiceLimits<'_>) -> Limits {
    let Some(node) = node.filter(|n| !matches!(n.value, Value::Null)) else {
        return service.limits;
    };
    let Value::Map(own) = &node.value else { return ctx.settings(Some(node), path) };
    let mut entries: Vec<(Key, Node)> = match service.node.map(|n| &n.value) {
        Some(Value::Map(inherited)) => {
            inherited.iter().filter(|(k, _)| !own.iter().any(|(o, _)| o.text == k.text)).cloned().collect()
        }
        _ => Vec::new(),
    };
    entries.extend(own.iter().cloned());
    let merged = Node { value: Value::Map(entries), raw: String::new(), line: node.line, column: node.column };
    let limits: Limits = ctx.settings(Some(&merged), path);
    check_limits(ctx, &limits, Some(node), path);
    limits
}

/// The pipeline: a list of tasks, or a mapping `name -> options` (botcannon's form).
pub(crate) fn tasks(ctx: &mut Loader, node: &Node, path: &str, service: &ServiceLimits<'_>) -> Vec<Located<TaskSpec>> {
    let mut out = Vec::new();
    match &node.value {
        Value::Null | Value::Invalid => {}
        Value::Seq(items) => {
            for (i, item) in items.iter().enumerate() {
                let at = (item.line, item.column);
                if let Some(task) = task_item(ctx, item, &format!("{path}[{i}]"), service) {
                    out.push((task, at));
                }
            }
        }
        Value::Map(entries) => {
            for (key, options) in entries {
                let p = join(path, &key.text);
                let task = if key.text == "torch" {
                    ctx.map(options, &p, TORCH_KEYS).map(|_| TaskSpec::Torch(torch(ctx, options, &p, key.line)))
                } else {
                    component(ctx, options, &p, Role::Task, Some(key), service).map(TaskSpec::Wasm)
                };
                out.extend(task.map(|t| (t, (key.line, key.column))));
            }
        }
        _ => ctx.expected(node, path, "a list of tasks (or a mapping name -> options)"),
    }
    out
}

fn task_item(ctx: &mut Loader, item: &Node, path: &str, service: &ServiceLimits<'_>) -> Option<TaskSpec> {
    match &item.value {
        Value::Str(s) if s == "torch" => Some(TaskSpec::Torch(torch(ctx, item, path, item.line))),
        Value::Str(s) => {
            let key = Key { text: s.clone(), line: item.line, column: item.column };
            let options = Node { value: Value::Null, ..item.clone() };
            component(ctx, &options, path, Role::Task, Some(&key), service).map(TaskSpec::Wasm)
        }
        Value::Map(_) if item.get("torch").is_some() => {
            ctx.map(item, path, &["torch"]);
            let p = join(path, "torch");
            let options = item.get("torch")?;
            ctx.map(options, &p, TORCH_KEYS)?;
            Some(TaskSpec::Torch(torch(ctx, options, &p, item.line)))
        }
        Value::Map(_) if matches!(item.get("file").map(|f| &f.value), Some(Value::Str(s)) if s == "torch") => {
            ctx.map(item, path, &["file", "in_key", "out_key", "user_key", "prefix", "ignore_unknown"]);
            Some(TaskSpec::Torch(torch(ctx, item, path, item.line)))
        }
        Value::Map(_) => component(ctx, item, path, Role::Task, None, service).map(TaskSpec::Wasm),
        Value::Invalid => None,
        _ => {
            ctx.expected(item, path, "a task (`torch`, `{file: NAME}` or `{path: FILE}`)");
            None
        }
    }
}

/// Reads `in_key`, `out_key`, `user_key`, `prefix` and `ignore_unknown` from `node` (any other keys were checked by
/// the caller); a null or scalar node gives the defaults.
fn torch(ctx: &mut Loader, node: &Node, path: &str, line: usize) -> TorchSpec {
    let mut key = |name: &str, default: &str| match node.get(name) {
        Some(n) => ctx.name(n, &join(path, name)).unwrap_or_else(|| default.to_owned()),
        None => default.to_owned(),
    };
    let in_key = key("in_key", "text");
    let out_key = key("out_key", "text");
    let user_key = key("user_key", "user");
    let prefix = match node.get("prefix") {
        Some(n) => {
            let p = join(path, "prefix");
            let prefix = ctx.string(n, &p);
            if prefix.as_deref().is_some_and(|s| s.is_empty() || s.chars().any(char::is_whitespace)) {
                ctx.error(n, &p, "a prefix must be non-empty and without spaces, e.g. \".\" or \"!\"");
            }
            prefix
        }
        None => None,
    };
    let ignore_unknown =
        node.get("ignore_unknown").and_then(|n| ctx.boolean(n, &join(path, "ignore_unknown"))).unwrap_or(false);
    TorchSpec { in_key, out_key, user_key, prefix, ignore_unknown, line }
}
