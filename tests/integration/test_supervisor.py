"""The supervisor core against the real CHP and the real JupyterHub (issue 2 §8)."""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from .hubsvc_harness import Instance, proc_alive

pytestmark = pytest.mark.integration


def children_of(pid: int) -> list[int]:
    out = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                stat = (p / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(p.name))
    return out


def test_bring_up_order_and_ready_only_after_chain(hubsvc: Instance) -> None:
    lines = hubsvc.notify.lines()
    statuses = [ln for ln in lines if ln.startswith("STATUS=")]
    # proxy before hub, READY last, and READY carries the public URL
    i_proxy = statuses.index("STATUS=starting proxy")
    i_hub = statuses.index("STATUS=starting hub")
    assert i_proxy < statuses.index("STATUS=proxy ready") < i_hub
    assert lines.count("READY=1") == 1
    ready_at = lines.index("READY=1")
    assert lines[ready_at + 1] == f"STATUS=ready: {hubsvc.public}/"
    # the chain works: /hub/health through the public port, the hub's route in CHP
    assert hubsvc.get_public("/hub/health") == 200
    assert any(d.get("hub") is True for d in hubsvc.routes().values())
    st = hubsvc.status()
    assert st["ready"] is True and st["pid"] == hubsvc.proc.pid
    assert {c["state"] for c in st["components"].values()} == {"ready"}
    log = hubsvc.log_text()
    assert log.index("component_ready component=proxy") < log.index("component_started component=hub")
    assert log.index("component_ready component=hub") < log.index("<6>ready ")
    # CHP was executed before the supervisor was loaded (by the node that loaded it while
    # hubsvc checked its config: hubsvc.warm), and that very process serves
    started = re.findall(
        r"component_started component=proxy pid=(\d+) .*head_start_s=[0-9.]+ warm=loaded", log)
    assert started == [str(hubsvc.pid("proxy"))], log
    assert "chp_warm.mjs" in Path(f"/proc/{started[0]}/cmdline").read_text()
    # the hub's Python loaded JupyterHub while CHP started (hubsvc.hold), and was let run
    # only at the hub's start, after CHP was ready: that very process is the hub
    held = re.findall(
        r"component_started component=hub pid=(\d+) .*head_start_s=[0-9.]+ warm=loaded", log)
    assert held == [str(hubsvc.pid("hub"))], log
    cmdline = Path(f"/proc/{held[0]}/cmdline").read_bytes().split(b"\0")
    assert cmdline[1:3] == [b"-m", b"hubsvc.hold"] and cmdline[3].endswith(b"jupyterhub")


def test_watchdog_pings_and_no_systemd_vars_in_children(hubsvc: Instance) -> None:
    time.sleep(2.5)  # WATCHDOG_USEC=2s -> a ping every second
    assert hubsvc.notify.lines().count("WATCHDOG=1") >= 2
    for comp in ("proxy", "hub"):
        env = Path(f"/proc/{hubsvc.pid(comp)}/environ").read_bytes().split(b"\0")
        names = {e.split(b"=", 1)[0] for e in env}
        assert not names & {b"NOTIFY_SOCKET", b"WATCHDOG_USEC", b"WATCHDOG_PID"}


def test_no_secret_in_any_cmdline(hubsvc: Instance) -> None:
    user = "cmdline"
    hubsvc.spawn(user)
    secrets = [hubsvc.secret(n) for n in
               ("proxy_auth_token", "hubsvc_api_token", "jupyterhub_cookie_secret")]
    for name in ("proxy_auth_token", "hubsvc_api_token", "jupyterhub_cookie_secret"):
        assert (hubsvc.state / name).stat().st_mode & 0o777 == 0o600
    pids = [hubsvc.proc.pid, hubsvc.pid("proxy"), hubsvc.pid("hub"), *hubsvc.user_server_pids()]
    assert len(pids) == 4
    for pid in pids:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
        for s in secrets:
            assert s.encode() not in cmd
    log = hubsvc.log_text()
    gen = (hubsvc.run_dir / "jupyterhub_config.py").read_text()
    for s in secrets:
        assert s not in log and s not in gen


def test_kill_proxy_routes_restored_without_hub(hubsvc: Instance) -> None:
    user = "alice"
    hubsvc.spawn(user)
    token = hubsvc.user_token(user)
    assert hubsvc.get_public(f"/user/{user}/api/status", token) == 200
    server_pid = hubsvc.user_server_pids()[0]
    hub_pid, proxy_pid = hubsvc.pid("hub"), hubsvc.pid("proxy")
    time.sleep(4 * 0.5)  # a few health intervals: the drift watch has read alice's route
    os.kill(proxy_pid, signal.SIGKILL)
    took = hubsvc.wait_public(f"/user/{user}/api/status", token, 200, timeout=20)
    st = hubsvc.wait_status(lambda s: s["ready"], 10)
    assert st["components"]["proxy"]["pid"] != proxy_pid
    assert st["components"]["proxy"]["restarts"] == 1
    assert "killed by signal SIGKILL" in st["components"]["proxy"]["last_failure"]
    assert st["components"]["hub"]["pid"] == hub_pid  # the hub was left alone
    assert proc_alive(server_pid)
    assert f"/user/{user}" in hubsvc.routes()
    log = hubsvc.log_text()
    # the previous CHP's table was written into the new one (the hub's route and alice's),
    # then the hub re-synced
    replayed = re.search(r"routes_replayed .*routes=(\d+)", log)
    assert replayed is not None and int(replayed.group(1)) >= 2, log[-3000:]
    assert hubsvc.routes()[f"/user/{user}"].get("user") == user
    assert "routes_restored" in log
    assert took < 10  # far from the hub's 300 s tick; figures live in bench/


def test_kill_hub_user_server_survives_and_is_readopted(hubsvc: Instance) -> None:
    user = "bob"
    hubsvc.spawn(user)
    token = hubsvc.user_token(user)
    server_pid = hubsvc.user_server_pids()[0]
    hub_pid, proxy_pid = hubsvc.pid("hub"), hubsvc.pid("proxy")
    os.kill(hub_pid, signal.SIGKILL)
    hubsvc.wait_status(lambda s: s["components"]["hub"]["pid"] not in (None, hub_pid)
                       and s["ready"], 60)
    assert hubsvc.get_public("/hub/health") == 200
    assert hubsvc.wait_public(f"/user/{user}/api/status", token, 200, timeout=20) >= 0
    assert proc_alive(server_pid)
    assert hubsvc.user_server_pids() == [server_pid]  # same process, re-adopted
    info = hubsvc.api_call("GET", f"users/{user}").json()
    assert info["servers"][""]["ready"] is True
    assert hubsvc.pid("proxy") == proxy_pid
    assert f"{user} still running" in hubsvc.log_text()


def test_sigstopped_hub_is_replaced(hubsvc: Instance) -> None:
    hub_pid = hubsvc.pid("hub")
    os.kill(hub_pid, signal.SIGSTOP)
    try:
        st = hubsvc.wait_status(lambda s: s["components"]["hub"]["pid"] not in (None, hub_pid)
                                and s["ready"], 60)
    finally:
        if proc_alive(hub_pid):
            os.kill(hub_pid, signal.SIGCONT)
    assert "health check failed 3 times" in st["components"]["hub"]["last_failure"]
    assert "process is stopped" in st["components"]["hub"]["last_failure"]
    assert not proc_alive(hub_pid)
    assert hubsvc.get_public("/hub/health") == 200


def test_sigstopped_proxy_is_replaced(hubsvc: Instance) -> None:
    pid = hubsvc.pid("proxy")
    os.kill(pid, signal.SIGSTOP)
    try:
        st = hubsvc.wait_status(lambda s: s["components"]["proxy"]["pid"] not in (None, pid)
                                and s["ready"], 60)
    finally:
        if proc_alive(pid):
            os.kill(pid, signal.SIGCONT)
    assert "health check failed" in st["components"]["proxy"]["last_failure"]
    assert not proc_alive(pid)
    assert hubsvc.get_public("/hub/health") == 200


def test_hub_that_exits_at_once_gives_up_after_budget(make_hubsvc: Any) -> None:
    inst = make_hubsvc(
        overrides={"restart": {"max_restarts": 3, "backoff_initial_s": 0.05,
                               "backoff_max_s": 0.2}},
        hub_extra="raise SystemExit(3)", start=False)
    inst.start(wait_ready=False)
    rc = inst.proc.wait(120)
    assert rc == 1
    st = inst.status()
    assert st["ready"] is False and st["state"] == "failed"
    assert st["failure"]["component"] == "hub"
    assert "exited with status" in st["failure"]["reason"]
    assert st["components"]["hub"]["state"] == "failed"
    assert st["components"]["hub"]["restarts"] == 3
    assert st["components"]["proxy"]["state"] == "stopped"
    assert "READY=1" not in inst.notify.lines()
    assert "gave_up component=hub" in inst.log_text()
    assert children_of(inst.proc.pid) == []


def test_sigterm_ordered_stop_leaves_nothing(hubsvc: Instance) -> None:
    hubsvc.spawn("carol")
    pids = {"proxy": hubsvc.pid("proxy"), "hub": hubsvc.pid("hub")}
    server = hubsvc.user_server_pids()[0]
    rc = hubsvc.stop(signal.SIGTERM)
    assert rc == 0
    for pid in (*pids.values(), server):
        assert not proc_alive(pid), pid
    log = hubsvc.log_text()
    assert log.index("component_stopped component=hub") < log.index(
        "component_stopped component=proxy")
    assert "STOPPING=1" in hubsvc.notify.lines()
    st = hubsvc.status()
    assert st["state"] == "stopped" and st["ready"] is False


def test_sigint_stops_cleanly_too(hubsvc: Instance) -> None:
    pids = [hubsvc.pid("proxy"), hubsvc.pid("hub")]
    assert hubsvc.stop(signal.SIGINT) == 0
    assert not any(proc_alive(p) for p in pids)


def test_supervisor_killed_leaves_no_proxy_or_hub(hubsvc: Instance) -> None:
    pids = [hubsvc.pid("proxy"), hubsvc.pid("hub")]
    hubsvc.proc.kill()
    hubsvc.proc.wait(10)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and any(proc_alive(p) for p in pids):
        time.sleep(0.1)
    assert not any(proc_alive(p) for p in pids)
