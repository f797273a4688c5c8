"""The supervisor's passive watch against the real programs: route drift repaired at
once, a redirect loop reported once per episode with its cause (issue 4 §2)."""

from __future__ import annotations

import time
from urllib.parse import urljoin

import httpx
import pytest

from .hubsvc_harness import Instance

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
