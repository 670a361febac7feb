//! From node tree to [`Compose`]: the top-level keys, each service and its settings, and
//! the checks that need more than one section (torch needs a shell, and so on).

use std::path::Path;

use indexmap::IndexMap;

use super::access::{HttpAuth, TlsFiles};
use super::collector::collector;
use super::component::{Located, Role, component, tasks};
use super::de::join;
use super::limits::{AT_LEAST_ONE, ServiceLimits, check_limits};
use super::loader::{Loader, is_identifier};
use super::model::{CollectorSpec, Compose, KvQuota, Limits, Retry, Service, StreamSettings, TaskSpec, Workers};
use super::yaml::{Key, Node, Value};

const TOP_KEYS: &[&str] = &["namespace", "broker", "app_dir", "data_dir", "groups", "params", "services", "metrics"];
const SERVICE_KEYS: &[&str] =
    &["collector", "collectors", "shell", "tasks", "workers", "limits", "retry", "stream", "kv", "rate_limit"];

/// Builds the model, recording every problem in `ctx`. The result is only meaningful when
/// no problem was recorded.
/// `metrics: {listen: ADDR, auth: ..., tls: {cert, key}}` (ADDR: `HOST:PORT` or a port on
/// loopback). Off loopback, `auth:` is required (`auth: none` opens it on purpose); only
/// `bearer` fits: a scrape is a `GET` with no body to sign.
fn metrics(ctx: &mut Loader, node: &Node) -> (Option<String>, Option<HttpAuth>, Option<TlsFiles>) {
    let Some(fields) = ctx.map(node, "metrics", &["listen", "auth", "tls"]) else { return (None, None, None) };
    let listen = super::loader::field(fields, "listen").and_then(|listen| {
        let addr = ctx.name(listen, "metrics.listen")?;
        if let Err(msg) = super::access::parse_addr(&addr) {
            ctx.error(listen, "metrics.listen", msg);
            return None;
        }
        Some(addr)
    });
    let auth = super::loader::field(fields, "auth").and_then(|a| {
        let auth = super::access::auth(ctx, a, "metrics.auth")?;
        if matches!(auth, HttpAuth::HmacSha256 { .. } | HttpAuth::Slack { .. }) {
            ctx.error(a, "metrics.auth", "expected `bearer` or `none`: a scrape is a GET with no body to sign");
            return None;
        }
        Some(auth)
    });
    // Checked only when `auth:` is absent (a broken `auth:` has its own error).
    if let (Some(addr), Some(at), None) =
        (&listen, super::loader::field(fields, "listen"), super::loader::field(fields, "auth"))
        && let Err(msg) = metrics_reachable(addr, None)
    {
        ctx.error(at, "metrics.listen", msg);
    }
    let tls = super::loader::field(fields, "tls").and_then(|t| {
        let files = super::access::tls(ctx, t, "metrics.tls")?;
        // The pair must load as `run` loads it, so `check` reports a broken one first.
        if let Err(err) = crate::access::server_config(&files) {
            ctx.error(t, "metrics.tls", err.to_string());
            return None;
        }
        Some(files)
    });
    (listen, auth, tls)
}

/// Refuses a metrics listener other machines can reach when no `auth:` says who may read.
pub fn metrics_reachable(addr: &str, auth: Option<&HttpAuth>) -> Result<(), String> {
    let host = match super::access::parse_addr(addr) {
        Ok(socket) => socket.to_string(),
        Err(_) => addr.to_owned(),
    };
    if auth.is_none() && !super::access::is_loopback(&host) {
        return Err(format!(
            "a metrics listener on `{addr}` is reachable from other machines: give it \
             `metrics: {{auth: {{bearer: ${{METRICS_TOKEN}}}}}}`, or write `auth: none` to leave it open on purpose"
        ));
    }
    Ok(())
}

pub(crate) fn compose(root: &Node, path: &Path, ctx: &mut Loader) -> Option<Compose> {
    if !matches!(root.value, Value::Map(_)) {
        let found = root.describe();
        ctx.error(root, "", format!("expected a mapping with a `services:` key at the top level, found {found}"));
        return None;
    }
    ctx.map(root, "", TOP_KEYS);

    let namespace = match root.get("namespace").map(|n| (n, ctx.string(n, "namespace"))) {
        None | Some((_, None)) => "cannon".to_owned(),
        Some((node, Some(ns))) => {
            if !is_identifier(&ns, &['_', '.', '-']) {
                let msg = format!("`{ns}` is not a valid namespace (use letters, digits, `_`, `.` and `-`)");
                ctx.error(node, "namespace", msg);
            }
            ns
        }
    };
    let broker = match root.get("broker") {
        None => None,
        Some(node) if matches!(node.value, Value::Null) => None,
        Some(node) => ctx.name(node, "broker").map(crate::vocab::Secret::new),
    };
    let dir = |ctx: &mut Loader, key: &str, default: &str| match root.get(key) {
        None => default.to_owned(),
        Some(node) => ctx.name(node, key).unwrap_or_else(|| default.to_owned()),
    };
    ctx.app_dir_text = dir(ctx, "app_dir", "app");
    ctx.app_dir = ctx.base.join(&ctx.app_dir_text);
    let data_dir_text = dir(ctx, "data_dir", ".cannon");
    let data_dir = ctx.base.join(data_dir_text);

    if let Some(node) = root.get("groups") {
        for (key, members) in ctx.named(node, "groups") {
            let users = ctx.texts(members, &join("groups", &key.text));
            let users = users.into_iter().map(|(u, _)| u).collect();
            ctx.groups.insert(key.text.clone(), users);
        }
    }
    if let Some(node) = root.get("params") {
        for (key, conf) in ctx.named(node, "params") {
            let kwargs = ctx.kwargs(conf, &join("params", &key.text));
            ctx.params.insert(key.text.clone(), kwargs);
        }
    }

    let (metrics_listen, metrics_auth, metrics_tls) =
        root.get("metrics").map_or((None, None, None), |node| metrics(ctx, node));

    let mut services = IndexMap::new();
    match root.get("services") {
        None => ctx.error(root, "", "missing `services:` (at least one service is required)"),
        Some(node) => {
            let entries = ctx.named(node, "services");
            if entries.is_empty() && matches!(node.value, Value::Map(_) | Value::Null) {
                ctx.error_at(node.line, node.column, "services", "no services defined");
            }
            ctx.services = entries.iter().map(|(k, _)| k.text.clone()).collect();
            for (key, node) in entries {
                let svc = service(ctx, key, node);
                services.insert(key.text.clone(), svc);
            }
        }
    }

    Some(Compose {
        path: path.to_path_buf(),
        namespace,
        broker,
        app_dir: ctx.app_dir.clone(),
        data_dir,
        groups: ctx.groups.clone(),
        params: ctx.params.clone(),
        services,
        metrics_listen,
        metrics_auth,
        metrics_tls,
    })
}

fn service(ctx: &mut Loader, key: &Key, node: &Node) -> Service {
    let name = key.text.clone();
    let path = join("services", &name);
    if !is_identifier(&name, &['_', '-']) {
        let msg = format!("`{name}` is not a valid service name (use letters, digits, `_` and `-`)");
        ctx.error_at(key.line, key.column, "services", msg);
    }
    let Some(fields) = ctx.map(node, &path, SERVICE_KEYS) else {
        return Service {
            name,
            line: key.line,
            collectors: Vec::new(),
            shell: None,
            tasks: Vec::new(),
            workers: Workers::default(),
            limits: Limits::default(),
            retry: Retry::default(),
            stream: StreamSettings::default(),
            kv: KvQuota::default(),
            rate_limit: None,
        };
    };
    let get = |k: &str| fields.iter().find(|(key, _)| key.text == k).map(|(_, v)| v);

    let limits_path = join(&path, "limits");
    let before = ctx.problems.0.len();
    let limits: Limits = ctx.settings(get("limits"), &limits_path);
    check_limits(ctx, &limits, get("limits"), &limits_path);
    let clean = ctx.problems.0.len() == before;
    let service_limits = ServiceLimits { limits, node: get("limits").filter(|_| clean) };

    let section = |k: &str| (get(k), join(&path, k));
    let (node, p) = section("workers");
    let workers: Workers = ctx.settings(node, &p);
    ctx.check(node, &p, "concurrency", workers.concurrency == 0, AT_LEAST_ONE);
    ctx.check(node, &p, "batch", workers.batch == 0, AT_LEAST_ONE);
    let bad_field = workers.order_by.as_deref().is_some_and(|f| f.is_empty() || f.chars().any(char::is_control));
    ctx.check(node, &p, "order_by", bad_field, "must name a message field");
    let (node, p) = section("retry");
    let retry: Retry = ctx.settings(node, &p);
    ctx.check(node, &p, "max_attempts", retry.max_attempts == 0, AT_LEAST_ONE);
    let (node, p) = section("stream");
    let stream: StreamSettings = ctx.settings(node, &p);
    ctx.check(node, &p, "maxlen", stream.maxlen == 0, AT_LEAST_ONE);
    let (node, p) = section("kv");
    let kv: KvQuota = ctx.settings(node, &p);
    let rate_limit = get("rate_limit").and_then(|n| super::rate::rate_limit(ctx, n, &join(&path, "rate_limit")));

    let collectors = collectors(ctx, get("collector"), get("collectors"), &path, &name);
    let shell = get("shell").and_then(|n| component(ctx, n, &join(&path, "shell"), Role::Shell, None, &service_limits));
    let task_list = get("tasks").map(|n| tasks(ctx, n, &join(&path, "tasks"), &service_limits)).unwrap_or_default();

    check_pipeline(ctx, key, fields, &task_list);

    Service {
        name,
        line: key.line,
        collectors,
        shell,
        tasks: task_list.into_iter().map(|(t, _)| t).collect(),
        workers,
        limits,
        retry,
        stream,
        kv,
        rate_limit,
    }
}

/// The checks that span sections: a shell needs a torch task, a torch task needs a shell,
/// a service needs a collector or tasks.
fn check_pipeline(ctx: &mut Loader, key: &Key, fields: &[(Key, Node)], task_list: &[Located<TaskSpec>]) {
    let name = &key.text;
    let get = |k: &str| fields.iter().find(|(key, _)| key.text == k).map(|(_, v)| v);
    let has_torch = task_list.iter().any(|(t, _)| matches!(t, TaskSpec::Torch(_)));
    if let Some(shell) = get("shell").filter(|_| !has_torch) {
        let msg = format!("service `{name}` has a shell but no torch task reaches it");
        ctx.error_at(shell.line, shell.column, "", msg);
    }
    if get("shell").is_none() {
        for (task, (line, column)) in task_list {
            if matches!(task, TaskSpec::Torch(_)) {
                let msg = format!("service `{name}` has a torch task but no `shell:` for it to call");
                ctx.error_at(*line, *column, "", msg);
            }
        }
    }
    if get("collector").is_none() && get("collectors").is_none_or(is_empty) && get("tasks").is_none_or(is_empty) {
        let msg = format!("service `{name}` has neither a collector nor tasks");
        ctx.error_at(key.line, key.column, "", msg);
    }
}

/// `collector: {...}` or `collectors: [{...}, ...]` (not both).
fn collectors(ctx: &mut Loader, one: Option<&Node>, many: Option<&Node>, path: &str, name: &str) -> Vec<CollectorSpec> {
    match (one, many) {
        (Some(one), Some(_)) => {
            let msg = "use either `collector:` or `collectors:` (a list), not both";
            ctx.error(one, &join(path, "collector"), msg);
            Vec::new()
        }
        (Some(one), None) => collector(ctx, one, &join(path, "collector"), name).into_iter().collect(),
        (None, Some(many)) => {
            let p = join(path, "collectors");
            match &many.value {
                Value::Seq(items) => items
                    .iter()
                    .enumerate()
                    .filter_map(|(i, item)| collector(ctx, item, &format!("{p}[{i}]"), name))
                    .collect(),
                Value::Null => Vec::new(),
                _ => {
                    ctx.expected(many, &p, "a list of collectors, e.g. `[ {kind: stdin}, {kind: tick, every: 1m} ]`");
                    Vec::new()
                }
            }
        }
        (None, None) => Vec::new(),
    }
}

fn is_empty(node: &Node) -> bool {
    match &node.value {
        Value::Null => true,
        Value::Seq(items) => items.is_empty(),
        Value::Map(entries) => entries.is_empty(),
        _ => false,
    }
}
