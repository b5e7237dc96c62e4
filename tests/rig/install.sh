#!/usr/bin/env bash
# Installs the test rig into .cache/ (git-ignored): LocalStack (Step Functions), pyspark (real
# spark-submit), cfn-lint and cargo-lambda (a Lambda Runtime API emulator), each in its own venv;
# plus, from Debian, shellcheck and
# systemd-analyze (deployment checks), file, readelf and qemu-aarch64-static with an aarch64 glibc
# (release check), debootstrap and systemd-nspawn (the service under real systemd), an MIT KDC and
# client tools (tests/rig/with-kdc.sh), and the MIT GSSAPI headers with libclang and pkg-config
# (the test Livy's Kerberos acceptor builds bindings to them), and promtool (package prometheus).
# Idempotent: a finished install leaves a stamp and is not redone. LocalStack is then patched
# by tests/rig/localstack-races.py (two races that lose activity tasks; see that file).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cache="$root/.cache"
mkdir -p "$cache"
python=${PYTHON:-python3}

# Pins: LocalStack >= 4.10 needs Python >= 3.13 (this machine has 3.11); its loose ranges
# pull versions that break it, so every troublesome dependency is pinned.
localstack_pins=("localstack-core[runtime]==4.9.2" "cbor2<5.7" "pyopenssl<24.3" "cryptography<44" "service_identity<24.2")
pyspark_pins=("pyspark==3.5.*")
cfn_lint_pins=("cfn-lint==1.*")
# The Lambda Runtime API emulator (`cargo lambda watch --only-lambda-apis`) that runs
# spark-job-resource in the e2e tests; the wheel carries a prebuilt binary.
cargo_lambda_pins=("cargo-lambda==1.9.2")

missing=()
command -v shellcheck >/dev/null || missing+=(shellcheck)
command -v systemd-analyze >/dev/null || missing+=(systemd)
command -v file >/dev/null || missing+=(file)
command -v readelf >/dev/null || missing+=(binutils)
command -v qemu-aarch64-static >/dev/null || missing+=(qemu-user-static)
[ -e /usr/aarch64-linux-gnu/lib/ld-linux-aarch64.so.1 ] || missing+=(libc6-arm64-cross)
command -v debootstrap >/dev/null || missing+=(debootstrap)
command -v systemd-nspawn >/dev/null || missing+=(systemd-container)
# The KDC tools live in sbin, which a non-root PATH may lack.
[ -x /usr/sbin/krb5kdc ] || missing+=(krb5-kdc)
[ -x /usr/sbin/kadmin.local ] || missing+=(krb5-admin-server)
command -v kinit >/dev/null || missing+=(krb5-user)
[ -e /usr/include/gssapi/gssapi_krb5.h ] || missing+=(libkrb5-dev)
compgen -G '/usr/lib/llvm-*/lib/libclang.so' >/dev/null || missing+=(libclang-dev)
command -v pkg-config >/dev/null || missing+=(pkg-config)
# promtool checks the alert rules and the worker's /metrics exposition.
command -v promtool >/dev/null || missing+=(prometheus)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "install these Debian packages first (as root): ${missing[*]}" >&2
    exit 1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

install_venv() {
  local dir=$1; shift
  local stamp="$dir/.installed"
  local want="$*"
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    return 0
  fi
  rm -rf "$dir"
  "$python" -m venv "$dir"
  "$dir/bin/pip" install --quiet --disable-pip-version-check "$@"
  echo "$want" > "$stamp"
}

install_venv "$cache/localstack" "${localstack_pins[@]}" &
ls_pid=$!
install_venv "$cache/pyspark" "${pyspark_pins[@]}" &
ps_pid=$!
install_venv "$cache/cfn-lint" "${cfn_lint_pins[@]}" &
cl_pid=$!
install_venv "$cache/cargo-lambda" "${cargo_lambda_pins[@]}" &
lambda_pid=$!
wait "$ls_pid"
# LocalStack 4.9.2 loses activity tasks to two races under load (AWS does not); close them.
"$cache/localstack/bin/python" "$root/tests/rig/localstack-races.py" "$cache/localstack"
wait "$ps_pid"
wait "$cl_pid"
wait "$lambda_pid"
echo "rig installed in $cache"
