#!/usr/bin/env bash
# Installs the cargo subcommands named as arguments (cargo-fuzz, cargo-deny) at pinned versions
# into .cache/cargo-tools/bin, built with `cargo install --locked`. A tool already there at its
# pinned version is not rebuilt. Prints nothing when there is nothing to do.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
tools="$root/.cache/cargo-tools"
declare -A pins=([cargo-fuzz]=0.13.2 [cargo-deny]=0.20.2)

[ $# -gt 0 ] || { echo "usage: $0 cargo-fuzz|cargo-deny ..." >&2; exit 2; }
for tool in "$@"; do
  version=${pins[$tool]:-}
  [ -n "$version" ] || { echo "$0: no pinned version for $tool" >&2; exit 2; }
  # `cargo-fuzz --version` prints "cargo-fuzz 0.13.2"; `cargo-deny --version` "cargo-deny 0.20.2".
  if [ "$("$tools/bin/$tool" --version 2>/dev/null)" = "$tool $version" ]; then
    continue
  fi
  echo "installing $tool $version into $tools (cargo install --locked)" >&2
  cargo install --locked --quiet --root "$tools" --version "=$version" "$tool"
  got=$("$tools/bin/$tool" --version)
  [ "$got" = "$tool $version" ] || { echo "$0: installed $tool reports '$got', not $version" >&2; exit 1; }
done
