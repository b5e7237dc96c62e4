#!/usr/bin/env bash
# Runs a command with a throwaway MIT Kerberos realm, SPARK.TEST, whose KDC listens on a free
# 127.0.0.1 port (UDP and TCP; clients are told to use TCP), then stops the KDC and removes the
# realm. The command sees in its environment:
#   KRB5_CONFIG, KRB5_KDC_PROFILE        the realm's krb5.conf and kdc.conf
#   KRB5CCNAME                           a FILE: cache in the realm's directory, holding no tickets
#   KRB5RCACHEDIR                        the realm's directory (acceptor replay caches)
#   SPARK_TEST_REALM                     SPARK.TEST
#   SPARK_TEST_KDC_DIR                   the realm's directory
#   SPARK_TEST_KDC_PORT                  the KDC's port
#   SPARK_TEST_SERVICE_PRINCIPAL/_KEYTAB HTTP/localhost@SPARK.TEST, for a Livy to accept with
#   SPARK_TEST_WORKER_PRINCIPAL/_KEYTAB  spark-worker@SPARK.TEST
#   SPARK_TEST_WRONG_KEYTAB              a keytab for spark-worker with a key the KDC replaced
#   SPARK_TEST_SHORT_PRINCIPAL/_KEYTAB   short-lived@SPARK.TEST, whose tickets last 30 seconds
#   tests/rig/with-kdc.sh cargo test -p livy-server
set -euo pipefail
# The KDC tools live in sbin, which a non-root PATH may lack.
PATH="$PATH:/usr/sbin:/sbin"
for tool in krb5kdc kdb5_util kadmin.local kinit klist python3; do
  command -v "$tool" >/dev/null || { echo "$tool is not installed: run tests/rig/install.sh" >&2; exit 1; }
done

realm=SPARK.TEST
short_life=30
work=$(mktemp -d "${TMPDIR:-/tmp}/kdc.XXXXXX")
log="$work/krb5kdc.log"
kdc_pid=

stop() {
  if [ -n "$kdc_pid" ]; then
    kill -TERM "$kdc_pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$kdc_pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$kdc_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap stop EXIT

# A port free for both TCP and UDP on loopback.
port=$(python3 -c '
import socket
for _ in range(100):
    t = socket.socket(); t.bind(("127.0.0.1", 0)); p = t.getsockname()[1]
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        u.bind(("127.0.0.1", p))
    except OSError:
        continue
    finally:
        t.close(); u.close()
    print(p); break
')
[ -n "$port" ] || { echo "no free port for the KDC" >&2; exit 1; }

cat >"$work/krb5.conf" <<EOF
[libdefaults]
  default_realm = $realm
  dns_lookup_kdc = false
  dns_lookup_realm = false
  dns_canonicalize_hostname = false
  rdns = false
  udp_preference_limit = 1
  forwardable = false

[realms]
  $realm = {
    kdc = 127.0.0.1:$port
  }

[domain_realm]
  localhost = $realm
EOF

cat >"$work/kdc.conf" <<EOF
[kdcdefaults]
  kdc_listen = 127.0.0.1:$port
  kdc_tcp_listen = 127.0.0.1:$port

[realms]
  $realm = {
    database_name = $work/principal
    key_stash_file = $work/stash
    acl_file = $work/kadm5.acl
    max_life = 10h
    max_renewable_life = 0
    default_principal_flags = +preauth
    supported_enctypes = aes256-cts-hmac-sha1-96:normal aes128-cts-hmac-sha1-96:normal
  }

[logging]
  kdc = FILE:$work/krb5kdc.log
  default = FILE:$work/krb5kdc.log
EOF
: >"$work/kadm5.acl"

export KRB5_CONFIG="$work/krb5.conf" KRB5_KDC_PROFILE="$work/kdc.conf"
master=$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')
kdb5_util -r "$realm" create -s -P "$master" >"$work/kdb5_util.log" 2>&1 \
  || { cat "$work/kdb5_util.log" >&2; exit 1; }

kadm() {
  kadmin.local -r "$realm" -q "$1" >>"$work/kadmin.log" 2>&1 \
    || { echo "kadmin.local failed: $1" >&2; cat "$work/kadmin.log" >&2; exit 1; }
}
service="HTTP/localhost@$realm"
worker="spark-worker@$realm"
short="short-lived@$realm"
kadm "addprinc -randkey $service"
kadm "ktadd -k $work/service.keytab $service"
kadm "addprinc -randkey $worker"
# The first key goes into the wrong keytab; the second ktadd replaces it at the KDC.
kadm "ktadd -k $work/wrong.keytab $worker"
kadm "ktadd -k $work/worker.keytab $worker"
# A ticket lasts as long as the shortest of the client's, the server's (krbtgt for a TGT) and the
# realm's max_life: only the client's is short here, and the service's lasts 10 hours.
kadm "addprinc -randkey -maxlife \"$short_life seconds\" $short"
kadm "ktadd -k $work/short.keytab $short"

setsid krb5kdc -n -r "$realm" >>"$log" 2>&1 &
kdc_pid=$!

probe="$work/probe.ccache"
for _ in $(seq 1 100); do
  if KRB5CCNAME="FILE:$probe" kinit -kt "$work/worker.keytab" "$worker" 2>/dev/null; then
    ready=1; break
  fi
  kill -0 "$kdc_pid" 2>/dev/null || break
  sleep 0.1
done
rm -f "$probe"
if [ -z "${ready:-}" ]; then
  echo "the KDC did not answer; its log:" >&2
  tail -n 50 "$log" >&2
  exit 1
fi
echo "KDC for $realm ready at 127.0.0.1:$port (TCP and UDP), in $work" >&2

export KRB5CCNAME="FILE:$work/ccache" KRB5RCACHEDIR="$work" \
  SPARK_TEST_REALM="$realm" SPARK_TEST_KDC_DIR="$work" SPARK_TEST_KDC_PORT="$port" \
  SPARK_TEST_SERVICE_PRINCIPAL="$service" SPARK_TEST_SERVICE_KEYTAB="$work/service.keytab" \
  SPARK_TEST_WORKER_PRINCIPAL="$worker" SPARK_TEST_WORKER_KEYTAB="$work/worker.keytab" \
  SPARK_TEST_WRONG_KEYTAB="$work/wrong.keytab" \
  SPARK_TEST_SHORT_PRINCIPAL="$short" SPARK_TEST_SHORT_KEYTAB="$work/short.keytab"
"$@"
