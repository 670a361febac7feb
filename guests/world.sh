# Sourced by build-python.sh and build-js.sh: per-guest WIT worlds.
#
# componentize-py and componentize-js keep every import of the world they build against,
# and cannon refuses a component that imports `kv` or `taskback` without `allow:` in the
# compose file. So each guest declares what it needs, in its source:
#     # cannon-world: shell          (task when absent)
#     # cannon-allow: kv, taskback   (nothing when absent)
# and is built against a world `guest` = `task-base`/`shell-base` plus exactly those imports.

# world_of FILE -> task | shell
world_of() {
  local w
  w=$(sed -n 's/^[#/ ]*cannon-world: *\([a-z-]*\).*/\1/p' "$1" | sed -n 1p)
  case "${w:-task}" in
    task|shell) echo "${w:-task}" ;;
    *) echo "$1: cannon-world must be task or shell, not '$w'" >&2; return 1 ;;
  esac
}

# allow_of FILE -> space-separated grants (kv, taskback, streams, http). `http` adds no cannon import:
# it tells build-js.sh to keep componentize-js's wasi:http (fetch), see docs/guests.md.
allow_of() {
  local line cap out=""
  line=$(sed -n 's/^[#/ ]*cannon-allow: *\(.*\)$/\1/p' "$1" | sed -n 1p)
  for cap in ${line//,/ }; do
    case "$cap" in
      kv|taskback|http|streams) out="$out $cap" ;;
      *) echo "$1: cannon-allow takes kv, taskback, streams and/or http, not '$cap'" >&2; return 1 ;;
    esac
  done
  echo "${out# }"
}

# guest_wit WIT_DIR KIND ALLOW OUT_DIR: OUT_DIR gets the cannon WIT plus `world guest`.
guest_wit() {
  local wit=$1 kind=$2 allow=$3 out=$4 cap
  rm -rf "$out" && mkdir -p "$out"
  cp "$wit"/*.wit "$out/"
  {
    printf '\n/// Written by guests/world.sh for one guest.\nworld guest {\n  include %s-base;\n' "$kind"
    for cap in $allow; do [ "$cap" = http ] || printf '  import %s;\n' "$cap"; done
    printf '}\n'
  } >>"$out/cannon.wit"
}
