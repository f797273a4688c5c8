"""What a certificate change costs users: hubsvc with [tls] from files (real CHP + hub), a
client requesting /hub/health over https in a loop (new connection each time) while a new
certificate is applied with SIGHUP (= `systemctl reload hubsvc`, what a renewal does).
Prints failed requests and the longest gap between two successful answers.

    .venv/bin/python bench/tls_reload.py [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import signal
import ssl
import statistics
import sys
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.integration.hubsvc_harness import Instance, free_port, new_root
from tests.tlsca import CA


class TlsInstance(Instance):
    @property
    def public(self) -> str:
        return f"https://127.0.0.1:{self.public_port}"


def one_run(inst: TlsInstance, ca: CA, ctx: ssl.SSLContext) -> tuple[int, int, float]:
    ok, failed, last_ok, worst = 0, 0, time.monotonic(), 0.0
    stop = threading.Event()

    def hammer() -> None:
        nonlocal ok, failed, last_ok, worst
        while not stop.is_set():
            try:
                with httpx.Client(trust_env=False, verify=ctx, timeout=5) as c:
                    r = c.get(f"{inst.public}/hub/health")
                good = r.status_code == 200
            except httpx.HTTPError:
                good = False
            now = time.monotonic()
            if good:
                worst = max(worst, now - last_ok)
                last_ok, ok = now, ok + 1
            else:
                failed += 1
            time.sleep(0.005)

    t = threading.Thread(target=hammer)
    t.start()
    time.sleep(1.0)
    before = inst.status().get("last_reload", {}).get("at")
    ca.write(Path(inst.settings()["tls"]["cert_file"]).parent, ca.server("127.0.0.1"))
    assert inst.proc is not None
    os.kill(inst.proc.pid, signal.SIGHUP)
    inst.wait_status(lambda s: s.get("last_reload", {}).get("at") != before and s["ready"], 60)
    time.sleep(1.0)
    stop.set()
    t.join(10)
    return ok, failed, worst


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    root = new_root("hubsvc-bench-tls-")
    ca = CA()
    cert, key = ca.write(root / "pki", ca.server("127.0.0.1"))
    inst = TlsInstance(root, overrides={"tls": {"mode": "files", "cert_file": str(cert),
                                                "key_file": str(key), "http_port": free_port()}})
    inst.write_config()
    ctx = ssl.create_default_context(cafile=str(ca.write_root(root / "root.pem")))
    gaps = []
    try:
        inst.start(timeout=120)
        for i in range(args.runs):
            ok, failed, worst = one_run(inst, ca, ctx)
            gaps.append(worst)
            print(f"run {i + 1}: {ok} ok, {failed} failed, longest gap {worst * 1000:.0f} ms")
    finally:
        inst.cleanup()
    print(f"longest gap: median {statistics.median(gaps) * 1000:.0f} ms, max {max(gaps) * 1000:.0f} ms")


if __name__ == "__main__":
    main()
