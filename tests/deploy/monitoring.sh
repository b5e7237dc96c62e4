#!/usr/bin/env bash
# Checks monitoring/: the alert rules load and pass their unit tests, the Grafana dashboard is JSON
# whose queries parse, and the rules and the dashboard name only metrics the worker exports.
#   tests/deploy/monitoring.sh
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
rules="$repo/monitoring/alerts.yaml"
rule_tests="$repo/monitoring/alerts.test.yaml"
dashboard="$repo/monitoring/grafana-dashboard.json"
passed=0 failed=0
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

pass() { passed=$((passed + 1)); echo "ok   $1"; }
fail() { failed=$((failed + 1)); echo "FAIL $1"; shift; printf '     %s\n' "$@"; }

if out=$(promtool check rules "$rules" 2>&1); then pass "promtool check rules monitoring/alerts.yaml"; else fail "promtool check rules monitoring/alerts.yaml" "$out"; fi
if out=$(promtool test rules "$rule_tests" 2>&1); then pass "promtool test rules monitoring/alerts.test.yaml"; else fail "promtool test rules monitoring/alerts.test.yaml" "$out"; fi

if out=$(python3 -m json.tool "$dashboard" 2>&1 >/dev/null); then
  pass "monitoring/grafana-dashboard.json is JSON"
  # promtool parses PromQL only in rule files: each panel query becomes a recording rule, with
  # Grafana's variables replaced by values of the right kind.
  python3 - "$dashboard" > "$scratch/dashboard-rules.yaml" <<'PY'
import json, sys

dash = json.load(open(sys.argv[1]))
values = {"$__rate_interval": "1m", "$__interval": "1m", "$__range": "6h", "$instance": ".*", "$activity": ".*"}
print("groups:\n  - name: dashboard\n    rules:")
for panel in dash["panels"]:
    for target in panel.get("targets", []):
        expr = target["expr"]
        for var, value in values.items():
            expr = expr.replace(var, value)
        print(f"      - record: panel_{panel['id']}_{target['refId']}\n        expr: {json.dumps(expr)}")
PY
  if out=$(promtool check rules "$scratch/dashboard-rules.yaml" 2>&1); then
    pass "every dashboard query parses ($(grep -c 'record:' "$scratch/dashboard-rules.yaml") queries)"
  else
    fail "every dashboard query parses" "$out"
  fi
else
  fail "monitoring/grafana-dashboard.json is JSON" "$out"
fi

# The exported names: the `ID = "name", Kind, ...` entries of the metrics_table! block.
exported=$(sed -n '/^metrics_table! {/,/^}/s/^ *[A-Z_]* = "\([a-z0-9_]*\)", \([A-Za-z]*\),.*/spark_activity_worker_\1 \2/p' "$repo/src/metrics.rs")
if [ "$(printf '%s\n' "$exported" | grep -c .)" -lt 10 ]; then
  fail "the metrics_table! block of src/metrics.rs lists the exported metrics" "found only: $exported"
fi
# A name is known if it is exported, or is a histogram's _bucket, _sum or _count series.
known() {
  local name=$1 base
  grep -qx "$name [A-Za-z]*" <<<"$exported" && return 0
  for suffix in _bucket _sum _count; do
    base=${name%"$suffix"}
    [ "$base" != "$name" ] && grep -qx "$base Histogram" <<<"$exported" && return 0
  done
  return 1
}
for file in "$rules" "$dashboard"; do
  unknown=()
  while read -r name; do
    known "$name" || unknown+=("$name")
  done < <(grep -o 'spark_activity_worker_[a-z0-9_]*' "$file" | sort -u)
  what="${file#"$repo/"} names only metrics of src/metrics.rs"
  if [ ${#unknown[@]} -eq 0 ]; then pass "$what"; else fail "$what" "${unknown[@]}"; fi
done

# The README's alert table names every alert, so an operator reading it knows them all.
missing=()
while read -r alert; do
  grep -q "^| \`$alert\` |" "$repo/README.md" || missing+=("$alert")
done < <(sed -n 's/^ *- alert: *\([A-Za-z0-9_]*\).*/\1/p' "$rules")
if [ ${#missing[@]} -eq 0 ]; then pass "the README's alert table lists every alert"; else fail "the README's alert table lists every alert" "${missing[@]}"; fi

echo "monitoring: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
