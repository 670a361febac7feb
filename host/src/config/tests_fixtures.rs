//! Broken compose files and their exact expected errors, plus a no-panic check over random
//! mutations of valid and broken files.
//!
//! Each `tests/compose/broken/NAME.yml` is loaded with a fixed environment and its error
//! output compared with `NAME.expected`. `CANNON_BLESS=1` rewrites the `.expected` files.
//! The repo root is `CANNON_REPO_ROOT` when set, else the parent of the crate directory.

use std::path::{Path, PathBuf};

use super::parse_in;
use super::tests::{FULL, TempDir};

fn repo_root() -> PathBuf {
    std::env::var_os("CANNON_REPO_ROOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".."))
}

const BROKEN: &str = "tests/compose/broken";

fn fixture_env(name: &str) -> Option<String> {
    match name {
        "T" => Some("250".to_owned()),
        "HOST" => Some("127.0.0.1".to_owned()),
        _ => None,
    }
}

fn fixtures() -> Vec<PathBuf> {
    let dir = repo_root().join(BROKEN);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yml"))
        .collect();
    files.sort();
    files
}

/// The loader's output for one fixture: the error text, as the binary would print it.
fn run(file: &Path) -> String {
    let name = file.file_name().expect("file name").to_string_lossy();
    let shown = Path::new(BROKEN).join(&*name);
    let text = std::fs::read_to_string(file).expect("read fixture");
    match parse_in(&text, &shown, &repo_root().join(BROKEN), &fixture_env) {
        Ok(_) => "(loaded without errors)\n".to_owned(),
        Err(e) => format!("{e}\n"),
    }
}

fn diff(expected: &str, actual: &str) -> String {
    let (e, a): (Vec<&str>, Vec<&str>) = (expected.lines().collect(), actual.lines().collect());
    let mut out = String::new();
    for i in 0..e.len().max(a.len()) {
        match (e.get(i), a.get(i)) {
            (Some(x), Some(y)) if x == y => out.push_str(&format!("  {x}\n")),
            (x, y) => {
                if let Some(x) = x {
                    out.push_str(&format!("- {x}\n"));
                }
                if let Some(y) = y {
                    out.push_str(&format!("+ {y}\n"));
                }
            }
        }
    }
    out
}

#[test]
fn broken_fixtures() {
    let bless = std::env::var_os("CANNON_BLESS").is_some_and(|v| v == "1");
    let files = fixtures();
    assert!(files.len() >= 20, "expected at least 20 fixtures in {BROKEN}, found {}", files.len());
    let mut failures = Vec::new();
    for file in &files {
        let actual = run(file);
        let expected_path = file.with_extension("expected");
        if bless {
            std::fs::write(&expected_path, &actual).expect("write .expected");
            continue;
        }
        let expected = std::fs::read_to_string(&expected_path).unwrap_or_default();
        if actual != expected {
            let name = file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            failures.push(format!("--- {name} (- expected, + actual)\n{}", diff(&expected, &actual)));
        }
    }
    assert!(
        failures.is_empty(),
        "{} fixture(s) differ (CANNON_BLESS=1 rewrites them):\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// xorshift64*: a fixed-seed generator, so a failure reproduces.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 { 0 } else { (self.next() % n as u64) as usize }
    }
}

const PIECES: &[&str] = &[
    ":",
    "-",
    " ",
    "\n",
    "\t",
    "[",
    "]",
    "{",
    "}",
    ",",
    "&a ",
    "*a",
    "!!str ",
    "'",
    "\"",
    "#",
    "|",
    ">",
    "${T}",
    "${",
    "$$",
    "~",
    "0",
    "-1",
    "99999999999999999999999",
    "1.5",
    "true",
    "null",
    "torch",
    "file: ",
    "kind: ",
    "services:",
    "limits:",
    "? ",
    "---\n",
    "- ",
    "\u{e9}",
    "\\",
    "%",
    "@",
];

fn mutate(rng: &mut Rng, text: &str) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(chars.len() + 1);
        match rng.below(6) {
            0 if at < chars.len() => {
                let len = 1 + rng.below(8).min(chars.len() - at - 1);
                chars.drain(at..at + len);
            }
            1 => {
                let piece = PIECES[rng.below(PIECES.len())];
                chars.splice(at..at, piece.chars());
            }
            2 => {
                let from = rng.below(chars.len());
                let len = rng.below(40).min(chars.len() - from);
                let copy: Vec<char> = chars[from..from + len].to_vec();
                chars.splice(at..at, copy);
            }
            3 => chars.truncate(at),
            4 if at < chars.len() => chars[at] = PIECES[rng.below(PIECES.len())].chars().next().unwrap_or(' '),
            _ => {
                let lines: Vec<String> = chars.iter().collect::<String>().lines().map(str::to_owned).collect();
                if lines.len() > 1 {
                    let (a, b) = (rng.below(lines.len()), rng.below(lines.len()));
                    let mut lines = lines;
                    lines.swap(a, b);
                    chars = lines.join("\n").chars().collect();
                }
            }
        }
    }
    chars.into_iter().collect()
}

#[test]
fn mutations_never_panic() {
    let dir = TempDir::new();
    dir.touch("wasm/dice.wasm").touch("wasm/shout.wasm").touch("extra/x.wasm").mkdir("assets");
    let mut seeds = vec![FULL.to_owned()];
    seeds.extend(fixtures().iter().filter_map(|f| std::fs::read_to_string(f).ok()));
    let env = |name: &str| (name == "T" || name == "REDIS_HOST").then(|| "5".to_owned());
    let iterations: usize = std::env::var("CANNON_FUZZ_ITERATIONS").ok().and_then(|v| v.parse().ok()).unwrap_or(4000);
    let seed = std::env::var("CANNON_FUZZ_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or(0x9E37_79B9_7F4A_7C15);
    let mut rng = Rng(seed | 1);
    let path = dir.0.join("cannon-compose.yml");
    for i in 0..iterations {
        let seed = &seeds[rng.below(seeds.len())];
        let mut text = mutate(&mut rng, seed);
        if i % 5 == 0 {
            text = mutate(&mut rng, &text);
        }
        if let Err(e) = parse_in(&text, &path, &dir.0, &env) {
            assert!(!e.diagnostics.is_empty(), "an error always says something");
            assert!(e.diagnostics.windows(2).all(|w| w[0].line <= w[1].line), "sorted by line");
        }
    }
}

#[test]
fn hostile_inputs_are_errors_not_crashes() {
    let laughs = "a: &a [x, x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\nc: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\ne: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]\nf: [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]\n";
    let deep_block: String = (0..200).map(|i| format!("{}k:\n", " ".repeat(i))).collect();
    let cases = [
        "[".repeat(300),
        "{a: ".repeat(300),
        deep_block,
        laughs.to_owned(),
        "? [a, b]\n: c\n".to_owned(),
        ": x\n".to_owned(),
        "services:\n  ? {a: 1}\n  : x\n".to_owned(),
        "\u{feff}services: {}\r\n".to_owned(),
        "%YAML 1.2\n---\nservices: ~\n...\n".to_owned(),
        "services: !!binary aGk=\n".to_owned(),
        "services:\n  s:\n    limits: { timeout_ms: 340282366920938463463374607431768211456 }\n".to_owned(),
        "services:\n  s:\n    limits:\n      fuel: -9223372036854775809\n".to_owned(),
        "\u{0}\u{1}\u{7f}".to_owned(),
        "services:\n  s:\n    tasks: { torch: [1], x: { path: [] } }\n".to_owned(),
        "services:\n  s:\n    collector: { kind: tick, every: 18446744073709551615d }\n".to_owned(),
        "services: { s: { collector: { kind: exec, command: [\"\", 1] } } }\n".to_owned(),
    ];
    let path = Path::new("hostile.yml");
    for text in &cases {
        if let Err(e) = parse_in(text, path, Path::new("/nonexistent"), &fixture_env) {
            assert!(!e.diagnostics.is_empty());
        }
    }
}
