"""Issue 5: CHP and the hub as units of their own (hubsvc-proxy/hubsvc-hub.service),
started, watched and restarted by hubsvc over D-Bus, in a real systemd 252; reload.

Runs on the session's container before test_service.py: installs the RPM, and erases it
again at the end so the admin scenario there starts from a clean machine.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

import pytest

from .conftest import Machine, wait_until

pytestmark = [pytest.mark.system, pytest.mark.timeout(900)]

USER = "bruno"
PASSWORD = "Units-and-more-17"
PROXY, HUB, MAIN = "hubsvc-proxy.service", "hubsvc-hub.service", "hubsvc.service"


@pytest.fixture(scope="module")
def m(machine: Machine) -> Iterator[Machine]:
    machine.run(f"rpm -i --nodeps {machine.rpm}", timeout=180)
    machine.run(f"useradd -m -s /bin/bash {USER} && echo '{USER}:{PASSWORD}' | chpasswd")
    try:
        yield machine
    finally:
        machine.run(f"rpm -e --nodeps hubsvc; userdel -r {USER}; rm -rf /var/lib/hubsvc /etc/hubsvc",
                    check=False, timeout=180)
        machine.run("systemctl reset-failed", check=False)
        if machine.cookies.exists():
            machine.cookies.unlink()


def ready_status(m: Machine, **pid_not: int) -> dict | None:
    st = m.status()
    if not st.get("ready"):
        return None
    for comp, old in pid_not.items():
        if st["components"][comp]["pid"] in (None, old):
            return None
    return st


def score(m: Machine, unit: str) -> float:
    text = m.out(f"systemd-analyze security {unit} | tail -1")
    found = re.search(r"exposure level for \S+: ([0-9.]+)", text)
    assert found, text
    return float(found.group(1))


def test_units_come_and_go_with_hubsvc(m: Machine) -> None:
    for unit in (PROXY, HUB):
        assert m.prop(unit, "LoadState") == "loaded"
        assert m.prop(unit, "ActiveState") == "inactive"
    cursor = m.cursor()
    m.run(f"systemctl start {MAIN}", timeout=150)
    st = m.status()
    assert st["ready"] is True and st["launcher"] == "systemd"
    for comp, unit in (("proxy", PROXY), ("hub", HUB)):
        assert m.prop(unit, "ActiveState") == "active"
        assert m.main_pid(unit) == st["components"][comp]["pid"]
        cg = m.out(f"cat /proc/{m.main_pid(unit)}/cgroup")
        assert f"/system.slice/{unit}" in cg and MAIN not in cg, cg
    # the proxy runs unprivileged, its token is nowhere in its unit's environment
    assert m.out(f"ps -o user= -p {m.main_pid(PROXY)}") != "root"
    token = m.out("cat /var/lib/hubsvc/proxy_auth_token")
    assert token not in m.out(f"systemctl show {PROXY} -p Environment")
    assert token not in m.out(f"cat /proc/{m.main_pid(PROXY)}/cmdline | tr '\\0' ' '")
    assert m.health_through_proxy() == 200
    # `hubsvc status` carries systemd's own view of each unit
    for comp, unit in (("proxy", PROXY), ("hub", HUB)):
        view = st["components"][comp]["systemd"]
        assert view["unit"] == unit and view["active_state"] == "active"
        assert view["main_pid"] == st["components"][comp]["pid"] and view["n_restarts"] == 0
    assert "systemd: hubsvc-proxy.service active/running" in m.out("hubsvc status")
    # a cold start: CHP's unit was started before the supervisor was loaded (its head
    # start), and taken by the supervisor's first start, not "adopted"
    events = [e for e in m.journal(MAIN, since_cursor=cursor) if e.get("HUBSVC_EVENT")]
    started = [e for e in events if e["HUBSVC_EVENT"] == "component_started"
               and e.get("HUBSVC_COMPONENT") == "proxy"]
    assert len(started) == 1 and float(started[0]["HUBSVC_HEAD_START_S"]) > 0, started
    assert int(started[0]["HUBSVC_PID"]) == st["components"]["proxy"]["pid"]
    assert not [e for e in events if e["HUBSVC_EVENT"] in ("component_adopted", "adopted_unit",
                                                           "head_start_discarded")]
    # the hub's unit was started then too, held (hubsvc.hold: JupyterHub's modules loaded
    # while CHP started), and let run by the supervisor's start of the hub, after CHP
    # was ready: its main process is the hub, with the hub's command line after the hold
    hub = [e for e in events if e["HUBSVC_EVENT"] == "component_started"
           and e.get("HUBSVC_COMPONENT") == "hub"]
    assert len(hub) == 1 and hub[0].get("HUBSVC_WARM") == "loaded", hub
    assert int(hub[0]["HUBSVC_PID"]) == st["components"]["hub"]["pid"] == m.main_pid(HUB)
    ready = [e for e in events if e["HUBSVC_EVENT"] == "component_ready"]
    assert [e.get("HUBSVC_COMPONENT") for e in ready][:2] == ["proxy", "hub"]
    assert events.index(ready[0]) < events.index(hub[0])
    cmd = m.out(f"tr '\\0' ' ' < /proc/{m.main_pid(HUB)}/cmdline")
    assert " -m hubsvc.hold /opt/hubsvc/bin/jupyterhub --config " in cmd, cmd
    assert m.out("stat -c '%F %a %U' /run/hubsvc/hub.hold") == "fifo 600 root"
    # held from the first milliseconds of `hubsvc run`, before the config was validated
    # (hubsvc.hubhold): its unit was started before CHP's
    forked = {u: int(m.prop(u, "ExecMainStartTimestampMonotonic")) for u in (HUB, PROXY)}
    assert 0 < forked[HUB] < forked[PROXY], forked


def test_each_component_logs_under_its_own_unit(m: Machine) -> None:
    assert m.client("get", "http://127.0.0.1:8001/api/routes")["status"] == 403  # a CHP warning
    hub = m.journal("hubsvc-hub")
    assert any("JupyterHub is now running" in e.get("MESSAGE", "") for e in hub)
    assert all(e.get("SYSLOG_IDENTIFIER") == "hubsvc-hub" for e in hub if "_PID" in e
               and e.get("_SYSTEMD_UNIT") == HUB and e.get("SYSLOG_IDENTIFIER") != "systemd")
    wait_until(lambda: any("403" in e.get("MESSAGE", "") or "Unauthorized" in e.get("MESSAGE", "")
                           for e in m.journal("hubsvc-proxy")), 10, "CHP's warning in its journal")
    events = {e.get("HUBSVC_EVENT") or e.get("MESSAGE", "").split(" ")[0] for e in m.journal(MAIN)}
    assert "ready" in events and "launcher" in events


def test_kill_each_component_recovered_by_hubsvc_not_systemd(m: Machine) -> None:
    res = m.client("login-spawn", m.public, USER, PASSWORD)
    assert res["ok"], res
    for comp, unit in (("proxy", PROXY), ("hub", HUB)):
        old = m.main_pid(unit)
        before = m.status()["components"][comp]["restarts"]
        m.run(f"kill -9 {old}")
        st = wait_until(lambda c=comp, o=old: ready_status(m, **{c: o}), 90, f"{comp} replaced")
        assert st["components"][comp]["restarts"] == before + 1
        assert "SIGKILL" in st["components"][comp]["last_failure"]
        assert m.prop(unit, "NRestarts") == "0", "systemd restarted it: hubsvc must be the only one"
        assert m.prop(unit, "ActiveState") == "active"
        wait_until(lambda: m.user_status(USER) == 200, 30, f"{USER}'s server through the proxy")


def test_hung_hub_is_replaced(m: Machine) -> None:
    old = m.main_pid(HUB)
    m.run(f"kill -STOP {old}")
    st = wait_until(lambda: ready_status(m, hub=old), 90, "the stopped hub replaced")
    assert "health check failed" in st["components"]["hub"]["last_failure"]
    assert m.prop(HUB, "NRestarts") == "0"
    wait_until(lambda: m.user_status(USER) == 200, 30, f"{USER}'s server through the proxy")


def _reload(m: Machine) -> dict:
    before = (m.status().get("last_reload") or {}).get("at", 0)
    m.run(f"systemctl reload {MAIN}", timeout=120)
    return wait_until(lambda: (st := m.status()) and (st.get("last_reload") or {}).get("at", 0) > before
                      and st["ready"] and st, 90, "the reload")


def test_reload_without_change_restarts_nothing(m: Machine) -> None:
    pids = (m.main_pid(PROXY), m.main_pid(HUB))
    st = _reload(m)
    assert st["last_reload"] == st["last_reload"] | {"ok": True, "restarted": []}
    assert (m.main_pid(PROXY), m.main_pid(HUB)) == pids
    assert m.out(f"systemctl is-active {MAIN}") == "active"


def test_reload_hub_only_change_keeps_proxy_and_routes(m: Machine) -> None:
    proxy, hub = m.main_pid(PROXY), m.main_pid(HUB)
    m.run("echo 'c.JupyterHub.template_vars = {\"reloaded\": True}' >> /etc/hubsvc/jupyterhub_config.py")
    st = _reload(m)
    assert st["last_reload"]["restarted"] == ["hub"]
    assert m.main_pid(PROXY) == proxy and m.main_pid(HUB) != hub
    routes = json.loads(m.out("curl -s -H \"Authorization: token $(cat /var/lib/hubsvc/proxy_auth_token)\" "
                              "http://127.0.0.1:8001/api/routes") or "{}")
    assert f"/user/{USER}" in routes
    wait_until(lambda: m.user_status(USER) == 200, 30, f"{USER}'s server through the proxy")


def test_reload_broken_file_is_rejected_and_nothing_restarts(m: Machine) -> None:
    """`systemctl reload` fails visibly on a bad hubsvc.toml and on a typo in the admin's
    JupyterHub file; nothing is stopped, and the refusal names the field or file:line."""
    pids = (m.main_pid(PROXY), m.main_pid(HUB))
    broken = {
        "/etc/hubsvc/hubsvc.toml": ("sed -i '/^\\[health\\]/a interval_s = \"often\"' "
                                    "/etc/hubsvc/hubsvc.toml", "health.interval_s"),
        "/etc/hubsvc/jupyterhub_config.py": ("echo 'c.JupyterHub.foo = (' >> "
                                             "/etc/hubsvc/jupyterhub_config.py",
                                             "jupyterhub_config.py:"),
    }
    for path, (breaking, named) in broken.items():
        cursor = m.cursor()
        m.run(f"cp {path} /root/good && {breaking}")
        try:
            r = m.run(f"systemctl reload {MAIN}", timeout=150, check=False)
            assert r.returncode != 0, "a refused reload must fail `systemctl reload`"
            st = m.status()
            assert st["last_reload"]["ok"] is False, st["last_reload"]
            assert (m.main_pid(PROXY), m.main_pid(HUB)) == pids
            assert m.out(f"systemctl is-active {MAIN}") == "active"
            assert m.prop(MAIN, "StatusText").startswith("reload failed")
            msgs = [e.get("MESSAGE", "") for e in m.journal(MAIN, since_cursor=cursor)]
            assert any("reload_rejected" in x and named in x for x in msgs), msgs[-20:]
        finally:
            m.run(f"cp /root/good {path}")
    assert _reload(m)["last_reload"]["ok"] is True


def test_exposure_scores(m: Machine) -> None:
    scores = {u: score(m, u) for u in (MAIN, PROXY, HUB)}
    print("systemd-analyze security:", scores)
    assert scores[PROXY] <= 2.0
    assert scores[MAIN] <= 5.0


def test_stop_takes_the_units_down(m: Machine) -> None:
    server = m.main_pid(f"jupyter-{USER}-singleuser.service")
    m.run(f"systemctl stop {MAIN}", timeout=120)
    for unit in (PROXY, HUB):
        assert m.prop(unit, "ActiveState") in ("inactive", "failed")
    assert m.prop(PROXY, "ActiveState") == "inactive" and m.prop(HUB, "ActiveState") == "inactive"
    left = [p for p in m.procs() if ("configurable-http-proxy" in p.args or "hubsvc" in p.args)
            and "jupyterhub-singleuser" not in p.args]
    assert not left, left
    # the user's server is a unit of its own and outlives the service
    assert m.main_pid(f"jupyter-{USER}-singleuser.service") == server
