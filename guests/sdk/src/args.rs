//! Command-line arguments of a shell command: positionals, `--option value`,
//! `--option=value` and boolean `--flag`s, checked against what the command declares.

use std::fmt;
use std::str::FromStr;

/// Why a command did not produce a reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CmdError {
    /// The user typed something wrong. The user gets this text and the command's usage
    /// as the reply; the message itself succeeds.
    Usage(String),
    /// Something failed that a retry may fix (e.g. `kv` unavailable). The message fails
    /// and is retried, then dead-lettered.
    Fail(String),
}

impl CmdError {
    pub fn usage(text: impl Into<String>) -> Self {
        Self::Usage(text.into())
    }

    pub fn fail(text: impl Into<String>) -> Self {
        Self::Fail(text.into())
    }
}

impl fmt::Display for CmdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Usage(text) | Self::Fail(text) => f.write_str(text),
        }
    }
}

impl From<crate::kv::Error> for CmdError {
    fn from(err: crate::kv::Error) -> Self {
        Self::Fail(err.to_string())
    }
}

impl From<crate::streams::Error> for CmdError {
    fn from(err: crate::streams::Error) -> Self {
        Self::Fail(err.to_string())
    }
}

/// Parsed arguments of one command call (`argv[0]`, the command name, excluded).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Args {
    positionals: Vec<String>,
    options: Vec<(String, String)>,
    flags: Vec<String>,
}

impl Args {
    /// Parses `argv` (without the command name). `options` take a value (`--name value` or
    /// `--name=value`); `flags` take none. Anything else starting with `--` is an error; a
    /// lone `--` ends option parsing, and `-` or negative numbers such as `-3` are positionals.
    pub fn parse<S: AsRef<str>>(
        argv: &[S],
        options: &[&str],
        flags: &[&str],
    ) -> Result<Self, CmdError> {
        let mut args = Args::default();
        let mut iter = argv.iter().map(AsRef::as_ref);
        while let Some(arg) = iter.next() {
            if arg == "--" {
                args.positionals.extend(iter.by_ref().map(str::to_owned));
                break;
            }
            let Some(body) = arg.strip_prefix("--") else {
                args.positionals.push(arg.to_owned());
                continue;
            };
            let (name, inline) = match body.split_once('=') {
                Some((name, value)) => (name, Some(value)),
                None => (body, None),
            };
            if options.contains(&name) {
                let value = match inline {
                    Some(value) => value.to_owned(),
                    None => iter
                        .next()
                        .ok_or_else(|| CmdError::usage(format!("--{name} needs a value")))?
                        .to_owned(),
                };
                args.options.push((name.to_owned(), value));
            } else if flags.contains(&name) {
                if inline.is_some() {
                    return Err(CmdError::usage(format!("--{name} takes no value")));
                }
                args.flags.push(name.to_owned());
            } else {
                return Err(CmdError::usage(format!("unknown option --{name}")));
            }
        }
        Ok(args)
    }

    /// All positional arguments, in order.
    pub fn positionals(&self) -> &[String] {
        &self.positionals
    }

    /// Positional argument `index`, if given.
    pub fn get(&self, index: usize) -> Option<&str> {
        self.positionals.get(index).map(String::as_str)
    }

    /// Positional argument `index`, or a usage error naming it as `what`.
    pub fn required(&self, index: usize, what: &str) -> Result<&str, CmdError> {
        self.get(index)
            .ok_or_else(|| CmdError::usage(format!("missing {what}")))
    }

    /// The positionals from `index` on, joined by spaces (e.g. free text after a keyword).
    pub fn rest(&self, index: usize) -> String {
        self.positionals.get(index..).unwrap_or_default().join(" ")
    }

    /// The last value given for `--name`.
    pub fn option(&self, name: &str) -> Option<&str> {
        self.options
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// `--name`'s value parsed as `T`; a bad value is a usage error that names the option.
    pub fn parse_option<T: FromStr>(&self, name: &str) -> Result<Option<T>, CmdError>
    where
        T::Err: fmt::Display,
    {
        self.option(name)
            .map(|raw| {
                raw.parse()
                    .map_err(|err| CmdError::usage(format!("--{name} {raw:?}: {err}")))
            })
            .transpose()
    }

    /// Whether `--name` was given.
    pub fn flag(&self, name: &str) -> bool {
        self.flags.iter().any(|f| f == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positionals_options_and_flags() {
        let args = Args::parse(
            &["2d6", "--times", "3", "--sides=8", "--loud", "x"],
            &["times", "sides"],
            &["loud"],
        )
        .unwrap();
        assert_eq!(args.positionals(), ["2d6", "x"]);
        assert_eq!(args.option("times"), Some("3"));
        assert_eq!(args.parse_option::<u32>("sides"), Ok(Some(8)));
        assert!(args.flag("loud"));
        assert!(!args.flag("quiet"));
        assert_eq!(args.rest(0), "2d6 x");
    }

    #[test]
    fn errors_are_usage_errors() {
        assert_eq!(
            Args::parse(&["--times"], &["times"], &[]),
            Err(CmdError::usage("--times needs a value"))
        );
        assert_eq!(
            Args::parse(&["--nope"], &[], &[]),
            Err(CmdError::usage("unknown option --nope"))
        );
        assert_eq!(
            Args::parse(&["--loud=yes"], &[], &["loud"]),
            Err(CmdError::usage("--loud takes no value"))
        );
        let args = Args::parse(&["--n", "x"], &["n"], &[]).unwrap();
        assert!(matches!(args.parse_option::<u8>("n"), Err(CmdError::Usage(_))));
    }

    #[test]
    fn double_dash_ends_options() {
        let args = Args::parse(&["--", "--loud", "-3"], &[], &["loud"]).unwrap();
        assert_eq!(args.positionals(), ["--loud", "-3"]);
        assert!(!args.flag("loud"));
    }
}
