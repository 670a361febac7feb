//! `cannon-host torch SERVICE [COMMAND...] [--user U]`: runs shell commands of a service
//! directly, the way its torch task would, with no workers and no streams. A shell granted
//! `kv` gets the service's kv scope on the configured broker (the same keys a running
//! service sees); any other shell runs without a broker. Replies, errors and taskbacks are
//! guest text, printed through [`crate::text`].

use std::io::{BufRead as _, IsTerminal as _, Write as _};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;

use crate::broker::{Fields, KvStore, StreamReader};
use crate::cli::{Cli, load_compose};
use crate::collector::to_json;
use crate::config::{Capability, Service, TaskSpec, TorchSpec};
use crate::engine::{Engine, EngineOptions, KvScope, Message, World};
use crate::text::{for_json, for_terminal, for_terminal_lines};
use crate::torch::Torch;

#[derive(Debug, clap::Args)]
#[command(after_help = "\
The message torch sees holds the collector's kwargs, the sender under the torch task's \
`user_key` and the command line under its `in_key`. A shell granted `kv` (`allow: [kv]`) \
uses the service's kv keys and quotas on the configured broker (--broker, CANNON_BROKER, \
the compose file's `broker:`, else the embedded broker in the data directory), so it sees \
and changes what the running service sees. Nothing goes through the streams: taskbacks \
sent through `taskback.send` are printed on stderr instead of being delivered.

Examples:
  cannon-host torch chat \"roll 2d6\"
  cannon-host torch chat roll 2d6 --user alice
  cannon-host torch chat              (a prompt; one command per line, Ctrl-D ends)
  cannon-host -f examples/remember/cannon-compose.yml torch remember \".remember a is b\"")]
pub struct Args {
    /// The service whose shell runs the commands.
    pub service: String,
    /// The command line (its words are joined with spaces, like ssh does); without it,
    /// commands are read from standard input, one per line.
    #[arg(value_name = "COMMAND")]
    pub command: Vec<String>,
    /// Who sends the commands, for `permissions:` (default: the collector's `user` kwarg,
    /// else $USER).
    #[arg(long, value_name = "USER")]
    pub user: Option<String>,
}

/// A service's torch, ready to take command lines.
struct Session {
    torch: Torch,
    service: String,
    /// Collector kwargs, then the sender.
    base: Fields,
    spec: TorchSpec,
    /// The service's kv scope, when its shell is granted `kv`.
    kv: Option<KvScope>,
    calls: u64,
}

impl Session {
    /// Runs one command line; `Ok` is the reply, `Err` a failure (the message would be
    /// retried and dead-lettered under `cannon-host run`).
    async fn call(&mut self, line: &str) -> anyhow::Result<String> {
        self.calls += 1;
        let mut fields = self.base.clone();
        // With a `prefix:`, a command typed here without it still counts as a command.
        let line = match &self.spec.prefix {
            Some(prefix) if !line.trim_start().starts_with(prefix.as_str()) => format!("{prefix}{line}"),
            _ => line.to_owned(),
        };
        crate::pipeline::merge(&mut fields, vec![(self.spec.in_key.clone(), line)]);
        let msg = Message { id: format!("torch-{}", self.calls), service: self.service.clone(), fields };
        let out = self.torch.run(&msg, self.kv.clone()).await.map_err(|e| anyhow::anyhow!("torch: {e}"))?;
        for taskback in &out.taskbacks {
            eprintln!("taskback: {}", for_json(to_json(taskback).to_string()));
        }
        Ok(out.value.unwrap_or_default())
    }
}

fn torch_spec(service: &Service) -> Option<&TorchSpec> {
    service.tasks.iter().find_map(|t| match t {
        TaskSpec::Torch(spec) => Some(spec),
        TaskSpec::Wasm(_) => None,
    })
}

async fn session(cli: &Cli, args: &Args) -> anyhow::Result<Session> {
    let compose = load_compose(&cli.file)?;
    let service = crate::service::select(&compose, std::slice::from_ref(&args.service))?
        .into_iter()
        .next()
        .context("no service selected")?;
    let name = service.name.as_str();
    let (Some(shell_spec), Some(spec)) = (service.shell.as_ref(), torch_spec(service)) else {
        anyhow::bail!(
            "service {name:?} has no shell (no `shell:` and torch task), so there is nothing to run commands in"
        );
    };
    let options = EngineOptions { max_memory_mb: shell_spec.limits.memory_mb, ..EngineOptions::default() };
    let engine = Arc::new(Engine::new(&crate::cli::sandboxed(options)?)?);
    let owned = shell_spec.clone();
    let loader = engine.clone();
    // deploy: the deployed shell, when one is active, as `run` would run it.
    let deployed = crate::cli::versions::deployed_bytes(cli, &compose, name, &shell_spec.name).await;
    let shell = tokio::task::spawn_blocking(move || match deployed {
        Some((bytes, origin)) => loader.load_bytes(&owned, World::Shell, &bytes, &origin),
        None => loader.load(&owned, World::Shell),
    })
    .await
    .context("component loader panicked")?
    .with_context(|| format!("service {name:?}"))?;
    let shell = Arc::new(shell);
    let commands = shell
        .commands()
        .await
        .with_context(|| format!("service {name:?}: shell {:?} failed to list its commands", shell_spec.name))?;
    let torch = Torch::new(spec.clone(), shell, Arc::new(commands), &shell_spec.permissions, &compose.groups);
    // The first collector's kwargs (e.g. `server`), as a chat message would carry them.
    let kwargs = service.collectors.first().map(|c| c.kwargs.clone()).unwrap_or_default();
    let user = args
        .user
        .clone()
        .or_else(|| kwargs.get("user").cloned())
        .or_else(|| std::env::var("USER").ok())
        .unwrap_or_else(|| "me".to_owned());
    let mut base: Fields = kwargs.into_iter().collect();
    crate::pipeline::merge(&mut base, vec![(spec.user_key.clone(), user)]);
    // Only a shell granted `kv` or `streams` needs the broker: the others run with none at all.
    let kv = if shell_spec.allow.contains(&Capability::Kv) || !shell_spec.streams.is_empty() {
        let broker = crate::cli::connect(cli, &compose).await?;
        Some(KvScope {
            store: broker.clone() as Arc<dyn KvStore>,
            namespace: compose.namespace.as_str().into(),
            service: name.into(),
            quota: service.kv,
            streams: Some(broker as Arc<dyn StreamReader>),
        })
    } else {
        None
    };
    Ok(Session { torch, service: name.to_owned(), base, spec: spec.clone(), kv, calls: 0 })
}

pub async fn run(cli: &Cli, args: &Args) -> anyhow::Result<ExitCode> {
    let mut session = session(cli, args).await?;
    if !args.command.is_empty() {
        let line = args.command.join(" ");
        return match session.call(&line).await {
            Ok(reply) => {
                println!("{}", for_terminal_lines(&reply));
                Ok(ExitCode::SUCCESS)
            }
            Err(err) => {
                eprintln!("error: {}", for_terminal(&format!("{err:#}")));
                Ok(ExitCode::FAILURE)
            }
        };
    }
    repl(&mut session).await
}

/// One command per line of standard input; a prompt when it is a terminal.
async fn repl(session: &mut Session) -> anyhow::Result<ExitCode> {
    let interactive = std::io::stdin().is_terminal();
    if interactive {
        let kv = if session.kv.is_some() { "kv is the service's own" } else { "no kv granted" };
        eprintln!("{}: type a command (`help` lists them), Ctrl-D to quit ({kv}).", session.service);
    }
    let (tx, mut rx) = tokio::sync::mpsc::channel::<std::io::Result<String>>(1);
    // Standard input is read on its own thread: a blocking read must not hold up the runtime.
    std::thread::Builder::new().name("torch-stdin".into()).spawn(move || {
        for line in std::io::stdin().lock().lines() {
            if tx.blocking_send(line).is_err() {
                break;
            }
        }
    })?;
    let mut failed = false;
    loop {
        if interactive {
            eprint!("{}> ", session.service);
            let _ = std::io::stderr().flush();
        }
        let Some(line) = rx.recv().await else { break };
        let line = line.context("cannot read standard input")?;
        if line.trim().is_empty() {
            continue;
        }
        match session.call(&line).await {
            Ok(reply) => println!("{}", for_terminal_lines(&reply)),
            Err(err) => {
                failed = true;
                eprintln!("error: {}", for_terminal(&format!("{err:#}")));
            }
        }
    }
    if interactive {
        eprintln!();
    }
    Ok(if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}
