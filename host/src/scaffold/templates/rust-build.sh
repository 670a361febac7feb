#!/usr/bin/env bash
# Builds {{name}}.wasm, a WASI 0.2 component, from this project (written by `cannon-host new`).
# Uses rustup's wasm32-wasip2 target when it is installed (`rustup target add wasm32-wasip2`);
# otherwise Debian's rustc-web with -Zbuild-std, which needs:
#   apt-get install rustc-web cargo-web rust-web-src wasi-libc lld-22
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
target_dir="${CARGO_TARGET_DIR:-target}"
if command -v rustup >/dev/null && rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip2; then
    RUSTFLAGS="-C link-arg=-zstack-size=65536" cargo build --release --target wasm32-wasip2 --target-dir "$target_dir"
else
    env -u RUSTUP_TOOLCHAIN -u CARGO -u RUSTC_WRAPPER \
        RUSTC_BOOTSTRAP=1 RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc \
        RUSTFLAGS="-L native=/usr/lib/wasm32-wasi -C link-arg=-zstack-size=65536" \
        /usr/bin/cargo build --release --target wasm32-wasip2 --target-dir "$target_dir" \
        -Zbuild-std=std,panic_abort
fi
cp "$target_dir/wasm32-wasip2/release/{{crate}}.wasm" {{name}}.wasm
echo "built {{name}}.wasm"
