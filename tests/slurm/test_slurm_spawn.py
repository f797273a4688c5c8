"""Users' servers as Slurm jobs, with hubsvc running CHP and the hub (issue 7 §3).

A real one-node Slurm 22.05 + munge (Debian 12 packages) on loopback; JupyterHub loads the
shipped example etc/hubsvc/examples/slurm/jupyterhub_config.py (SITE lines set for this
machine: the test users' environment, servers on 127.0.0.1, a 3 s poll interval)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from hubsvc import config as config_mod
from hubsvc import routewatch, slurm

from .cluster import Cluster

USER = "hsvcs1"


def wait_for(pred: Any, timeout: float, what: str, step: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = pred()
        if last:
            return last
        time.sleep(step)
    raise AssertionError(f"{what}: not within {timeout:g}s (last: {last!r})")


def browser_login(base: str, user: str) -> httpx.Client:
    """Log in through the proxy like a browser (dummy authenticator, hidden _xsrf)."""
    c = httpx.Client(base_url=base, trust_env=False, timeout=30, follow_redirects=False)
    r = c.get("/hub/login")
    assert r.status_code == 200, r.status_code
    m = re.search(r'name="_xsrf" value="([^"]+)"', r.text)
    assert m, "no _xsrf in the login form"
    r = c.post("/hub/login?next=%2Fhub%2F", data={"username": user, "password": "x",
                                                   "_xsrf": m.group(1)})
    assert r.status_code == 302, (r.status_code, r.text[:300])
    return c


def server_model(hub: Any, user: str) -> dict[str, Any]:
    info = hub.inst.api_call("GET", f"users/{user}").json()
    return (info.get("servers") or {}).get("") or {}


def job_of(hub: Any, user: str) -> str:
    return str((server_model(hub, user).get("state") or {}).get("job_id") or "")


def wait_ready(hub: Any, user: str, timeout: float = 90) -> dict[str, Any]:
    return wait_for(lambda: (s := server_model(hub, user)).get("ready") and s, timeout,
                    f"{user}'s server ready")


def spawn(hub: Any, user: str) -> tuple[str, str]:
    """Create USER, start its server through the API; (job id, a token for USER)."""
    r = hub.inst.api_call("POST", f"users/{user}")
    assert r.status_code in (201, 409), r.text
    r = hub.inst.api_call("POST", f"users/{user}/server", timeout=30)
    assert r.status_code in (201, 202), r.text
    wait_ready(hub, user)
    return job_of(hub, user), hub.inst.user_token(user)


def hubsvc_token(hub: Any) -> str:
    return hub.inst.secret("hubsvc_api_token")


def cfg_of(hub: Any) -> config_mod.Config:
    return config_mod.load(hub.inst.config)


async def _drifts(hub: Any) -> list[routewatch.Drift]:
    async with httpx.AsyncClient(trust_env=False) as client:
        return await routewatch.check_routes(client, cfg_of(hub), hubsvc_token(hub))


async def _server_jobs(hub: Any) -> list[slurm.ServerJob]:
    async with httpx.AsyncClient(trust_env=False) as client:
        return await slurm.server_jobs(client, cfg_of(hub), hubsvc_token(hub))


async def _watch_once(hub: Any, status: dict[str, object]) -> None:
    async with httpx.AsyncClient(trust_env=False) as client:
        await slurm.SchedulerWatch(client, cfg_of(hub), hubsvc_token(hub), status)()


async def _user_job(hub: Any, user: str) -> slurm.ServerJob | None:
    async with httpx.AsyncClient(trust_env=False) as client:
        return await slurm.user_job(client, cfg_of(hub), hubsvc_token(hub), user)


def listening_on(port: int) -> set[str]:
    """Local addresses with a TCP listener on `port` (/proc/net/tcp, IPv4)."""
    out = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        f = line.split()
        addr, st = f[1], f[3]
        h, p = addr.split(":")
        if st == "0A" and int(p, 16) == port:
            out.add(".".join(str(int(h[i:i + 2], 16)) for i in (6, 4, 2, 0)))
    return out


def test_login_spawn_runs_as_job_and_answers_through_proxy(cluster: Cluster,
                                                           slurm_hub: Any) -> None:
    hub = slurm_hub()
    browser = browser_login(hub.inst.public, USER)
    t0 = time.monotonic()
    r = browser.get("/hub/spawn")  # what the home page's "Start" does
    assert r.status_code == 302, r.status_code
    assert "/hub/spawn-pending/" in r.headers["location"] or "/user/" in r.headers["location"]
    srv = wait_ready(hub, USER)
    spawn_s = time.monotonic() - t0
    job_id = srv["state"]["job_id"]
    jobs = cluster.jobs(USER)
    assert [(j["id"], j["state"]) for j in jobs] == [(job_id, "RUNNING")], jobs
    # the browser follows the server's OAuth dance through the proxy to the UI
    r = browser.get(f"/user/{USER}/", follow_redirects=True)
    assert r.status_code == 200 and f"/user/{USER}/lab" in str(r.url), (r.status_code, r.url)
    token = hub.inst.user_token(USER)
    assert hub.inst.get_public(f"/user/{USER}/api/status", token) == 200
    # CHP routes to the batch host; the server listens where the example says (127.0.0.1),
    # not on batchspawner's 0.0.0.0, and runs as the user with the hub's connect_url
    route = hub.inst.routes()[f"/user/{USER}"]
    port = int(route["target"].rsplit(":", 1)[1].rstrip("/"))
    assert route["target"] == f"http://{cluster.host}:{port}"
    assert listening_on(port) == {"127.0.0.1"}
    pids = [p for p in cluster.job_pids()
            if b"jupyterhub-singleuser" in Path(f"/proc/{p}/cmdline").read_bytes()]
    assert pids, "no jupyterhub-singleuser process of the job user"
    env = dict(e.split(b"=", 1) for e in Path(f"/proc/{pids[0]}/environ").read_bytes().split(b"\0")
               if b"=" in e)
    assert env[b"JUPYTERHUB_API_URL"].decode().startswith(hub.inst.hub + "/hub/api")
    assert env[b"SLURM_JOB_ID"].decode() == job_id
    print(f"\nspawn through Slurm (login -> ready): {spawn_s:.2f} s")
    st = hub.inst.status()
    assert st["ready"] and all(c["restarts"] == 0 for c in st["components"].values())


def test_hub_kill_job_survives_and_is_readopted(cluster: Cluster, slurm_hub: Any) -> None:
    hub = slurm_hub()
    job_id, token = spawn(hub, USER)
    hub_pid = hub.inst.pid("hub")
    os.kill(hub_pid, signal.SIGKILL)
    hub.inst.wait_status(lambda s: s["components"]["hub"]["pid"] not in (None, hub_pid)
                         and s["ready"], 60)
    assert [(j["id"], j["state"]) for j in cluster.jobs(USER)] == [(job_id, "RUNNING")]
    took = hub.inst.wait_public(f"/user/{USER}/api/status", token, 200, timeout=30)
    assert job_of(hub, USER) == job_id  # the same job, re-adopted from its stored id
    assert server_model(hub, USER)["ready"] is True
    assert f"{USER} still running" in hub.inst.log_text()
    print(f"\nafter hub kill: /user/{USER}/api/status 200 again {took:.2f} s after the hub's "
          "replacement was ready")


def test_hubsvc_restart_keeps_job(cluster: Cluster, slurm_hub: Any) -> None:
    hub = slurm_hub()
    job_id, token = spawn(hub, USER)
    assert hub.inst.stop() == 0  # user_servers_on_stop = "keep"
    assert [(j["id"], j["state"]) for j in cluster.jobs(USER)] == [(job_id, "RUNNING")]
    hub.inst.start(timeout=90)
    hub.inst.wait_public(f"/user/{USER}/api/status", token, 200, timeout=30)
    assert job_of(hub, USER) == job_id


def test_proxy_kill_route_returns(cluster: Cluster, slurm_hub: Any) -> None:
    hub = slurm_hub()
    job_id, token = spawn(hub, USER)
    proxy_pid, hub_pid = hub.inst.pid("proxy"), hub.inst.pid("hub")
    os.kill(proxy_pid, signal.SIGKILL)
    took = hub.inst.wait_public(f"/user/{USER}/api/status", token, 200, timeout=20)
    st = hub.inst.wait_status(lambda s: s["ready"], 10)
    assert st["components"]["hub"]["pid"] == hub_pid
    assert st["components"]["proxy"]["restarts"] == 1
    assert [(j["id"], j["state"]) for j in cluster.jobs(USER)] == [(job_id, "RUNNING")]
    print(f"\nafter CHP kill: route to the job's server back in {took:.2f} s")
    assert took < 10


def test_stop_server_cancels_job(cluster: Cluster, slurm_hub: Any) -> None:
    hub = slurm_hub()
    job_id, _ = spawn(hub, USER)
    t0 = time.monotonic()
    r = hub.inst.api_call("DELETE", f"users/{USER}/server", timeout=30)
    assert r.status_code in (202, 204), r.text
    wait_for(lambda: not cluster.jobs(USER), 30, "the job gone from squeue")
    print(f"\nstop -> job gone: {time.monotonic() - t0:.2f} s")
    assert f"/user/{USER}" not in hub.inst.routes()
    assert slurm.job(job_id) is None


def test_scancel_behind_the_hubs_back(cluster: Cluster, slurm_hub: Any) -> None:
    hub = slurm_hub()
    job_id, token = spawn(hub, USER)
    assert asyncio.run(_drifts(hub)) == []
    subprocess.run(["scancel", job_id], check=True, timeout=10)
    wait_for(lambda: not cluster.jobs(USER), 30, "the job gone from squeue")
    # between the job's end and the hub's next poll: a user's request fails (no loop), and
    # the drift watch sees nothing to fix (the hub still lists the server, CHP its route)
    window = hub.inst.get_public(f"/user/{USER}/api/status", token)
    assert window != 200
    assert asyncio.run(_drifts(hub)) == []
    print(f"\nright after scancel: /user/{USER}/api/status -> {window}")
    wait_for(lambda: f"/user/{USER}" not in hub.inst.routes(), 30,
             "the hub's poll removing the route")
    assert not server_model(hub, USER)
    assert asyncio.run(_drifts(hub)) == []
    code = hub.inst.get_public(f"/user/{USER}/api/status", token)
    assert code != 200
    time.sleep(1.5)  # three health intervals of hubsvc's watch
    log = hub.inst.log_text()
    assert "route_drift" not in log and "redirect_loop" not in log
    st = hub.inst.status()
    assert st["ready"] and all(c["restarts"] == 0 for c in st["components"].values())
    assert f"User {USER} server stopped" in log  # the hub's poll saw the job end


def test_full_cluster_reports_pending(cluster: Cluster, slurm_hub: Any) -> None:
    hub = slurm_hub()
    blocker = fill_cluster(cluster)  # one job holding every CPU of the node
    user = "hsvcs2"
    assert hub.inst.api_call("POST", f"users/{user}").status_code in (201, 409)
    r = hub.inst.api_call("POST", f"users/{user}/server", timeout=30)
    assert r.status_code == 202, r.text  # still starting after the hub's 10 s
    job_id = wait_for(lambda: job_of(hub, user), 10, "the job id in the spawner state")
    sj = wait_for(lambda: [j for j in asyncio.run(_server_jobs(hub)) if j.user == user
                           and j.slurm_state == "PENDING" and j.reason == "Resources"],
                  20, "the job PENDING (Resources)")[0]
    assert sj.job_id == job_id and sj.hub_state == "pending:spawn"
    # what the supervisor's periodic watch publishes for `hubsvc status`
    published: dict[str, object] = {}
    asyncio.run(_watch_once(hub, published))
    block = published["scheduler"]
    assert isinstance(block, dict)
    assert [p["user"] for p in block["pending"]] == [user] and block["running"] == 0
    assert "PENDING (Resources)" in "\n".join(slurm.status_lines(block))
    # what probe-spawn says about it
    what, _fix = slurm.pending_verdict(asyncio.run(_user_job(hub, user))) or ("", "")
    assert "PENDING in the queue" in what and "no free resources" in what
    # hubsvc does not take a queued job for a failing hub
    st = hub.inst.status()
    assert st["ready"] and all(c["state"] == "ready" and c["restarts"] == 0
                               for c in st["components"].values())
    # free the node: the same job starts and the server becomes ready
    subprocess.run(["scancel", blocker], check=True, timeout=10)
    wait_ready(hub, user, timeout=60)
    assert job_of(hub, user) == job_id
    token = hub.inst.user_token(user)
    hub.inst.wait_public(f"/user/{user}/api/status", token, 200, timeout=20)


def fill_cluster(cluster: Cluster) -> str:
    """Submit one job holding every CPU of the node; its id once it runs."""
    out = subprocess.run(["sbatch", "--parsable", "--uid", "hsvcs3", "-c", "2", "-o", "/dev/null",
                          "--chdir", "/tmp", "--wrap", "sleep 300"],
                         capture_output=True, text=True, timeout=15, check=True).stdout
    blocker = out.strip().split(";")[0]
    wait_for(lambda: any(j["id"] == blocker and j["state"] == "RUNNING" for j in cluster.jobs()),
             20, "the blocking job running")
    return blocker


def test_pending_in_hubsvc_status_and_probe_spawn(cluster: Cluster, slurm_hub: Any) -> None:
    hub = slurm_hub()
    fill_cluster(cluster)
    user = "hsvcs2"
    assert hub.inst.api_call("POST", f"users/{user}").status_code in (201, 409)
    hubsvc = [str(Path(sys.executable).parent / "hubsvc")]
    probe = subprocess.run([*hubsvc, "probe-spawn", "--config", str(hub.inst.config), "--user",
                            user, "--timeout", "15", "--json"],
                           capture_output=True, text=True, timeout=60)
    verdict = json.loads(probe.stdout)
    assert verdict["outcome"] == "pending", verdict
    assert verdict["cause"] == "scheduler_pending" and "PENDING" in verdict["summary"]
    st = hub.inst.wait_status(lambda s: (s.get("scheduler") or {}).get("pending"), 20)
    assert [p["user"] for p in st["scheduler"]["pending"]] == [user]
    assert st["scheduler"]["pending"][0]["reason"] == "Resources"
    assert st["ready"] and all(c["restarts"] == 0 for c in st["components"].values())
    text = subprocess.run([*hubsvc, "status", "--config", str(hub.inst.config)],
                          capture_output=True, text=True, timeout=30).stdout
    assert f"{user}: job" in text and "PENDING (Resources)" in text
