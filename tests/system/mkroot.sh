#!/bin/bash
# Build (once) the Debian 12 root that the system tests boot with systemd-nspawn.
# Usage: mkroot.sh [DEST]   (default /var/cache/hubsvc-test/bookworm)
# The root lives outside git. It is rebuilt only when missing or when the package
# list below changes (the list's hash is stored next to it).
# The mirror is read from this host's own apt sources at run time.
set -euo pipefail

DEST=${1:-/var/cache/hubsvc-test/bookworm}
PKGS="systemd,systemd-sysv,dbus,libpam-modules,libpam-runtime,login,passwd,python3,nodejs,rpm,procps,psmisc,util-linux,curl"
STAMP="$DEST.stamp"
want=$(printf '%s\n' "bookworm minbase $PKGS" | sha256sum | cut -d' ' -f1)

if [[ -x "$DEST/usr/lib/systemd/systemd" && -f "$STAMP" && "$(cat "$STAMP")" == "$want" ]]; then
    echo "system root up to date: $DEST"
    exit 0
fi

for tool in debootstrap systemd-nspawn; do
    if ! command -v "$tool" >/dev/null; then
        echo "installing $tool" >&2
        apt-get install -y -q debootstrap systemd-container >&2
        break
    fi
done

mirror=""
for f in /etc/apt/sources.list.d/*.sources; do
    [[ -f $f ]] || continue
    # first URIs: line of a stanza whose Suites include bookworm (not -security)
    mirror=$(awk '/^URIs:/ {u=$2} /^Suites:/ && / bookworm( |$)/ {print u; exit}' "$f")
    [[ -n $mirror ]] && break
done
if [[ -z $mirror && -f /etc/apt/sources.list ]]; then
    mirror=$(awk '$1=="deb" && $3=="bookworm" {print $2; exit}' /etc/apt/sources.list)
fi
if [[ -z $mirror ]]; then
    echo "no Debian bookworm mirror found in /etc/apt/sources.list(.d)" >&2
    exit 2
fi

tmp="$DEST.tmp.$$"
rm -rf "$tmp"
mkdir -p "$(dirname "$DEST")"
trap 'rm -rf "$tmp"' EXIT
echo "debootstrap bookworm into $tmp" >&2
debootstrap --variant=minbase --include="$PKGS" bookworm "$tmp" "$mirror" >&2

# Boot quietly and fast: no getty on the console, no hostname/machine-id prompts.
echo hubsvc-test > "$tmp/etc/hostname"
printf '127.0.0.1 localhost hubsvc-test\n::1 localhost\n' > "$tmp/etc/hosts"
rm -f "$tmp/etc/machine-id"; : > "$tmp/etc/machine-id"
ln -sf /dev/null "$tmp/etc/systemd/system/console-getty.service"
ln -sf /dev/null "$tmp/etc/systemd/system/getty@.service"
# The tests' journal queries need the journal to be persistent across a unit restart only,
# not across boots; volatile storage is enough and faster.
mkdir -p "$tmp/etc/systemd/journald.conf.d"
printf '[Journal]\nStorage=volatile\nRateLimitBurst=0\n' > "$tmp/etc/systemd/journald.conf.d/hubsvc-test.conf"
apt_clean() { rm -rf "$tmp"/var/cache/apt/archives/*.deb "$tmp"/var/lib/apt/lists/*; }
apt_clean

rm -rf "$DEST"
mv "$tmp" "$DEST"
trap - EXIT
echo "$want" > "$STAMP"
echo "system root built: $DEST"
