//! `cannon-host rollback SERVICE COMPONENT [--to HASH]`: make an earlier deployed version
//! the active one, through the same validation and swap as `deploy`. Without `--to`, the
//! version deployed before the active one.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;

use crate::broker::versions::Version;
use crate::cli::deploy::await_workers;
use crate::cli::versions::utc;
use crate::cli::{Cli, connect_versions, one_service, sandboxed};
use crate::deploy::{short, targets, validate};
use crate::engine::{Engine, sha256_hex};
use crate::service::engine_options;
use crate::text::for_terminal;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The service.
    pub service: String,
    /// The component: the `file:` name of one of its tasks, or of its shell.
    pub component: String,
    /// The version to activate: a prefix of its SHA-256 as `versions` prints it (default:
    /// the version deployed before the active one).
    #[arg(long, value_name = "HASH")]
    pub to: Option<String>,
    /// Seconds to wait for the running workers to swap to it.
    #[arg(long, default_value_t = 10, value_name = "SECONDS")]
    pub wait_s: u64,
}

/// The version `--to` names (a unique prefix), or the one deployed before the active one.
fn pick<'a>(history: &'a [Version], active: Option<&str>, to: Option<&str>) -> anyhow::Result<&'a Version> {
    if let Some(prefix) = to {
        let prefix = prefix.strip_prefix("sha256:").unwrap_or(prefix).to_ascii_lowercase();
        if prefix.len() < 4 || !prefix.bytes().all(|b| b.is_ascii_hexdigit()) {
            anyhow::bail!("--to {}: expected at least 4 hex digits of a version's SHA-256", for_terminal(&prefix));
        }
        let mut found: Vec<&Version> = Vec::new();
        for version in history.iter().rev().filter(|v| v.sha256.starts_with(&prefix)) {
            if !found.iter().any(|v| v.sha256 == version.sha256) {
                found.push(version);
            }
        }
        return match found.as_slice() {
            [one] => Ok(one),
            [] => anyhow::bail!("no deployed version starts with {prefix} (see `cannon-host versions`)"),
            many => anyhow::bail!(
                "{prefix} names {} versions ({}); give more digits",
                many.len(),
                many.iter().map(|v| short(&v.sha256)).collect::<Vec<_>>().join(", ")
            ),
        };
    }
    let newest_active = history.iter().rposition(|v| Some(v.sha256.as_str()) == active).unwrap_or(history.len());
    history[..newest_active]
        .iter()
        .rev()
        .find(|v| Some(v.sha256.as_str()) != active)
        .context("no earlier deployed version to roll back to (see `cannon-host versions`)")
}

pub async fn run(cli: &Cli, args: &Args) -> anyhow::Result<ExitCode> {
    let (compose, service) = one_service(cli, &args.service)?;
    targets(&service, &args.component)?;
    let store = connect_versions(cli, &compose).await?;
    let history: Vec<Version> =
        store.versions(&service.name).await?.into_iter().filter(|v| v.component == args.component).collect();
    let active = store.active(&service.name).await?;
    let target = pick(&history, active.of(&args.component), args.to.as_deref())
        .with_context(|| format!("service {}: component {}", service.name, args.component))?;
    if active.of(&args.component) == Some(target.sha256.as_str()) {
        println!("version {} of {}/{} is already active", short(&target.sha256), service.name, args.component);
        return Ok(ExitCode::SUCCESS);
    }
    let origin = format!("deployed version {}", short(&target.sha256));
    let bytes = store
        .bytes(&service.name, &target.sha256)
        .await?
        .filter(|bytes| sha256_hex(bytes) == target.sha256)
        .with_context(|| format!("{origin}: its bytes are missing from the broker or do not match their SHA-256"))?;
    let engine = Arc::new(Engine::new(&sandboxed(engine_options(&[&service]))?)?);
    validate(&engine, &service, &args.component, Arc::new(bytes), &origin)
        .await
        .with_context(|| format!("{origin} refused; the active version stays"))?;
    let generation = store
        .activate(&service.name, &args.component, &target.sha256)
        .await?
        .with_context(|| format!("{origin}: its bytes vanished from the broker"))?;
    println!(
        "rolled back {}/{} to version {} (deployed {} by {})",
        service.name,
        args.component,
        short(&target.sha256),
        utc(target.at_ms),
        for_terminal(&target.user)
    );
    let wait = Duration::from_secs(args.wait_s);
    await_workers(&*store, &service.name, &args.component, &target.sha256, generation, wait).await?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(sha: char) -> Version {
        Version {
            component: "c".into(),
            sha256: sha.to_string().repeat(64),
            size: 1,
            at_ms: 0,
            user: "u".into(),
            note: String::new(),
        }
    }

    #[test]
    fn rollback_walks_back_through_the_history() {
        let history = [v('a'), v('b'), v('c')];
        let sha = |c: char| c.to_string().repeat(64);
        assert_eq!(pick(&history, Some(&sha('c')), None).map(|v| v.sha256.clone()).ok(), Some(sha('b')));
        assert_eq!(pick(&history, Some(&sha('b')), None).map(|v| v.sha256.clone()).ok(), Some(sha('a')));
        assert!(pick(&history, Some(&sha('a')), None).is_err());
        assert_eq!(pick(&history, Some(&sha('a')), Some("cccc")).map(|v| v.sha256.clone()).ok(), Some(sha('c')));
        assert!(pick(&history, None, Some("dddd")).is_err());
        assert!(pick(&history, None, Some("cc")).is_err());
        // Deployed again after a rollback: the newest deploy of the active version counts.
        let again = [v('a'), v('b'), v('a'), v('c'), v('a')];
        assert_eq!(pick(&again, Some(&sha('a')), None).map(|v| v.sha256.clone()).ok(), Some(sha('c')));
    }
}
