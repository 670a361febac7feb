//! `cannon-host ls`: services with their collector, shell and tasks.

use std::process::ExitCode;

use crate::cli::{Cli, load_compose};
use crate::collector::describe;
use crate::config::TaskSpec;

pub async fn run(cli: &Cli) -> anyhow::Result<ExitCode> {
    let compose = load_compose(&cli.file)?;
    // deploy: a deployed version, when active, runs instead of the file.
    let deployed = crate::cli::versions::deployed(cli, &compose).await;
    let source = |service: &str, name: &str| crate::cli::versions::source(deployed.as_deref(), service, name);
    let rows: Vec<[String; 4]> = compose
        .services
        .values()
        .map(|service| {
            let collector = if service.collectors.is_empty() {
                "-".to_owned()
            } else {
                service.collectors.iter().map(|c| describe(&c.kind)).collect::<Vec<_>>().join(" + ")
            };
            let shell = service.shell.as_ref().map_or_else(|| "-".to_owned(), |s| source(&service.name, &s.name));
            let tasks: Vec<String> = service
                .tasks
                .iter()
                .map(|t| match t {
                    TaskSpec::Torch(t) => format!("torch({}->{})", t.in_key, t.out_key),
                    TaskSpec::Wasm(c) => source(&service.name, &c.name),
                })
                .collect();
            [service.name.clone(), collector, shell, tasks.join(", ")]
        })
        .collect();
    let header = ["SERVICE", "COLLECTOR", "SHELL", "TASKS"].map(str::to_owned);
    let width = |i: usize| rows.iter().chain([&header]).map(|r| r[i].len()).max().unwrap_or(0);
    let (w0, w1, w2) = (width(0), width(1), width(2));
    for [name, collector, shell, tasks] in std::iter::once(&header).chain(&rows) {
        println!("{name:<w0$}  {collector:<w1$}  {shell:<w2$}  {tasks}");
    }
    Ok(ExitCode::SUCCESS)
}
