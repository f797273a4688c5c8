"""SIGHUP and `hubsvc reload` (what `systemctl reload hubsvc` runs): re-read the config,
restart only what changed, refuse a bad file while everything keeps running."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from typing import Any

import pytest

from .hubsvc_harness import HUBSVC, Instance

pytestmark = pytest.mark.integration


def reload_and_wait(inst: Instance, timeout: float = 60) -> dict[str, Any]:
    before = inst.status().get("last_reload", {}).get("id", 0)
    n_ready = inst.notify.lines().count("READY=1")
    inst.proc.send_signal(signal.SIGHUP)
    st = inst.wait_status(lambda s: s.get("last_reload", {}).get("id", 0) > before and s["ready"]
                          and s["last_reload"]["outcome"] != "in_progress", timeout)
    deadline = time.monotonic() + 5
    while inst.notify.lines().count("READY=1") <= n_ready and time.monotonic() < deadline:
        time.sleep(0.05)
    lines = inst.notify.lines()
    assert "RELOADING=1" in lines
    assert lines.count("READY=1") == n_ready + 1
    return st


def pids(inst: Instance) -> tuple[int, int]:
    return inst.pid("proxy"), inst.pid("hub")


def test_reload_without_change_restarts_nothing(hubsvc: Instance) -> None:
    before = pids(hubsvc)
    st = reload_and_wait(hubsvc)
    assert st["last_reload"]["ok"] is True and st["last_reload"]["restarted"] == []
    assert pids(hubsvc) == before


def test_health_only_change_restarts_nothing(hubsvc: Instance) -> None:
    before = pids(hubsvc)
    hubsvc.overrides = {"health": {"interval_s": 0.7, "timeout_s": 0.6}}
    hubsvc.config.write_text(hubsvc.toml())
    st = reload_and_wait(hubsvc)
    assert st["last_reload"]["restarted"] == []
    assert pids(hubsvc) == before


def test_hub_only_change_keeps_proxy_and_users_routes(hubsvc: Instance) -> None:
    hubsvc.spawn("dora")
    token = hubsvc.user_token("dora")
    server = hubsvc.user_server_pids()[0]
    proxy, hub = pids(hubsvc)
    hubsvc.hub_extra = "c.JupyterHub.template_vars = {'reloaded': True}"
    hubsvc.write_config()
    st = reload_and_wait(hubsvc)
    assert st["last_reload"]["restarted"] == ["hub"]
    new_proxy, new_hub = pids(hubsvc)
    assert new_proxy == proxy and new_hub != hub
    assert "/user/dora" in hubsvc.routes()
    assert hubsvc.get_public("/user/dora/api/status", token) == 200
    assert hubsvc.user_server_pids() == [server]


def test_proxy_change_restarts_proxy_only_and_restores_routes(hubsvc: Instance) -> None:
    hubsvc.spawn("emil")
    token = hubsvc.user_token("emil")
    proxy, hub = pids(hubsvc)
    hubsvc.overrides = {"proxy": {"extra_args": ["--timeout", "60000"]}}
    hubsvc.config.write_text(hubsvc.toml())
    st = reload_and_wait(hubsvc)
    assert st["last_reload"]["restarted"] == ["proxy"]
    assert pids(hubsvc)[1] == hub and pids(hubsvc)[0] != proxy
    assert hubsvc.get_public("/user/emil/api/status", token) == 200


@pytest.mark.parametrize("bad", ["[proxy\n", "[health]\ninterval_s = \"soon\"\n",
                                 "[paths]\nstate_dir = \"/elsewhere\"\n"])
def test_bad_reload_is_rejected_and_nothing_restarts(hubsvc: Instance, bad: str) -> None:
    before = pids(hubsvc)
    good = hubsvc.config.read_text()
    hubsvc.config.write_text(good + bad if bad.startswith("[health]") else bad)
    n_ready = hubsvc.notify.lines().count("READY=1")
    hubsvc.proc.send_signal(signal.SIGHUP)
    st = hubsvc.wait_status(lambda s: s.get("last_reload", {}).get("outcome") == "refused", 60)
    assert st["last_reload"]["ok"] is False and st["ready"] is True
    assert pids(hubsvc) == before
    assert "reload_rejected" in hubsvc.log_text()
    deadline = time.monotonic() + 5
    while hubsvc.notify.lines().count("READY=1") == n_ready and time.monotonic() < deadline:
        time.sleep(0.05)
    assert any(ln.startswith("STATUS=reload failed") for ln in hubsvc.notify.lines())
    assert hubsvc.get_public("/hub/health") == 200
    # `hubsvc status` stays usable while the file is broken (here: still names runtime_dir)
    if bad.startswith("[health]"):
        r = subprocess.run([str(HUBSVC), "status", "--json", "--config", str(hubsvc.config)],
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 0 and json.loads(r.stdout)["ready"] is True, r.stderr
        assert "warning" in r.stderr
    # and a later good reload still works
    hubsvc.config.write_text(good)
    st = reload_and_wait(hubsvc)
    assert st["last_reload"]["ok"] is True


def test_reload_command_waits_for_its_outcome(hubsvc: Instance) -> None:
    """`hubsvc reload` (ExecReload=): 0 when applied, 1 with the field when refused."""
    before = pids(hubsvc)
    cmd = [str(HUBSVC), "reload", "--config", str(hubsvc.config), "--timeout", "120"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert r.returncode == 0 and "applied; restarted: nothing" in r.stdout, r.stderr
    good = hubsvc.config.read_text()
    hubsvc.overrides = {"restart": {"max_restarts_total": 1}}
    hubsvc.config.write_text(hubsvc.toml())
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    finally:
        hubsvc.config.write_text(good)
    assert r.returncode == 1 and "refused" in r.stderr and "max_restarts_total" in r.stderr
    assert pids(hubsvc) == before
    st = hubsvc.status()
    assert st["last_reload"]["outcome"] == "refused" and st["last_reload"]["id"] == 2
    assert st["ready"] is True
