"""Record CHP's real `GET /api/routes` payloads as test fixtures (run by hand, not by pytest):

    .venv/bin/python -m tests.unit.data.record_chp_routes

Starts the real programs: a bare CHP with only its --default-target route, then hubsvc
(real CHP 5.3.0 + real JupyterHub) at the root and under a base path, with stand-in user
servers, a named server and a service with a URL, and writes each table as CHP sent it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.integration.hubsvc_harness import REPO, TEST_TOKEN, Instance, free_port, new_root

HERE = Path(__file__).resolve().parent
CHP = REPO / "node_modules" / ".bin" / "configurable-http-proxy"
CHP_VERSION = json.loads((REPO / "node_modules" / "configurable-http-proxy" / "package.json")
                         .read_text())["version"]


def hub_extra(ports: list[int], service_port: int) -> str:
    return f'''
import sys
sys.path.insert(0, {str(REPO)!r})
c.JupyterHub.spawner_class = "tests.standin_spawner.StandInSpawner"
c.StandInSpawner.ports = {ports!r}
c.JupyterHub.allow_named_servers = True
c.JupyterHub.services.append({{"name": "announce", "url": "http://127.0.0.1:{service_port}"}})
'''


def save(name: str, body: bytes) -> None:
    json.loads(body)  # must be JSON as sent
    (HERE / f"chp-{CHP_VERSION}-{name}.json").write_bytes(body + b"\n")
    print("wrote", name)


def default_only() -> None:
    token = "record-token-0123456789"
    public, api = free_port(), free_port()
    env = {**os.environ, "CONFIGPROXY_AUTH_TOKEN": token}
    p = subprocess.Popen([str(CHP), "--ip", "127.0.0.1", "--port", str(public), "--api-ip",
                          "127.0.0.1", "--api-port", str(api), "--default-target",
                          "http://127.0.0.1:8081", "--log-level", "warn"], env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(200):
            try:
                r = httpx.get(f"http://127.0.0.1:{api}/api/routes", trust_env=False,
                              headers={"Authorization": f"token {token}"}, timeout=1)
                save("routes-default-only", r.content)
                return
            except httpx.HTTPError:
                time.sleep(0.05)
        raise SystemExit("CHP did not answer")
    finally:
        p.terminate()
        p.wait(10)


def with_hub(base: str, name: str) -> None:
    ports = [free_port(), free_port()]
    backend = subprocess.Popen([sys.executable, "-m", "tests.standin", *map(str, ports)],
                               cwd=REPO, stdout=subprocess.PIPE)
    assert backend.stdout is not None and backend.stdout.readline().strip() == b"ready"
    root = new_root("hubsvc-record-")
    inst = Instance(root, hub_extra=hub_extra(ports, free_port()))
    inst.overrides = {"proxy": {"public_url": inst.public + base}}
    inst.write_config()
    try:
        inst.start()
        api = f"{inst.hub}{base}hub/api/"
        with httpx.Client(trust_env=False, timeout=10,
                          headers={"Authorization": f"token {TEST_TOKEN}"}) as c:
            for user in ("alice", "bob"):
                c.post(api + f"users/{user}").raise_for_status()
                c.post(api + f"users/{user}/server").raise_for_status()
            c.post(api + "users/alice/servers/nb").raise_for_status()
            for _ in range(100):
                table = inst.routes()
                if sum(1 for r in table.values() if r.get("user")) == 3:
                    break
                time.sleep(0.1)
            r = c.get(inst.api + "/api/routes",
                      headers={"Authorization": f"token {inst.secret('proxy_auth_token')}"})
            save(name, r.content)
    finally:
        inst.cleanup()
        backend.terminate()
        backend.wait(10)
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    default_only()
    with_hub("/", "routes-root")
    with_hub("/base/", "routes-base")
