#!/usr/bin/env bash
# Release check: every binary in the release folder runs on Amazon Linux 2 (glibc 2.26) and 2023,
# on its architecture. It fails when a binary is for another architecture, needs a glibc symbol
# newer than 2.26, needs a shared library beyond glibc's own, does not print its version (the
# aarch64 one runs under qemu-aarch64-static), does not allocate with jemalloc as configured,
# when a spark-job-resource Lambda zip holds anything but one executable `bootstrap` held to the
# same rules that answers a request under a Lambda Runtime API emulator (the arm64 one under
# qemu), or when a file does not match its .sha256.
#   tests/release/check.sh target/dist
set -uo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
dist=$(realpath "${1:-$repo/target/dist}")
name=spark-activity-worker
lambda=spark-job-resource
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

# allocator_settings RUN... -> the settings jemalloc took in `RUN... --version`, space-separated:
# asked through its own environment variable, it prints them (that one aside); a program without
# it prints none.
allocator_settings() {
  _RJEM_MALLOC_CONF=confirm_conf:true "$@" --version 2>&1 | sed -n 's/^<jemalloc>: -- Set conf value: //p' | grep -v '^confirm_conf:' | tr '\n' ' '
}

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
# ... and the allocator's: a program on glibc's malloc (the host-built one) shows no settings.
if [ -z "$(allocator_settings "$probe/probe")" ]; then
  pass "the check finds no jemalloc settings in a program without jemalloc (self-test)"
else
  fail "the check finds no jemalloc settings in a program without jemalloc (self-test)" "$(allocator_settings "$probe/probe")"
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
  # The allocator: jemalloc with the settings of .cargo/config.toml built in.
  conf=$(allocator_settings "${run[@]}")
  if [[ " $conf" == *" narenas:1 "* && " $conf" == *" dirty_decay_ms:1000 "* ]]; then
    pass "$name-$arch allocates with jemalloc: one arena, 1 s decay ($conf)"
  else
    fail "$name-$arch allocates with jemalloc: one arena, 1 s decay" "settings taken: ${conf:-none (not jemalloc?)}"
  fi
done

# answers_a_request [RUNNER...] BOOTSTRAP -> prints the answer PUT to the ResponseURL; fails
# unless it is the SUCCESS of the Delete sent. The emulator and a recorder run on loopback ports.
answers_a_request() {
  local emulator="$repo/.cache/cargo-lambda/bin/cargo-lambda" work port rec_port pids=() event rc
  [ -x "$emulator" ] || { echo "cargo-lambda missing: tests/rig/install.sh installs it"; return 1; }
  work=$(mktemp -d)
  free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
  port=$(free_port)
  rec_port=$(free_port)
  python3 - "$rec_port" "$work/answer.json" <<'PY' &
import http.server, sys
class Recorder(http.server.BaseHTTPRequestHandler):
    def do_PUT(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        with open(sys.argv[2], "wb") as f:
            f.write(body)
        self.send_response(200)
        self.end_headers()
    def log_message(self, *args):
        pass
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), Recorder).serve_forever()
PY
  pids+=($!)
  (cd "$repo" && exec "$emulator" lambda watch --only-lambda-apis --ignore-changes -A 127.0.0.1 -P "$port") \
    >"$work/emulator.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.2
  done
  env -i PATH="$PATH" AWS_LAMBDA_RUNTIME_API="http://127.0.0.1:$port/.rt" AWS_LAMBDA_FUNCTION_NAME=_ \
    AWS_LAMBDA_FUNCTION_VERSION=1 AWS_LAMBDA_FUNCTION_MEMORY_SIZE=128 ALLOWED_LIVY_HOSTS='*.compute.internal' \
    "$@" >"$work/function.log" 2>&1 &
  pids+=($!)
  event='{"RequestType":"Delete","ResponseURL":"http://127.0.0.1:'"$rec_port"'/r?X-Amz-Signature=0","StackId":"arn:aws:cloudformation:us-east-1:123456789012:stack/release-check/0","RequestId":"release-check-1","ResourceType":"Custom::SparkJob","LogicalResourceId":"SparkPi","PhysicalResourceId":"SparkPi-000000000000-not-created","ResourceProperties":{}}'
  timeout 120 "$emulator" lambda invoke -A 127.0.0.1 -P "$port" --data-ascii "$event" >"$work/invoke.out" 2>&1
  rc=$?
  kill "${pids[@]}" 2>/dev/null
  wait "${pids[@]}" 2>/dev/null
  if [ "$rc" -eq 0 ] && grep -q '"Status":"SUCCESS"' "$work/answer.json" 2>/dev/null \
     && grep -q '"RequestId":"release-check-1"' "$work/answer.json"; then
    cat "$work/answer.json"
    rm -rf "$work"
    return 0
  fi
  echo "invoke (exit $rc): $(cat "$work/invoke.out")"
  echo "answer: $(cat "$work/answer.json" 2>/dev/null)"
  echo "function: $(tail -n 5 "$work/function.log")"
  rm -rf "$work"
  return 1
}

# The spark-job-resource Lambda function (provided.al2023): a zip per Lambda architecture holding
# one file, `bootstrap`, executable, as Lambda runs it, that answers a request.
for lambda_arch in arm64 x86_64; do
  z="$lambda-$lambda_arch.zip"
  if [ ! -f "$dist/$z" ]; then fail "$z is in the release" "missing: $dist/$z"; continue; fi
  echo "---- $z"
  case $lambda_arch in
    x86_64) want="ELF 64-bit LSB pie executable, x86-64"; run=() ;;
    arm64) want="ELF 64-bit LSB pie executable, ARM aarch64"; run=(qemu-aarch64-static -L /usr/aarch64-linux-gnu) ;;
  esac
  # Lists "NAME MODE" (file type and permissions, octal) of every entry, and extracts `bootstrap`
  # with its mode, as Lambda unpacks the zip.
  bin="$probe/$lambda_arch/bootstrap"
  entries=$(python3 - "$dist/$z" "$probe/$lambda_arch" <<'PY'
import os, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    for e in z.infolist():
        print(e.filename, format(e.external_attr >> 16, "o"))
    if "bootstrap" in z.namelist():
        path = z.extract("bootstrap", sys.argv[2])
        os.chmod(path, (z.getinfo("bootstrap").external_attr >> 16) & 0o7777)
PY
  )
  echo "entries: ${entries//$'\n'/; }"
  if [ "$(cut -d' ' -f1 <<<"$entries")" = bootstrap ]; then pass "$z holds exactly one file, bootstrap"; else fail "$z holds exactly one file, bootstrap" "$entries"; fi
  # 100755: a regular file, rwxr-xr-x (a zip without Unix attributes reads 0 here).
  if [ "$(sed -n 's/^bootstrap //p' <<<"$entries")" = 100755 ] && [ -x "$bin" ]; then
    pass "$z: bootstrap is an executable file (mode 0755)"
  else
    fail "$z: bootstrap is an executable file (mode 0755)" "$entries"
  fi
  [ -f "$bin" ] || continue
  echo "file:  $(file -b "$bin")"
  echo "NEEDED: $(readelf -d "$bin" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' | tr '\n' ' ')"
  echo "GLIBC symbol versions: $(glibc_versions "$bin" | tr '\n' ' ')"
  if [[ "$(file -b "$bin")" == "$want"* ]]; then pass "$z: bootstrap is $want"; else fail "$z: bootstrap is $want" "$(file -b "$bin")"; continue; fi
  problems=$(portable "$bin")
  if [ -z "$problems" ]; then pass "$z: bootstrap needs only glibc <= $max_glibc"; else fail "$z: bootstrap needs only glibc <= $max_glibc" "$problems"; fi
  # It answers a request as Lambda runs it: under cargo-lambda's Runtime API emulator, a Delete
  # of a resource whose Create made nothing, answered SUCCESS on its ResponseURL (a recorder here).
  if answer=$(answers_a_request "${run[@]}" "$bin"); then
    pass "$z: bootstrap answers a Delete under the Lambda Runtime API (${run[0]:-natively})"
  else
    fail "$z: bootstrap answers a Delete under the Lambda Runtime API (${run[0]:-natively})" "$answer"
  fi
  echo "answer: $answer"
done

# Every file of the release has its checksum, and it matches (install.sh verifies the same).
if (
  cd "$dist" || exit 1
  missing=() out=
  for f in "$name-x86_64" "$name-aarch64" "$name.service" "$name-systemd219.service" install.sh \
           "$lambda-arm64.zip" "$lambda-x86_64.zip" "$lambda.yaml"; do
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
