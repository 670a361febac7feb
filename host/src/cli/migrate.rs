//! `cannon-host migrate-keys [SERVICE...] [--dry-run] [--force]`: moves the Redis keys of
//! the compose file's services (all of them by default) from the layout before hash tags
//! (`ns:service:data`, `ns:kv:service:KEY`, ...) to `{ns:service}:...`, the layout that
//! also runs on a Redis Cluster (docs/brokers.md, "Key layout").

use std::process::ExitCode;

use anyhow::Context as _;

use crate::broker::RedisBroker;
use crate::cli::{Cli, load_compose};
use crate::text::for_terminal;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Services to migrate (default: every service of the compose file).
    pub services: Vec<String>,
    /// Only list the keys that would move.
    #[arg(long)]
    pub dry_run: bool,
    /// Migrate even though a consumer of an old stream was active in the last minute.
    #[arg(long)]
    pub force: bool,
}

pub async fn run(cli: &Cli, args: &Args) -> anyhow::Result<ExitCode> {
    let compose = load_compose(&cli.file)?;
    let url = match super::broker_url(cli, &compose) {
        Some(url) if url != "embedded" => url,
        _ => anyhow::bail!("migrate-keys moves Redis keys; the embedded broker has no old layout to migrate"),
    };
    for name in &args.services {
        anyhow::ensure!(compose.services.contains_key(name), "no service {name:?} in {}", compose.path.display());
    }
    let services: Vec<&String> =
        if args.services.is_empty() { compose.services.keys().collect() } else { args.services.iter().collect() };
    let broker = RedisBroker::connect(&url, &compose.namespace)
        .await
        .with_context(|| format!("cannot connect to the broker of {}", compose.path.display()))?;
    let mut conflicts = 0;
    for service in services {
        let done = broker
            .migrate_keys(service, args.force, args.dry_run)
            .await
            .with_context(|| format!("service {service}"))?;
        let verb = if args.dry_run { "would move" } else { "moved" };
        println!("service {service}: {verb} {} keys", done.moved.len());
        for (old, new) in &done.moved {
            println!("  {} -> {}", for_terminal(old), for_terminal(new));
        }
        for (old, new) in &done.conflicts {
            println!("  kept {}: {} holds data already", for_terminal(old), for_terminal(new));
        }
        conflicts += done.conflicts.len();
    }
    if conflicts > 0 {
        eprintln!(
            "{conflicts} keys kept under their old names: their new names hold data (move or merge them by hand)"
        );
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}
