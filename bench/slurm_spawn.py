#!/usr/bin/env python3
"""Issue 7: spawn time through Slurm next to a local spawn, in one run; printed, not asserted.

Starts the one-node Slurm test cluster (tests/slurm/cluster.py: Debian's slurm-wlm + munge
on loopback, as root), then runs hubsvc twice on free loopback ports with the same hub:
  slurm  the shipped example etc/hubsvc/examples/slurm/jupyterhub_config.py (SlurmSpawner)
  local  SimpleLocalProcessSpawner (the integration tests' default)
and for each, RUNS times: POST /hub/api/users/NAME/server -> the hub says ready, and ->
/user/NAME/api/status 200 through the proxy; then stop and wait until the server (job) is
gone. For Slurm also: POST -> squeue shows the job RUNNING.

Usage (root): .venv/bin/python bench/slurm_spawn.py [--runs 5]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.integration.hubsvc_harness import Instance, new_root  # noqa: E402
from tests.slurm.cluster import Cluster  # noqa: E402
from tests.slurm.conftest import SlurmHub  # noqa: E402

USER = "hsvcs1"


def one_spawn(inst: Instance, user: str, cluster: Cluster | None) -> dict[str, float]:
    r = inst.api_call("POST", f"users/{user}")
    assert r.status_code in (201, 409), r.text
    out: dict[str, float] = {}
    t0 = time.monotonic()
    done = threading.Event()

    def watch_queue() -> None:  # the POST blocks until ready (up to 10 s): watch beside it
        assert cluster is not None
        while not done.is_set() and time.monotonic() - t0 < 120:
            states = {j["state"] for j in cluster.jobs(user)}
            if "PENDING" in states and "job_pending" not in out:
                out["job_pending"] = time.monotonic() - t0
            if "RUNNING" in states:
                out["job_running"] = time.monotonic() - t0
                return
            time.sleep(0.05)

    watcher = threading.Thread(target=watch_queue, daemon=True)
    if cluster is not None:
        watcher.start()
    r = inst.api_call("POST", f"users/{user}/server", timeout=60)
    assert r.status_code in (201, 202), r.text
    deadline = t0 + 120
    while time.monotonic() < deadline:
        srv = (inst.api_call("GET", f"users/{user}").json().get("servers") or {}).get("")
        if srv and srv.get("ready"):
            out["hub_ready"] = time.monotonic() - t0
            break
        time.sleep(0.05)
    else:
        raise TimeoutError(f"{user}'s server not ready:\n{inst.log_text()[-2000:]}")
    done.set()
    if cluster is not None:
        watcher.join(5)
    token = inst.user_token(user)
    inst.wait_public(f"/user/{user}/api/status", token, 200, timeout=30)
    out["through_proxy"] = time.monotonic() - t0
    t1 = time.monotonic()
    r = inst.api_call("DELETE", f"users/{user}/server", timeout=60)
    assert r.status_code in (202, 204), r.text
    while time.monotonic() - t1 < 60:
        srv = (inst.api_call("GET", f"users/{user}").json().get("servers") or {}).get("")
        gone = not srv and (cluster is None or not cluster.jobs(user))
        if gone:
            out["stop"] = time.monotonic() - t1
            break
        time.sleep(0.05)
    return out


def series(inst: Instance, runs: int, cluster: Cluster | None) -> list[dict[str, float]]:
    return [one_spawn(inst, USER, cluster) for _ in range(runs)]


def med(rows: list[dict[str, float]], key: str) -> float:
    vals = [r[key] for r in rows if key in r]
    return statistics.median(vals) if vals else float("nan")


def fmt(rows: list[dict[str, float]], key: str) -> str:
    vals = [r[key] for r in rows if key in r]
    if not vals:
        return "-"
    return f"{statistics.median(vals):6.2f} s  (min {min(vals):.2f}, max {max(vals):.2f})"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    runs = max(1, min(args.runs, 50))
    cluster = Cluster().up()
    insts: list[Any] = []
    try:
        sh = SlurmHub(cluster, Path(sys.prefix)).start()
        insts.append(sh.inst)
        slurm_rows = series(sh.inst, runs, cluster)
        sh.cleanup()
        local = Instance(new_root("hubsvc-bench-local-")).start()
        insts.append(local)
        local_rows = series(local, runs, None)
        local.cleanup()
    finally:
        for i in insts:
            i.cleanup()
            shutil.rmtree(i.root, ignore_errors=True)
        cluster.down()
    print(f"machine: {platform.node()} {platform.machine()}, {len(os.sched_getaffinity(0))} "
          f"CPUs, Python {platform.python_version()}; {runs} runs each (median, min, max)")
    print(f"slurm  POST -> job listed (squeue)       {fmt(slurm_rows, 'job_pending')}")
    print(f"slurm  POST -> job RUNNING (squeue)      {fmt(slurm_rows, 'job_running')}")
    print(f"slurm  POST -> hub says ready            {fmt(slurm_rows, 'hub_ready')}")
    print(f"slurm  POST -> api/status 200 via proxy  {fmt(slurm_rows, 'through_proxy')}")
    print(f"local  POST -> hub says ready            {fmt(local_rows, 'hub_ready')}")
    print(f"local  POST -> api/status 200 via proxy  {fmt(local_rows, 'through_proxy')}")
    print(f"slurm  stop -> job gone                  {fmt(slurm_rows, 'stop')}")
    print(f"local  stop -> server gone               {fmt(local_rows, 'stop')}")
    ratio = med(slurm_rows, "through_proxy") / med(local_rows, "through_proxy")
    print(f"ratio slurm/local (api/status via proxy, medians): {ratio:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
