"""Issue 4 §5: time to a verdict on a redirect loop, hubsvc's probe vs the hub's own 500.

One run, real programs: `hubsvc run` (real CHP + JupyterHub) on free loopback ports, a
user's server started, its route deleted through CHP's API (the loop of FACTS.md). Then:

- probe:  `probe_spawn(..., repair=False)` — from its first hop (GET /user/NAME/) to the
          verdict, and from the hop that showed the repeated URL to the verdict;
- hub:    a client that follows every redirect like a browser, from its first hop to the
          hub's "500 Redirect loop detected.".

    .venv/bin/python bench/redirect_verdict.py [--probes 5] [--hub-runs 2] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from hubsvc import config  # noqa: E402
from hubsvc.probe import probe_spawn  # noqa: E402
from tests.integration.hubsvc_harness import Instance, new_root  # noqa: E402

USER = "bench"


def delete_route(inst: Instance) -> None:
    with httpx.Client(trust_env=False, timeout=5) as c:
        c.delete(f"{inst.api}/api/routes/user/{USER}",
                 headers={"Authorization": f"token {inst.secret('proxy_auth_token')}"})


def hub_500(inst: Instance, token: str) -> tuple[float, int, int]:
    """Follow the loop like a browser (limit 20) until the hub answers: (s, hops, status)."""
    url = f"{inst.public}/user/{USER}/"
    t0 = time.monotonic()
    with httpx.Client(trust_env=False, timeout=30,
                      headers={"Authorization": f"token {token}"}) as c:
        for hops in range(1, 21):
            r = c.get(url)
            if not r.is_redirect:
                return time.monotonic() - t0, hops, r.status_code
            url = str(r.url.join(r.headers["location"]))
    return time.monotonic() - t0, 20, 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--probes", type=int, default=5)
    ap.add_argument("--hub-runs", type=int, default=2)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    root = new_root("hubsvc-bench-")
    # hubsvc's own route watch would repair the deleted route within one health interval;
    # keep it out of the way so the loop stays for both measurements
    inst = Instance(root, overrides={"health": {"interval_s": 60.0, "timeout_s": 2.0}})
    try:
        inst.start()
        inst.spawn(USER)
        cfg = config.load(inst.config)
        token = inst.user_token(USER)
        first_hop_to_verdict, repeat_to_verdict, wall = [], [], []
        causes = set()
        for _ in range(args.probes):
            delete_route(inst)
            t0 = time.monotonic()
            v = asyncio.run(probe_spawn(cfg, USER, start=False, repair=False, timeout_s=60))
            wall.append(time.monotonic() - t0)
            causes.add((v.outcome, v.cause))
            first_hop_to_verdict.append(
                (v.timings_ms["walk_to_repeat"] + v.timings_ms["verdict_after_repeat"]) / 1000)
            repeat_to_verdict.append(v.timings_ms["verdict_after_repeat"] / 1000)
        hub = []
        for _ in range(args.hub_runs):
            delete_route(inst)
            hub.append(hub_500(inst, token))
        result = {
            "probe_runs": args.probes,
            "probe_verdicts": sorted(f"{o}/{c}" for o, c in causes),
            "probe_first_hop_to_verdict_s_median": statistics.median(first_hop_to_verdict),
            "probe_first_hop_to_verdict_s_max": max(first_hop_to_verdict),
            "probe_repeat_to_verdict_s_median": statistics.median(repeat_to_verdict),
            "probe_wall_s_median": statistics.median(wall),
            "hub_runs": args.hub_runs,
            "hub_first_hop_to_500_s": [round(h[0], 3) for h in hub],
            "hub_hops_to_500": [h[1] for h in hub],
            "hub_final_status": [h[2] for h in hub],
        }
        result["speedup"] = (statistics.median(h[0] for h in hub)
                             / result["probe_first_hop_to_verdict_s_median"])
        if args.json:
            print(json.dumps(result, indent=2))
        else:
            print(f"loop: route of {USER}'s running server deleted behind the hub's back")
            print(f"  probe verdict  {', '.join(result['probe_verdicts'])}")
            print(f"  probe: first hop -> verdict   median "
                  f"{result['probe_first_hop_to_verdict_s_median'] * 1000:8.1f} ms  "
                  f"max {result['probe_first_hop_to_verdict_s_max'] * 1000:.1f} ms "
                  f"({args.probes} runs)")
            print(f"  probe: repeated hop -> verdict median "
                  f"{result['probe_repeat_to_verdict_s_median'] * 1000:7.1f} ms")
            print(f"  probe: whole command (API, token, walk, evidence) median "
                  f"{result['probe_wall_s_median'] * 1000:.0f} ms")
            print("  hub:   first hop -> 500        "
                  + ", ".join(f"{h[0] * 1000:.0f} ms ({h[1]} hops, {h[2]})" for h in hub))
            print(f"  the probe answers {result['speedup']:.0f}x sooner than the hub")
        return 0
    finally:
        inst.cleanup()


if __name__ == "__main__":
    raise SystemExit(main())
