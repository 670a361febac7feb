#!/usr/bin/env bash
# Builds {{name}}.wasm, a WASI 0.2 component, from app.py (written by `cannon-host new`).
# Uses componentize-py from $COMPONENTIZE_PY or PATH, else installs it from PyPI into .venv/.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
cpy="${COMPONENTIZE_PY:-$(command -v componentize-py || true)}"
if [ -z "$cpy" ]; then
    if [ ! -x .venv/bin/componentize-py ]; then
        python3 -m venv .venv
        .venv/bin/python -m pip install -q --disable-pip-version-check componentize-py==0.25.1
    fi
    cpy=.venv/bin/componentize-py
fi
"$cpy" -d wit -w {{world}}-base componentize app -o {{name}}.wasm
echo "built {{name}}.wasm"
