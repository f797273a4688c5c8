"""A long soak of random real faults with users' servers running.

    ./.venv/bin/python bench/chaos.py --faults 200 --users 3 --seed 1

Starts hubsvc (real CHP, real JupyterHub) on free loopback ports, spawns --users servers,
then injects --faults random faults (SIGKILL / SIGSTOP / SIGTERM of CHP, the hub or both;
the hub then CHP while the hub restarts; the proxy's port taken while CHP is down). After
each it measures the time until hubsvc is ready again with new processes *and* every
user's route answers through the public URL. At the end it stops hubsvc and reports:
faults injected and recovered, median and worst recovery per kind, restarts, servers lost
(a user's server pid that changed or died), orphan processes (anything hubsvc started that
outlived it), and `PRAGMA integrity_check` of the hub's database.
Figures, not asserts; see bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import random
import signal
import socket
import sqlite3
import statistics
import sys
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.integration.hubsvc_harness import Instance, new_root, proc_alive  # noqa: E402

KINDS = ("kill_proxy", "kill_hub", "kill_both", "stop_proxy", "stop_hub", "term_proxy",
         "term_hub", "hub_then_proxy", "port_taken")


def pids(inst: Instance) -> dict[str, int | None]:
    return {k: v["pid"] for k, v in inst.status()["components"].items()}


def hit(pid: int | None, sig: int) -> None:
    if pid:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def all_routes_ok(inst: Instance, tokens: dict[str, str]) -> bool:
    with httpx.Client(trust_env=False, timeout=2) as c:
        for user, tok in tokens.items():
            try:
                r = c.get(f"{inst.public}/user/{user}/api/status",
                          headers={"Authorization": f"token {tok}"})
            except httpx.HTTPError:
                return False
            if r.status_code != 200:
                return False
    return True


def wait_recovered(inst: Instance, replaced: dict[str, int | None], tokens: dict[str, str],
                   limit: float) -> float | None:
    """The monotonic time at which hubsvc was ready with new processes and every user's
    route answered, or None."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit:
        try:
            st = inst.status()
        except (OSError, ValueError):
            time.sleep(0.02)
            continue
        comps = st["components"]
        fresh = all(comps[n]["pid"] not in (None, old) for n, old in replaced.items())
        if st["ready"] and fresh and all_routes_ok(inst, tokens):
            return time.monotonic()
        if inst.proc is not None and inst.proc.poll() is not None:
            return None
        time.sleep(0.02)
    return None


def inject(inst: Instance, kind: str) -> tuple[float, dict[str, int | None], list[int]]:
    """Do the fault; return (its start time, what must be replaced, pids to SIGCONT)."""
    before = pids(inst)
    t0 = time.monotonic()
    stopped: list[int] = []
    if kind == "kill_proxy":
        hit(before["proxy"], signal.SIGKILL)
        return t0, {"proxy": before["proxy"]}, stopped
    if kind == "kill_hub":
        hit(before["hub"], signal.SIGKILL)
        return t0, {"hub": before["hub"]}, stopped
    if kind == "kill_both":
        hit(before["proxy"], signal.SIGKILL)
        hit(before["hub"], signal.SIGKILL)
        return t0, dict(before), stopped
    if kind in ("stop_proxy", "stop_hub"):
        name = kind.split("_")[1]
        hit(before[name], signal.SIGSTOP)
        stopped.append(before[name])  # type: ignore[arg-type]
        return t0, {name: before[name]}, stopped
    if kind in ("term_proxy", "term_hub"):
        name = kind.split("_")[1]
        hit(before[name], signal.SIGTERM)
        return t0, {name: before[name]}, stopped
    if kind == "hub_then_proxy":
        hit(before["hub"], signal.SIGKILL)
        for _ in range(600):
            c = inst.status()["components"]["hub"]
            if c["state"] == "starting" and c["pid"] not in (None, before["hub"]):
                break
            time.sleep(0.01)
        hit(before["proxy"], signal.SIGKILL)
        return t0, dict(before), stopped
    if kind == "port_taken":
        hit(before["proxy"], signal.SIGKILL)
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        for _ in range(500):
            try:
                s.bind(("127.0.0.1", inst.public_port))
                s.listen(1)
                break
            except OSError:
                time.sleep(0.002)
        time.sleep(1.5)  # CHP fails to listen, again and again, while the port is taken
        s.close()
        return t0, {"proxy": before["proxy"]}, stopped
    raise ValueError(kind)


def leftovers(inst: Instance) -> list[int]:
    """Processes still running CHP or the hub of this instance. Matched on the command
    line, not on pids from the log: a 2-core test machine's pid_max (32768) wraps within a
    long soak, and a reused pid is someone else's process."""
    marks = (f"--port {inst.public_port}".encode(), f"--api-port {inst.api_port}".encode(),
             str(inst.run_dir).encode())
    out = []
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            cmd = (p / "cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        if any(m in cmd for m in marks) and proc_alive(int(p.name)):
            out.append(int(p.name))
    return sorted(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--faults", type=int, default=200)
    ap.add_argument("--users", type=int, default=3)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--limit", type=float, default=120.0, help="seconds a recovery may take")
    ap.add_argument("--json", metavar="PATH", help="also write the figures as JSON here")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    root = new_root("hubsvc-chaos-bench-")
    inst = Instance(root, overrides={
        "restart": {"max_restarts": 1000, "max_restarts_total": 2000, "backoff_max_s": 1.0},
        "hub": {"start_timeout_s": 30, "user_servers_on_stop": "keep"},
        "proxy": {"start_timeout_s": 10}})
    load0 = os.getloadavg()[0]
    t_start = time.time()
    inst.start()
    users = [f"soak{i}" for i in range(args.users)]
    for u in users:
        inst.spawn(u, timeout=120)
    tokens = {u: inst.user_token(u) for u in users}
    servers0 = sorted(inst.user_server_pids())
    per_kind: dict[str, list[float]] = {k: [] for k in KINDS}
    failed: list[tuple[int, str]] = []
    try:
        for i in range(args.faults):
            kind = rng.choice(KINDS)
            t0, replaced, stopped = inject(inst, kind)
            done_at = wait_recovered(inst, replaced, tokens, args.limit)
            for pid in stopped:
                if proc_alive(pid):
                    hit(pid, signal.SIGCONT)
            if done_at is None:
                failed.append((i, kind))
                print(f"{i:4d} {kind:<15} NOT RECOVERED within {args.limit:g}s", flush=True)
                if inst.proc is not None and inst.proc.poll() is not None:
                    print("hubsvc exited; stopping the soak", flush=True)
                    break
                continue
            took = done_at - t0  # from the first signal, whatever the fault's own duration
            per_kind[kind].append(took)
            print(f"{i:4d} {kind:<15} recovered in {took:6.2f}s", flush=True)
        st = inst.status()
        servers1 = sorted(inst.user_server_pids())
        restarts = {k: v["restarts"] for k, v in st["components"].items()}
    finally:
        if inst.proc is not None:
            inst.stop()
        time.sleep(1)
        orphans = leftovers(inst)
        lost = [p for p in servers0 if p not in servers1 or not proc_alive(p)]
        db = inst.state / "jupyterhub.sqlite"
        try:
            con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
            integrity = con.execute("PRAGMA integrity_check").fetchone()[0]
            con.close()
        except sqlite3.Error as e:
            integrity = f"error: {e}"
        inst.cleanup()  # ends the users' servers (kept across the stop) by pid
    injected = sum(len(v) for v in per_kind.values()) + len(failed)
    rows = {k: {"n": len(v), "median_s": round(statistics.median(v), 2) if v else None,
                "worst_s": round(max(v), 2) if v else None} for k, v in per_kind.items()}
    figures = {
        "machine": f"{os.cpu_count()} CPU {platform.machine()}, {platform.platform()}, "
                   f"load at start {load0:.2f}",
        "duration_s": round(time.time() - t_start, 1), "users": args.users, "seed": args.seed,
        "faults_injected": injected, "recovered": injected - len(failed),
        "not_recovered": failed, "per_kind": rows, "restarts": restarts,
        "servers_lost": len(lost), "orphan_processes": orphans, "db_integrity": integrity,
    }
    print(f"\nfaults injected {injected}, recovered {injected - len(failed)}")
    print(f"{'kind':<15} {'n':>4} {'median s':>9} {'worst s':>8}")
    for k, r in rows.items():
        print(f"{k:<15} {r['n']:>4} {r['median_s']!s:>9} {r['worst_s']!s:>8}")
    print(f"restarts {restarts}; servers lost {len(lost)}; orphan processes {len(orphans)} "
          f"{orphans or ''}; PRAGMA integrity_check: {integrity}")
    print(f"machine: {figures['machine']}; took {figures['duration_s']} s")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1))
    return 0 if not failed and not lost and not orphans and integrity == "ok" else 1


if __name__ == "__main__":
    sys.exit(main())
