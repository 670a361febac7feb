//! The preview-1 functions Rust's standard library reaches most through wasi-libc, answered
//! over WASI 0.2 inside the guest, so that most components need no preview-1 adapter.
//!
//! Debian's wasi-libc (the Rust guest toolchain without rustup's `wasm32-wasip2` target) is
//! a preview-1 build: `std`'s stderr (a panic's message), its environment lookup
//! (`RUST_BACKTRACE`, asked by the panic hook), `exit` and the clocks (`SystemTime`,
//! `Instant`) call `fd_write`, `environ_get`, `environ_sizes_get`, `proc_exit` and
//! `clock_time_get` of `wasi_snapshot_preview1`. A module importing any of them is wrapped
//! with wit-component's preview-1 adapter: one more core module with some twenty imports,
//! instantiated with every call. wasi-libc reaches each of those imports through a symbol
//! `__imported_wasi_snapshot_preview1_NAME` that it only declares; these definitions
//! satisfy them at link time instead, so a task that only computes, logs and reads the
//! clock is its own module and two small shims, and costs the host about 10% less CPU per
//! message (cannon's docs/performance.md, round 10). A guest that reads files or sleeps
//! still gets the adapter for those functions (`path_open`, `poll_oneoff`, ...); these
//! five stay answered here.
//!
//! Each does what the adapter did under cannon's locked-down WASI: stdout and stderr are
//! the host's `wasi:cli` streams (the call's log), the environment is empty (the host
//! grants none), exit ends the call through `wasi:cli/exit`, and the clocks are
//! `wasi:clocks`.

use wasi::cli::{exit, stderr, stdout};
use wasi::clocks::{monotonic_clock, wall_clock};

/// `errno` values of preview 1.
const SUCCESS: i32 = 0;
const BADF: i32 = 8;
const IO: i32 = 29;
const OVERFLOW: i32 = 61;

/// A preview-1 `ciovec`: a pointer and a length, both 32-bit in wasm32.
#[repr(C)]
struct Ciovec {
    buf: *const u8,
    len: usize,
}

/// `fd_write` for stdout (1) and stderr (2); any other descriptor is not this shim's (no
/// file is writable in cannon: `files:` grants are read-only) and gets `EBADF`.
///
/// # Safety
/// wasi-libc passes `iovs_len` valid `ciovec`s at `iovs` and a writable `nwritten`.
#[unsafe(no_mangle)]
unsafe extern "C" fn __imported_wasi_snapshot_preview1_fd_write(
    fd: i32,
    iovs: *const Ciovec,
    iovs_len: i32,
    nwritten: *mut i32,
) -> i32 {
    let stream = match fd {
        1 => stdout::get_stdout(),
        2 => stderr::get_stderr(),
        _ => return BADF,
    };
    let count = usize::try_from(iovs_len).unwrap_or(0);
    // SAFETY: the caller's contract (above).
    let iovs = unsafe { core::slice::from_raw_parts(iovs, count) };
    let mut written = 0usize;
    for iov in iovs {
        // SAFETY: each iovec names `len` readable bytes at `buf`.
        let mut bytes = unsafe { core::slice::from_raw_parts(iov.buf, iov.len) };
        // `blocking-write-and-flush` takes at most 4096 bytes per call.
        while !bytes.is_empty() {
            let (chunk, rest) = bytes.split_at(bytes.len().min(4096));
            if stream.blocking_write_and_flush(chunk).is_err() {
                return IO;
            }
            written += chunk.len();
            bytes = rest;
        }
    }
    // SAFETY: the caller's contract (above).
    unsafe { *nwritten = i32::try_from(written).unwrap_or(i32::MAX) };
    SUCCESS
}

/// No environment: cannon grants a component none.
///
/// # Safety
/// wasi-libc passes two writable `u32`s.
#[unsafe(no_mangle)]
unsafe extern "C" fn __imported_wasi_snapshot_preview1_environ_sizes_get(count: *mut i32, size: *mut i32) -> i32 {
    // SAFETY: the caller's contract (above).
    unsafe {
        *count = 0;
        *size = 0;
    }
    SUCCESS
}

/// No environment: nothing to copy.
#[unsafe(no_mangle)]
extern "C" fn __imported_wasi_snapshot_preview1_environ_get(_environ: i32, _buf: i32) -> i32 {
    SUCCESS
}

/// `exit(code)`: ends the call as the adapter did, through `wasi:cli/exit`.
#[unsafe(no_mangle)]
extern "C" fn __imported_wasi_snapshot_preview1_proc_exit(code: i32) -> ! {
    exit::exit(if code == 0 { Ok(()) } else { Err(()) });
    core::arch::wasm32::unreachable()
}

/// `clock_time_get`: the realtime (0) and monotonic (1) clocks, in nanoseconds. As in the
/// adapter, any other clock (the CPU-time ones) is `EBADF`, and a wall-clock time past `u64`
/// nanoseconds is `EOVERFLOW`.
///
/// # Safety
/// wasi-libc passes a writable `u64` at `time`.
#[unsafe(no_mangle)]
unsafe extern "C" fn __imported_wasi_snapshot_preview1_clock_time_get(id: i32, _precision: i64, time: *mut u64) -> i32 {
    let nanos = match id {
        0 => {
            let now = wall_clock::now();
            match now.seconds.checked_mul(1_000_000_000).and_then(|n| n.checked_add(u64::from(now.nanoseconds))) {
                Some(nanos) => nanos,
                None => return OVERFLOW,
            }
        }
        1 => monotonic_clock::now(),
        _ => return BADF,
    };
    // SAFETY: the caller's contract (above).
    unsafe { *time = nanos };
    SUCCESS
}
