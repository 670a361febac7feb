//! Hostile components no Rust toolchain emits, written here in WebAssembly text and
//! assembled with the `wat` crate: each is a working `task` (its `run` answers `ok([])`)
//! whose core module adds one hostile shape.
//!
//! - [`two_memories`], [`two_tables`]: valid, run fine under the on-demand allocator, but
//!   have more memories or tables per module than the pooling allocator that `run` uses
//!   takes; `check` must report them as `run` would.
//! - [`compile_bomb`]: a few KB whose compile costs Cranelift time and memory far beyond its
//!   size: `loops` nested loops around a body that updates `locals` locals, so every loop
//!   header carries every local as a block parameter (`locals x loops` of them, and register
//!   allocation superlinear on top). Measured on the 2-core dev machine (wasmtime 48):
//!   400 x 400 (7 KB) 25 s of CPU and 300 MB; 800 x 800 (14 KB) 6 minutes and 1.1 GB;
//!   1500 x 1500 (26 KB) past 5 GB of address space within 11 s.

/// A task component in WAT whose core module also holds `extra`.
fn task(extra: &str) -> Vec<u8> {
    let text = format!(
        r#"(component
  (core module $m
    (memory (export "memory") 1)
    (global $bump (mut i32) (i32.const 4096))
    (func (export "cabi_realloc") (param i32 i32 i32 i32) (result i32)
      (local $p i32)
      (local.set $p
        (i32.and (i32.add (global.get $bump) (i32.sub (local.get 2) (i32.const 1)))
                 (i32.sub (i32.const 0) (local.get 2))))
      (global.set $bump (i32.add (local.get $p) (local.get 3)))
      (block $fits
        (br_if $fits (i32.le_u (global.get $bump) (i32.shl (memory.size) (i32.const 16))))
        (br_if $fits (i32.ge_s (memory.grow (i32.add (i32.shr_u (global.get $bump) (i32.const 16)) (i32.const 1)))
                               (i32.const 0)))
        unreachable)
      (local.get $p))
    ;; ok([]): the result's discriminant, list pointer and length, all zero, at 16.
    (func (export "run") (param i32 i32 i32 i32 i32 i32 i32 i32) (result i32)
      (i32.const 16))
    {extra}
  )
  (core instance $i (instantiate $m))
  (type $fields' (list (tuple string string)))
  (export $fields "fields" (type $fields'))
  (type $message' (record (field "id" string) (field "service" string) (field "fields" $fields)))
  (export $message "message" (type $message'))
  (func $run (param "msg" $message) (param "results" $fields) (result (result $fields (error string)))
    (canon lift (core func $i "run") (memory (core memory $i "memory"))
      (realloc (core func $i "cabi_realloc"))))
  (export "run" (func $run))
)"#
    );
    wat::parse_str(&text).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

/// A task whose module has a second linear memory.
pub fn two_memories() -> Vec<u8> {
    task("(memory $second 1)")
}

/// A task whose module has a second table.
pub fn two_tables() -> Vec<u8> {
    task("(table 1 funcref) (table $second 1 funcref)")
}

/// A task with a compile bomb: see the module docs.
pub fn compile_bomb(locals: usize, loops: usize) -> Vec<u8> {
    use std::fmt::Write as _;
    let mut body = format!("(func $bomb (param i32) (result i32) (local{})\n", " i32".repeat(locals));
    body.push_str(&"loop\n".repeat(loops));
    for i in 1..=locals {
        let _ = writeln!(body, "(local.set {i} (i32.add (local.get {i}) (local.get {})))", i % locals + 1);
    }
    for d in 0..loops {
        let _ = writeln!(body, "(br_if 0 (local.get {})) end", d % locals + 1);
    }
    body.push_str("(local.get 1))");
    task(&body)
}
