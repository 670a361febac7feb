#!/usr/bin/env bash
# Builds the Python guests (guests/python/*) into components with componentize-py.
#
#   guests/build-python.sh            # build what changed into $OUT_DIR (default <repo>/app)
#   guests/build-python.sh wordstats  # only these guests
#   FORCE=1 guests/build-python.sh    # rebuild everything
#
# Every folder guests/python/NAME/ with an app.py (except sdk/) is a guest and becomes
# $OUT_DIR/NAME.wasm. Lines in its app.py choose the world (see world.sh):
# `# cannon-world: shell` (default task) and `# cannon-allow: kv, taskback` (default none).
# Tools: componentize-py (PyPI) in the venv guests/.venv (created when missing).
# A component is rebuilt only when a file of its app, of the SDK, of wit/ or this script
# is newer than the output.
set -euo pipefail
# shellcheck source=world.sh
. "$(dirname "${BASH_SOURCE[0]}")/world.sh"

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
WIT="$ROOT/wit"
OUT_DIR=${OUT_DIR:-$ROOT/app}
VENV=${CANNON_GUEST_VENV:-$HERE/.venv}
PY=${PYTHON:-python3}
COMPONENTIZE_PY_VERSION=0.25.1
SDK="$HERE/python/sdk"

die() { echo "build-python: error: $*" >&2; exit 1; }

ensure_venv() {
  if [ ! -x "$VENV/bin/python" ]; then
    command -v "$PY" >/dev/null || die "$PY not found (need Python >= 3.9 to create $VENV)"
    "$PY" -m venv "$VENV" || die "could not create the venv $VENV"
  fi
  # The venv holds only build tools; keep it out of git whatever the repo ignores.
  [ -f "$VENV/.gitignore" ] || echo '*' >"$VENV/.gitignore"
}

ensure_componentize_py() {
  local have=""
  if [ -x "$VENV/bin/componentize-py" ]; then
    have=$("$VENV/bin/componentize-py" --version 2>/dev/null | awk '{print $2}') || have=""
  fi
  if [ "$have" != "$COMPONENTIZE_PY_VERSION" ]; then
    ensure_venv
    echo "installing componentize-py $COMPONENTIZE_PY_VERSION into $VENV"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check \
      "componentize-py==$COMPONENTIZE_PY_VERSION" \
      || die "pip install componentize-py==$COMPONENTIZE_PY_VERSION failed"
  fi
}

# up_to_date OUT SRC... : OUT exists and no SRC file is newer (caches ignored).
up_to_date() {
  local out=$1; shift
  [ "${FORCE:-0}" = 1 ] && return 1
  [ -f "$out" ] || return 1
  [ -z "$(find "$@" -newer "$out" -not -path '*/__pycache__/*' -not -name '*.pyc' -print -quit)" ]
}

# build NAME KIND ALLOW APP_DIR [MODULE]
build() {
  local name=$1 kind=$2 allow=$3 app_dir=$4 module=${5:-app}
  local out="$OUT_DIR/$name.wasm"
  if up_to_date "$out" "$app_dir" "$SDK" "$WIT" "${BASH_SOURCE[0]}"; then
    echo "skipped $name.wasm (up to date)"
    return
  fi
  [[ " $allow " == *" http "* ]] && die "$name: cannon-allow: http is not supported for Python guests here (docs/guests.md, Outbound HTTP)"
  ensure_componentize_py
  local start=$SECONDS tmp="$out.tmp.$$" wit_dir
  wit_dir=$(mktemp -d)
  guest_wit "$WIT" "$kind" "$allow" "$wit_dir"
  # VIRTUAL_ENV points componentize-py at the venv's site-packages (not the system's).
  if ! VIRTUAL_ENV="$VENV" PYTHONDONTWRITEBYTECODE=1 RUST_BACKTRACE=0 "$VENV/bin/componentize-py" -q \
      -d "$wit_dir" -w guest componentize "$module" \
      -p "$app_dir" -p "$SDK" -o "$tmp"; then
    rm -rf "$tmp" "$wit_dir"
    die "componentize-py failed for $name ($app_dir)"
  fi
  rm -rf "$wit_dir"
  mv -f "$tmp" "$out"
  echo "built $name.wasm ($(du -k "$out" | cut -f1) KiB, $((SECONDS - start)) s)"
}

mkdir -p "$OUT_DIR" || die "cannot create OUT_DIR $OUT_DIR"
[ -d "$WIT" ] || die "WIT directory $WIT not found"


found=0
for app in "$HERE"/python/*/app.py; do
  [ -f "$app" ] || continue
  dir=$(dirname "$app"); name=$(basename "$dir")
  [ "$name" = sdk ] && continue
  if [ $# -gt 0 ] && [[ " $* " != *" $name "* ]]; then continue; fi
  found=$((found + 1))
  build "$name" "$(world_of "$app")" "$(allow_of "$app")" "$dir"
done
[ "$found" -gt 0 ] || die "no guest found (guests/python/NAME/app.py${*:+ for: $*})"
