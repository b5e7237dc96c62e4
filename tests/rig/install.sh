#!/usr/bin/env bash
# Installs the test rig's Python parts into .cache/ (git-ignored): LocalStack (Step Functions) and
# pyspark (real spark-submit). Idempotent: a finished install leaves a stamp and is not redone.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cache="$root/.cache"
mkdir -p "$cache"
python=${PYTHON:-python3}

# Pins from shared/reference/test-rig.md: LocalStack >= 4.10 needs Python >= 3.13; its loose ranges
# pull versions that break it, so every troublesome dependency is pinned.
localstack_pins=("localstack-core[runtime]==4.9.2" "cbor2<5.7" "pyopenssl<24.3" "cryptography<44" "service_identity<24.2")
pyspark_pins=("pyspark==3.5.*")

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
wait "$ls_pid"
wait "$ps_pid"
echo "rig installed in $cache"
