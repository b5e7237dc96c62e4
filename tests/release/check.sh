#!/usr/bin/env bash
# Release check: every binary in the release folder runs on Amazon Linux 2 (glibc 2.26) and 2023,
# on its architecture. It fails when a binary is for another architecture, needs a glibc symbol
# newer than 2.26, needs a shared library beyond glibc's own, does not print its version (the
# aarch64 one runs under qemu-aarch64-static), or when a file does not match its .sha256.
#   tests/release/check.sh target/dist
set -uo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
dist=$(realpath "${1:-$repo/target/dist}")
name=spark-activity-worker
max_glibc=2.26
# glibc's own libraries and loaders: on every Amazon Linux.
base_libs=" libc.so.6 libm.so.6 libpthread.so.0 libdl.so.2 librt.so.1 ld-linux-x86-64.so.2 ld-linux-aarch64.so.1 "
version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$repo/Cargo.toml" | head -n 1)
passed=0 failed=0

pass() { passed=$((passed + 1)); echo "ok   $1"; }
fail() { failed=$((failed + 1)); echo "FAIL $1"; shift; printf '     %s\n' "$@"; }

# portable BINARY -> prints the problems that keep it from running on Amazon Linux 2.
portable() {
  local bin=$1 lib newest
  while read -r lib; do
    [[ "$base_libs" == *" $lib "* ]] || echo "needs $lib, which is not part of glibc"
  done < <(readelf -d "$bin" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p')
  newest=$(glibc_versions "$bin" | tail -n 1)
  if [ -n "$newest" ] && [ "$(printf '%s\n%s\n' "$newest" "$max_glibc" | sort -V | tail -n 1)" != "$max_glibc" ]; then
    echo "needs GLIBC_$newest (Amazon Linux 2 has $max_glibc)"
  fi
}
glibc_versions() { readelf --dyn-syms -W "$1" | grep -oE 'GLIBC_[0-9]+(\.[0-9]+)+' | sed 's/GLIBC_//' | sort -uV; }

# The check must be able to fail: a program built against this machine's glibc (2.34 or newer
# stamps __libc_start_main with its own version) and one that links a library beyond glibc.
probe=$(mktemp -d)
trap 'rm -rf "$probe"' EXIT
printf 'int main(void) { return 0; }\n' > "$probe/probe.c"
gcc -o "$probe/probe" "$probe/probe.c"
newer=$(portable "$probe/probe")
foreign=$(portable "$(command -v curl)")
if [[ "$newer" == *"needs GLIBC_2."* ]] && [[ "$foreign" == *"needs libcurl"* ]]; then
  pass "the check rejects a newer glibc symbol and a library beyond glibc (self-test)"
else
  fail "the check rejects a newer glibc symbol and a library beyond glibc (self-test)" "host-built: ${newer:-accepted}" "curl: ${foreign:-accepted}"
fi

for arch in x86_64 aarch64; do
  bin="$dist/$name-$arch"
  if [ ! -f "$bin" ]; then fail "$name-$arch is in the release" "missing: $bin"; continue; fi
  echo "---- $name-$arch"
  echo "file:  $(file -b "$bin")"
  echo "NEEDED: $(readelf -d "$bin" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' | tr '\n' ' ')"
  echo "GLIBC symbol versions: $(glibc_versions "$bin" | tr '\n' ' ')"
  case $arch in
    x86_64) want="ELF 64-bit LSB pie executable, x86-64"; run=("$bin"); echo "ldd:"; ldd "$bin" | sed 's/^/       /' ;;
    aarch64) want="ELF 64-bit LSB pie executable, ARM aarch64"; run=(qemu-aarch64-static -L /usr/aarch64-linux-gnu "$bin")
             echo "qemu: $(qemu-aarch64-static --version | head -n 1)" ;;
  esac
  if [[ "$(file -b "$bin")" == "$want"* ]]; then pass "$name-$arch is $want"; else fail "$name-$arch is $want" "$(file -b "$bin")"; fi
  problems=$(portable "$bin")
  if [ -z "$problems" ]; then
    pass "$name-$arch needs only glibc <= $max_glibc"
  else
    fail "$name-$arch needs only glibc <= $max_glibc" "$problems"
  fi
  out=$("${run[@]}" --version 2>&1)
  echo "$(basename "${run[0]}") ... --version: $out"
  if [[ "$out" == "$name $version "* ]]; then pass "$name-$arch --version runs (${run[0]##*/})"; else fail "$name-$arch --version runs (${run[0]##*/})" "$out"; fi
done

# Every file of the release has its checksum, and it matches (install.sh verifies the same).
if (
  cd "$dist" || exit 1
  missing=()
  for f in "$name-x86_64" "$name-aarch64" "$name.service" "$name-systemd219.service" install.sh; do
    [ -f "$f.sha256" ] || missing+=("$f.sha256")
  done
  if [ ${#missing[@]} -eq 0 ] && out=$(sha256sum --check --strict ./*.sha256 2>&1); then
    echo "checksums: all match"
  else
    echo "checksums: missing ${missing[*]:-none}; $out"; exit 1
  fi
)
then pass "every release file matches its .sha256"; else fail "every release file matches its .sha256"; fi

echo "release: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
