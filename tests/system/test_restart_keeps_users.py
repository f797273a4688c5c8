"""Restart and upgrade hubsvc without dropping users (launcher "systemd", the package's
default): a WebSocket held open to a user's kernel through the public port survives
`systemctl restart hubsvc` and `rpm -U`, CHP keeps its pid (the new supervisor adopts it),
the hub is replaced. `systemctl stop hubsvc` still stops everything, in order: with
user_servers_on_stop = "stop" the user's server first, then the hub, then the proxy — the
hub is stopped by hubsvc, not by systemd at the same moment as hubsvc. Last, with hubsvc
stopped, `hubsvc doctor` names the one configuration whose users' servers die with hubsvc.

Runs on the session's container after test_component_units.py (which erases the package
again) and cleans up after itself the same way. One scenario, each test building on the
previous one's state. The socket is held by tests/system/wsclient.py, which never
reconnects: a cut socket shows as "closed" in its log.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from .conftest import HERE, OUT, Machine, wait_until

pytestmark = [pytest.mark.system, pytest.mark.timeout(900)]

USER = "carol"
PASSWORD = "Keep-me-connected-9"
MAIN, PROXY, HUB = "hubsvc.service", "hubsvc-proxy.service", "hubsvc-hub.service"
SERVER = f"jupyter-{USER}-singleuser.service"
STATE: dict = {}
# systemd's catalog ids: "Deactivated successfully", "Failed with result"
UNIT_SUCCESS, UNIT_FAILURE = "7ad2d189f7e94e70a38c781354912448", "d9b373ed55a64feb8242e02dbe79a49c"


@pytest.fixture(scope="module")
def m(machine: Machine) -> Iterator[Machine]:
    if machine.run(f"rpm -qpl {machine.rpm} | grep -qx /usr/lib/systemd/system/{PROXY}",
                   check=False).returncode != 0:
        pytest.skip("this package does not ship the component units")
    machine.run("systemctl reset-failed", check=False)  # start limits of earlier modules
    machine.run(f"rpm -i --nodeps {machine.rpm}", timeout=180)
    machine.run(f"useradd -m -s /bin/bash {USER} && echo '{USER}:{PASSWORD}' | chpasswd")
    try:
        yield machine
    finally:
        ws = STATE.get("ws")
        if ws is not None and ws.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(ws.pid, signal.SIGKILL)
            ws.wait(timeout=10)
        machine.run(f"rpm -e --nodeps hubsvc; systemctl stop {SERVER}; userdel -r {USER}; "
                    "rm -rf /var/lib/hubsvc /etc/hubsvc", check=False, timeout=180)
        machine.run("systemctl reset-failed", check=False)


def events() -> list[dict]:
    path = STATE["ws_log"]
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] \
        if path.exists() else []


def replies_after(t: float) -> list[dict]:
    return [e for e in events() if e["event"] == "reply" and e["t"] > t]


def assert_socket_never_cut() -> None:
    evs = events()
    assert [e["event"] for e in evs].count("open") == 1, evs[:5]
    cut = [e for e in evs if e["event"] in ("closed", "error")]
    assert not cut, f"the WebSocket to {USER}'s kernel was cut: {cut}"
    assert STATE["ws"].poll() is None, "the WebSocket client ended"


def pids(m: Machine) -> dict[str, int]:
    return {u: m.main_pid(u) for u in (MAIN, PROXY, HUB, SERVER)}


def ready_after(m: Machine, old_main: int) -> dict | None:
    st = m.status()
    return st if st.get("ready") and st.get("pid") not in (None, old_main) else None


def test_websocket_to_a_kernel_through_the_proxy(m: Machine) -> None:
    m.run(f"systemctl start {MAIN}", timeout=150)
    res = m.client("login-spawn", m.public, USER, PASSWORD)
    assert res["ok"], res
    assert m.prop(SERVER, "ActiveState") == "active"
    # the server's own token (SystemdSpawner's environment file, root only) opens its API
    token = m.out(f"sed -n 's/^JUPYTERHUB_API_TOKEN=//p' /run/{SERVER[:-8]}/*.env | tr -d '\"'")
    assert len(token) >= 16
    kernel = json.loads(m.out(f"curl -sf -X POST -d '{{}}' -H 'Authorization: token {token}' "
                              f"{m.public}/user/{USER}/api/kernels"))
    log = OUT / "websocket-restart.jsonl"
    log.unlink(missing_ok=True)
    STATE["ws_log"] = log
    STATE["ws"] = subprocess.Popen(
        ["nsenter", "-t", str(m.leader), "-n", sys.executable, str(HERE / "wsclient.py"),
         f"ws://127.0.0.1:8000/user/{USER}/api/kernels/{kernel['id']}/channels", token, str(log)],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=(OUT / "wsclient.err").open("w"),
        start_new_session=True)
    wait_until(lambda: len(replies_after(0)) >= 2, 60, "the kernel answering over the WebSocket")
    assert_socket_never_cut()


def _survives(m: Machine, action: str, timeout: float) -> None:
    before = pids(m)
    cursor = m.cursor()
    m.run(action, timeout=timeout)
    done = time.time()
    wait_until(lambda: ready_after(m, before[MAIN]), 120, f"hubsvc ready after {action!r}")
    after = pids(m)
    assert after[MAIN] != before[MAIN], "hubsvc was not restarted"
    assert after[PROXY] == before[PROXY], f"CHP was restarted by {action!r}: {before} -> {after}"
    assert m.prop(PROXY, "NRestarts") == "0"
    assert after[HUB] not in (0, before[HUB]), "the hub was not replaced"
    assert after[SERVER] == before[SERVER], f"{USER}'s server was replaced"
    # the kernel still answers over the very same socket, after the action
    wait_until(lambda: len(replies_after(done)) >= 3, 60, "replies over the same WebSocket")
    assert_socket_never_cut()
    assert m.user_status(USER) == 200
    assert m.health_through_proxy() == 200
    # systemd never stopped the proxy unit: no stop job for it in the journal
    stops = [e for e in m.journal(PROXY, since_cursor=cursor) if e.get("JOB_TYPE") == "stop"]
    assert not stops, [e.get("MESSAGE") for e in stops]


def test_systemctl_restart_keeps_the_websocket_and_chp(m: Machine) -> None:
    _survives(m, f"systemctl restart {MAIN}", timeout=150)


def test_upgrade_keeps_the_websocket_and_chp(m: Machine) -> None:
    # The next supervisor stops users' servers first on a real stop (checked below); the
    # setting is read when hubsvc starts, i.e. by the supervisor the upgrade starts.
    m.run("""sed -i '/^\\[hub\\]/a user_servers_on_stop = "stop"' /etc/hubsvc/hubsvc.toml""")
    m.run("hubsvc check-config")
    _survives(m, f"rpm -U --nodeps {m.rpm_upgrade}", timeout=300)
    assert m.out("rpm -q --qf '%{RELEASE}' hubsvc") == "2"


def test_stop_is_ordered_users_servers_first_and_leaves_nothing(m: Machine) -> None:
    cursor = m.cursor()
    m.run(f"systemctl stop {MAIN}", timeout=150)
    for unit in (MAIN, PROXY, HUB, SERVER):
        assert m.prop(unit, "ActiveState") == "inactive", unit
    assert m.prop(MAIN, "ExecMainStatus") == "0"
    # systemd's own record, in order: the user's server stopped before the hub was asked
    # to stop, the hub stopped before the proxy was asked to; both while hubsvc stopped
    text = m.out(f"journalctl -o json --no-pager --after-cursor='{cursor}' "
                 f"-u {MAIN} -u {PROXY} -u {HUB} -u {SERVER}")
    seq = []  # (unit, "stopping" | "stopped") as systemd logged them
    for line in text.splitlines():
        e = json.loads(line)
        unit, msg = e.get("UNIT"), e.get("MESSAGE")
        if e.get("_PID") != "1" or not unit or not isinstance(msg, str):
            continue
        if (e.get("JOB_TYPE") == "stop" and not e.get("JOB_RESULT")) or (
                "Sent signal SIGTERM" in msg):  # a stop job, or KillUnit from hubsvc
            seq.append((unit, "stopping"))
        elif (e.get("JOB_TYPE") == "stop" and e.get("JOB_RESULT")) or e.get("MESSAGE_ID") in (
                UNIT_SUCCESS, UNIT_FAILURE):
            seq.append((unit, "stopped"))
    print("stop sequence:", seq)

    def at(unit: str, what: str) -> int:
        assert (unit, what) in seq, (unit, what, seq)
        return seq.index((unit, what))

    assert at(MAIN, "stopping") < at(SERVER, "stopped") < at(HUB, "stopping")
    assert at(HUB, "stopping") < at(HUB, "stopped") < at(PROXY, "stopping")
    assert at(PROXY, "stopping") < at(PROXY, "stopped") < at(MAIN, "stopped")
    # nothing of hubsvc runs; the client saw its socket closed (it can tell)
    left = [p for p in m.procs() if "configurable-http-proxy" in p.args or "hubsvc" in p.args]
    assert not left, left
    wait_until(lambda: any(e["event"] == "closed" for e in events()), 30,
               "the WebSocket client to see the stop")


def test_doctor_names_spawners_whose_servers_die_with_hubsvc(m: Machine) -> None:
    """LocalProcessSpawner with launcher "process": servers live in hubsvc.service's cgroup
    (KillMode=mixed). The packaged setup (SystemdSpawner, launcher "systemd") is fine."""

    def finding() -> dict:
        doc = json.loads(m.run("hubsvc doctor --json", check=False, timeout=120).stdout)
        found = [f for f in doc["findings"] if f["id"] == "systemd.user_servers"]
        assert len(found) == 1, doc["findings"]
        return found[0]

    assert finding()["severity"] == "ok"
    m.run("cp /etc/hubsvc/jupyterhub_config.py /root/jc.good && cp /etc/hubsvc/hubsvc.toml /root/ht.good")
    try:
        m.run("echo 'c.JupyterHub.spawner_class = \"localprocess\"' >> /etc/hubsvc/jupyterhub_config.py")
        assert finding()["severity"] == "ok"  # the hub's unit keeps them: KillMode=process
        m.run("""sed -i '/^\\[supervisor\\]/a launcher = "process"' /etc/hubsvc/hubsvc.toml""")
        f = finding()
        assert f["severity"] == "warning", f
        assert "KillMode=mixed" in f["evidence"] and "LocalProcessSpawner" in f["evidence"]
        assert 'launcher = "systemd"' in f["fix"] and 'spawner_class = "systemd"' in f["fix"]
    finally:
        m.run("cp /root/jc.good /etc/hubsvc/jupyterhub_config.py && cp /root/ht.good /etc/hubsvc/hubsvc.toml")
