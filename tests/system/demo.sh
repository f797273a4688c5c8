#!/bin/bash
# make demo-systemd: boot the Debian 12 test root with systemd, install the RPM, start
# hubsvc, add a local user, and print how to reach it. The container runs on until you
# stop it (the command is printed). Its network is private: only its own loopback.
# Usage: tests/system/demo.sh ROOT RPM
set -euo pipefail
root=${1:?usage: demo.sh ROOT RPM}
rpm=$(realpath "${2:?usage: demo.sh ROOT RPM}")
state=/run/hubsvc-demo
mkdir -p "$state"
if [[ -f $state/nspawn.pid ]] && kill -0 "$(cat "$state/nspawn.pid")" 2>/dev/null; then
    echo "a demo container is already running (nspawn pid $(cat "$state/nspawn.pid"));"
    echo "stop it first: kill $(cat "$state/nspawn.pid")"
    exit 1
fi

setsid systemd-nspawn --quiet -D "$root" --volatile=overlay --boot --private-network \
    --register=no --keep-unit --bind-ro="$(dirname "$rpm")":/mnt/dist --console=pipe \
    </dev/null >"$state/nspawn.log" 2>&1 &
nspawn=$!
echo "$nspawn" > "$state/nspawn.pid"

leader=""
for _ in $(seq 100); do   # up to 10 s
    for c in $(ps --ppid "$nspawn" -o pid= 2>/dev/null); do
        [[ $(cat "/proc/$c/comm" 2>/dev/null) == systemd ]] && leader=$c
    done
    [[ -n $leader ]] && break
    sleep 0.1
done
[[ -n $leader ]] || { echo "the container did not start; see $state/nspawn.log" >&2; exit 1; }
inside() { nsenter -t "$leader" -a env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 "$@"; }
for _ in $(seq 60); do   # up to ~60 s
    s=$(inside timeout 5 systemctl is-system-running --wait 2>/dev/null || true)
    [[ $s == running || $s == degraded ]] && break
    sleep 1
done

inside rpm -i --nodeps "/mnt/dist/$(basename "$rpm")" 2>/dev/null
inside useradd -m -s /bin/bash demo
echo 'demo:demo' | inside chpasswd
inside systemctl start hubsvc
inside systemctl --no-pager status hubsvc | head -12
echo
cat <<TXT
hubsvc is running in a systemd 252 container (nspawn pid $nspawn, container PID 1 = $leader).
Log in as user "demo", password "demo" (a local Unix account: PAM).

  a shell inside:      nsenter -t $leader -a bash
  the journal:         nsenter -t $leader -a journalctl -u hubsvc -f
  status:              nsenter -t $leader -a hubsvc status
  the hub, from here:  nsenter -t $leader -n curl -s -o /dev/null -w '%{http_code}\n' http://127.0.0.1:8000/hub/health
TXT
if command -v socat >/dev/null; then
cat <<TXT
  in a browser:        socat TCP-LISTEN:8000,bind=127.0.0.1,fork,reuseaddr \\
                         EXEC:"nsenter -t $leader -n socat STDIO TCP\:127.0.0.1\:8000"
                       then open http://127.0.0.1:8000/ on this machine
TXT
fi
cat <<TXT
  stop the container:  kill $nspawn
TXT
