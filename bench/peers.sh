#!/usr/bin/env bash
# The peers' side-by-side run (../shared/peers/run.sh: cannon, a raw redis-py consumer,
# Celery, Dramatiq on one private Redis, interleaved), with cannon's Redis keys as they are
# now. The harness was written for the layout before hash tags (`NS:shout:data`); since
# Redis Cluster support a service's keys are `{NS:shout}:data` (host/src/broker/redis/keys.rs),
# so a copy of the harness with the two cannon scripts' key names rewritten is run.
#   bench/peers.sh [CANNON_HOST_BIN] [APP_DIR]   (defaults: target/release/cannon-host, app)
# Results: the harness's table on stdout, every run in /tmp/peers/results.jsonl.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
peers="$repo/../shared/peers"
[ -f "$peers/run.sh" ] || { echo "bench/peers.sh: no $peers/run.sh (../shared beside the repo)" >&2; exit 1; }
copy="$(mktemp -d)"
trap 'rm -rf "$copy"' EXIT
cp "$peers"/* "$copy/"
chmod u+w "$copy"/*
for f in cannon_drain.py cannon_latency.py; do
  grep -q 'f"{NS}:shout:data", f"{NS}:shout:taskback"' "$copy/$f" \
    || { echo "bench/peers.sh: $f no longer names the keys as expected; update this script" >&2; exit 1; }
  sed -i -e 's/f"{NS}:shout:\(data\|taskback\|dead\)"/f"{{{NS}:shout}}:\1"/g' "$copy/$f"
done
# cannon_latency.py reads the taskback stream from `$` after its XADD: a worker that answers
# before that XREAD is issued makes the answer invisible and the run hang (seen with a fast
# worker). The stream is new for each run (the namespace has the pid), so read it from the
# start; the script matches answers by `cannon.id` anyway.
grep -q '^last = "\$"$' "$copy/cannon_latency.py" \
  || { echo "bench/peers.sh: cannon_latency.py no longer starts from \$; update this script" >&2; exit 1; }
sed -i -e 's/^last = "\$"$/last = "0-0"/' "$copy/cannon_latency.py"
cd "$repo"
bash "$copy/run.sh" "${1:-target/release/cannon-host}" "${2:-app}"
