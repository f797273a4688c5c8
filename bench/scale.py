#!/usr/bin/env python3
"""Cost at scale, side by side in one run: hubsvc vs JupyterHub managing CHP itself.

For N = 0, 100, 1000 stand-in servers (tests/standin_spawner.StandInSpawner: every
server is one shared tiny loopback backend, no JupyterLab), in both set-ups:

- spawn: create N users, start their servers through the REST API (16 at a time), until
  CHP routes all N;
- idle: CPU of the supervisor (hubsvc only), the hub and CHP over --idle seconds (300:
  one period of the hub's own activity update, which costs it seconds at 1,000 users), and the
  hub's log lines (INFO and above) per minute over the same window;
- kill -9 CHP -> all N user routes back in CHP's table;
- kill -9 hub -> /hub/health 200 through the proxy, then all N servers ready in the hub's
  API and routed by CHP. hubsvc restarts the hub itself; the anchor is a bare start of
  the same hub over the same database (exec -> the same two points).

Figures are printed (and --json writes them); nothing is asserted.

Usage: .venv/bin/python bench/scale.py [--sizes 0,100,1000] [--idle 300] [--json FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.integration.hubsvc_harness import (  # noqa: E402
    TEST_TOKEN,
    Instance,
    free_port,
    new_root,
    unit_watchdog_usec,
)

CHP = REPO / "node_modules" / ".bin" / "configurable-http-proxy"
JUPYTERHUB = Path(sys.executable).parent / "jupyterhub"
SPAWN = {"concurrency": 16}  # requests in flight at once (--concurrency)
LOGS: dict[str, Path | None] = {"dir": None}  # --logs
SETTLE = {"s": 3.0}  # --settle
HZ = os.sysconf("SC_CLK_TCK")

STANDIN = '''
import sys
sys.path.insert(0, {repo!r})
c.JupyterHub.spawner_class = "tests.standin_spawner.StandInSpawner"
c.StandInSpawner.ports = [{port}]
c.Spawner.start_timeout = 120
c.Spawner.http_timeout = 120
c.JupyterHub.init_spawners_timeout = 10
'''

# The anchor: the same admin config, and JupyterHub starting and managing CHP itself.
ANCHOR = '''
c = get_config()
c.JupyterHub.authenticator_class = "dummy"
c.Authenticator.allow_all = True
c.JupyterHub.services = [{{"name": "tests", "api_token": {token!r}}}]
c.JupyterHub.load_roles = [{{"name": "tests-admin", "services": ["tests"],
    "scopes": ["admin:users", "admin:servers", "list:users", "read:users", "proxy"]}}]
c.JupyterHub.bind_url = {public!r}
c.JupyterHub.hub_bind_url = {hub!r}
c.JupyterHub.db_url = "sqlite:///{state}/jupyterhub.sqlite"
c.JupyterHub.cookie_secret_file = "{state}/cookie_secret"
c.JupyterHub.cleanup_servers = False
c.ConfigurableHTTPProxy.command = [{chp!r}]
c.ConfigurableHTTPProxy.api_url = {api!r}
c.ConfigurableHTTPProxy.auth_token = {proxy_token!r}
c.ConfigurableHTTPProxy.pid_file = "{state}/proxy.pid"
'''


def cpu_s(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / HZ


def children(pid: int) -> list[int]:
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            out += [int(p) for p in (task / "children").read_text().split()]
    return out


def wait(pred: Any, timeout: float, what: str, step: float = 0.02) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        with contextlib.suppress(httpx.HTTPError, OSError, ValueError):
            if pred():
                return time.monotonic() - t0
        time.sleep(step)
    raise TimeoutError(f"{what} not within {timeout:g}s")


@dataclass
class Setup:
    """One hub + CHP pair, whichever way it is run."""

    name: str
    public: str
    api: str
    hub: str
    proxy_token: str
    log: Path
    figures: dict[str, Any] = field(default_factory=dict)

    # ---- what both set-ups answer the same way -----------------------------------------
    def routes(self, c: httpx.Client) -> dict[str, Any]:
        r = c.get(f"{self.api}/api/routes", headers={"Authorization": f"token {self.proxy_token}"})
        r.raise_for_status()
        return r.json()

    def user_routes(self, c: httpx.Client) -> int:
        return sum(1 for v in self.routes(c).values() if v.get("user"))

    def ready_count(self, c: httpx.Client) -> int:
        n, offset = 0, 0
        for _ in range(100):
            r = c.get(f"{self.hub}/hub/api/users",
                      params={"state": "ready", "offset": offset, "limit": 200},
                      headers={"Authorization": f"token {TEST_TOKEN}",
                               "Accept": "application/jupyterhub-pagination+json"})
            r.raise_for_status()
            body = r.json()
            n += len(body["items"])
            nxt = body["_pagination"].get("next")
            if not nxt:
                return n
            offset = nxt["offset"]
        return n

    def health_via_proxy(self, c: httpx.Client) -> bool:
        return c.get(f"{self.public}/hub/health").status_code == 200

    def hub_lines(self) -> int:
        raise NotImplementedError

    def pids(self) -> dict[str, int]:
        raise NotImplementedError


class HubsvcSetup(Setup):
    def __init__(self, inst: Instance):
        super().__init__("hubsvc", inst.public, inst.api, inst.hub,
                         inst.secret("proxy_auth_token"), inst.log_path)
        self.inst = inst

    def hub_lines(self) -> int:
        # the hub's own lines, forwarded by hubsvc with their level: "<6>hub| [I …"
        n = 0
        for line in self.log.read_text(errors="replace").splitlines():
            if line[3:8] == "hub| " and line[8:10] in ("[I", "[W", "[E", "[C"):
                n += 1
        return n

    def pids(self) -> dict[str, int]:
        assert self.inst.proc is not None
        comps = self.inst.status()["components"]  # pid None while restarting
        return {"supervisor": self.inst.proc.pid, "hub": comps["hub"]["pid"] or -1,
                "chp": comps["proxy"]["pid"] or -1}


class AnchorSetup(Setup):
    def __init__(self, root: Path, port: int):
        self.root = root
        self.state = root / "state"
        self.state.mkdir(parents=True)
        public, api, hub = (f"http://127.0.0.1:{free_port()}" for _ in range(3))
        super().__init__("anchor", public, api, hub, "anchor-proxy-token-" + os.urandom(8).hex(),
                         root / "hub.log")
        self.config = root / "jupyterhub_config.py"
        self.config.write_text(ANCHOR.format(
            token=TEST_TOKEN, public=public, hub=hub, api=api, state=self.state, chp=str(CHP),
            proxy_token=self.proxy_token) + STANDIN.format(repo=str(REPO), port=port))
        self.proc: subprocess.Popen[bytes] | None = None
        self._out = open(self.log, "ab")

    def start(self) -> float:
        """Exec the hub; seconds until /hub/health answers 200 through the proxy."""
        t0 = time.monotonic()
        env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "INVOCATION_ID")}
        env["PATH"] = f"{JUPYTERHUB.parent}:{env['PATH']}"
        self.proc = subprocess.Popen([str(JUPYTERHUB), "--config", str(self.config)],
                                     cwd=self.state, stdout=self._out, stderr=self._out,
                                     stdin=subprocess.DEVNULL, env=env, start_new_session=True)
        with httpx.Client(trust_env=False, timeout=2) as c:
            wait(lambda: self.health_via_proxy(c), 120, "anchor hub via proxy")
        return time.monotonic() - t0

    def hub_lines(self) -> int:
        n = 0
        for line in self.log.read_text(errors="replace").splitlines():
            if line[:2] in ("[I", "[W", "[E", "[C") and " JupyterHub " in line[:40]:
                n += 1
        return n

    def chp_pid(self) -> int:
        return int((self.state / "proxy.pid").read_text())

    def pids(self) -> dict[str, int]:
        assert self.proc is not None
        return {"hub": self.proc.pid, "chp": self.chp_pid()}

    def stop(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            os.kill(self.chp_pid(), signal.SIGKILL)
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)
        self._out.close()


# ---- the measurements ---------------------------------------------------------------------
async def _spawn_all(s: Setup, n: int) -> None:
    headers = {"Authorization": f"token {TEST_TOKEN}"}
    names = [f"u{i:04d}" for i in range(n)]
    async with httpx.AsyncClient(trust_env=False, timeout=120, headers=headers) as c:
        # small batches: creating users blocks the hub's event loop for the whole request
        for i in range(0, n, 20):
            r = await c.post(f"{s.hub}/hub/api/users", json={"usernames": names[i:i + 20]})
            assert r.status_code in (201, 409), r.text
        sem = asyncio.Semaphore(SPAWN["concurrency"])

        async def one(name: str) -> None:
            async with sem:
                for attempt in range(3):  # a loaded machine drops the odd connection
                    try:
                        r = await c.post(f"{s.hub}/hub/api/users/{name}/server")
                        break
                    except httpx.TransportError:
                        if attempt == 2:
                            raise
                        await asyncio.sleep(1)
                assert r.status_code in (201, 202, 400), r.text

        await asyncio.gather(*(one(u) for u in names))


def spawn(s: Setup, n: int) -> None:
    t0 = time.monotonic()
    asyncio.run(_spawn_all(s, n))
    with httpx.Client(trust_env=False, timeout=10) as c:
        wait(lambda: s.user_routes(c) >= n, 300, f"{n} routes", step=0.2)
    s.figures["spawn_s"] = round(time.monotonic() - t0, 2)


def idle(s: Setup, seconds: float) -> None:
    # let the last spawn's bookkeeping settle: hubsvc's watches each list every user once
    # after a spawn storm (the counts they compare changed), ~0.5 s of the hub's CPU at
    # 1,000 users; --settle 60 keeps those one-off listings out of the idle window
    time.sleep(SETTLE["s"])
    pids = s.pids()
    lines0 = s.hub_lines()
    cpu0 = {k: cpu_s(p) for k, p in pids.items()}
    t0 = time.monotonic()
    time.sleep(seconds)
    dt = time.monotonic() - t0
    for k, p in pids.items():
        s.figures[f"cpu_{k}_pct"] = round((cpu_s(p) - cpu0[k]) / dt * 100, 2)
    s.figures["hub_lines_per_min"] = round((s.hub_lines() - lines0) / dt * 60, 1)


def listing_cost(s: Setup, times: int = 5) -> None:
    """The hub's CPU for one paged listing of every ready user (what a watch that lists
    every user pays per call), to attribute the idle figures."""
    hub = s.pids()["hub"]
    with httpx.Client(trust_env=False, timeout=30) as c:
        cpu0 = cpu_s(hub)
        for _ in range(times):
            s.ready_count(c)
        s.figures["hub_cpu_ms_per_listing"] = round((cpu_s(hub) - cpu0) / times * 1000, 1)
        # the count the watches ask for (one row of one page), and the health check
        for what, url, params in (
                ("count", f"{s.hub}/hub/api/users", {"state": "ready", "limit": 1}),
                ("health", f"{s.hub}/hub/health", {})):
            cpu0 = cpu_s(hub)
            for _ in range(times * 4):
                c.get(url, params=params, headers={
                    "Authorization": f"token {TEST_TOKEN}",
                    "Accept": "application/jupyterhub-pagination+json"}).raise_for_status()
            s.figures[f"hub_cpu_ms_per_{what}"] = round((cpu_s(hub) - cpu0) / (times * 4) * 1000, 1)


def kill_chp(s: Setup, n: int) -> None:
    pid = s.pids()["chp"]
    with httpx.Client(trust_env=False, timeout=2) as c:
        os.kill(pid, signal.SIGKILL)
        t0 = time.monotonic()
        wait(lambda: s.pids()["chp"] not in (pid, -1) and s.user_routes(c) >= n and
             any(v.get("hub") for v in s.routes(c).values()), 120, "routes after CHP kill")
        s.figures["chp_kill_routes_back_s"] = round(time.monotonic() - t0, 2)


def kill_hub_hubsvc(s: HubsvcSetup, n: int) -> None:
    pid = s.pids()["hub"]
    with httpx.Client(trust_env=False, timeout=5) as c:
        os.kill(pid, signal.SIGKILL)
        t0 = time.monotonic()
        wait(lambda: s.inst.status()["components"]["hub"]["pid"] not in (None, pid)
             and s.health_via_proxy(c), 180, "hub via proxy after kill")
        s.figures["hub_kill_health_s"] = round(time.monotonic() - t0, 2)
        wait(lambda: s.ready_count(c) >= n and s.user_routes(c) >= n, 300, "all ready",
             step=0.5)
        s.figures["hub_kill_all_ready_s"] = round(time.monotonic() - t0, 2)


def kill_hub_anchor(s: AnchorSetup, n: int) -> None:
    assert s.proc is not None
    s.proc.kill()
    s.proc.wait(30)
    t0 = time.monotonic()
    s.figures["hub_kill_health_s"] = round(s.start(), 2)  # the bare start, timed from exec
    with httpx.Client(trust_env=False, timeout=5) as c:
        wait(lambda: s.ready_count(c) >= n and s.user_routes(c) >= n, 300, "all ready", step=0.5)
    s.figures["hub_kill_all_ready_s"] = round(time.monotonic() - t0, 2)


def keep_log(src: Path, name: str) -> None:
    """Copy a log into --logs DIR before its root is removed (to see where time went)."""
    if LOGS["dir"] is not None:
        with contextlib.suppress(OSError):
            shutil.copy(src, LOGS["dir"] / name)


def run_hubsvc(n: int, port: int, idle_s: float, health: dict[str, Any]) -> dict[str, Any]:
    root = new_root("hubsvc-scale-")
    inst = Instance(root, hub_extra=STANDIN.format(repo=str(REPO), port=port),
                    watchdog_usec=unit_watchdog_usec(),
                    overrides={"health": {"interval_s": 2.0, **health},
                               "restart": {"backoff_initial_s": 0.1, "backoff_max_s": 10.0}})
    s = HubsvcSetup(inst.start(timeout=120))
    try:
        spawn(s, n)
        idle(s, idle_s)
        listing_cost(s)
        kill_chp(s, n)
        inst.wait_status(lambda st: st["ready"], 120)
        kill_hub_hubsvc(s, n)
    except Exception:
        print("hubsvc's decisions:\n" + "\n".join(
            ln for ln in inst.log_text().splitlines() if not ln[3:].startswith(("hub|", "proxy|"))
        )[-4000:], file=sys.stderr)
        raise
    finally:
        inst.cleanup()
        keep_log(inst.log_path, f"hubsvc-{n}.log")
        shutil.rmtree(root, ignore_errors=True)
    s.figures["restarts_outside_kills"] = _unplanned_restarts(inst.log_text())
    return s.figures


def _unplanned_restarts(log: str) -> int:
    """Restarts hubsvc decided on its own (failed health checks), not the kills above."""
    return sum(1 for ln in log.splitlines()
               if ln.startswith("<3>component_failed") and "health check failed" in ln)


def run_anchor(n: int, port: int, idle_s: float) -> dict[str, Any]:
    root = new_root("anchor-scale-")
    s = AnchorSetup(root, port)
    try:
        s.start()
        spawn(s, n)
        idle(s, idle_s)
        kill_chp(s, n)
        kill_hub_anchor(s, n)
    finally:
        s.stop()
        keep_log(s.log, f"anchor-{n}.log")
        shutil.rmtree(root, ignore_errors=True)
    return s.figures


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="0,100,1000")
    # one period of the hub's own activity update (last_activity_interval, 300 s), which
    # at 1,000 users blocks the hub for seconds: a shorter window holds it or not by luck
    ap.add_argument("--idle", type=float, default=300.0,
                    help="seconds of each idle window (default 300: one period of the "
                         "hub's own activity update)")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--health-timeout", type=float, default=1.0,
                    help="hubsvc's [health] timeout_s (default: hubsvc's default, 1 s)")
    ap.add_argument("--concurrency", type=int, default=SPAWN["concurrency"],
                    help="spawn requests in flight at once")
    ap.add_argument("--failures", type=int, default=3,
                    help="hubsvc's [health] failures_before_restart (default 3)")
    ap.add_argument("--logs", type=Path, help="keep each run's log in this folder")
    ap.add_argument("--settle", type=float, default=3.0,
                    help="seconds between the last spawn and the idle window (default 3)")
    args = ap.parse_args()
    if args.logs is not None:
        args.logs.mkdir(parents=True, exist_ok=True)
        LOGS["dir"] = args.logs
    health = {"timeout_s": args.health_timeout, "failures_before_restart": args.failures}
    SPAWN["concurrency"] = args.concurrency
    SETTLE["s"] = args.settle
    port = free_port()
    backend = subprocess.Popen([sys.executable, "-m", "tests.standin", str(port)], cwd=REPO,
                               stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
    assert backend.stdout is not None and backend.stdout.readline().strip() == b"ready"
    results: dict[str, Any] = {
        "machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} cpus, "
                   f"Python {platform.python_version()}",
        "load_at_start": os.getloadavg(), "idle_s": args.idle, "health": health,
        "concurrency": args.concurrency, "settle_s": args.settle, "sizes": {}}
    try:
        for n in (int(x) for x in args.sizes.split(",")):
            row = {"hubsvc": run_hubsvc(n, port, args.idle, health),
                   "anchor": run_anchor(n, port, args.idle),
                   "load": os.getloadavg()}
            results["sizes"][n] = row
            print(f"N={n}: {json.dumps(row)}", flush=True)
    finally:
        backend.kill()
        backend.wait(10)
    results["load_at_end"] = os.getloadavg()
    print(json.dumps(results, indent=1))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
