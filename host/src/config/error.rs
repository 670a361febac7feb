//! What a failed load reports: every problem found, each with `file:line:column`.

use std::fmt;
use std::path::PathBuf;

/// Every problem found in a compose file, sorted by position. A load never stops at the
/// first mistake, so one `cannon-host check` shows everything to fix.
#[derive(Debug, thiserror::Error)]
pub struct ConfigError {
    /// At least one; in file order.
    pub diagnostics: Vec<Diagnostic>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.diagnostics.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

/// One problem at one place in one file.
#[derive(Debug, Clone, PartialEq)]
pub struct Diagnostic {
    /// The compose file, exactly as the caller named it (so messages stay relative when the
    /// caller's path was relative).
    pub file: PathBuf,
    /// 1-based line; 0 when the problem is with the file as a whole (it cannot be read).
    pub line: usize,
    /// 1-based column; 0 together with `line == 0`.
    pub column: usize,
    /// What is wrong, naming the key or value at fault and what was expected.
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.file.display(), self.message)
        } else {
            write!(f, "{}:{}:{}: {}", self.file.display(), self.line, self.column, self.message)
        }
    }
}

/// A diagnostic before the file name is attached: position and message.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Problem {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

/// Collects problems while the loader carries on past each one.
#[derive(Debug, Default)]
pub(crate) struct Problems(pub Vec<Problem>);

impl Problems {
    pub fn push(&mut self, line: usize, column: usize, message: impl Into<String>) {
        self.0.push(Problem { line, column, message: message.into() });
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Attaches the file name and sorts by position (stable, so problems at one spot keep
    /// the order in which they were found).
    pub fn into_error(mut self, file: &std::path::Path) -> ConfigError {
        self.0.sort_by_key(|p| (p.line, p.column));
        let diagnostics = self
            .0
            .into_iter()
            .map(|p| Diagnostic { file: file.to_path_buf(), line: p.line, column: p.column, message: p.message })
            .collect();
        ConfigError { diagnostics }
    }
}

/// Renders `["a", "b"]` as "`a`, `b`" for messages listing what was expected.
pub(crate) fn one_of(names: &[&str]) -> String {
    names.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ")
}

/// " (did you mean `x`?)" when one of `candidates` is a plausible typo of `got`, else "".
pub(crate) fn did_you_mean<'a>(got: &str, candidates: impl IntoIterator<Item = &'a str>) -> String {
    let limit = if got.chars().count() <= 3 { 1 } else { 2 };
    let best = candidates
        .into_iter()
        .map(|c| (strsim::levenshtein(&got.to_lowercase(), &c.to_lowercase()), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d);
    match best {
        Some((_, c)) => format!(" (did you mean `{c}`?)"),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions() {
        assert_eq!(did_you_mean("tiemout_ms", ["timeout_ms"]), " (did you mean `timeout_ms`?)");
        assert_eq!(did_you_mean("concurency", ["batch", "concurrency"]), " (did you mean `concurrency`?)");
        assert_eq!(did_you_mean("zzz", ["batch", "concurrency"]), "");
    }
}
