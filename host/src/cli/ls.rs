//! `cannon-host ls`: services with their collector, shell and tasks.

use std::process::ExitCode;

use crate::cli::{Cli, load_compose};
use crate::config::TaskSpec;

pub fn run(cli: &Cli) -> anyhow::Result<ExitCode> {
    let compose = load_compose(&cli.file)?;
    println!("{:<16} {:<10} {:<12} TASKS", "SERVICE", "COLLECTOR", "SHELL");
    for service in compose.services.values() {
        let collector = service.collector.as_ref().map_or("-", |c| super::check::kind_name(&c.kind));
        let shell = service.shell.as_ref().map_or("-", |s| s.name.as_str());
        let tasks: Vec<String> = service
            .tasks
            .iter()
            .map(|t| match t {
                TaskSpec::Torch(t) => format!("torch({}->{})", t.in_key, t.out_key),
                TaskSpec::Wasm(c) => c.name.clone(),
            })
            .collect();
        println!("{:<16} {:<10} {:<12} {}", service.name, collector, shell, tasks.join(", "));
    }
    Ok(ExitCode::SUCCESS)
}
