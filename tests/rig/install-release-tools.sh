#!/usr/bin/env bash
# Installs what `make release` needs to build Linux binaries that run on Amazon Linux 2 (glibc
# 2.26) and 2023, on x86_64 and aarch64: the two Rust targets, and zig as the C compiler and
# linker (cargo-zigbuild links against glibc 2.26's symbol versions), from PyPI into .cache/zig.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
venv="$root/.cache/zig"
pins=("ziglang==0.17.1" "cargo-zigbuild==0.24.1")
python=${PYTHON:-python3}

rustup target add x86_64-unknown-linux-gnu aarch64-unknown-linux-gnu >/dev/null 2>&1 \
  || { echo "rustup target add failed (x86_64/aarch64-unknown-linux-gnu)" >&2; exit 1; }
if [ ! -f "$venv/.installed" ] || [ "$(cat "$venv/.installed")" != "${pins[*]}" ]; then
  rm -rf "$venv"
  "$python" -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "${pins[@]}"
  echo "${pins[*]}" > "$venv/.installed"
fi
