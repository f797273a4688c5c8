"""The supervisor's passive watch against the real programs: route drift repaired at
once, a redirect loop reported once per episode with its cause (issue 4 §2)."""

from __future__ import annotations

import subprocess
import time
from typing import Any
from urllib.parse import urljoin

import httpx
import pytest

from .hubsvc_harness import HUBSVC, Instance

pytestmark = pytest.mark.integration


def test_route_deleted_behind_hubsvcs_back_is_repaired(hubsvc: Instance) -> None:
    hubsvc.spawn("fay")
    token = hubsvc.user_token("fay")
    proxy_pid = hubsvc.pid("proxy")
    with httpx.Client(trust_env=False, timeout=5) as c:
        r = c.delete(f"{hubsvc.api}/api/routes/user/fay",
                     headers={"Authorization": f"token {hubsvc.secret('proxy_auth_token')}"})
        assert r.status_code == 204
    took = hubsvc.wait_public("/user/fay/api/status", token, 200, timeout=15)
    assert "/user/fay" in hubsvc.routes()
    assert hubsvc.pid("proxy") == proxy_pid  # repaired, not restarted
    deadline = time.monotonic() + 5
    while "route_drift" not in hubsvc.log_text() and time.monotonic() < deadline:
        time.sleep(0.1)
    log = hubsvc.log_text()
    drift = [ln for ln in log.splitlines() if ln.startswith("<4>route_drift")]
    assert drift and "user=fay" in drift[0] and "kind=missing" in drift[0]
    assert "repaired=true" in drift[0]
    assert took < 10


def test_healthy_service_raises_no_drift_or_loop(hubsvc: Instance) -> None:
    hubsvc.spawn("gil")
    time.sleep(3)  # several health intervals
    log = hubsvc.log_text()
    assert "route_drift" not in log and "redirect_loop" not in log


def test_loop_through_the_private_port_is_one_event_with_its_cause(hubsvc: Instance) -> None:
    hubsvc.spawn("hal")
    token = hubsvc.user_token("hal")
    url = f"{hubsvc.hub}/user/hal/"  # the classic wrong entry point: the hub's own port
    statuses = []
    with httpx.Client(trust_env=False, timeout=30, follow_redirects=False) as c:
        for _ in range(12):  # the hub ends the loop with a 500 after ~14 s
            r = c.get(url, headers={"Authorization": f"token {token}"})
            statuses.append(r.status_code)
            if r.status_code != 302:
                break
            url = urljoin(url, r.headers["location"])
    assert statuses[-1] == 500
    deadline = time.monotonic() + 10
    while "redirect_loop" not in hubsvc.log_text() and time.monotonic() < deadline:
        time.sleep(0.1)
    events = [ln for ln in hubsvc.log_text().splitlines() if ln.startswith("<4>redirect_loop")]
    assert len(events) == 1, events
    assert "user=hal" in events[0] and "cause=private_address" in events[0]
    st = hubsvc.status()
    assert st["redirect_loops"] and st["redirect_loops"][0]["user"] == "hal"
    assert st["redirect_loops"][0]["cause"] == "private_address"


def test_periodic_probe_verdict_in_status(make_hubsvc: Any) -> None:
    inst = make_hubsvc(overrides={"probe": {"enabled": True, "interval_s": 10, "user": "ida",
                                            "timeout_s": 30}}, start=False)
    inst.start()
    inst.spawn("ida")
    st = inst.wait_status(lambda s: "probe" in s, 60)
    assert st["probe"]["user"] == "ida"
    assert st["probe"]["outcome"] == "healthy" and st["probe"]["exit_code"] == 0, st["probe"]
    assert "probe_verdict" in inst.log_text()
    r = subprocess.run([str(HUBSVC), "status", "--config", str(inst.config)],
                       capture_output=True, text=True, timeout=30)
    assert "last probe" in r.stdout and "healthy" in r.stdout


def test_admin_setting_owned_by_hubsvc_is_ignored_and_reported(make_hubsvc: Any) -> None:
    inst = make_hubsvc(hub_extra='c.JupyterHub.bind_url = "http://127.0.0.1:9"\n'
                                 'c.JupyterHub.cleanup_servers = True')
    assert inst.get_public("/hub/health") == 200  # hubsvc's public_url won
    deadline = time.monotonic() + 10
    while "owned_setting_ignored" not in inst.log_text() and time.monotonic() < deadline:
        time.sleep(0.1)
    lines = [ln for ln in inst.log_text().splitlines() if ln.startswith("<4>owned_setting_ignored")]
    keys = sorted(ln.split("key=")[1].split()[0] for ln in lines)
    assert keys == ["JupyterHub.bind_url", "JupyterHub.cleanup_servers"], lines


def test_chps_api_is_asked_once_per_interval(make_hubsvc: Any) -> None:
    """While hubsvc is ready, the drift watch's read of CHP's table stands for the proxy's
    API check (one request to CHP's API per health interval, not two). CHP at info level
    logs each API request it answers."""
    inst = make_hubsvc(overrides={"proxy": {"extra_args": ["--log-level", "info"]}})
    interval = inst.settings()["health"]["interval_s"]

    def api_reads() -> int:
        return sum(1 for ln in inst.log_text().splitlines() if "GET /api/routes" in ln)

    time.sleep(2)
    n0, t0 = api_reads(), time.monotonic()
    time.sleep(10)
    n, elapsed = api_reads() - n0, time.monotonic() - t0
    intervals = elapsed / interval
    # one per interval at most (a loaded machine only stretches the intervals); two per
    # interval before the drift watch's read counted for the liveness check
    assert 0 < n <= intervals + 3, (n, intervals)
    assert inst.status()["ready"] is True
