#!/usr/bin/env python3
"""How long `hubsvc doctor` takes on a healthy setup, stopped and running (real CHP and
JupyterHub on loopback). Figures printed, nothing asserted; doctor's goal is under 3 s.

Usage: .venv/bin/python bench/doctor_time.py [--runs 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.integration.hubsvc_harness import Instance, new_root  # noqa: E402


def doctor_runs(config: Path, runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        t0 = time.monotonic()
        r = subprocess.run([sys.executable, "-m", "hubsvc.doctor", "--config", str(config), "--json"],
                           capture_output=True, text=True, timeout=120, cwd="/")
        out.append(time.monotonic() - t0)
        if r.returncode not in (0, 1):
            raise SystemExit(f"doctor exited {r.returncode}: {r.stderr[-2000:]}")
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    a = ap.parse_args()
    inst = Instance(new_root("hubsvc-bench-doctor-"))
    inst.write_config()
    try:
        stopped = doctor_runs(inst.config, a.runs)
        inst.start()
        running = doctor_runs(inst.config, a.runs)
    finally:
        inst.cleanup()
    load = os.getloadavg()[0]
    for name, xs in (("stopped", stopped), ("running", running)):
        print(f"doctor, healthy {name}: median {statistics.median(xs):.2f} s, "
              f"worst {max(xs):.2f} s over {len(xs)} runs (load {load:.1f}; goal < 3 s)")


if __name__ == "__main__":
    main()
