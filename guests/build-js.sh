#!/usr/bin/env bash
# Builds the JavaScript guests (guests/js/*) into components with componentize-js.
#
#   guests/build-js.sh            # build what changed into $OUT_DIR (default <repo>/app)
#   guests/build-js.sh hello      # only these guests
#   FORCE=1 guests/build-js.sh    # rebuild everything
#
# Every folder guests/js/NAME/ with an app.js is a guest and becomes $OUT_DIR/NAME-js.wasm.
# Lines in app.js choose the world (see world.sh): `// cannon-world: shell` (default task)
# and `// cannon-allow: kv, taskback` (default none).
# Tools: @bytecodealliance/componentize-js, pinned in guests/js/package.json and
# package-lock.json, installed with `npm install` into guests/js/node_modules when missing
# or when package.json / the lock file changed. Needs node >= 18 and npm.
# (Not `npm ci`: the lock lists optional per-platform binaries that a registry mirror may
# lack, and `npm ci` refuses such a lock; `npm install` follows the lock and skips them.)
set -euo pipefail
# shellcheck source=world.sh
. "$(dirname "${BASH_SOURCE[0]}")/world.sh"

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
WIT="$ROOT/wit"
OUT_DIR=${OUT_DIR:-$ROOT/app}
JS="$HERE/js"

die() { echo "build-js: error: $*" >&2; exit 1; }

ensure_tools() {
  command -v node >/dev/null || die "node not found (need node >= 18 and npm)"
  command -v npm >/dev/null || die "npm not found"
  local stamp="$JS/node_modules/.cannon-installed"
  if [ ! -x "$JS/node_modules/.bin/componentize-js" ] || [ ! -f "$stamp" ] \
      || [ "$JS/package-lock.json" -nt "$stamp" ] || [ "$JS/package.json" -nt "$stamp" ]; then
    echo "installing componentize-js (npm install in $JS)"
    (cd "$JS" && npm install --no-audit --no-fund --loglevel=error) \
      || die "npm install failed in $JS"
    touch "$stamp"
  fi
}

# up_to_date OUT SRC... : OUT exists and no SRC file is newer.
up_to_date() {
  local out=$1; shift
  [ "${FORCE:-0}" = 1 ] && return 1
  [ -f "$out" ] || return 1
  [ -z "$(find "$@" -newer "$out" -print -quit)" ]
}

# build NAME KIND ALLOW ENTRY_JS
build() {
  local name=$1 kind=$2 allow=$3 entry=$4
  local out="$OUT_DIR/$name.wasm"
  if up_to_date "$out" "$(dirname "$entry")" "$WIT" "$JS/package-lock.json" "${BASH_SOURCE[0]}"; then
    echo "skipped $name.wasm (up to date)"
    return
  fi
  ensure_tools
  local start=$SECONDS tmp="$out.tmp.$$" log wit_dir
  log=$(mktemp)
  wit_dir=$(mktemp -d)
  guest_wit "$WIT" "$kind" "$allow" "$wit_dir"
  # `// cannon-allow: http` keeps fetch() (wasi:http/outgoing-handler; the compose file must
  # grant it with `allow: [{http: [...]}]`); otherwise the engine's http support is left out.
  local disabled=(http fetch-event)
  [[ " $allow " == *" http "* ]] && disabled=(fetch-event)
  # Without `-d http`, the component imports wasi:http, which cannon refuses without a
  # grant. stdio, random and clocks stay (console.log, Math.random, Date).
  if ! "$JS/node_modules/.bin/componentize-js" "$entry" --wit "$wit_dir" -n guest \
      -d "${disabled[@]}" -o "$tmp" >"$log" 2>&1; then
    cat "$log" >&2; rm -rf "$tmp" "$log" "$wit_dir"
    die "componentize-js failed for $name ($entry)"
  fi
  rm -rf "$log" "$wit_dir"
  mv -f "$tmp" "$out"
  echo "built $name.wasm ($(du -k "$out" | cut -f1) KiB, $((SECONDS - start)) s)"
}

mkdir -p "$OUT_DIR" || die "cannot create OUT_DIR $OUT_DIR"
[ -d "$WIT" ] || die "WIT directory $WIT not found"


found=0
for app in "$JS"/*/app.js; do
  [ -f "$app" ] || continue
  name=$(basename "$(dirname "$app")")
  [ "$name" = node_modules ] && continue
  if [ $# -gt 0 ] && [[ " $* " != *" $name "* ]]; then continue; fi
  found=$((found + 1))
  build "$name-js" "$(world_of "$app")" "$(allow_of "$app")" "$app"
done
[ "$found" -gt 0 ] || die "no guest found (guests/js/NAME/app.js${*:+ for: $*})"
