#!/usr/bin/env bash
# Builds the root folder the systemd stage boots with systemd-nspawn: a minimal Debian bookworm
# (systemd 252, the major version of Amazon Linux 2023) with sudo and the Kerberos libraries, as
# EMR's primary node has them.
# Cached in .cache/systemd-root; rebuilt only when the package list changes. Needs root.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
dir="$root/.cache/systemd-root"
# libgssapi-krb5-2: MIT Kerberos' GSSAPI library, which Amazon Linux always has (krb5-libs).
packages=systemd,systemd-sysv,dbus,sudo,ca-certificates,libgssapi-krb5-2
want="bookworm $packages"
if [ -f "$dir.installed" ] && [ "$(cat "$dir.installed")" = "$want" ]; then
  exit 0
fi
[ "$(id -u)" -eq 0 ] || { echo "tests/systemd/root.sh: debootstrap needs root" >&2; exit 1; }
rm -rf "$dir" "$dir.installed"
debootstrap --variant=minbase --include="$packages" bookworm "$dir" http://deb.debian.org/debian >"$dir.log" 2>&1 \
  || { echo "debootstrap failed; its log:" >&2; tail -n 30 "$dir.log" >&2; exit 1; }
# No login prompt on the console, nothing but what the test starts.
rm -f "$dir/etc/systemd/system/getty.target.wants/"* "$dir/etc/systemd/system/timers.target.wants/"*
echo "$want" > "$dir.installed"
echo "systemd root ready in $dir ($(chroot "$dir" systemctl --version | head -n 1))"
