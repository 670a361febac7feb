//! `cannon-host check`: the compose file and every component it names, all problems at once.
//!
//! The loader finds every mistake in the file itself (unknown keys, wrong types, missing
//! component files, unknown groups, params or services, bad schedules). Then each component
//! is loaded as `run` loads it (compiled in the sandboxed compile child, accepted by the same
//! pooling allocator, matched against its world, `task` or `shell`), each cron schedule must
//! fire at least once, and each `exec` program must exist. Every problem is printed with
//! `file:line`; the exit code is 1 when there is any.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use crate::cli::{Cli, sandboxed};
use crate::collector::{Schedule, describe};
use crate::config::{CollectorKind, CollectorSpec, Compose, Service, TaskSpec};
use crate::engine::{Engine, World};
use crate::service::engine_options;

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

pub async fn run(cli: &Cli) -> anyhow::Result<ExitCode> {
    let compose = match crate::config::load(&cli.file) {
        Ok(compose) => compose,
        Err(err) => {
            eprintln!("{err}");
            let n = err.diagnostics.len();
            eprintln!("{n} problem{} in {}", plural(n), cli.file.display());
            return Ok(ExitCode::FAILURE);
        }
    };
    let mut problems = components(cli, &compose).await?;
    for service in compose.services.values() {
        problems.extend(service.collectors.iter().filter_map(|spec| collector(service, spec)));
    }
    problems.sort_by_key(|(line, _)| *line);
    if !problems.is_empty() {
        for (line, problem) in &problems {
            // Problems quote component text (trap messages, command names): escaped.
            eprintln!("{}:{line}: {}", compose.path.display(), crate::text::for_terminal(problem));
        }
        let n = problems.len();
        eprintln!("{n} problem{} in {}", plural(n), compose.path.display());
        return Ok(ExitCode::FAILURE);
    }
    let n = compose.services.len();
    println!("{}: {n} service{} OK", compose.path.display(), plural(n));
    // deploy: a deployed version, when active, runs instead of the file.
    let deployed = crate::cli::versions::deployed(cli, &compose).await;
    let source = |service: &str, name: &str| crate::cli::versions::source(deployed.as_deref(), service, name);
    for service in compose.services.values() {
        let collector = match service.collectors.as_slice() {
            [] => "no collector".to_owned(),
            [one] => format!("collector {}", describe(&one.kind)),
            many => format!("collectors {}", many.iter().map(|c| describe(&c.kind)).collect::<Vec<_>>().join(" + ")),
        };
        let tasks: Vec<String> = service
            .tasks
            .iter()
            .map(|t| match t {
                TaskSpec::Torch(_) => "torch".to_owned(),
                TaskSpec::Wasm(c) => source(&service.name, &c.name),
            })
            .collect();
        let shell =
            service.shell.as_ref().map(|s| format!(", shell {}", source(&service.name, &s.name))).unwrap_or_default();
        println!("  {}: {collector}{shell}, tasks [{}]", service.name, tasks.join(", "));
    }
    Ok(ExitCode::SUCCESS)
}

/// Loads every component exactly as `run` (of every service) does: the same engine,
/// instance allocator and limits, the same compile child, the same `InstancePre`. So
/// whatever `run` would refuse, `check` reports first.
async fn components(cli: &Cli, compose: &Compose) -> anyhow::Result<Vec<(usize, String)>> {
    let services: Vec<&Service> = compose.services.values().collect();
    let engine = Arc::new(Engine::new(&sandboxed(engine_options(&services))?)?);
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
            match loaded {
                Err(err) => problems.push((spec.line, format!("service {:?}: {err}", service.name))),
                // torch asks a shell for its commands at start: a shell that cannot answer
                // would stop `run`, so say so now.
                Ok(shell) if world == World::Shell => {
                    if let Err(err) = shell.commands().await {
                        problems.push((
                            spec.line,
                            format!(
                                "service {:?}: shell {:?} failed to list its commands: {err}",
                                service.name, spec.name
                            ),
                        ));
                    }
                }
                Ok(_) => {}
            }
        }
    }
    // deploy: the deployed versions that `run` would load instead of the files.
    problems.extend(crate::cli::versions::check_deployed(cli, compose, &engine).await);
    Ok(problems)
}

/// What the loader cannot know about a collector: whether a cron day exists, whether a
/// program is installed.
fn collector(service: &Service, spec: &CollectorSpec) -> Option<(usize, String)> {
    let name = &service.name;
    match &spec.kind {
        CollectorKind::Tick { schedule, .. } => {
            Schedule::new(schedule).err().map(|err| (spec.line, format!("service {name:?}: tick collector: {err}")))
        }
        CollectorKind::Exec { command, .. } => {
            let program = command.first()?;
            (!program_exists(program)).then(|| {
                let where_ = if program.contains('/') { "" } else { " in PATH" };
                (spec.line, format!("service {name:?}: exec collector: program `{program}` not found{where_}"))
            })
        }
        // Access control (issue 23): the certificate and key must load as `run` loads them.
        CollectorKind::Http { tls: Some(files), .. } => crate::access::server_config(files)
            .err()
            .map(|err| (spec.line, format!("service {name:?}: http collector: {err}"))),
        _ => None,
    }
}

/// Whether `program` names an executable file: a path as given, or a bare name in `$PATH`.
fn program_exists(program: &str) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    let executable =
        |path: &Path| std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0);
    if program.contains('/') {
        return executable(Path::new(program));
    }
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| executable(&dir.join(program))))
}

#[cfg(test)]
mod tests {
    use super::program_exists;

    #[test]
    fn programs_are_found_in_path() {
        assert!(program_exists("sh"));
        assert!(program_exists("/bin/sh"));
        assert!(!program_exists("surely-no-such-program-here"));
        assert!(!program_exists("./surely/not/here"));
    }
}
