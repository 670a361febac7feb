#!/usr/bin/env bash
# Builds {{name}}.wasm, a WASI 0.2 component, from app.js (written by `cannon-host new`).
# Uses componentize-js from $COMPONENTIZE_JS, else from npm (installed into node_modules/ by
# `npm install` when missing).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
cjs="${COMPONENTIZE_JS:-node_modules/.bin/componentize-js}"
[ -x "$cjs" ] || npm install --silent --no-audit --no-fund
"$cjs" app.js --wit wit -n {{world}}-base -d http fetch-event -o {{name}}.wasm
echo "built {{name}}.wasm"
