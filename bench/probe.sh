#!/usr/bin/env bash
# Builds the probe of docs/performance.md (round 12): the release host with bench/probe.patch
# applied, into DIR/probe, and three wrappers beside it for bench/side.py and
# bench/worker-drain.py:
#   DIR/native     `shout`'s work done natively: no instance, no store, no guest call
#   DIR/unchecked  the finish written as the raw consumer writes it: XADDs and one XACK,
#                  pipelined, without the check that this worker still holds the message
#   DIR/both       the two at once
# Never a build to ship: the patch drops the isolation and the ownership check on purpose.
#   bench/probe.sh DIR      (from the repository root; ~6 min after a release build: the probe, then
#                           the real host again)
set -euo pipefail
dir="${1:?usage: bench/probe.sh DIR}"
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
files=(host/src/engine/call.rs host/src/broker/redis/finish.rs)
if ! git diff --quiet -- "${files[@]}"; then
    echo "bench/probe.sh: ${files[*]} have uncommitted changes; commit or stash them first" >&2
    exit 2
fi
mkdir -p "$dir"
dir="$(cd "$dir" && pwd)"
git apply bench/probe.patch
trap 'git checkout -- "${files[@]}"' EXIT
cargo build --quiet --release -p cannon-host
cp target/release/cannon-host "$dir/probe"
# target/release/cannon-host is the real host again when this ends.
git checkout -- "${files[@]}"
trap - EXIT
cargo build --quiet --release -p cannon-host
for name in native unchecked both; do
    case "$name" in
        native) vars="CANNON_PROBE_NATIVE=1" ;;
        unchecked) vars="CANNON_PROBE_UNCHECKED=1" ;;
        both) vars="CANNON_PROBE_NATIVE=1 CANNON_PROBE_UNCHECKED=1" ;;
    esac
    printf '#!/bin/sh\n%s exec %s "$@"\n' "$vars" "$dir/probe" > "$dir/$name"
    chmod +x "$dir/$name"
done
echo "bench/probe.sh: $dir/probe, $dir/native, $dir/unchecked, $dir/both" >&2
