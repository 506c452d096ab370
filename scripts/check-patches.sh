#!/usr/bin/env bash
# Fails unless every [patch.crates-io] entry of Cargo.toml is what the build
# uses. A patch whose version no longer matches the one resolved (a `cargo
# update` that brought lapin 4.12.4, say) is not an error to cargo: it warns
# "Patch ... was not used in the crate graph", records it under
# [[patch.unused]] in Cargo.lock, and builds the crates.io release, silently
# dropping our fix. Offline: reads only Cargo.toml, Cargo.lock and the local
# registry cache.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
failed=0
fail() {
  echo "check-patches: $*" >&2
  failed=1
}

if grep -q '^\[\[patch\.unused\]\]' Cargo.lock; then
  fail "Cargo.lock records a [patch] that is not used:"
  sed -n '/^\[\[patch\.unused\]\]/,$p' Cargo.lock >&2
fi

# "name path" for each `name = { path = "..." }` under [patch.crates-io].
patches=$(awk '
  /^\[patch\.crates-io\]/ { on = 1; next }
  /^\[/ { on = 0 }
  on && /^[A-Za-z0-9_-]+[ \t]*=.*path[ \t]*=/ {
    match($0, /path[ \t]*=[ \t]*"[^"]*"/)
    path = substr($0, RSTART, RLENGTH)
    sub(/^path[ \t]*=[ \t]*"/, "", path); sub(/"$/, "", path)
    print $1, path
  }' Cargo.toml)
[ -n "$patches" ] || fail "no path patch found under [patch.crates-io] in Cargo.toml"

err=$(mktemp)
trap 'rm -f "$err"' EXIT
# Every package of the resolved graph (this platform, all dependency
# kinds), once; `--target all` would need every Windows crate downloaded.
graph=$(cargo tree --locked --offline -e all --prefix none \
  --format '{p}' 2>"$err" | sed 's/ (\*)$//' | sort -u) || {
  cat "$err" >&2
  fail "cargo tree could not resolve the locked graph offline"
  graph=""
}
if grep -q 'was not used in the crate graph' "$err"; then
  fail "cargo reports an unused patch:"
  grep 'was not used in the crate graph' "$err" >&2
fi

while read -r name path; do
  [ -n "$name" ] && [ -n "$graph" ] || continue
  found=$(grep -E "^${name} v" <<<"$graph" || true)
  if [ -z "$found" ]; then
    fail "$name is patched but not in the dependency graph"
    continue
  fi
  # A path package is shown with its directory; a registry one without.
  while read -r line; do
    case "$line" in
      *"($root/$path)"*) echo "check-patches: $line is the patched copy" ;;
      *) fail "$line is not the patched copy in $path" ;;
    esac
  done <<<"$found"
done <<<"$patches"

exit "$failed"
