//! `cannon-host new task|shell NAME --lang rust|python|js|c [DIR]`: a ready project for a
//! component, written from templates inside this binary (see [`crate::scaffold`]).

use std::path::PathBuf;
use std::process::ExitCode;

use crate::scaffold::{self, Kind, Lang};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// What to write: a task (one pipeline step) or a shell (commands for torch).
    #[arg(value_enum)]
    pub kind: Kind,
    /// The component's name (lower-case letters, digits, dashes).
    pub name: String,
    /// The language of the project.
    #[arg(long, value_enum, default_value_t = Lang::Rust)]
    pub lang: Lang,
    /// Where to write it (default: ./NAME); must not exist or be empty.
    pub dir: Option<PathBuf>,
}

pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let dir = scaffold::write(args.kind, args.lang, &args.name, args.dir.as_deref())?;
    println!("wrote {}: build it with {}/build.sh (see its README.md)", dir.display(), dir.display());
    Ok(ExitCode::SUCCESS)
}
