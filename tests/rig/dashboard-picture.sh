#!/usr/bin/env bash
# `make dashboard-picture`, run inside tests/rig/with-localstack.sh: docs/dashboard.png, the
# Grafana dashboard of monitoring/ drawn from real data. Starts the Livy-compatible server, the
# worker with --metrics-listen, and a Prometheus scraping it every 2 s with monitoring/alerts.yaml
# loaded; runs a stream of executions on two activities for DASHBOARD_SECONDS (180): mostly Spark
# jobs of a few seconds, some that die, one invalid input, two stopped by an operator while they
# run, and a Livy outage of 15 s; then draws every panel from Prometheus's query API.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
bin="$root/target/debug"
out="$root/docs/dashboard.png"
seconds=${DASHBOARD_SECONDS:-180}
scrape=2
work=$(mktemp -d "${TMPDIR:-/tmp}/dashboard-picture.XXXXXX")
pids=()
cleanup() {
  # The worker lets open polls return before it exits (up to 60 s); a second signal ends it at
  # once, as nothing here needs its tasks any more.
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  sleep 2
  for p in "${pids[@]}"; do kill -INT "$p" 2>/dev/null || true; done
  for _ in $(seq 1 50); do
    alive=0
    for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
    [ "$alive" -eq 0 ] && break
    sleep 0.2
  done
  for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# matplotlib in its own venv, like the rest of the rig under .cache/.
venv="$root/.cache/render-venv"
want="matplotlib==3.9.*"
if [ ! -f "$venv/.installed" ] || [ "$(cat "$venv/.installed")" != "$want" ]; then
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "$want"
  echo "$want" > "$venv/.installed"
fi

py="$root/.cache/localstack/bin/python"   # has boto3, a LocalStack dependency
free_port() { "$py" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Drives Step Functions: `setup DIR` makes the activities and their state machines and prints the
# activity ARNs; `run DIR LIVY_URL SECONDS` streams executions and the Livy faults.
driver=$(cat <<'PY'
import json, os, random, sys, time, urllib.request
import boto3

sfn = boto3.client("stepfunctions")
mode, work = sys.argv[1], sys.argv[2]
setup_file = os.path.join(work, "setup.json")
# Per activity: the name the dashboard shows, and how long its jobs run (seconds).
ACTIVITIES = {"orders-nightly": (4, 14), "clickstream-hourly": (2, 6)}

if mode == "setup":
    setup = {}
    for name in ACTIVITIES:
        arn = sfn.create_activity(name=name)["activityArn"]
        sm = sfn.create_state_machine(
            name=f"{name}-etl",
            definition=json.dumps({"StartAt": "Spark", "States": {"Spark": {
                "Type": "Task", "Resource": arn, "HeartbeatSeconds": 20, "TimeoutSeconds": 600,
                "End": True}}}),
            roleArn="arn:aws:iam::000000000000:role/stepfunctions")["stateMachineArn"]
        setup[name] = {"activity": arn, "state_machine": sm}
    json.dump(setup, open(setup_file, "w"))
    print(",".join(s["activity"] for s in setup.values()))
    sys.exit(0)

_, _, _, livy, seconds = sys.argv
seconds = float(seconds)
setup = json.load(open(setup_file))
rng = random.Random(2024)


def faults(**settings):
    req = urllib.request.Request(f"{livy}/_control/faults", data=json.dumps(settings).encode(),
                                 headers={"Content-Type": "application/json"}, method="POST")
    urllib.request.urlopen(req, timeout=5).read()


def start(name, spark_input):
    return sfn.start_execution(stateMachineArn=setup[name]["state_machine"],
                               input=json.dumps(spark_input))["executionArn"]


def job(name):
    lo, hi = ACTIVITIES[name]
    params = f"start={rng.uniform(0.5, 2.5):.1f}&run={rng.uniform(lo, hi):.1f}&app=1"
    if rng.random() < 0.12:
        return {"File": f"sim:dead?{params}&msg=OutOfMemoryError", "Name": f"{name}-etl"}
    return {"File": f"sim:success?{params}", "Name": f"{name}-etl"}


t0 = time.time()
started, to_stop = [], []
done = set()
latency_until = 0
while (now := time.time() - t0) < seconds:
    # Events at fixed points of the run, each once.
    if now >= 35 and "invalid" not in done:
        done.add("invalid")
        started.append(start("orders-nightly", {"File": "sim:success", "NumExecutor": 2}))
    for at in (50, 120):
        if now >= at and f"stop-{at}" not in done:
            done.add(f"stop-{at}")
            to_stop.append((now + 12, start("orders-nightly", {"File": "sim:success?run=60", "Name": "backfill"})))
    for due, arn in [s for s in to_stop if s[0] <= now]:
        to_stop.remove((due, arn))
        sfn.stop_execution(executionArn=arn, error="Operator.Stopped", cause="stopped from the console")
        started.append(arn)
    if now >= 85 and "outage" not in done:
        done.add("outage")
        faults(error_rate=1.0, error_status=503)
    if now >= 100 and "recovered" not in done:
        done.add("recovered")
        faults()
    # Livy's latency wanders between quiet and busy spells.
    if "outage" not in done or "recovered" in done:
        if now >= latency_until:
            latency_until = now + 10
            faults(latency_ms=rng.choice([2, 5, 10, 25, 60, 120]))
    name = rng.choices(list(ACTIVITIES), weights=[3, 2])[0]
    started.append(start(name, job(name)))
    time.sleep(rng.uniform(0.8, 2.6))

statuses = {}
for arn in started:
    status = sfn.describe_execution(executionArn=arn)["status"]
    statuses[status] = statuses.get(status, 0) + 1
print(f"{len(started)} executions: {json.dumps(statuses, sort_keys=True)}")
PY
)

livy_log="$work/livy.log"
"$bin/livy-server" --port 0 >"$work/livy.out" 2>"$livy_log" &
pids+=($!)
for _ in $(seq 1 100); do grep -q '^listening on' "$work/livy.out" 2>/dev/null && break; sleep 0.1; done
livy_port=$(sed -n 's/^listening on 127.0.0.1:\([0-9]*\)$/\1/p' "$work/livy.out")
[ -n "$livy_port" ] || { echo "livy-server did not start" >&2; cat "$livy_log" >&2; exit 1; }
livy="http://127.0.0.1:$livy_port"

activities=$("$py" -c "$driver" setup "$work")
metrics_port=$(free_port)
"$bin/spark-activity-worker" run --activity-arn "$activities" --livy-url "$livy" --yarn-url "$livy" \
  --state-dir "$work/state" --metrics-listen "127.0.0.1:$metrics_port" --max-concurrent-tasks 8 \
  --sync-interval 1s --heartbeat-interval 2s 2>"$work/worker.log" &
pids+=($!)

prom_port=$(free_port)
prom="http://127.0.0.1:$prom_port"
cat > "$work/prometheus.yml" <<EOF
global:
  scrape_interval: ${scrape}s
  evaluation_interval: ${scrape}s
rule_files: ["$root/monitoring/alerts.yaml"]
scrape_configs:
  - job_name: spark-activity-worker
    static_configs:
      - targets: ["127.0.0.1:$metrics_port"]
EOF
prometheus --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/tsdb" \
  --web.listen-address="127.0.0.1:$prom_port" --log.level=warn >"$work/prometheus.log" 2>&1 &
pids+=($!)

query() { curl -fsS --get "$prom/api/v1/query" --data-urlencode "query=$1"; }
for _ in $(seq 1 150); do
  query 'up{job="spark-activity-worker"} == 1' 2>/dev/null | grep -q '"value"' && up=1 && break
  sleep 0.2
done
[ -n "${up:-}" ] || { echo "Prometheus does not scrape the worker" >&2; tail -n 20 "$work/prometheus.log" "$work/worker.log" >&2; exit 1; }
echo "worker on 127.0.0.1:$metrics_port, scraped by Prometheus at $prom; running executions for ${seconds}s" >&2

# A quiet stretch first, so the picture shows the worker idle before the night's jobs.
start=$(date +%s)
sleep 10
"$py" -c "$driver" run "$work" "$livy" "$seconds" >&2
sleep $((2 * scrape))
end=$(date +%s)

# Prometheus evaluated the rules all along: a rule it could not evaluate fails the picture.
curl -fsS "$prom/api/v1/rules" | "$py" -c '
import json, sys
rules = [r for g in json.load(sys.stdin)["data"]["groups"] for r in g["rules"]]
active = ", ".join("%s (%s)" % (r["name"], r["state"]) for r in rules if r["state"] != "inactive")
print("%d alert rules evaluated; firing or pending: %s" % (len(rules), active or "none"), file=sys.stderr)
bad = ["%s: %s" % (r["name"], r.get("lastError")) for r in rules if r["health"] != "ok"]
if bad or not rules:
    sys.exit("alert rules failed to evaluate: " + "; ".join(bad))
'

mkdir -p "$(dirname "$out")"
"$venv/bin/python" "$root/monitoring/render-dashboard.py" --dashboard "$root/monitoring/grafana-dashboard.json" \
  --prometheus "$prom" --start "$start" --end "$end" --scrape-interval "$scrape" --out "$out"
echo "wrote ${out#"$root/"}" >&2
