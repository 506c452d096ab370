#!/usr/bin/env bash
# Fails unless each vendored crate in patches/ is exactly the crates.io release
# plus the stored diff: patches/<crate> == <crate>-<version>.crate, trimmed to
# what cargo builds, with patches/<crate>.diff applied. Offline when the .crate
# is in cargo's cache (~/.cargo/registry/cache, where any build of the
# unpatched crate or `cargo fetch` puts it); otherwise it is fetched once with
# `cargo fetch` in a scratch project. The .crate's SHA-256 is checked against
# the crates.io index checksum recorded below.
#
#   scripts/verify-vendored.sh          check (CI)
#   scripts/verify-vendored.sh --write  regenerate patches/<crate>.diff from
#                                       the vendored copy (after changing it)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
mode=${1:-check}
cargo_home=${CARGO_HOME:-$HOME/.cargo}

# name version sha256-of-the-.crate (crates.io index checksum) kept-paths
crates=(
  "lapin 4.12.3 3212643cc0031d982f81a62360998106268587237d81d6e8501a0a323e13b656 Cargo.toml LICENSE README.md build.rs src templates"
  "amq-protocol-types 10.6.3 8a268a50e97bd5d52292a8b96636f6436215def6f3d128fb8218318f5feb4c33 Cargo.toml LICENSE README.md src"
)

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failed=0
fail() {
  echo "verify-vendored: $*" >&2
  failed=1
}

find_crate() { # name version -> path of the cached .crate, or nothing
  compgen -G "$cargo_home/registry/cache/*/$1-$2.crate" | head -n1 || true
}

fetch_crate() { # name version: `cargo fetch` of a scratch project needing it
  local dir="$work/fetch-$1"
  mkdir -p "$dir/src"
  printf '[package]\nname = "vendored-fetch"\nversion = "0.0.0"\nedition = "2021"\n\n[dependencies]\n%s = { version = "=%s", default-features = false }\n' \
    "$1" "$2" >"$dir/Cargo.toml"
  : >"$dir/src/lib.rs"
  (cd "$dir" && cargo fetch --quiet) >&2
}

for entry in "${crates[@]}"; do
  read -r name version sum keep <<<"$entry"
  vendored="patches/$name"
  diff_file="patches/$name.diff"
  crate=$(find_crate "$name" "$version")
  if [ -z "$crate" ]; then
    echo "verify-vendored: $name-$version.crate not cached: cargo fetch" >&2
    fetch_crate "$name" "$version" || { fail "cannot fetch $name $version"; continue; }
    crate=$(find_crate "$name" "$version")
    [ -n "$crate" ] || { fail "$name-$version.crate still not in $cargo_home/registry/cache"; continue; }
  fi
  if [ "$(sha256sum "$crate" | cut -d' ' -f1)" != "$sum" ]; then
    fail "$crate: SHA-256 is not the crates.io checksum $sum"
    continue
  fi

  # The registry crate, trimmed to the kept paths: "a"; our copy, the same
  # paths (and nothing else may be there): "b".
  mkdir -p "$work/$name/unpacked" "$work/$name/a" "$work/$name/b"
  tar -xzf "$crate" -C "$work/$name/unpacked"
  pristine="$work/$name/unpacked/$name-$version"
  for path in $keep; do
    [ -e "$pristine/$path" ] && cp -a "$pristine/$path" "$work/$name/a/"
    [ -e "$vendored/$path" ] && cp -a "$vendored/$path" "$work/$name/b/"
  done
  # Anything in the copy outside the kept paths (a build or the crate's own
  # tests leave Cargo.lock and target/, which cargo does not use here).
  extra=$(cd "$vendored" && find . -mindepth 1 -maxdepth 1 \
    ! -name Cargo.lock ! -name target -printf '%P\n' | sort)
  for path in $extra; do
    case " $keep " in
      *" $path "*) ;;
      *) fail "$vendored/$path is not one of the kept paths ($keep)" ;;
    esac
  done

  if [ "$mode" = --write ]; then
    # Without the files' times, so the diff is the same from any checkout.
    (cd "$work/$name" && diff -ruN a b) |
      sed -E 's/^((---|\+\+\+) [^\t]*)\t.*$/\1/' >"$diff_file" || true
    echo "verify-vendored: wrote $diff_file ($(grep -c '^[-+][^-+]' "$diff_file") changed lines)"
    continue
  fi

  [ -f "$diff_file" ] || { fail "$diff_file is missing"; continue; }
  if ! patch --quiet -p1 -d "$work/$name/a" --no-backup-if-mismatch <"$diff_file" >"$work/$name/patch.log" 2>&1; then
    cat "$work/$name/patch.log" >&2
    fail "$diff_file does not apply to $name-$version.crate"
    continue
  fi
  if diff -r "$work/$name/a" "$work/$name/b" >"$work/$name/diff.log"; then
    echo "verify-vendored: $vendored = $name $version from crates.io + $diff_file"
  else
    sed 's|'"$work/$name"'/a|registry+diff|g; s|'"$work/$name"'/b|'"$vendored"'|g' "$work/$name/diff.log" | head -n 40 >&2
    fail "$vendored differs from $name $version + $diff_file (scripts/verify-vendored.sh --write regenerates the diff after a deliberate change)"
  fi
done

exit "$failed"
