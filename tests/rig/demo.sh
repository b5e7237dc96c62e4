#!/usr/bin/env bash
# `make demo`, run inside tests/rig/with-localstack.sh: starts the Livy-compatible server and the
# worker, runs the original project's README state machine through real Spark, prints the
# execution output and the "Pi is roughly" line, then stops everything.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
bin="$root/target/debug"
work=$(mktemp -d "${TMPDIR:-/tmp}/spark-demo.XXXXXX")
pids=()
cleanup() {
  # The worker lets open polls return before it exits (up to 60 s, so no task is lost); this
  # demo's activity has no other executions, so a second signal may end it at once.
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  sleep 2
  for p in "${pids[@]}"; do kill -INT "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

pi=$(ls "$root"/.cache/pyspark/lib/python3*/site-packages/pyspark/examples/src/main/python/pi.py)
PYSPARK_PYTHON="$root/.cache/pyspark/bin/python" \
  "$bin/livy-server" --port 0 --spark-submit "$root/.cache/pyspark/bin/spark-submit" >"$work/livy.out" 2>"$work/livy.log" &
pids+=($!)
for _ in $(seq 1 100); do grep -q '^listening on' "$work/livy.out" 2>/dev/null && break; sleep 0.1; done
livy_port=$(sed -n 's/^listening on 127.0.0.1:\([0-9]*\)$/\1/p' "$work/livy.out")
[ -n "$livy_port" ] || { echo "livy-server did not start" >&2; cat "$work/livy.log" >&2; exit 1; }
echo "livy-server listening on 127.0.0.1:$livy_port (spark-submit from pyspark, local[1])"

py="$root/.cache/localstack/bin/python"   # has boto3, a LocalStack dependency
activity=$("$py" "$root/tests/rig/demo.py" create-activity)
echo "activity: $activity"

"$bin/spark-activity-worker" run --activity-arn "$activity" --livy-url "http://127.0.0.1:$livy_port" \
  --default-file "file://$pi" --sync-interval 1s --heartbeat-interval 5s 2>"$work/worker.log" &
pids+=($!)

"$py" "$root/tests/rig/demo.py" run "$activity" "$livy_port" "http://127.0.0.1:$livy_port"
