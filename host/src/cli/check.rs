//! `cannon-host check`: the compose file and every component it names, all problems at once.

use std::process::ExitCode;
use std::sync::Arc;

use crate::cli::Cli;
use crate::config::{CollectorKind, TaskSpec};
use crate::engine::{Engine, EngineOptions, World};

pub async fn run(cli: &Cli) -> anyhow::Result<ExitCode> {
    let compose = match crate::config::load(&cli.file) {
        Ok(compose) => compose,
        Err(err) => {
            eprintln!("{err}");
            let n = err.diagnostics.len();
            eprintln!("{n} problem{} in {}", if n == 1 { "" } else { "s" }, cli.file.display());
            return Ok(ExitCode::FAILURE);
        }
    };
    let engine = Arc::new(Engine::new(&EngineOptions::default())?);
    let mut problems = Vec::new();
    for service in compose.services.values() {
        let components =
            service.shell.iter().map(|s| (s, World::Shell)).chain(service.tasks.iter().filter_map(|t| match t {
                TaskSpec::Wasm(c) => Some((c, World::Task)),
                TaskSpec::Torch(_) => None,
            }));
        for (spec, world) in components {
            let engine = engine.clone();
            let owned = spec.clone();
            let loaded = tokio::task::spawn_blocking(move || engine.load(&owned, world)).await?;
            if let Err(err) = loaded {
                problems.push(format!("{}:{}: service {:?}: {err}", compose.path.display(), spec.line, service.name));
            }
        }
    }
    if !problems.is_empty() {
        for problem in &problems {
            eprintln!("{problem}");
        }
        let n = problems.len();
        eprintln!("{n} problem{} in {}", if n == 1 { "" } else { "s" }, compose.path.display());
        return Ok(ExitCode::FAILURE);
    }
    println!("{}: {} services OK", compose.path.display(), compose.services.len());
    for service in compose.services.values() {
        let collector = match service.collector.as_ref().map(|c| &c.kind) {
            None => "no collector".to_owned(),
            Some(kind) => format!("{} collector", kind_name(kind)),
        };
        let tasks: Vec<&str> = service
            .tasks
            .iter()
            .map(|t| match t {
                TaskSpec::Torch(_) => "torch",
                TaskSpec::Wasm(c) => c.name.as_str(),
            })
            .collect();
        let shell = service.shell.as_ref().map(|s| format!(", shell {}", s.name)).unwrap_or_default();
        println!("  {}: {collector}{shell}, tasks [{}]", service.name, tasks.join(", "));
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn kind_name(kind: &CollectorKind) -> &'static str {
    match kind {
        CollectorKind::Stdin => "stdin",
        CollectorKind::Http { .. } => "http",
        CollectorKind::Tick { .. } => "tick",
        CollectorKind::Stream { .. } => "stream",
        CollectorKind::Exec { .. } => "exec",
    }
}
