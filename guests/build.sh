#!/usr/bin/env bash
# Builds every guest component into $OUT_DIR (default: <repo>/app), idempotently.
#
#   guests/build.sh            Rust guests, then Python, JavaScript and C guests
#   guests/build.sh rust       only the Rust guests (likewise: python, js, c)
#
# Rust guests use rustup's wasm32-wasip2 target when it is installed; otherwise Debian's
# rustc-web with -Zbuild-std (see ../shared/GUEST-TOOLCHAIN.md), installing the Debian
# packages it needs when they are missing. Nothing is rebuilt when nothing changed.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$here")"
export OUT_DIR="${OUT_DIR:-$repo/app}"
mkdir -p "$OUT_DIR"

log() { printf 'guests: %s\n' "$*" >&2; }

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
        log "need root to run: $*"; return 1; fi
}

debian_packages() {
    local missing=()
    for pkg in rustc-web cargo-web rust-web-src wasi-libc lld-22; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        log "installing Debian packages: ${missing[*]}"
        as_root apt-get update -qq
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
}

# A 64 KiB shadow stack (C's default) instead of Rust's 1 MiB: an instance's memory starts
# at 2 pages instead of 17, and the host resets it between messages with one small memset
# (see docs/performance.md). The stack sits first in memory, so overflowing it traps
# ("out of bounds memory access") rather than corrupting data. Raise it (GUEST_STACK=bytes)
# for guests that recurse deeply or keep large arrays on the stack.
GUEST_STACK="${GUEST_STACK:-65536}"

build_rust() {
    cd "$here"
    local target_dir="$here/target"
    local stack="-C link-arg=-zstack-size=$GUEST_STACK"
    if command -v rustup >/dev/null && rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip2; then
        log "rust: rustup target wasm32-wasip2"
        RUSTFLAGS="$stack" cargo build --quiet --release --target wasm32-wasip2 --target-dir "$target_dir"
    else
        debian_packages
        log "rust: Debian rustc-web + build-std"
        # rustup's cargo/rustc must not leak in: use Debian's toolchain throughout.
        env -u RUSTUP_TOOLCHAIN -u CARGO -u RUSTC_WRAPPER \
            RUSTC_BOOTSTRAP=1 RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc \
            RUSTFLAGS="-L native=/usr/lib/wasm32-wasi $stack" CARGO_BUILD_TARGET_DIR="$target_dir" \
            /usr/bin/cargo build --quiet --release --target wasm32-wasip2 \
            -Zbuild-std=std,panic_abort
    fi
    local n=0
    for wasm in "$target_dir"/wasm32-wasip2/release/*.wasm; do
        [ -e "$wasm" ] || continue
        local dest="$OUT_DIR/$(basename "$wasm")"
        if ! cmp -s "$wasm" "$dest"; then cp "$wasm" "$dest.tmp" && mv "$dest.tmp" "$dest"; fi
        n=$((n + 1))
    done
    log "rust: $n components in $OUT_DIR"
}

langs=("$@")
[ ${#langs[@]} -gt 0 ] || langs=(rust python js c)
for lang in "${langs[@]}"; do
    case "$lang" in
        rust) build_rust ;;
        python|js|c)
            script="$here/build-$lang.sh"
            if [ -x "$script" ]; then "$script"; else log "$lang: no $script, skipped"; fi ;;
        *) log "unknown language $lang (expected rust, python, js or c)"; exit 2 ;;
    esac
done
