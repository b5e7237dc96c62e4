#!/usr/bin/env bash
# EMR bootstrap action: installs spark-activity-worker as a systemd service on the primary node.
#
# EMR runs bootstrap actions on every node, as user hadoop (with sudo), before Spark and Livy are
# installed. On other nodes this script does nothing. The worker waits for Livy by itself, so
# nothing here waits for Livy. Running it twice leaves one correct install. A cluster with three
# primary nodes gets a worker on each (EMR runs Livy on all three); each uses its own Livy.
#
# SAW_ROOT (tests only) prefixes every path, so the script can run in a sandbox.
set -euo pipefail

root=${SAW_ROOT:-}
name=spark-activity-worker

usage() {
  cat <<USAGE
Usage: install.sh --release-uri S3_URI --activity-arn ARN [options]
       install.sh --upgrade --release-uri S3_URI [--sha256 HEX]

Installs ${name} on the EMR primary node (does nothing on other nodes).
With --upgrade, replaces the binary and the unit of an existing install, keeps
/etc/${name}/env, and restarts the worker detached from its tasks (SIGUSR2, whatever
--shutdown-mode says): the new worker resumes every task in flight from the journal.

Required:
  --release-uri URI           the folder 'make release' wrote, copied to S3, e.g.
                              s3://my-bucket/spark-activity-worker/0.1.0/ ; from it come the
                              binary for this node (${name}-x86_64 or -aarch64, by uname -m), the
                              unit for its systemd (${name}.service for systemd >= 248,
                              ${name}-systemd219.service for older), and their .sha256 files,
                              which must match
  --activity-arn ARN          activity to poll (repeatable)
Options:
  --sha256 HEX                the binary's SHA-256 as you published it (its .sha256 file); pins
                              the binary independently of the release folder
  --livy-url URL              Livy server [default: http://localhost:8998]
  --max-concurrent-tasks N    tasks supervised at once [worker default: 32]
  --pollers-per-activity N    long polls per activity [worker default: 2]
  --default-file URI          application file when a task names none
                              [default: local:///usr/lib/spark/examples/jars/spark-examples.jar]
  --allowed-livy-endpoint HOST:PORT  another Livy a task may name with LivyHost/LivyPort (repeatable)
  --sync-interval DURATION    batch state sync period [worker default: 10s]
  --heartbeat-interval DURATION  SendTaskHeartbeat period [worker default: 30s]
  --livy-retry-timeout DURATION  how long a submission is retried while Livy fails [worker default: 2m]
  --livy-outage-limit DURATION   how long Livy may be unreachable while a batch runs [worker default: 1h]
  --livy-retention DURATION      Livy's livy.server.session.state-retain.sec [worker default: 10m]
  --yarn-url URL              YARN ResourceManager web address [worker default: from yarn-site.xml]
  --livy-auth METHOD          none, basic or kerberos [worker default: none]; the secrets are
                              files you fill in: /etc/${name}/livy-password (basic: its first
                              line) and /etc/${name}/kerberos.keytab (kerberos), created empty
                              and root-only here, handed to the worker alone
  --livy-user USER            with basic: the user
  --kerberos-principal P      with kerberos: the worker's principal (_HOST = this host's name)
  --livy-ca-file PEM          CA certificates trusted for Livy and the ResourceManager (TLS)
  --shutdown-mode MODE        detach, wait or kill [worker default: detach]
  --drain-timeout DURATION    drain time in wait mode [worker default: 30s]
  --metrics-listen ADDR       IP:PORT of /metrics, /healthz and /readyz, or off [default: 127.0.0.1:9464]
  --log-format FORMAT         text or json [worker default: text]
  --log-level FILTER          e.g. info or debug [worker default: info]
  --region REGION             AWS region [default: the instance's region]
  -h, --help                  this help

Files: /usr/local/bin/${name}, /etc/${name}/env, /etc/systemd/system/${name}.service.
Logs: journalctl -u ${name}
USAGE
}

fail_usage() {
  echo "install.sh: $1" >&2
  echo "Try 'install.sh --help'." >&2
  exit 2
}

release_uri="" sha256="" upgrade=""
default_file="local:///usr/lib/spark/examples/jars/spark-examples.jar"
activity_arns=() allowed_endpoints=()
declare -A settings=()
# The monitoring endpoint is on, on loopback only, unless --metrics-listen off.
metrics_listen=127.0.0.1:9464 metrics_given=""

while [ $# -gt 0 ]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --upgrade) upgrade=1; shift; continue ;;
    --release-uri|--sha256|--activity-arn|--livy-url|--max-concurrent-tasks|--pollers-per-activity|\
    --default-file|--allowed-livy-endpoint|--sync-interval|--heartbeat-interval|--livy-retry-timeout|\
    --livy-outage-limit|--livy-retention|--yarn-url|--livy-auth|--livy-user|--kerberos-principal|\
    --livy-ca-file|--shutdown-mode|--drain-timeout|--log-format|--log-level|--region|--metrics-listen)
      if [ $# -lt 2 ] || [ -z "$2" ]; then fail_usage "$1 needs a value"; fi
      case "$2" in *$'\n'*|*'"'*|*\\*) fail_usage "$1: value must not contain newlines, quotes or backslashes" ;; esac
      case "$1" in
        --release-uri) release_uri=${2%/} ;;
        --sha256) sha256=$(printf '%s' "$2" | tr 'A-F' 'a-f') ;;
        --activity-arn) activity_arns+=("$2") ;;
        --allowed-livy-endpoint) allowed_endpoints+=("$2") ;;
        --default-file) default_file=$2 ;;
        --metrics-listen) metrics_listen=$2 metrics_given=1 ;;
        *) settings[${1#--}]=$2 ;;
      esac
      shift 2 ;;
    *) fail_usage "unknown argument: $1" ;;
  esac
done

[ -n "$release_uri" ] || fail_usage "--release-uri is required"
if [ -n "$upgrade" ]; then
  if [ ${#activity_arns[@]} -gt 0 ] || [ ${#settings[@]} -gt 0 ] || [ ${#allowed_endpoints[@]} -gt 0 ] \
     || [ -n "$metrics_given" ]; then
    fail_usage "--upgrade keeps the settings of the install; give only --release-uri and --sha256"
  fi
else
  [ ${#activity_arns[@]} -gt 0 ] || fail_usage "--activity-arn is required"
  [ "$metrics_listen" = off ] || settings[metrics-listen]=$metrics_listen
fi
if [ -n "$sha256" ] && ! [[ "$sha256" =~ ^[0-9a-f]{64}$ ]]; then
  fail_usage "--sha256 must be 64 hex digits"
fi
# The hardened unit needs systemd 248 (Amazon Linux 2023, EMR 7.x); Amazon Linux 2 (EMR 5.x/6.x) has
# systemd 219, which would drop its newer directives (DynamicUser= among them) and fail to start it.
systemd_version=$(systemctl --version 2>/dev/null | head -n 1 | awk '{print $2}' || true)
case "$systemd_version" in
  ''|*[!0-9]*) echo "${name}: cannot read the systemd version ('systemctl --version'); nothing installed" >&2; exit 1 ;;
esac
if [ "$systemd_version" -ge 248 ]; then
  unit_file="${name}.service"
else
  unit_file="${name}-systemd219.service"
fi
# One binary per architecture: x86_64, and aarch64 for Graviton instances.
arch=$(uname -m)
case "$arch" in
  x86_64|aarch64) ;;
  *) echo "${name}: no release binary for this node's architecture '${arch}' (only x86_64 and aarch64); nothing installed" >&2; exit 1 ;;
esac

# Which node is this? EMR writes instance.json ("isMaster") on every node, and
# extraInstanceData.json ("instanceRole") as well. When neither can be read, guessing "not the
# primary" would bring the cluster up healthy with no worker and nobody told: fail loudly instead.
info="$root/mnt/var/lib/info"
role=""
if [ -r "$info/instance.json" ]; then
  if grep -Eq '"isMaster"[[:space:]]*:[[:space:]]*true' "$info/instance.json"; then
    role=primary
  elif grep -Eq '"isMaster"[[:space:]]*:[[:space:]]*false' "$info/instance.json"; then
    role=other
  fi
fi
if [ -z "$role" ] && [ -r "$info/extraInstanceData.json" ]; then
  instance_role=$(grep -Eio '"instanceRole"[[:space:]]*:[[:space:]]*"[a-z_]+"' "$info/extraInstanceData.json" \
    | sed -E 's/.*"([A-Za-z_]+)"$/\1/' | tr '[:upper:]' '[:lower:]' || true)
  case "$instance_role" in
    master|primary) role=primary ;;
    core|task) role=other ;;
  esac
fi
case "$role" in
  primary) ;;
  other)
    echo "${name}: not the primary node; nothing to install"
    exit 0 ;;
  *)
    echo "${name}: cannot tell whether this is the primary node: neither ${info}/instance.json (isMaster) nor ${info}/extraInstanceData.json (instanceRole) says; nothing installed" >&2
    exit 1 ;;
esac

if [ -n "$upgrade" ] && [ ! -f "$root/etc/${name}/env" ]; then
  echo "${name}: --upgrade needs an existing install (${root}/etc/${name}/env is missing); nothing changed" >&2
  exit 1
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# fetch FILE [EXPECTED_SHA256]: downloads FILE of the release into $work and checks it against
# the release's FILE.sha256 (and against EXPECTED_SHA256 when given).
fetch() {
  local file=$1 pinned=${2:-} published actual
  aws s3 cp --only-show-errors "${release_uri}/${file}" "$work/${file}"
  aws s3 cp --only-show-errors "${release_uri}/${file}.sha256" "$work/${file}.sha256"
  published=$(cut -d' ' -f1 "$work/${file}.sha256" | tr 'A-F' 'a-f')
  actual=$(sha256sum "$work/${file}" | cut -d' ' -f1)
  for expected in "$published" ${pinned:+"$pinned"}; do
    if [ "$actual" != "$expected" ]; then
      echo "${name}: checksum mismatch for ${release_uri}/${file}: expected ${expected}, got ${actual}; nothing installed" >&2
      exit 1
    fi
  done
}
fetch "${name}-${arch}" "$sha256"
fetch "$unit_file"
chmod 0755 "$work/${name}-${arch}"
version=$("$work/${name}-${arch}" --version) || { echo "${name}: the downloaded binary does not run on this node" >&2; exit 1; }

join() { local IFS=,; echo "$*"; }
[ -n "$upgrade" ] || {
  echo "# Written by bootstrap/install.sh; every flag of '${name} run' has a variable here."
  echo "SPARK_ACTIVITY_WORKER_ACTIVITY_ARN=$(join "${activity_arns[@]}")"
  echo "SPARK_ACTIVITY_WORKER_DEFAULT_FILE=${default_file}"
  if [ ${#allowed_endpoints[@]} -gt 0 ]; then
    echo "SPARK_ACTIVITY_WORKER_ALLOWED_LIVY_ENDPOINT=$(join "${allowed_endpoints[@]}")"
  fi
  for key in livy-url max-concurrent-tasks pollers-per-activity sync-interval heartbeat-interval \
             livy-retry-timeout livy-outage-limit livy-retention yarn-url livy-auth livy-user \
             kerberos-principal livy-ca-file shutdown-mode drain-timeout metrics-listen log-format log-level; do
    if [ -n "${settings[$key]:-}" ]; then
      var=$(printf '%s' "$key" | tr 'a-z-' 'A-Z_')
      echo "SPARK_ACTIVITY_WORKER_${var}=${settings[$key]}"
    fi
  done
  # systemd 219 has no LoadCredential=: the worker reads the secret files directly.
  if [ "$systemd_version" -lt 248 ]; then
    case "${settings[livy-auth]:-}" in
      basic) echo "SPARK_ACTIVITY_WORKER_LIVY_PASSWORD_FILE=/etc/${name}/livy-password" ;;
      kerberos) echo "SPARK_ACTIVITY_WORKER_KERBEROS_KEYTAB=/etc/${name}/kerberos.keytab" ;;
    esac
  fi
  if [ -n "${settings[region]:-}" ]; then
    echo "AWS_REGION=${settings[region]}"
  fi
} > "$work/env"

if [ "$systemd_version" -lt 248 ]; then
  # What DynamicUser= and StateDirectory= do on newer systemd: a system user, a private directory.
  if ! getent passwd "$name" >/dev/null; then
    sudo useradd --system --no-create-home --home-dir "/var/lib/${name}" --shell /sbin/nologin "$name"
  fi
  sudo install -d -m 0700 "$root/var/lib/${name}"
  sudo chown "${name}:${name}" "$root/var/lib/${name}"
fi
sudo install -D -m 0755 "$work/${name}-${arch}" "$root/usr/local/bin/${name}"
[ -n "$upgrade" ] || sudo install -D -m 0600 "$work/env" "$root/etc/${name}/env"
# The secrets' files (the unit loads them as credentials): created empty, never overwritten.
for secret in livy-password kerberos.keytab; do
  if [ ! -e "$root/etc/${name}/${secret}" ]; then
    sudo install -D -m 0600 /dev/null "$root/etc/${name}/${secret}"
  fi
  if [ "$systemd_version" -lt 248 ]; then
    sudo chown "${name}:${name}" "$root/etc/${name}/${secret}"
  fi
done
sudo install -D -m 0644 "$work/${unit_file}" "$root/etc/systemd/system/${name}.service"
sudo systemctl daemon-reload
sudo systemctl enable "${name}.service"
# Stop the running worker detached from its tasks (SIGUSR2), whatever --shutdown-mode says, so the
# new one resumes them from the journal; it exits within TimeoutStopSec (open polls return first).
if sudo systemctl is-active --quiet "${name}.service"; then
  sudo systemctl kill --signal=SIGUSR2 --kill-who=main "${name}.service"
  for _ in $(seq 1 180); do
    sudo systemctl is-active --quiet "${name}.service" || break
    sleep 1
  done
fi
sudo systemctl restart "${name}.service"
echo "${name}: installed ${version} (${arch}, unit ${unit_file}, systemd ${systemd_version}); logs: journalctl -u ${name}"
