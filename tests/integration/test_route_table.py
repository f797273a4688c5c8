"""CHP's real table under a base path, `wrong_user` drift made for real, and a quiet hub
log, against the real programs (stand-in user servers: tests/standin.py)."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from hubsvc import config, routetable
from hubsvc.probes import new_client

from .hubsvc_harness import REPO, TEST_TOKEN, Instance, free_port

pytestmark = pytest.mark.integration

BASE = "/base/"


@pytest.fixture
def standin_ports() -> Iterator[list[int]]:
    ports = [free_port(), free_port()]
    p = subprocess.Popen([sys.executable, "-m", "tests.standin", *map(str, ports)], cwd=REPO,
                         stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
    try:
        assert p.stdout is not None and p.stdout.readline().strip() == b"ready"
        yield ports
    finally:
        p.kill()
        p.wait(10)


def hub_extra(ports: list[int], hub_log: Path) -> str:
    # The hub also writes every record of its log to a file, with the level: what an admin
    # would see at INFO is then countable, and DEBUG shows what was demoted.
    return f'''
import sys
sys.path.insert(0, {str(REPO)!r})
c.JupyterHub.spawner_class = "tests.standin_spawner.StandInSpawner"
c.StandInSpawner.ports = {ports!r}
c.JupyterHub.log_level = "DEBUG"
c.JupyterHub.logging_config = {{
    "formatters": {{"records": {{"format": "%(created).3f %(levelname)s %(message)s"}}}},
    "handlers": {{"records": {{"class": "logging.FileHandler", "filename": {str(hub_log)!r},
                             "formatter": "records", "level": "DEBUG"}}}},
    "loggers": {{"JupyterHub": {{"handlers": ["console", "records"]}}}},
}}
'''


def hub_records(path: Path, since: float) -> list[tuple[str, str]]:
    out = []
    for line in path.read_text(errors="replace").splitlines():
        m = re.match(r"(\d+\.\d+) (\w+) (.*)", line)
        if m and float(m.group(1)) >= since:
            out.append((m.group(2), m.group(3)))
    return out


def table(inst: Instance) -> routetable.RouteTable:
    cfg = config.load(inst.config)

    async def go() -> routetable.RouteTable:
        async with new_client() as c:
            return await routetable.fetch(c, cfg, inst.secret("proxy_auth_token"), 5.0)

    return asyncio.run(go())


def hub_api(inst: Instance, method: str, path: str, token: str = TEST_TOKEN,
            **kw: Any) -> httpx.Response:
    with httpx.Client(trust_env=False, timeout=10) as c:
        return c.request(method, f"{inst.hub}{BASE}hub/api/{path}",
                         headers={"Authorization": f"token {token}"}, **kw)


def spawn(inst: Instance, user: str) -> None:
    assert hub_api(inst, "POST", f"users/{user}").status_code in (201, 409)
    assert hub_api(inst, "POST", f"users/{user}/server").status_code in (201, 202)
    for _ in range(100):
        if (hub_api(inst, "GET", f"users/{user}").json().get("servers") or {}).get("", {}).get("ready"):
            return
        time.sleep(0.1)
    raise AssertionError(f"{user}'s stand-in server never ready")


def test_base_path_wrong_user_drift_and_a_quiet_hub_log(make_hubsvc: Any,
                                                        standin_ports: list[int]) -> None:
    inst = make_hubsvc(start=False)
    hub_log = inst.root / "hub-records.log"
    inst.hub_extra = hub_extra(standin_ports, hub_log)
    inst.overrides = {"proxy": {"public_url": inst.public + BASE}}
    inst.write_config()
    inst.start()
    spawn(inst, "alice")
    spawn(inst, "bob")

    # the hub's own route, found under the base path (not CHP's default route "/")
    t = table(inst)
    hub = t.hub_route()
    assert hub is not None and hub.spec == "/base" and hub.target.rstrip("/") == inst.hub
    assert t.get("/") is not None and not t.get("/").hub  # type: ignore[union-attr]
    alice, bob = t.get("/base/user/alice"), t.get("/base/user/bob")
    assert alice is not None and bob is not None and alice.target != bob.target
    assert (alice.user, bob.user) == ("alice", "bob")

    # wrong_user for real: alice's route rewritten (through CHP's API) to bob's server
    with httpx.Client(trust_env=False, timeout=5) as c:
        r = c.post(f"{inst.api}/api/routes/base/user/alice",
                   headers={"Authorization": f"token {inst.secret('proxy_auth_token')}"},
                   json={"target": bob.target, "user": "bob", "server_name": "",
                         "jupyterhub": True})
        assert r.status_code == 201
    deadline = time.monotonic() + 15
    drift: list[str] = []
    while not drift and time.monotonic() < deadline:
        drift = [ln for ln in inst.log_text().splitlines()
                 if ln.startswith("<4>route_drift") and "kind=wrong_user" in ln]
        time.sleep(0.1)
    assert drift, inst.log_text()[-3000:]
    assert "user=alice" in drift[0] and "repaired=true" in drift[0]
    assert "route of user bob" in drift[0]
    fixed = table(inst).get("/base/user/alice")
    assert fixed is not None and fixed.user == "alice" and fixed.target == alice.target

    # a quiet minute: nothing of hubsvc's own polling at INFO, while a user's request and a
    # failure of hubsvc's own token still show
    user_token = hub_api(inst, "POST", "users/alice/tokens", json={"expires_in": 600}).json()["token"]
    hub_svc_token = inst.secret("hubsvc_api_token")
    time.sleep(2)
    t0 = time.time()
    deadline = time.monotonic() + 60
    with httpx.Client(trust_env=False, timeout=5) as c:
        r = c.get(f"{inst.public}{BASE}hub/api/user", headers={"Authorization": f"token {user_token}"})
        assert r.status_code == 200
    assert hub_api(inst, "GET", "users/nobody-here", token=hub_svc_token).status_code == 404
    # alice stops her server: hubsvc sees her route go and asks the hub about her
    assert hub_api(inst, "DELETE", "users/alice/server").status_code in (202, 204)
    time.sleep(max(0.0, deadline - time.monotonic()))
    records = hub_records(hub_log, t0)
    loud = [(lvl, msg) for lvl, msg in records if lvl != "DEBUG"]
    mine = [m for lvl, m in loud if "(hubsvc@" in m or "hubsvc service" in m]
    assert any("GET /base/hub/api/users/nobody-here (hubsvc@" in m for lvl, m in loud
               if lvl == "WARNING"), loud
    assert mine == [m for m in mine if "nobody-here" in m], mine
    assert any("GET /base/hub/api/user (alice@" in m for _, m in loud), loud
    quiet = [m for lvl, m in records if lvl == "DEBUG" and "(hubsvc service)" in m]
    assert any("GET /base/hub/api/users" in m for m in quiet), quiet  # it did ask, quietly
    # and seldom: in this minute of 0.5 s intervals (~120 reads of CHP's table), the
    # count once a minute, the full listing once a minute, and what alice's stop and the
    # unknown user's failure made it ask; never a listing or a count every few intervals
    about_users = [m for m in quiet if "/hub/api/users" in m]
    assert 1 <= len(about_users) <= 10, about_users
    # everything the hub said at INFO or above in that minute came from the test's requests
    others = [m for _, m in loud if "(hubsvc@" not in m and "alice" not in m
              and "(tests@" not in m]
    assert others == [], others
    assert "route_drift" not in inst.log_text().split(drift[0], 1)[1]
