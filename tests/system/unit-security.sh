#!/bin/bash
# systemd-analyze verify and security (offline) for every unit in units/.
# verify needs the binaries a unit names, so it runs against a scratch root that holds
# the units, the host's own system units and stubs for /usr/bin/hubsvc, /bin/kill and /usr/bin/true; `make test-system` verifies the installed units
# inside a real systemd too.
set -euo pipefail
cd "$(dirname "$0")/../.."
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
mkdir -p "$scratch/usr/bin" "$scratch/etc/systemd/system" "$scratch/var/lib/hubsvc"
printf '#!/bin/sh\nexit 0\n' > "$scratch/usr/bin/hubsvc"
mkdir -p "$scratch/bin" && cp "$scratch/usr/bin/hubsvc" "$scratch/bin/kill"
cp "$scratch/usr/bin/hubsvc" "$scratch/usr/bin/true"
chmod +x "$scratch/usr/bin/hubsvc" "$scratch/bin/kill" "$scratch/usr/bin/true"
mkdir -p "$scratch/usr/lib/systemd"
cp -a /usr/lib/systemd/system "$scratch/usr/lib/systemd/"
cp units/* "$scratch/etc/systemd/system/"
rc=0
for u in units/*; do
    name=$(basename "$u")
    if out=$(systemd-analyze verify --root="$scratch" "$name" 2>&1) && [ -z "$out" ]; then
        echo "verify $name: clean"
    else
        echo "verify $name: $out"; rc=1
    fi
    case $name in
        *.service)
            score=$(systemd-analyze security --offline=yes --root="$scratch" "$name" 2>/dev/null | tail -1)
            echo "security $name: ${score#*: }"
            ;;
    esac
done
exit $rc
