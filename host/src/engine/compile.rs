//! Compiling untrusted components in a child process.
//!
//! Cranelift's time and memory grow faster than the size of a component's functions: a few
//! hundred KB of crafted Wasm can take minutes and gigabytes. So the `cannon-host` commands
//! compile in a child, `cannon-host compile-component` (a hidden command), which first
//! lowers its own `RLIMIT_CPU` (`limits.compile_s`, CPU seconds of all its threads) and
//! `RLIMIT_AS` (`limits.compile_mb`), then reads the component on stdin and writes the
//! compiled artifact to stdout. The parent kills a child still running after twice its CPU
//! budget in wall-clock time (a starved or stuck child), loads the artifact into its own
//! engine, and only then stores it in the cache: a refused compile is never cached, and a
//! cached one never pays for the child again.
//!
//! The child's engine has the parent's configuration ([`super::base_config`]) without the
//! pooling allocator: artifacts do not depend on the allocation strategy (the parent checks
//! the artifact's settings when loading it), and a pool reserves gigabytes of address space
//! when created, which `RLIMIT_AS` would count against the compile.

use std::io::{Read, Write as _};
use std::os::unix::process::ExitStatusExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use wasmtime::component::Component as WasmComponent;

use crate::engine::{Engine, LoadError, base_config, cache};
use crate::vocab::ComponentSpec;

/// Where components are compiled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Compiler {
    /// In this process, unbounded: for trusted components (library tests, benchmarks).
    InProcess,
    /// In a child process running `PROGRAM compile-component`, under `limits.compile_s`
    /// and `limits.compile_mb`. PROGRAM is the `cannon-host` binary.
    Child(PathBuf),
}

impl Compiler {
    /// The running program as the compile child; for the `cannon-host` binary only.
    pub fn this_program() -> anyhow::Result<Self> {
        Ok(Compiler::Child(std::env::current_exe()?))
    }
}

/// The child's exit codes; a signal or any other code is a crash.
const EXIT_INVALID: u8 = 2;
const EXIT_OUT_OF_MEMORY: u8 = 3;
const EXIT_SETUP: u8 = 4;
/// How much of the child's stderr is kept for the error message.
const STDERR_TAIL: usize = 4096;
/// How often the parent looks whether the child is done.
const POLL: Duration = Duration::from_millis(5);

/// Arguments of the hidden `compile-component` command.
#[derive(Debug, Clone, clap::Args)]
pub struct ChildArgs {
    /// CPU seconds (all threads) the compile may take.
    #[arg(long)]
    pub cpu_s: u64,
    /// Address space, in MiB, the process may map.
    #[arg(long)]
    pub mem_mb: u64,
    /// Compile for an engine that meters fuel.
    #[arg(long)]
    pub fuel: bool,
}

/// The hidden command, in the child: limits first, then component on stdin, artifact on
/// stdout.
pub fn child_main(args: &ChildArgs) -> ExitCode {
    if let Err(err) = set_limits(args.cpu_s, args.mem_mb) {
        eprintln!("cannot set the compile limits: {err}");
        return ExitCode::from(EXIT_SETUP);
    }
    let mut bytes = Vec::new();
    if let Err(err) = std::io::stdin().lock().read_to_end(&mut bytes) {
        eprintln!("cannot read the component from stdin: {err}");
        return ExitCode::from(EXIT_SETUP);
    }
    let compiled =
        wasmtime::Engine::new(&base_config(args.fuel)).and_then(|engine| engine.precompile_component(&bytes));
    match compiled {
        Ok(compiled) => match std::io::stdout().lock().write_all(&compiled) {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("cannot write the compiled component: {err}");
                ExitCode::from(EXIT_SETUP)
            }
        },
        Err(err) => {
            let text = format!("{err:#}");
            eprintln!("{text}");
            ExitCode::from(if mentions_out_of_memory(&text) { EXIT_OUT_OF_MEMORY } else { EXIT_INVALID })
        }
    }
}

fn set_limits(cpu_s: u64, mem_mb: u64) -> std::io::Result<()> {
    use rlimit::Resource;
    // Only ever lowered: an operator's tighter limit (`ulimit -t`, `-v`) stays in force.
    let lower = |resource: Resource, soft: u64, hard: u64| {
        let (_, max) = resource.get()?;
        resource.set(soft.min(max), hard.min(max))
    };
    // Past the soft CPU limit the kernel sends SIGXCPU (which ends the process); the hard
    // limit one second later would send SIGKILL. No core dump of a killed compile.
    lower(Resource::CORE, 0, 0)?;
    lower(Resource::CPU, cpu_s, cpu_s.saturating_add(1))?;
    let bytes = mem_mb.saturating_mul(1 << 20);
    lower(Resource::AS, bytes, bytes)
}

/// Whether a failure's text says the process ran out of address space (an allocation,
/// an mmap or a thread stack refused).
fn mentions_out_of_memory(text: &str) -> bool {
    const SIGNS: [&str; 5] = [
        "memory allocation of",
        "Cannot allocate memory",
        "out of memory",
        "os error 12",
        "Resource temporarily unavailable",
    ];
    SIGNS.iter().any(|sign| text.contains(sign))
}

/// How a compile child ended.
struct ChildEnd {
    status: Option<ExitStatus>,
    timed_out: bool,
    stdout: std::io::Result<Vec<u8>>,
    stderr: String,
}

/// Compiles `bytes` in a child process running `program`, within `limits`.
fn compile_in_child(program: &Path, fuel: bool, bytes: &[u8], spec: &ComponentSpec) -> Result<Vec<u8>, LoadError> {
    let limits = &spec.limits;
    let mut cmd = Command::new(program);
    cmd.arg("compile-component")
        .arg("--cpu-s")
        .arg(limits.compile_s.to_string())
        .arg("--mem-mb")
        .arg(limits.compile_mb.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Each malloc arena reserves 64 MiB of address space, and glibc makes up to 8 per
        // core: two keep what `RLIMIT_AS` measures the compile itself, on any machine.
        .env("MALLOC_ARENA_MAX", "2");
    if fuel {
        cmd.arg("--fuel");
    }
    let failed = |reason: String| LoadError::Compile { name: spec.name.clone(), reason };
    let mut child = cmd.spawn().map_err(|e| failed(format!("cannot start {}: {e}", program.display())))?;
    let wall = Duration::from_secs(limits.compile_s.saturating_mul(2));
    let max_artifact = limits.compile_mb.saturating_mul(1 << 20);
    let (stdin, stdout, stderr) = (child.stdin.take(), child.stdout.take(), child.stderr.take());
    let end = std::thread::scope(|scope| {
        scope.spawn(move || {
            // A child that died early makes this fail (EPIPE); its status says why.
            if let Some(mut stdin) = stdin {
                let _ = stdin.write_all(bytes);
            }
        });
        let out = scope.spawn(move || {
            // Room for the usual artifact (1-2x the component) from the start: growing by
            // doubling held the old and the new buffer at once, tens of MiB for a Python
            // guest. Untouched capacity is address space, not memory.
            let expected = u64::try_from(bytes.len()).unwrap_or(u64::MAX).saturating_mul(3).min(max_artifact);
            let mut artifact = Vec::with_capacity(usize::try_from(expected).unwrap_or(0));
            if let Some(stdout) = stdout {
                stdout.take(max_artifact).read_to_end(&mut artifact)?;
            }
            Ok(artifact)
        });
        let err = scope.spawn(move || stderr.map(read_tail).unwrap_or_default());
        let deadline = Instant::now().checked_add(wall);
        let (status, timed_out) = loop {
            match child.try_wait() {
                Ok(Some(status)) => break (Some(status), false),
                Ok(None) if deadline.is_some_and(|d| Instant::now() >= d) => {
                    let _ = child.kill();
                    break (child.wait().ok(), true);
                }
                Ok(None) => std::thread::sleep(POLL),
                Err(_) => {
                    let _ = child.kill();
                    break (child.wait().ok(), false);
                }
            }
        };
        ChildEnd {
            status,
            timed_out,
            stdout: out.join().unwrap_or_else(|_| Err(std::io::Error::other("reader panicked"))),
            stderr: err.join().unwrap_or_default(),
        }
    });
    verdict(end, spec)
}

/// The artifact, or the error that names the limit the child hit.
fn verdict(end: ChildEnd, spec: &ComponentSpec) -> Result<Vec<u8>, LoadError> {
    let (name, limits) = (spec.name.as_str(), &spec.limits);
    let over = |limit: &'static str, value: u64| LoadError::CompileLimit { name: name.to_owned(), limit, value };
    let last_words = last_line(&end.stderr);
    let status = match end.status {
        _ if end.timed_out => return Err(over("compile_s", limits.compile_s)),
        Some(status) => status,
        None => return Err(LoadError::Compile { name: name.to_owned(), reason: "lost the compile child".into() }),
    };
    if status.success() {
        return end.stdout.map_err(|e| LoadError::Compile {
            name: name.to_owned(),
            reason: format!("cannot read the compiled component: {e}"),
        });
    }
    if matches!(status.signal(), Some(libc::SIGXCPU | libc::SIGKILL)) {
        return Err(over("compile_s", limits.compile_s));
    }
    match status.code().and_then(|c| u8::try_from(c).ok()) {
        Some(EXIT_INVALID) => {
            Err(LoadError::Invalid { name: name.to_owned(), path: spec.path.clone(), reason: last_words })
        }
        Some(EXIT_OUT_OF_MEMORY) => Err(over("compile_mb", limits.compile_mb)),
        _ if mentions_out_of_memory(&end.stderr) => Err(over("compile_mb", limits.compile_mb)),
        _ => Err(LoadError::Compile { name: name.to_owned(), reason: format!("{status}: {last_words}") }),
    }
}

/// The last `STDERR_TAIL` bytes the child wrote to stderr.
fn read_tail(mut stderr: impl Read) -> String {
    let mut tail = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stderr.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                tail.extend_from_slice(&buf[..n]);
                if tail.len() > STDERR_TAIL {
                    tail.drain(..tail.len() - STDERR_TAIL);
                }
            }
        }
    }
    String::from_utf8_lossy(&tail).into_owned()
}

/// The last non-empty line, with control characters escaped (it may quote the component).
fn last_line(text: &str) -> String {
    let line = text.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("no output");
    line.chars().flat_map(|c| if c.is_control() { c.escape_default().collect() } else { vec![c] }).collect()
}

impl Engine {
    /// The compiled form of a component: from the cache, else compiled (in the child when
    /// so configured), loaded into this engine, and only then cached.
    pub(super) fn compile(&self, spec: &ComponentSpec, bytes: &[u8]) -> Result<(WasmComponent, bool), LoadError> {
        let cached = self.cache().map(|cache| (cache, cache.file_for(&self.engine, bytes)));
        if let Some((cache, file)) = &cached
            && let Some(component) = cache.lookup(&self.engine, file)
        {
            return Ok((component, true));
        }
        let compiled = match &self.compiler {
            Compiler::InProcess => self.engine.precompile_component(bytes).map_err(|e| LoadError::Invalid {
                name: spec.name.clone(),
                path: spec.path.clone(),
                reason: format!("{e:#}"),
            })?,
            Compiler::Child(program) => {
                let started = Instant::now();
                let compiled = compile_in_child(program, self.fuel, bytes, spec)?;
                tracing::debug!(
                    component = %spec.name,
                    ms = started.elapsed().as_millis() as u64,
                    bytes = compiled.len(),
                    "compiled in a child process"
                );
                compiled
            }
        };
        // Once stored, the compile is mapped from its cache file like any later load: its
        // code and memory images are then page cache, which every pool slot shares, not a
        // private copy of the bytes held by this process for its lifetime. `lookup` removes
        // a file the engine refuses. Loaded from the bytes where there is no cache, it
        // cannot be written, or the engine refused the file.
        let mut from_file = None;
        if let Some((cache, file)) = &cached
            && cache.store(file, &compiled)
        {
            from_file = cache.lookup(&self.engine, file);
        }
        let component = match from_file {
            Some(component) => component,
            // Refused here: what the instance allocator cannot take (the pooling allocator's
            // memories and tables per module, memory sizes), exactly as `run` would.
            None => cache::deserialize(&self.engine, &compiled)
                .map_err(|e| LoadError::Unsupported { name: spec.name.clone(), reason: format!("{e:#}") })?,
        };
        Ok((component, false))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_line_is_kept_and_escaped() {
        assert_eq!(last_line("a\nfailed: \u{1b}]0;x\u{7}\n\n"), "failed: \\u{1b}]0;x\\u{7}");
        assert_eq!(last_line(""), "no output");
    }

    fn end(raw: i32, timed_out: bool, stderr: &str) -> ChildEnd {
        ChildEnd {
            status: Some(ExitStatus::from_raw(raw)),
            timed_out,
            stdout: Ok(b"artifact".to_vec()),
            stderr: stderr.into(),
        }
    }

    #[test]
    fn each_way_a_child_ends_has_its_verdict() {
        let spec = ComponentSpec {
            limits: crate::vocab::Limits { compile_s: 7, compile_mb: 300, ..Default::default() },
            ..ComponentSpec::ungranted("x", "x.wasm".into())
        };
        let said = |end: ChildEnd| verdict(end, &spec).map_err(|e| e.to_string());
        assert_eq!(said(end(0, false, "")), Ok(b"artifact".to_vec()));
        let cpu = Err("component \"x\": compile exceeded limits.compile_s = 7".to_owned());
        let mem = Err("component \"x\": compile exceeded limits.compile_mb = 300".to_owned());
        // Killed by us after the wall-clock timeout, by SIGXCPU, or by SIGKILL (the hard limit).
        assert_eq!(said(end(libc::SIGKILL, true, "")), cpu);
        assert_eq!(said(end(libc::SIGXCPU, false, "")), cpu);
        assert_eq!(said(end(libc::SIGKILL, false, "")), cpu);
        // Out of address space: Rust's allocation failure aborts; wasmtime's mmap errors exit 3.
        assert_eq!(said(end(libc::SIGABRT, false, "memory allocation of 64 bytes failed\n")), mem);
        assert_eq!(said(end(i32::from(EXIT_OUT_OF_MEMORY) << 8, false, "")), mem);
        let invalid = said(end(i32::from(EXIT_INVALID) << 8, false, "failed to parse\ninvalid magic\n"));
        assert_eq!(invalid, Err("x.wasm is not a valid WebAssembly component (\"x\"): invalid magic".to_owned()));
        let crash = said(end(101 << 8, false, "thread panicked\n"));
        assert!(crash.as_ref().is_err_and(|e| e.contains("could not be compiled") && e.ends_with("thread panicked")));
    }

    #[test]
    fn out_of_memory_is_recognised() {
        assert!(mentions_out_of_memory("memory allocation of 4096 bytes failed"));
        assert!(mentions_out_of_memory("failed to mmap: Cannot allocate memory (os error 12)"));
        assert!(!mentions_out_of_memory("invalid leading byte in type definition"));
    }
}
