//! The `cannon-host` binary: arguments, logging, signals; the work is in the library.

use std::process::ExitCode;

use clap::Parser as _;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

/// mimalloc instead of glibc's malloc: a message's path allocates many small buffers on
/// several threads (reply parsing, fields, futures), and glibc's arenas spent a quarter of
/// the worker's CPU on them (docs/performance.md, round 3).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = cannon_host::cli::Cli::parse();
    let filter = EnvFilter::try_from_env("CANNON_LOG")
        .unwrap_or_else(|_| EnvFilter::new("info,wasmtime=warn,cranelift=warn,redis=warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        // Every field and message escaped: a guest's error or reply cannot forge a record.
        .fmt_fields(cannon_host::text::log_fields())
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        // Spans exported over OTLP when OTEL_EXPORTER_OTLP_ENDPOINT is set; flushed on exit.
        let _traces = match cannon_host::observe::trace::init_from_env() {
            Ok(traces) => traces,
            Err(err) => {
                eprintln!("error: {}", cannon_host::text::for_terminal_lines(&err));
                return ExitCode::FAILURE;
            }
        };
        let shutdown = CancellationToken::new();
        tokio::spawn(watch_signals(shutdown.clone()));
        match cannon_host::cli::dispatch(cli, shutdown).await {
            Ok(code) => code,
            Err(err) => {
                eprintln!("error: {}", cannon_host::text::for_terminal_lines(&format!("{err:#}")));
                ExitCode::FAILURE
            }
        }
    })
}

/// First SIGINT/SIGTERM: graceful shutdown. Second: exit at once (pending messages are
/// reclaimed by other workers).
async fn watch_signals(shutdown: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut int), Ok(mut term)) = (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) else {
        tracing::error!("cannot install signal handlers; stop with SIGKILL");
        return;
    };
    for round in 0..2 {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
        if round == 0 {
            tracing::info!("shutting down: finishing messages in flight (signal again to exit at once)");
            shutdown.cancel();
        } else {
            tracing::warn!("second signal: exiting now");
            std::process::exit(130);
        }
    }
}
