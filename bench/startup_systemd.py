#!/usr/bin/env python3
"""P1 under the packaged path: hubsvc's cold start in a real systemd 252, side by side with
a bare script in the same container; figures printed, nothing asserted.

The RPM is installed in a Debian 12 container booted with systemd-nspawn (the system
tests' `booted()`), with the package's default config (launcher "auto" = "systemd": CHP
and the hub run as hubsvc-proxy.service and hubsvc-hub.service). N interleaved rounds of:

  hubsvc  `systemctl start hubsvc` (Type=notify: returns once hubsvc sent READY=1), timed
          inside the container with `date +%s.%N` around it (nsenter is not counted); the
          timeline of that start from hubsvc's journal events (starting, component_started,
          component_ready, ready) and from systemd's own timestamps of the three units
          (InactiveExit = job started, ExecMainStart = main process forked, ActiveEnter =
          for Type=exec the ExecStart binary was executed, for hubsvc.service READY=1);
          then `systemctl stop hubsvc`, and a bounded wait for all three units inactive
          and the ports closed.
  bare    one shell script inside the same container, hubsvc stopped: starts the bundled
          CHP with the command line hubsvc itself runs (proxy.launch.json) and the token
          from /var/lib/hubsvc/proxy_auth_token, polls its API /api/routes with curl every
          20 ms until 200, starts the bundled jupyterhub (hub.launch.json's command line,
          the generated jupyterhub_config.py copied back to /run/hubsvc, which the stop
          removed; cwd /var/lib/hubsvc; as root like hubsvc-hub.service; CHP as root too,
          where its unit gives it a DynamicUser=), polls /hub/health on the hub's bind
          URL until 200; total = that. It then also polls /hub/health through CHP's public port (what hubsvc's
          READY proves in addition; reported, not in the total) and kills both by PID.

goal: median(hubsvc) / median(bare) <= 1.10 (printed, not asserted).

Also measured: the `hubsvc exec` shim's own run time (the ExecStart of both component
units, which executes CHP / the hub): `/usr/bin/hubsvc exec proxy` without credentials,
which imports what the shim imports and exits 78 where the real one would exec.

Each round runs both sides, after --gap seconds of quiet each; by default which side
runs first alternates (the second start of a round was seen to be ~0.6 s slower, in the
hub's start, on either side), and per-round figures are printed by position.

Needs root, systemd-nspawn and the RPM + root the system tests use. Without --rpm (or
HUBSVC_RPM / HUBSVC_RPM_UPGRADE), tests/system/conftest.py builds them in the checkout
(`make -f Makefile.system rpm-pair system-root`). Logs of the container go to --out.

Usage: .venv/bin/python bench/startup_systemd.py [--runs 7] [--rpm dist/hubsvc-….rpm]
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import re
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import tests.system.conftest as sysconf  # noqa: E402
from tests.system.conftest import Machine, booted, wait_until  # noqa: E402

MAIN, PROXY, HUB = "hubsvc.service", "hubsvc-proxy.service", "hubsvc-hub.service"
UNITS = (MAIN, PROXY, HUB)
STATE_DIR = "/var/lib/hubsvc"
RUN_DIR = "/run/hubsvc"
BENCH_DIR = "/root/hubsvc-bench"  # inside the container: copies of what hubsvc generated
START_TIMEOUT_S = 150
STOP_TIMEOUT_S = 120
SETTLE_TIMEOUT_S = 30
POLL_S = 0.02
BARE_LIMIT_S = 60  # each poll loop of the bare script gives up after this
SHIM_RUNS = 15

# hubsvc's timeline: (label, source, key). source "journal": the first hubsvc event whose
# HUBSVC_EVENT (and HUBSVC_COMPONENT) match; "unit": a systemd timestamp of a unit.
HUBSVC_STEPS: list[tuple[str, str, tuple[str, ...]]] = [
    ("hubsvc.service main process forked", "unit", (MAIN, "ExecMainStartTimestampMonotonic")),
    ("hubsvc logged `starting` (Python, config loaded)", "journal", ("starting",)),
    ("hubsvc logged `launcher` (supervisor built)", "journal", ("launcher",)),
    ("proxy unit activating (StartUnit job runs)", "unit", (PROXY, "InactiveExitTimestampMonotonic")),
    ("proxy unit main process forked", "unit", (PROXY, "ExecMainStartTimestampMonotonic")),
    ("proxy unit active (shim executed, Type=exec)", "unit", (PROXY, "ActiveEnterTimestampMonotonic")),
    ("component_started proxy (job done seen)", "journal", ("component_started", "proxy")),
    ("component_ready proxy (CHP's API answers)", "journal", ("component_ready", "proxy")),
    ("hub unit activating (StartUnit job runs)", "unit", (HUB, "InactiveExitTimestampMonotonic")),
    ("hub unit main process forked", "unit", (HUB, "ExecMainStartTimestampMonotonic")),
    ("hub unit active (shim executed, Type=exec)", "unit", (HUB, "ActiveEnterTimestampMonotonic")),
    ("component_started hub (job done seen)", "journal", ("component_started", "hub")),
    ("component_ready hub (/hub/health answers)", "journal", ("component_ready", "hub")),
    ("ready (chain through the public port proven)", "journal", ("ready",)),
    ("hubsvc.service active (systemd got READY=1)", "unit", (MAIN, "ActiveEnterTimestampMonotonic")),
]
TOTAL = "systemctl start returned (total)"
BARE_STEPS = ["CHP's API answers", "hub's /hub/health answers (total)",
              "(extra) /hub/health through CHP's public port"]

BARE_SCRIPT = r"""#!/bin/sh
# bare start, timed by the script itself; prints one line:
# BARE t0 t_api t_hub t_public n_api n_hub n_public cpu_chp cpu_hub   (or BARE_FAIL what)
set -uf
B=__BENCH_DIR__
TOKEN=$(cat __STATE_DIR__/proxy_auth_token)
LIMIT=$(( __LIMIT_S__ * 50 ))
now() { date +%s.%N; }
code() { curl -s -o /dev/null --max-time 1 -w '%{http_code}' "$@"; }
chp=""; hub=""
stop_all() {
    for p in $hub $chp; do
        kill -TERM "$p" 2>/dev/null
        i=0
        while kill -0 "$p" 2>/dev/null && [ $i -lt 150 ]; do sleep 0.1; i=$((i + 1)); done
        kill -KILL "$p" 2>/dev/null
        wait "$p" 2>/dev/null
    done
    rm -rf __RUN_DIR__
}
poll() {  # poll URL [curl args]: until 200, every 20 ms, bounded; prints the attempts
    url=$1; shift; n=0
    while [ "$(code "$@" "$url")" != 200 ]; do
        n=$((n + 1))
        if [ $n -ge $LIMIT ]; then
            echo "BARE_FAIL $url" >&2; tail -n 30 $B/bare-chp.log $B/bare-hub.log >&2
            stop_all; exit 1
        fi
        sleep 0.02
    done
    echo $n
}
# the generated config writes next to itself at load (admin_overrides.json), as under
# hubsvc: its directory as hubsvc.service's RuntimeDirectory= makes it, gone again after
if [ -e __RUN_DIR__ ]; then echo "BARE_FAIL __RUN_DIR__ exists: hubsvc is running" >&2; exit 1; fi
mkdir -m 0750 __RUN_DIR__ && cp $B/jupyterhub_config.py __RUN_DIR__/ || exit 1
t0=$(now)
( cd / && exec env -i $(cat $B/proxy.env) CONFIGPROXY_AUTH_TOKEN="$TOKEN" \
      $(cat $B/proxy.argv) >>$B/bare-chp.log 2>&1 ) &
chp=$!
n_api=$(poll "__API_URL__/api/routes" -H "Authorization: token $TOKEN") || exit 1
t_api=$(now)
( cd __STATE_DIR__ && exec env -i $(cat $B/hub.env) PYTHONFAULTHANDLER=1 CONFIGPROXY_AUTH_TOKEN="$TOKEN" \
      $(cat $B/hub.argv) >>$B/bare-hub.log 2>&1 ) &
hub=$!
n_hub=$(poll "__HUB_URL__/hub/health") || exit 1
t_hub=$(now)
n_pub=$(poll "__PUBLIC_URL__/hub/health") || exit 1
t_pub=$(now)
# CPU seconds each has used so far (utime + stime)
cpu() { awk -v hz="$(getconf CLK_TCK)" '{ printf "%.2f", ($14 + $15) / hz }' /proc/$1/stat; }
echo "BARE $t0 $t_api $t_hub $t_pub $n_api $n_hub $n_pub $(cpu $chp) $(cpu $hub)"
stop_all
"""


def med(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def load() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def clock_offset(m: Machine) -> float:
    """CLOCK_REALTIME - CLOCK_MONOTONIC inside the container (one kernel, so also the
    host's): turns systemd's and the journal's monotonic stamps into `date` seconds."""
    return float(m.out("python3 -c 'import time; print(repr(time.time() - time.monotonic()))'"))


def listening(m: Machine, ports: set[int]) -> set[int]:
    text = m.out("cat /proc/net/tcp /proc/net/tcp6")
    found = set()
    for line in text.splitlines()[1:]:
        parts = line.split()
        if len(parts) > 3 and parts[3] == "0A" and ":" in parts[1]:  # LISTEN
            port = int(parts[1].rsplit(":", 1)[1], 16)
            if port in ports:
                found.add(port)
    return found


def settle(m: Machine, ports: set[int]) -> None:
    """All three units inactive and nothing listening on hubsvc's ports, bounded."""

    def quiet() -> bool:
        states = m.run(f"systemctl is-active {' '.join(UNITS)}", check=False).stdout.split()
        return all(s in ("inactive", "failed") for s in states) and not listening(m, ports)

    wait_until(quiet, SETTLE_TIMEOUT_S, "hubsvc's units inactive and its ports closed", interval=0.1)


def cpu_s(m: Machine, pid: int) -> float:
    """utime + stime of a process inside the container, in seconds."""
    fields = m.out(f"cat /proc/{pid}/stat").rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / int(m.out("getconf CLK_TCK"))


def unit_props(m: Machine) -> dict[str, dict[str, str]]:
    names = sorted({key[1] for _, src, key in HUBSVC_STEPS if src == "unit"} | {"MainPID"})
    text = m.out(f"systemctl show {' '.join('-p ' + n for n in ['Id', *names])} {' '.join(UNITS)}")
    props: dict[str, dict[str, str]] = {}
    for block in text.split("\n\n"):
        kv = dict(line.split("=", 1) for line in block.splitlines() if "=" in line)
        if "Id" in kv:
            props[kv["Id"]] = kv
    return props


def event_time(entries: list[dict[str, Any]], event: str, component: str | None) -> float | None:
    """Monotonic seconds of the first journal entry of hubsvc's with this event."""
    for e in entries:
        ev = e.get("HUBSVC_EVENT") or str(e.get("MESSAGE", "")).split(" ", 1)[0]
        if ev != event:
            continue
        if component is not None and e.get("HUBSVC_COMPONENT") != component:
            continue
        return int(e["__MONOTONIC_TIMESTAMP"]) / 1e6
    return None


def hubsvc_round(m: Machine, offset: float, steps: dict[str, list[float]], cpu: dict[str, list[float]],
                 ports: set[int]) -> float:
    cursor = m.cursor()
    out = m.out(f"t0=$(date +%s.%N); systemctl start {MAIN}; rc=$?; t1=$(date +%s.%N); "
                "echo $t0 $t1 $rc", timeout=START_TIMEOUT_S + 30)
    t0_s, t1_s, rc = out.split()
    if rc != "0":
        raise RuntimeError(f"systemctl start {MAIN} exited {rc}:\n"
                           + m.out(f"journalctl -u {MAIN} --no-pager | tail -40"))
    t0 = float(t0_s) - offset  # monotonic
    props = unit_props(m)
    entries = m.journal(MAIN, since_cursor=cursor)
    for label, src, key in HUBSVC_STEPS:
        at: float | None
        if src == "unit":
            raw = props.get(key[0], {}).get(key[1], "0")
            at = int(raw) / 1e6 if raw.isdigit() and int(raw) else None
        else:
            at = event_time(entries, key[0], key[1] if len(key) > 1 else None)
        if at is not None:
            steps.setdefault(label, []).append(at - t0)
    total = float(t1_s) - float(t0_s)
    steps.setdefault(TOTAL, []).append(total)
    for unit in UNITS:  # CPU used by each unit's main process, just after start returned
        pid = props.get(unit, {}).get("MainPID", "0")
        if pid.isdigit() and int(pid):
            cpu.setdefault(unit, []).append(cpu_s(m, int(pid)))
    m.run(f"systemctl stop {MAIN}", timeout=STOP_TIMEOUT_S)
    settle(m, ports)
    return total


def bare_round(m: Machine, steps: dict[str, list[float]], polls: list[float],
               cpu: dict[str, list[float]], ports: set[int]) -> float:
    out = m.out(f"sh {BENCH_DIR}/bare.sh", timeout=3 * BARE_LIMIT_S + 60)
    line = next((ln for ln in out.splitlines() if ln.startswith("BARE ")), "")
    if not line:
        raise RuntimeError(f"the bare script printed no result:\n{out[-2000:]}")
    t0, t_api, t_hub, t_pub, n_api, n_hub, _n_pub, cpu_chp, cpu_hub = (
        float(x) for x in line.split()[1:])
    cpu.setdefault("bare CHP", []).append(cpu_chp)
    cpu.setdefault("bare hub", []).append(cpu_hub)
    for label, at in zip(BARE_STEPS, (t_api, t_hub, t_pub), strict=True):
        steps.setdefault(label, []).append(at - t0)
    # the poll loops' real period (curl's own run time + the 20 ms sleep)
    if n_api:
        polls.append((t_api - t0) / n_api)
    if n_hub:
        polls.append((t_hub - t_api) / n_hub)
    settle(m, ports)
    return t_hub - t0


def hub_settings(m: Machine) -> dict[str, Any]:
    """The settings hubsvc embedded in the generated jupyterhub_config.py (_H)."""
    text = m.out(f"cat {BENCH_DIR}/jupyterhub_config.py")
    found = re.search(r"^_H = _json\.loads\((.*)\)$", text, re.M)
    if not found:
        raise RuntimeError("no _H settings in the generated jupyterhub_config.py")
    return json.loads(ast.literal_eval(found.group(1)))


def prepare(m: Machine) -> set[int]:
    """Install the RPM, start hubsvc once (database, secrets, generated config; warm
    caches), keep copies of what the bare script runs; returns hubsvc's ports."""
    t = time.monotonic()
    m.run(f"rpm -i --nodeps {m.rpm}", timeout=180)
    print(f"rpm -i: {time.monotonic() - t:.1f} s")
    m.run("hubsvc check-config")
    cursor = m.cursor()
    m.run(f"systemctl start {MAIN}", timeout=START_TIMEOUT_S)
    launcher = [e.get("HUBSVC_LAUNCHER") for e in m.journal(MAIN, since_cursor=cursor)
                if e.get("HUBSVC_EVENT") == "launcher"]
    print(f"launcher (package default): {launcher[0] if launcher else '?'}")
    for unit in (PROXY, HUB):
        if m.prop(unit, "ActiveState") != "active":
            raise RuntimeError(f"{unit} is not active: this run does not use the systemd launcher")
    m.run(f"mkdir -p {BENCH_DIR} && cp {RUN_DIR}/jupyterhub_config.py {RUN_DIR}/proxy.launch.json "
          f"{RUN_DIR}/hub.launch.json {BENCH_DIR}/")
    for comp in ("proxy", "hub"):
        doc = json.loads(m.out(f"cat {BENCH_DIR}/{comp}.launch.json"))
        argv = [str(a) for a in doc["argv"]]
        if argv[1:3] == ["-m", "hubsvc.hold"]:  # the hub's head start: its own command follows
            argv = argv[3:]
        env = [f"{k}={v}" for k, v in doc.get("env", {}).items() if k != "HUBSVC_HOLD"]
        for name, words in (("argv", argv), ("env", env)):
            if any(re.search(r"\s", w) for w in words):
                raise RuntimeError(f"{comp}.launch.json: a word with white space: {words}")
            m.run(f"printf '%s\\n' {shlex.join(words)} > {BENCH_DIR}/{comp}.{name}")
        print(f"{comp}: {shlex.join(argv)}   (cwd {doc.get('cwd')})")
    h = hub_settings(m)
    urls = {"__API_URL__": h["api_url"], "__HUB_URL__": h["hub_bind_url"],
            "__PUBLIC_URL__": h["public_url"]}
    # where a client connects to: the public URL may name the wildcard address
    urls = {k: v.rstrip("/").replace("//0.0.0.0:", "//127.0.0.1:").replace("//[::]:", "//[::1]:")
            for k, v in urls.items()}
    print("urls: " + ", ".join(f"{k.strip('_').lower()} {v}" for k, v in urls.items()))
    script = BARE_SCRIPT
    for k, v in {**urls, "__BENCH_DIR__": BENCH_DIR, "__STATE_DIR__": STATE_DIR, "__RUN_DIR__": RUN_DIR,
                 "__LIMIT_S__": str(BARE_LIMIT_S)}.items():
        script = script.replace(k, v)
    m.run(f"cat > {BENCH_DIR}/bare.sh <<'EOF'\n{script}EOF")
    ports = {int(re.sub(r".*:(\d+).*", r"\1", u)) for u in urls.values()}
    m.run(f"systemctl stop {MAIN}", timeout=STOP_TIMEOUT_S)
    settle(m, ports)
    m.run("command -v curl")
    return ports


def shim_time(m: Machine) -> list[float]:
    """`hubsvc exec proxy` without credentials: the shim's interpreter and imports, up to
    where the real one would exec CHP (it exits 78 there instead)."""
    out = m.out(f"for i in $(seq {SHIM_RUNS}); do a=$(date +%s.%N); "
                "/usr/bin/hubsvc exec proxy >/dev/null 2>&1; rc=$?; b=$(date +%s.%N); "
                "echo $a $b $rc; done", timeout=120)
    times = []
    for line in out.splitlines():
        a, b, rc = line.split()
        if rc == "78":
            times.append(float(b) - float(a))
    return times[2:]  # the first runs warm the page cache


# What `hubsvc run` imports before it logs `starting` (cli.cmd_run, cli._run), as of this
# writing; a name that no longer exists makes that timing "not measured".
RUN_IMPORTS = ("faulthandler, asyncio, structlog, hubsvc.cli, hubsvc.logs, hubsvc.secrets, "
               "hubsvc.tls, hubsvc.launch.systemd, hubsvc.components, hubsvc.hubconfig, "
               "hubsvc.loopback, hubsvc.probes, hubsvc.routewatch, hubsvc.hubapi, hubsvc.notify, "
               "hubsvc.slurm, hubsvc.supervisor, hubsvc.watch")


def micro_timings(m: Machine, runs: int = 7) -> dict[str, list[float]]:
    """Pieces of hubsvc's own start before `starting`, outside its unit (no sandbox): the
    bundled interpreter, `hubsvc check-config` (interpreter, cli, config, static checks),
    and the imports `hubsvc run` does before it logs `starting`."""
    py = m.out("head -1 /opt/hubsvc/bin/hubsvc").removeprefix("#!").strip()
    cmds = {
        f"interpreter alone ({py} -c pass)": f"{py} -c pass",
        "hubsvc check-config": "hubsvc check-config",
        "interpreter + the imports `hubsvc run` does before `starting`":
            f"{py} -c 'import gc; gc.disable(); import {RUN_IMPORTS}'",
    }
    res: dict[str, list[float]] = {}
    for label, cmd in cmds.items():
        out = m.out(f"for i in $(seq {runs + 2}); do a=$(date +%s.%N); {cmd} >/dev/null 2>&1; "
                    "rc=$?; b=$(date +%s.%N); echo $a $b $rc; done", timeout=300)
        rows = [line.split() for line in out.splitlines()]
        ok = all(r[2] == "0" for r in rows)
        res[label] = [float(b) - float(a) for a, b, _ in rows][2:] if ok else []
    return res


def table(title: str, steps: dict[str, list[float]], order: list[str]) -> None:
    print(f"\n{title}  (seconds after t0; median [min .. max] of the rounds)")
    prev = 0.0
    for label in order:
        xs = steps.get(label, [])
        if not xs:
            print(f"  {label:58s}      —  (not measured)")
            continue
        md = med(xs)
        print(f"  {label:58s} {md:7.3f}  [{min(xs):.3f} .. {max(xs):.3f}]  step {md - prev:+.3f}")
        prev = md


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--rpm", help="the RPM to install (default: HUBSVC_RPM, or built by "
                                  "tests/system/conftest.py in the checkout)")
    ap.add_argument("--order", choices=("alternate", "hubsvc-first", "bare-first"),
                    default="alternate",
                    help="which side runs first in a round (alternate: hubsvc first in odd "
                         "rounds): the second start of a round was seen to be slower")
    ap.add_argument("--gap", type=float, default=3.0,
                    help="seconds of quiet after each stop, before the next start")
    ap.add_argument("--out", default="/tmp/hubsvc-bench-systemd",
                    help="where the container's console log and journal go")
    args = ap.parse_args()
    if args.rpm:
        rpm = str(Path(args.rpm).resolve())
        os.environ["HUBSVC_RPM"] = os.environ["HUBSVC_RPM_UPGRADE"] = rpm
    sysconf.OUT = Path(args.out)  # keep the checkout's test-output/ out of it
    sysconf.OUT.mkdir(parents=True, exist_ok=True)

    print(f"load at start: {load()}")
    print(f"host: {os.cpu_count()} CPUs, {os.uname().release}")
    with booted("bench-startup") as m:
        print(f"rpm: {m.rpm}")
        ports = prepare(m)
        offset = clock_offset(m)
        # one bare warm-up too: curl and the shell in the page cache, like hubsvc's files
        bare_round(m, {}, [], {}, ports)
        hubsvc_total: list[float] = []
        bare_total: list[float] = []
        h_steps: dict[str, list[float]] = {}
        b_steps: dict[str, list[float]] = {}
        polls: list[float] = []
        cpu: dict[str, list[float]] = {}
        firsts: list[str] = []
        for i in range(args.runs):  # interleaved, so drift hits both alike
            bare_first = args.order == "bare-first" or (args.order == "alternate" and i % 2 == 1)
            firsts.append("bare" if bare_first else "hubsvc")
            for side in (("bare", "hubsvc") if bare_first else ("hubsvc", "bare")):
                time.sleep(args.gap)
                if side == "hubsvc":
                    hubsvc_total.append(hubsvc_round(m, offset, h_steps, cpu, ports))
                else:
                    bare_total.append(bare_round(m, b_steps, polls, cpu, ports))
            print(f"round {i + 1}: hubsvc {hubsvc_total[-1]:.3f} s   bare {bare_total[-1]:.3f} s"
                  f"   (load {os.getloadavg()[0]:.2f})")
        drift = clock_offset(m) - offset
        shim = shim_time(m)
        micro = micro_timings(m)

    print("\nper round (s):")
    print("  hubsvc: " + " ".join(f"{x:.3f}" for x in hubsvc_total))
    print("  bare:   " + " ".join(f"{x:.3f}" for x in bare_total))
    print("  first:  " + " ".join(f"{x:>5s}" for x in firsts))
    for side, totals in (("hubsvc", hubsvc_total), ("bare", bare_total)):
        for pos, label in ((True, "first"), (False, "second")):
            xs = [t for t, f in zip(totals, firsts, strict=True) if (f == side) == pos]
            if xs:
                print(f"  {side} when it ran {label} in its round: median {med(xs):.3f} s (n={len(xs)})")
    print("CPU s of each main process when its start was done, per round:")
    for k, v in cpu.items():
        print(f"  {k:22s} " + " ".join(f"{x:.2f}" for x in v))
    table("hubsvc (systemctl start hubsvc, launcher systemd)", h_steps,
          [label for label, _, _ in HUBSVC_STEPS] + [TOTAL])
    table("bare (same container, same programs, same config)", b_steps, BARE_STEPS)

    def d(a: str, b: str, s: dict[str, list[float]]) -> float:
        """median over rounds of (b - a), rounds where both were measured"""
        pairs = list(zip(s.get(a, []), s.get(b, []), strict=False))
        return med([y - x for x, y in pairs]) if len(s.get(a, [])) == len(s.get(b, [])) else float("nan")

    H = [label for label, _, _ in HUBSVC_STEPS]
    print("\ncomparable spans (median of per-round differences, s):")
    rows = [
        ("t0 -> CHP's unit process forked (hubsvc start, StartUnit, systemd)",
         med(h_steps.get(H[4], [])), 0.0),
        ("proxy unit fork -> shim executed (sandbox, DynamicUser, credentials)",
         d(H[4], H[5], h_steps), float("nan")),
        ("proxy unit fork -> CHP's API answers  |  bare: CHP started -> API answers",
         d(H[4], H[7], h_steps), med(b_steps.get(BARE_STEPS[0], []))),
        ("CHP's API answers -> hub unit process forked  |  bare: ~0",
         d(H[7], H[9], h_steps), 0.0),
        ("hub unit fork -> shim executed (sandbox, credentials)",
         d(H[9], H[10], h_steps), float("nan")),
        ("hub unit fork -> /hub/health answers  |  bare: hub started -> /hub/health",
         d(H[9], H[12], h_steps),
         med([y - x for x, y in zip(b_steps.get(BARE_STEPS[0], []), b_steps.get(BARE_STEPS[1], []),
                                    strict=True)])),
        ("/hub/health -> chain proven (ready)  |  bare: -> /hub/health via public port",
         d(H[12], H[13], h_steps),
         med([y - x for x, y in zip(b_steps.get(BARE_STEPS[1], []), b_steps.get(BARE_STEPS[2], []),
                                    strict=True)])),
        ("ready logged -> systemctl start returned", d(H[13], TOTAL, h_steps), float("nan")),
    ]
    for label, hv, bv in rows:
        print(f"  {label:78s} hubsvc {hv:6.3f}   bare {bv:6.3f}")
    if shim:
        print(f"\n`hubsvc exec proxy` shim alone (no credentials, exits 78 where it would exec): "
              f"median {med(shim):.3f} s over {len(shim)} runs [{min(shim):.3f} .. {max(shim):.3f}]")
    for label, xs in micro.items():
        print(f"{label}: " + (f"median {med(xs):.3f} s over {len(xs)} runs [{min(xs):.3f} .. {max(xs):.3f}]"
                              if xs else "not measured (failed)"))
    print("CPU used by each main process when the start was done (median s): "
          + ", ".join(f"{k} {med(v):.2f}" for k, v in cpu.items()))
    if polls:
        print(f"bare poll loop's real period (curl + sleep 0.02): median {med(polls) * 1000:.0f} ms")
    print(f"clock offset drift over the run: {drift * 1e6:.0f} µs")

    mh, mb = med(hubsvc_total), med(bare_total)
    print(f"\nP1 (systemd) hubsvc start->READY median {mh:.3f} s  vs  bare {mb:.3f} s   "
          f"ratio {mh / mb:.3f}   (goal <= 1.10)")
    print(f"load at end: {load()}")


if __name__ == "__main__":
    main()
