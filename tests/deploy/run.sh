#!/usr/bin/env bash
# Deployment checks: the systemd unit (verify, exposure score), shellcheck on every script, the
# EMR bootstrap action in a sandbox root, cfn-lint on the CloudFormation templates, and the
# spark-job-resource template's environment variables against what the function reads.
#   tests/deploy/run.sh [path/to/spark-activity-worker]
set -uo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
binary=$(realpath "${1:-$repo/target/debug/spark-activity-worker}")
unit="$repo/systemd/spark-activity-worker.service"
unit219="$repo/systemd/spark-activity-worker-systemd219.service"
max_exposure=2.5
passed=0 failed=0
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

pass() { passed=$((passed + 1)); echo "ok   $1"; }
fail() { failed=$((failed + 1)); echo "FAIL $1"; shift; printf '     %s\n' "$@"; }

# --- systemd unit ------------------------------------------------------------------------------
# verify checks the ExecStart binary exists: point it at the one just built. It exits 0 on mere
# warnings (unknown keys), so any output at all is a failure.
for u in "$unit" "$unit219"; do
  mkdir -p "$scratch/verify"
  sed "s|^ExecStart=/usr/local/bin/spark-activity-worker|ExecStart=$binary|" "$u" > "$scratch/verify/$(basename "$u")"
  if out=$(systemd-analyze verify "$scratch/verify/$(basename "$u")" 2>&1) && [ -z "$out" ]; then
    pass "systemd-analyze verify $(basename "$u")"
  else
    fail "systemd-analyze verify $(basename "$u")" "$out"
  fi
done

# The unit for Amazon Linux 2 may use only what systemd 219 knows: systemd drops an unknown
# directive with a warning and starts the service without it. The table is from systemd's NEWS.
table="$repo/tests/deploy/systemd-directives.tsv"
too_new=()
while IFS= read -r key; do
  value=$(grep -v '^#' "$unit219" | sed -n "s/^${key}=//p" | head -n 1)
  first=$(awk -F'\t' -v k="$key=$value" -v d="$key" '$1 == k { print $2; found = 1; exit } $1 == d { v = $2 } END { if (!found) print v }' "$table")
  case "$first" in
    '<=200') ;;
    '') too_new+=("$key: not in $table") ;;
    unknown) too_new+=("$key=$value: systemd's NEWS does not show it in 219") ;;
    *) [ "$first" -le 219 ] || too_new+=("$key=$value needs systemd $first") ;;
  esac
done < <(grep -Eo '^[A-Za-z]+=' "$unit219" | tr -d '=' | sort -u)
if [ ${#too_new[@]} -eq 0 ]; then pass "the systemd-219 unit uses only directives of systemd <= 219"; else fail "the systemd-219 unit uses only directives of systemd <= 219" "${too_new[@]}"; fi

security=$(systemd-analyze security --offline=true "$unit" 2>&1)
score=$(printf '%s\n' "$security" | sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p')
echo "     exposure score: ${score:-?} (limit $max_exposure)"
if [ -n "$score" ] && awk -v s="$score" -v m="$max_exposure" 'BEGIN { exit !(s <= m) }'; then
  pass "systemd-analyze security exposure $score <= $max_exposure"
else
  fail "systemd-analyze security exposure ${score:-unknown} > $max_exposure" "$(printf '%s\n' "$security" | grep '✗')"
fi

# --- shellcheck ----------------------------------------------------------------------------------
scripts=("$repo/.ci/run" "$repo"/bootstrap/*.sh "$repo"/tests/rig/*.sh "$repo"/tests/deploy/*.sh "$repo"/tests/release/*.sh "$repo"/tests/systemd/*.sh)
if out=$(shellcheck "${scripts[@]}" 2>&1); then pass "shellcheck (${#scripts[@]} scripts)"; else fail "shellcheck" "$out"; fi

# --- bootstrap action in a sandbox root -------------------------------------------------------
# Stubs: `aws s3 cp s3://B/K DEST` copies $FAKE_S3/B/K; sudo runs the command; systemctl logs.
stubs="$scratch/stubs"
mkdir -p "$stubs"
cat > "$stubs/aws" <<'STUB'
#!/usr/bin/env bash
[ "$1 $2" = "s3 cp" ] || { echo "stub aws: unexpected $*" >&2; exit 1; }
shift 2; [ "$1" = --only-show-errors ] && shift
src=${1#s3://}; cp "$FAKE_S3/$src" "$2"
STUB
cat > "$stubs/sudo" <<'STUB'
#!/usr/bin/env bash
exec "$@"
STUB
cat > "$stubs/systemctl" <<'STUB'
#!/usr/bin/env bash
if [ "$1" = --version ]; then echo "systemd ${FAKE_SYSTEMD_VERSION:-252} (stub)"; echo "+PAM +AUDIT"; exit 0; fi
echo "$*" >> "$SAW_ROOT/systemctl.log"
# FAKE_ACTIVE: the service runs until it is sent a signal.
case "$1" in
  is-active) [ -n "${FAKE_ACTIVE:-}" ] && [ ! -e "$SAW_ROOT/killed" ] ;;
  kill) touch "$SAW_ROOT/killed" ;;
esac
STUB
cat > "$stubs/uname" <<'STUB'
#!/usr/bin/env bash
[ "$1" = -m ] && { echo "${FAKE_ARCH:-x86_64}"; exit 0; }
exec /usr/bin/uname "$@"
STUB
cat > "$stubs/getent" <<'STUB'
#!/usr/bin/env bash
exit 2
STUB
cat > "$stubs/useradd" <<'STUB'
#!/usr/bin/env bash
echo "useradd $*" >> "$SAW_ROOT/accounts.log"
STUB
cat > "$stubs/chown" <<'STUB'
#!/usr/bin/env bash
echo "chown $*" >> "$SAW_ROOT/accounts.log"
STUB
chmod +x "$stubs"/*
export FAKE_S3="$scratch/s3"
# publish DIR X86_64_BINARY AARCH64_BINARY: a release folder as `make release` lays it out.
publish() {
  local d="$FAKE_S3/bucket/$1"
  mkdir -p "$d"
  cp "$2" "$d/spark-activity-worker-x86_64"
  cp "$3" "$d/spark-activity-worker-aarch64"
  cp "$unit" "$unit219" "$repo/bootstrap/install.sh" "$d/"
  (cd "$d" && for f in *; do [[ "$f" == *.sha256 ]] || sha256sum "$f" > "$f.sha256"; done)
}
# The aarch64 binary cannot run here; a stand-in that prints its version takes its place.
arm_stub="$scratch/arm-stub"
printf '#!/bin/sh\necho "spark-activity-worker 0.1.0 (aarch64 stand-in)"\n' > "$arm_stub"
publish release "$binary" "$arm_stub"
good_sha=$(sha256sum "$binary" | cut -d' ' -f1)
arn=arn:aws:states:us-east-1:123456789012:activity:etl.spark-job

sandbox() { # sandbox NAME IS_MASTER -> prints the root
  local r="$scratch/root-$1"
  mkdir -p "$r/mnt/var/lib/info"
  printf '{"isMaster": %s, "isRunningNameNode": %s}\n' "$2" "$2" > "$r/mnt/var/lib/info/instance.json"
  echo "$r"
}
install_in() { # install_in ROOT ARGS... -> runs the bootstrap action there
  local r=$1; shift
  SAW_ROOT="$r" PATH="$stubs:$PATH" bash "$repo/bootstrap/install.sh" "$@"
}
tree_of() { (cd "$1" && find . -type f ! -name systemctl.log ! -name accounts.log | sort | xargs sha256sum); }

r=$(sandbox core false)
before=$(tree_of "$r")
if out=$(install_in "$r" --release-uri s3://bucket/release/ --activity-arn "$arn" 2>&1) \
   && [ "$(tree_of "$r")" = "$before" ] && [ ! -e "$r/systemctl.log" ]; then
  pass "bootstrap: a non-primary node is left unchanged"
else
  fail "bootstrap: a non-primary node is left unchanged" "$out"
fi

r=$(sandbox primary true)
args=(--release-uri s3://bucket/release/ --sha256 "$good_sha" --activity-arn "$arn"
      --activity-arn "${arn}2" --livy-url http://localhost:8998 --max-concurrent-tasks 16 --allowed-livy-endpoint livy.internal:8998)
if out=$(install_in "$r" "${args[@]}" 2>&1); then
  expected_env="# Written by bootstrap/install.sh; every flag of 'spark-activity-worker run' has a variable here.
SPARK_ACTIVITY_WORKER_ACTIVITY_ARN=$arn,${arn}2
SPARK_ACTIVITY_WORKER_DEFAULT_FILE=local:///usr/lib/spark/examples/jars/spark-examples.jar
SPARK_ACTIVITY_WORKER_ALLOWED_LIVY_ENDPOINT=livy.internal:8998
SPARK_ACTIVITY_WORKER_LIVY_URL=http://localhost:8998
SPARK_ACTIVITY_WORKER_MAX_CONCURRENT_TASKS=16
SPARK_ACTIVITY_WORKER_METRICS_LISTEN=127.0.0.1:9464"
  problems=()
  cmp -s "$binary" "$r/usr/local/bin/spark-activity-worker" || problems+=("binary differs")
  [ -x "$r/usr/local/bin/spark-activity-worker" ] || problems+=("binary not executable")
  [ "$(stat -c %a "$r/etc/spark-activity-worker/env")" = 600 ] || problems+=("env file mode $(stat -c %a "$r/etc/spark-activity-worker/env")")
  cmp -s "$unit" "$r/etc/systemd/system/spark-activity-worker.service" || problems+=("unit differs")
  [ "$(cat "$r/etc/spark-activity-worker/env" 2>/dev/null)" = "$expected_env" ] || problems+=("env file: $(cat "$r/etc/spark-activity-worker/env" 2>&1)")
  [ "$(cat "$r/systemctl.log")" = "daemon-reload
enable spark-activity-worker.service
is-active --quiet spark-activity-worker.service
restart spark-activity-worker.service" ] || problems+=("systemctl calls: $(cat "$r/systemctl.log")")
  for secret in livy-password kerberos.keytab; do
    f="$r/etc/spark-activity-worker/$secret"
    [ -f "$f" ] && [ ! -s "$f" ] && [ "$(stat -c %a "$f")" = 600 ] || problems+=("$secret: not an empty 0600 file: $(stat -c '%a %s' "$f" 2>&1)")
  done
  if [ ${#problems[@]} -eq 0 ]; then pass "bootstrap: the primary gets binary, env file, unit and empty root-only secret files"; else fail "bootstrap: the primary gets binary, env file, unit and empty root-only secret files" "${problems[@]}"; fi
  echo "the-password" > "$r/etc/spark-activity-worker/livy-password"
  first=$(tree_of "$r")
  if out=$(install_in "$r" "${args[@]}" 2>&1) && [ "$(tree_of "$r")" = "$first" ] \
     && [ "$(cat "$r/etc/spark-activity-worker/livy-password")" = the-password ] \
     && [ "$(find "$r" -type f ! -name systemctl.log | wc -l)" -eq 6 ]; then
    pass "bootstrap: a second run leaves the same single install, and a filled-in secret as it was"
  else
    fail "bootstrap: a second run leaves the same single install" "$out" "$(find "$r" -type f)"
  fi
else
  fail "bootstrap: the primary gets binary, env file, unit and empty root-only secret files" "$out"
fi

r=$(sandbox al2 true)
if out=$(FAKE_SYSTEMD_VERSION=219 install_in "$r" --release-uri s3://bucket/release/ --activity-arn "$arn" \
             --livy-auth kerberos --kerberos-principal 'spark-worker/_HOST@EC2.INTERNAL' 2>&1); then
  problems=()
  grep -qx "SPARK_ACTIVITY_WORKER_KERBEROS_KEYTAB=/etc/spark-activity-worker/kerberos.keytab" "$r/etc/spark-activity-worker/env" \
    && grep -qx "SPARK_ACTIVITY_WORKER_KERBEROS_PRINCIPAL=spark-worker/_HOST@EC2.INTERNAL" "$r/etc/spark-activity-worker/env" \
    || problems+=("env without the keytab path (no LoadCredential= on systemd 219): $(cat "$r/etc/spark-activity-worker/env")")
  cmp -s "$unit219" "$r/etc/systemd/system/spark-activity-worker.service" || problems+=("not the systemd-219 unit")
  [ "$(stat -c %a "$r/var/lib/spark-activity-worker" 2>&1)" = 700 ] || problems+=("state dir: $(stat -c %a "$r/var/lib/spark-activity-worker" 2>&1)")
  [ "$(cat "$r/accounts.log" 2>&1)" = "useradd --system --no-create-home --home-dir /var/lib/spark-activity-worker --shell /sbin/nologin spark-activity-worker
chown spark-activity-worker:spark-activity-worker $r/var/lib/spark-activity-worker
chown spark-activity-worker:spark-activity-worker $r/etc/spark-activity-worker/livy-password
chown spark-activity-worker:spark-activity-worker $r/etc/spark-activity-worker/kerberos.keytab" ] || problems+=("accounts: $(cat "$r/accounts.log" 2>&1)")
  if [ ${#problems[@]} -eq 0 ]; then pass "bootstrap: systemd 219 gets its unit, a system user and a 0700 state dir"; else fail "bootstrap: systemd 219 gets its unit, a system user and a 0700 state dir" "${problems[@]}"; fi
else
  fail "bootstrap: systemd 219 gets its unit, a system user and a 0700 state dir" "$out"
fi

# --upgrade: a running worker, a new release; the settings stay, the worker is detached, not killed.
r=$(sandbox upgrade true)
v2="$scratch/v2-stub"
printf '#!/bin/sh\necho "spark-activity-worker 0.2.0 (stub)"\n' > "$v2"
publish v2 "$v2" "$v2"
install_in "$r" --release-uri s3://bucket/release/ --activity-arn "$arn" --max-concurrent-tasks 7 >/dev/null 2>&1
env_before=$(cat "$r/etc/spark-activity-worker/env")
rm -f "$r/systemctl.log"
if out=$(FAKE_ACTIVE=1 install_in "$r" --upgrade --release-uri s3://bucket/v2 2>&1); then
  problems=()
  cmp -s "$v2" "$r/usr/local/bin/spark-activity-worker" || problems+=("binary not replaced")
  [ "$(cat "$r/etc/spark-activity-worker/env")" = "$env_before" ] || problems+=("env file changed")
  [ "$(cat "$r/systemctl.log")" = "daemon-reload
enable spark-activity-worker.service
is-active --quiet spark-activity-worker.service
kill --signal=SIGUSR2 --kill-who=main spark-activity-worker.service
is-active --quiet spark-activity-worker.service
restart spark-activity-worker.service" ] || problems+=("systemctl calls: $(cat "$r/systemctl.log")")
  if [ ${#problems[@]} -eq 0 ]; then pass "bootstrap: --upgrade replaces the binary, keeps the settings and detaches the running worker"; else fail "bootstrap: --upgrade replaces the binary, keeps the settings and detaches the running worker" "${problems[@]}" "$out"; fi
else
  fail "bootstrap: --upgrade replaces the binary, keeps the settings and detaches the running worker" "$out"
fi
r=$(sandbox upgrade-nothing true)
out=$(install_in "$r" --upgrade --release-uri s3://bucket/v2 2>&1); rc=$?
if [ $rc -ne 0 ] && [[ "$out" == *"--upgrade needs an existing install"* ]] && [ ! -e "$r/usr" ]; then
  pass "bootstrap: --upgrade without an install changes nothing"
else
  fail "bootstrap: --upgrade without an install changes nothing" "rc=$rc" "$out"
fi

r=$(sandbox role-only true)
rm "$r/mnt/var/lib/info/instance.json"
printf '{"instanceRole":"MASTER","clusterId":"j-1"}\n' > "$r/mnt/var/lib/info/extraInstanceData.json"
if out=$(install_in "$r" --release-uri s3://bucket/release/ --activity-arn "$arn" 2>&1) \
   && [ -x "$r/usr/local/bin/spark-activity-worker" ]; then
  pass "bootstrap: without instance.json, extraInstanceData.json's instanceRole finds the primary"
else
  fail "bootstrap: without instance.json, extraInstanceData.json's instanceRole finds the primary" "$out"
fi

r=$(sandbox unknown true)
rm "$r/mnt/var/lib/info/instance.json"
before=$(tree_of "$r")
out=$(install_in "$r" --release-uri s3://bucket/release/ --activity-arn "$arn" 2>&1); rc=$?
if [ $rc -ne 0 ] && [ "$(printf '%s\n' "$out" | wc -l)" -eq 1 ] && [[ "$out" == *"cannot tell whether this is the primary node"* ]] \
   && [ "$(tree_of "$r")" = "$before" ]; then
  pass "bootstrap: an unreadable node role fails loudly with one line and installs nothing"
else
  fail "bootstrap: an unreadable node role fails loudly with one line and installs nothing" "rc=$rc" "$out"
fi

r=$(sandbox badsum true)
bad_sha=$(printf '0%.0s' {1..64})
before=$(tree_of "$r")
if out=$(install_in "$r" --release-uri s3://bucket/release/ --sha256 "$bad_sha" --activity-arn "$arn" 2>&1); then
  fail "bootstrap: a bad checksum installs nothing" "exit 0: $out"
elif [ "$(tree_of "$r")" = "$before" ] && [ ! -e "$r/systemctl.log" ] && [[ "$out" == *"checksum mismatch"* ]]; then
  pass "bootstrap: a bad checksum installs nothing"
else
  fail "bootstrap: a bad checksum installs nothing" "$out"
fi

r=$(sandbox graviton true)
if out=$(FAKE_ARCH=aarch64 install_in "$r" --release-uri s3://bucket/release --activity-arn "$arn" 2>&1) \
   && cmp -s "$arm_stub" "$r/usr/local/bin/spark-activity-worker"; then
  pass "bootstrap: an aarch64 (Graviton) node gets the aarch64 binary"
else
  fail "bootstrap: an aarch64 (Graviton) node gets the aarch64 binary" "$out"
fi

r=$(sandbox ppc true)
before=$(tree_of "$r")
out=$(FAKE_ARCH=ppc64le install_in "$r" --release-uri s3://bucket/release --activity-arn "$arn" 2>&1); rc=$?
if [ $rc -ne 0 ] && [ "$(printf '%s\n' "$out" | wc -l)" -eq 1 ] && [[ "$out" == *"no release binary for this node's architecture 'ppc64le'"* ]] \
   && [ "$(tree_of "$r")" = "$before" ]; then
  pass "bootstrap: an architecture without a binary fails loudly and installs nothing"
else
  fail "bootstrap: an architecture without a binary fails loudly and installs nothing" "rc=$rc" "$out"
fi

# A release folder whose files no longer match their .sha256 (a truncated upload, a tampered unit).
for corrupt in spark-activity-worker-x86_64 spark-activity-worker.service; do
  publish "corrupt-$corrupt" "$binary" "$arm_stub"
  printf '\n# appended\n' >> "$FAKE_S3/bucket/corrupt-$corrupt/$corrupt"
  r=$(sandbox "corrupt-$corrupt" true)
  before=$(tree_of "$r")
  out=$(install_in "$r" --release-uri "s3://bucket/corrupt-$corrupt" --activity-arn "$arn" 2>&1); rc=$?
  if [ $rc -ne 0 ] && [[ "$out" == *"checksum mismatch for s3://bucket/corrupt-$corrupt/$corrupt"* ]] \
     && [ "$(tree_of "$r")" = "$before" ] && [ ! -e "$r/systemctl.log" ]; then
    pass "bootstrap: $corrupt not matching its .sha256 installs nothing"
  else
    fail "bootstrap: $corrupt not matching its .sha256 installs nothing" "rc=$rc" "$out"
  fi
done

r=$(sandbox missing true)
out=$(install_in "$r" --release-uri s3://bucket/release/ 2>&1); rc=$?
if [ $rc -ne 0 ] && [[ "$out" == *"--activity-arn is required"* ]] && [[ "$out" == *"--help"* ]] && [ ! -e "$r/usr" ]; then
  pass "bootstrap: a missing argument gives usage and a non-zero exit"
else
  fail "bootstrap: a missing argument gives usage and a non-zero exit" "rc=$rc" "$out"
fi

help=$(bash "$repo/bootstrap/install.sh" --help)
missing=()
while read -r a; do
  # Flags the script passes to other programs are not its own arguments.
  case "$a" in --only-show-errors|--version|--system|--no-create-home|--home-dir|--shell|--quiet|--signal|--kill-who) continue ;; esac
  [[ "$help" == *"$a"* ]] || missing+=("$a")
done < <(grep -o -- '--[a-z0-9-]*' "$repo/bootstrap/install.sh" | sort -u)
if [ ${#missing[@]} -eq 0 ]; then pass "bootstrap: --help documents every argument"; else fail "bootstrap: --help documents every argument" "${missing[@]}"; fi

# --- CloudFormation ----------------------------------------------------------------------------
cfn_lint="$repo/.cache/cfn-lint/bin/cfn-lint"
if out=$("$cfn_lint" "$repo/bootstrap/cloudformation.yaml" 2>&1); then pass "cfn-lint bootstrap/cloudformation.yaml"; else fail "cfn-lint bootstrap/cloudformation.yaml" "$out"; fi
if out=$("$cfn_lint" "$repo/bootstrap/spark-job-resource.yaml" 2>&1); then pass "cfn-lint bootstrap/spark-job-resource.yaml"; else fail "cfn-lint bootstrap/spark-job-resource.yaml" "$out"; fi

# The spark-job-resource function's settings are environment variables: a misspelt one in its
# template is silently ignored. What the function reads: every `env = "..."` of ResourceArgs in
# src/config.rs and of the structs it flattens in, and the binary's own std::env::var calls.
# function_envs STRUCT -> "NAME" or "NAME required", one a line.
function_envs() {
  local body
  body=$(sed -n "/^pub struct $1 {/,/^}/p" "$repo/src/config.rs")
  [ -n "$body" ] || { echo "?no struct $1 in src/config.rs"; return; }
  awk '/#\[arg\(/ { attr = ""; inattr = 1 }
       inattr { attr = attr $0 " " }
       inattr && /\)\]/ { inattr = 0
         if (match(attr, /env *= *"[A-Z0-9_]+"/)) {
           name = substr(attr, RSTART, RLENGTH); sub(/^env *= *"/, "", name); sub(/"$/, "", name)
           print name (attr ~ /required *= *true/ ? " required" : "") } }' <<<"$body"
  while read -r t; do function_envs "$t"; done < <(awk '/#\[command\(flatten/ { f = 1; next }
       f && /pub [a-z_0-9]+ *:/ { sub(/.*: */, ""); sub(/[,<].*/, ""); print; f = 0 }' <<<"$body")
}
reads=$( { function_envs ResourceArgs
           grep -oE 'env::var\("[A-Z0-9_]+"\)' "$repo/src/bin/spark-job-resource.rs" | cut -d'"' -f2; } | sort -u)
# The names under Environment.Variables of every AWS::Lambda::Function of the template.
problems=()
sets=$("$repo/.cache/cfn-lint/bin/python" - "$repo/bootstrap/spark-job-resource.yaml" <<'PY' 2>&1
import sys, yaml
class Loader(yaml.SafeLoader):
    pass
Loader.add_multi_constructor("!", lambda loader, suffix, node: None)  # !Ref, !If ...: values only
with open(sys.argv[1]) as f:
    template = yaml.load(f, Loader=Loader)
for resource in template["Resources"].values():
    if resource.get("Type") == "AWS::Lambda::Function":
        env = resource.get("Properties", {}).get("Environment") or {}
        print("\n".join(env.get("Variables") or {}))
PY
) || { problems+=("cannot read the template: $sets"); sets=; }
if [[ "$reads" == *"?"* ]] || [[ "$reads" != *" required"* ]]; then
  problems+=("cannot tell what the function reads from src/config.rs: ${reads//$'\n'/ }")
fi
[ -n "$sets" ] || problems+=("no environment variable found in the template")
while read -r v; do
  [ -z "$v" ] || grep -qxE "$v( required)?" <<<"$reads" || problems+=("$v: the function does not read it")
done <<<"$sets"
while read -r v; do
  grep -qx "$v" <<<"$sets" || problems+=("$v: required by the function, not set by the template")
done < <(sed -n 's/ required$//p' <<<"$reads")
if [ ${#problems[@]} -eq 0 ]; then
  pass "spark-job-resource.yaml sets only variables the function reads, and every required one ($(wc -l <<<"$sets") of $(wc -l <<<"$reads"))"
else
  fail "spark-job-resource.yaml sets only variables the function reads, and every required one" "${problems[@]}"
fi
if out=$("$repo/tests/deploy/monitoring.sh" 2>&1); then pass "monitoring: alert rules and their unit tests, the dashboard's queries and metric names"; else fail "monitoring: alert rules and their unit tests, the dashboard's queries and metric names" "$out"; fi

echo "deploy: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
