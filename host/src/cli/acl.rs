//! `cannon-host acl SERVICE [--user NAME] [--password-env VAR]`: prints the Redis
//! `ACL SETUSER` rule under which `cannon-host run SERVICE` works and can touch nothing
//! but that service's keys (and the streams its `stream` collectors follow or its
//! components may read through the `streams` import).

use std::process::ExitCode;

use anyhow::Context as _;
use sha2::{Digest as _, Sha256};

use crate::broker::acl_setuser;
use crate::cli::{Cli, one_service};
use crate::config::CollectorKind;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The service the user is for.
    pub service: String,
    /// Redis user name (default `cannon-SERVICE`).
    #[arg(long, value_name = "NAME")]
    pub user: Option<String>,
    /// Environment variable holding the user's password; the rule carries only its
    /// SHA-256 (`#HEX`), so the password is never printed.
    #[arg(long, value_name = "VAR")]
    pub password_env: Option<String>,
}

pub fn run(cli: &Cli, args: &Args) -> anyhow::Result<ExitCode> {
    let (compose, service) = one_service(cli, &args.service)?;
    let user = args.user.clone().unwrap_or_else(|| format!("cannon-{}", service.name));
    if user.is_empty() || user.bytes().any(|b| b.is_ascii_whitespace() || b.is_ascii_control()) {
        anyhow::bail!("--user {user:?}: a Redis user name has no spaces or control characters");
    }
    let hash = match &args.password_env {
        Some(var) => {
            let password = std::env::var(var).with_context(|| format!("--password-env {var}: not set"))?;
            anyhow::ensure!(!password.is_empty(), "--password-env {var}: the password is empty");
            Some(crate::text::hex(&Sha256::digest(password.as_bytes())))
        }
        None => None,
    };
    let follows: Vec<(&str, crate::broker::StreamKind)> = service
        .collectors
        .iter()
        .filter_map(|c| match &c.kind {
            CollectorKind::Stream { service, stream } => Some((service.as_str(), *stream)),
            _ => None,
        })
        .collect();
    // `allow: [{streams: [...]}]`: the data and taskback streams its components may read
    // (the `streams` import reads them with XRANGE and XREVRANGE inside a read-only script, so
    // they are granted read only).
    let components = service.shell.iter().chain(service.tasks.iter().filter_map(|t| match t {
        crate::config::TaskSpec::Wasm(c) => Some(c),
        crate::config::TaskSpec::Torch(_) => None,
    }));
    let mut reads: Vec<(&str, crate::broker::StreamKind)> = Vec::new();
    for component in components {
        for other in &component.streams {
            for stream in [crate::broker::StreamKind::Data, crate::broker::StreamKind::Taskback] {
                reads.push((other.as_str(), stream));
            }
        }
    }
    let rule = acl_setuser(&compose.namespace, &service.name, &follows, &reads, &user, hash.as_deref());
    println!("{}", rule.join(" "));
    if hash.is_none() {
        eprintln!(
            "note: {user} has no password yet and cannot log in; add one with `ACL SETUSER {user} >PASSWORD`, \
             or run again with --password-env VAR"
        );
    }
    Ok(ExitCode::SUCCESS)
}
