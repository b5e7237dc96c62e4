#!/usr/bin/env bash
# Runs a command with LocalStack Step Functions up on a free loopback port, then stops LocalStack.
# The command sees AWS_ENDPOINT_URL, AWS_REGION and test credentials in its environment.
#   tests/rig/with-localstack.sh cargo test --test e2e
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
venv="$root/.cache/localstack"
[ -x "$venv/bin/python" ] || { echo "LocalStack is not installed: run tests/rig/install.sh" >&2; exit 1; }

port=$("$venv/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
work=$(mktemp -d "${TMPDIR:-/tmp}/localstack.XXXXXX")
log="$work/localstack.log"

# Host mode, Step Functions only, no DNS server, no telemetry (LocalStack runs from its venv, no Docker).
SERVICES=stepfunctions GATEWAY_LISTEN="127.0.0.1:$port" DNS_ADDRESS=0 DISABLE_EVENTS=1 \
  LOCALSTACK_VOLUME_DIR="$work/volume" SKIP_SSL_CERT_DOWNLOAD=1 \
  setsid "$venv/bin/python" -m localstack.runtime.main >"$log" 2>&1 &
ls_pid=$!

stop() {
  kill -TERM -- "-$ls_pid" 2>/dev/null || true
  for _ in $(seq 1 50); do kill -0 "$ls_pid" 2>/dev/null || break; sleep 0.2; done
  kill -KILL -- "-$ls_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap stop EXIT

endpoint="http://127.0.0.1:$port"
for _ in $(seq 1 120); do
  if curl -fsS "$endpoint/_localstack/health" 2>/dev/null | grep -q '"stepfunctions": *"\(available\|running\)"'; then
    ready=1; break
  fi
  kill -0 "$ls_pid" 2>/dev/null || break
  sleep 0.5
done
if [ -z "${ready:-}" ]; then
  echo "LocalStack did not become ready; its log:" >&2
  tail -n 50 "$log" >&2
  exit 1
fi
echo "LocalStack Step Functions ready at $endpoint" >&2

export AWS_ENDPOINT_URL="$endpoint" AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1 \
  AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test LOCALSTACK_LOG="$log"
"$@"
