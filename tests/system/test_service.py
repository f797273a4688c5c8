"""hubsvc as an admin gets it: the RPM in a real systemd 252, one scenario in order.

Each test builds on the state the previous one left (installed, started, a user's server
running...), as an admin's session would. Every wait is bounded.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

import pytest

from .conftest import Machine, booted, wait_until

pytestmark = [pytest.mark.system, pytest.mark.timeout(1500)]

USER = "alice"
PASSWORD = "Wonder-land-42"  # a throwaway account inside the throwaway container
UNIT = "hubsvc.service"
SERVER_UNIT = f"jupyter-{USER}-singleuser.service"
STATE: dict = {}


@pytest.fixture(scope="module", params=["systemd", "process"])
def machine(request: pytest.FixtureRequest) -> Iterator[Machine]:
    """The whole scenario once per launcher, each in a freshly booted container."""
    with booted(f"admin-{request.param}", request.param) as m:
        has_units = m.run(
            f"rpm -qpl {m.rpm} 2>/dev/null | grep -qx /usr/lib/systemd/system/hubsvc-hub.service",
            check=False,
        )
        if request.param == "systemd" and has_units.returncode != 0:
            pytest.skip("this package does not ship the component units")
        STATE.clear()
        yield m


def _timed(fn, *a, **kw):
    t0 = time.monotonic()
    r = fn(*a, **kw)
    return r, time.monotonic() - t0


def _seconds(span: str) -> float:
    """systemd's time span ("20s", "1min 30s", "500ms") in seconds."""
    units = {"ms": 0.001, "s": 1, "min": 60, "h": 3600}
    parts = re.findall(r"([0-9.]+)(ms|s|min|h)", span)
    assert parts, span
    return sum(float(n) * units[u] for n, u in parts)


def _ready_with(m: Machine, **pids_not: int) -> dict | None:
    """hubsvc's status once it is ready and each named component has a new pid."""
    st = m.status()
    if not st.get("ready"):
        return None
    for comp, old in pids_not.items():
        if st["components"][comp]["pid"] in (None, old):
            return None
    return st


def _server_alive(m: Machine, pid: int) -> None:
    assert m.prop(SERVER_UNIT, "ActiveState") == "active"
    assert m.main_pid(SERVER_UNIT) == pid, "the user's server was replaced"
    wait_until(lambda: m.user_status(USER) == 200, 30, f"{USER}'s server answering through the proxy")


def test_install(machine: Machine) -> None:
    _, dt = _timed(machine.run, f"rpm -i --nodeps {machine.rpm}", timeout=180)
    print(f"rpm -i: {dt:.1f} s")
    assert machine.out("rpm -q hubsvc").startswith("hubsvc-")
    for path in (
        "/usr/bin/hubsvc",
        "/opt/hubsvc/bin/jupyterhub",
        "/opt/hubsvc/bin/jupyterhub-singleuser",
        "/opt/hubsvc/node_modules/.bin/configurable-http-proxy",
        "/etc/hubsvc/hubsvc.toml",
        "/etc/hubsvc/jupyterhub_config.py",
    ):
        machine.run(f"test -e {path}")
    assert machine.prop(UNIT, "LoadState") == "loaded"
    # rfc3987-syntax's ~30 parsers, built at import, would cost the hub and every user's
    # server 1.3-2 s at each start (packaging/build-bundle.sh); both still import.
    machine.run("! /opt/hubsvc/bin/python -c 'import rfc3987_syntax' 2>/dev/null")
    machine.run("/opt/hubsvc/bin/python -c 'import jupyterhub.app, jupyter_server.serverapp'")
    # The installed units as systemd 252 sees them: no warning at all.
    units = machine.out("rpm -ql hubsvc | grep '^/usr/lib/systemd/system/' | xargs -n1 basename")
    units = units.split()
    p = machine.run(f"systemd-analyze verify {' '.join(units)}", check=False)
    assert p.returncode == 0 and p.stderr.strip() == "", p.stderr
    for unit in units:
        if not unit.endswith(".service"):
            continue
        score = machine.out(f"systemd-analyze security --offline=yes {unit} | tail -1")
        m = re.search(r"exposure level for \S+: ([0-9.]+)", score)
        assert m, score
        print(f"systemd-analyze security {unit}: {m.group(1)}")
        assert float(m.group(1)) <= 5.0
    # The packaged default config is valid as shipped.
    machine.run("hubsvc check-config")
    # This run's launcher, set as an admin would.
    machine.run(f"""sed -i '/^\\[supervisor\\]/a launcher = "{machine.launcher}"' /etc/hubsvc/hubsvc.toml""")
    machine.run("hubsvc check-config")


def test_start_returns_after_ready(machine: Machine) -> None:
    p, dt = _timed(machine.run, f"systemctl start {UNIT}", timeout=150, check=False)
    assert p.returncode == 0, machine.out(f"journalctl -u {UNIT} --no-pager | tail -40")
    print(f"systemctl start: {dt:.2f} s")
    # READY=1 came only once the chain worked: no waiting needed after start returns.
    assert machine.health_through_proxy() == 200
    assert machine.out(f"systemctl is-active {UNIT}") == "active"
    st = machine.status()
    assert st["ready"] is True
    assert {c["state"] for c in st["components"].values()} == {"ready"}
    assert machine.prop(UNIT, "StatusText").startswith("ready")
    assert st.get("launcher", "process") == machine.launcher
    # CHP and the hub run in hubsvc.service's cgroup (children of the supervisor), or in
    # their own units started by hubsvc.
    for comp in ("proxy", "hub"):
        cg = machine.out(f"cat /proc/{st['components'][comp]['pid']}/cgroup")
        assert f"/system.slice/{machine.component_unit(comp)}" in cg, (comp, cg)
        assert machine.out(f"systemctl is-active {machine.component_unit(comp)}") == "active"


def test_local_user_logs_in_and_spawns(machine: Machine) -> None:
    machine.run(f"useradd -m -s /bin/bash {USER} && echo '{USER}:{PASSWORD}' | chpasswd")
    # A wrong password is refused by PAM.
    bad = machine.client("login-spawn", machine.public, USER, "not-the-password")
    assert bad["ok"] is False and bad["error"] == "login refused", bad
    res, dt = _timed(machine.client, "login-spawn", machine.public, USER, PASSWORD)
    assert res["ok"], res
    print(f"login + spawn + first API call through the proxy: {dt:.1f} s")
    # The server runs as the user, in its own transient unit outside hubsvc.service.
    assert machine.prop(SERVER_UNIT, "ActiveState") == "active"
    pid = machine.main_pid(SERVER_UNIT)
    assert pid > 0
    assert machine.out(f"ps -o user= -p {pid}") == USER
    cgroup = machine.prop(SERVER_UNIT, "ControlGroup")
    assert "hubsvc-users.slice" in cgroup and UNIT not in cgroup, cgroup
    STATE["server_pid"] = pid


def test_journal_is_structured_and_attributable(machine: Machine) -> None:
    # CHP logs warnings only (hubsvc runs it with --log-level warn): provoke one, a request
    # to its API without the token.
    assert machine.client("get", "http://127.0.0.1:8001/api/routes")["status"] == 403
    time.sleep(1)
    entries = machine.journal()
    idents = {e.get("SYSLOG_IDENTIFIER") for e in entries}
    assert {"hubsvc", "hubsvc-proxy", "hubsvc-hub"} <= idents, idents
    # Nothing under the unit is anonymous: PAM's syslog lines from inside the hub
    # (the failed login above) carry the hub's name too.
    assert idents <= {"hubsvc", "hubsvc-proxy", "hubsvc-hub", "systemd"}, idents
    assert any(
        "pam_unix" in e.get("MESSAGE", "") and e.get("SYSLOG_IDENTIFIER") == "hubsvc-hub" for e in entries
    )
    own = [e for e in entries if e.get("SYSLOG_IDENTIFIER") == "hubsvc"]
    events = {e.get("HUBSVC_EVENT") for e in own}
    assert {"starting", "ready"} <= events, events
    assert all("PRIORITY" in e for e in own)
    ready = [e for e in own if e.get("HUBSVC_EVENT") == "ready"]
    assert ready and ready[-1]["PRIORITY"] == "6"
    # Every line of CHP and the hub is attributed to its component and to its unit.
    for e in entries:
        ident = e.get("SYSLOG_IDENTIFIER")
        if ident in ("hubsvc-proxy", "hubsvc-hub"):
            assert e.get("_SYSTEMD_UNIT") == machine.component_unit(ident.split("-")[1]), e
    proxy_lines = [e["MESSAGE"] for e in entries if e.get("SYSLOG_IDENTIFIER") == "hubsvc-proxy"]
    hub_lines = [e["MESSAGE"] for e in entries if e.get("SYSLOG_IDENTIFIER") == "hubsvc-hub"]
    assert any("403 GET /api/routes" in line for line in proxy_lines), proxy_lines
    assert any("JupyterHub" in line for line in hub_lines)
    assert not any("ConfigProxy" in line for line in hub_lines)


# Run inside the container as root: where could a secret have leaked? Prints one line per
# leak ("NAME in WHERE"), never a secret. Environments are read as `nobody`: what another
# local account can read is what counts (CHP's own environment holds its token by design,
# readable only by CHP's dynamic user and root).
_SECRET_SCAN = r"""
import glob, subprocess
names = ("proxy_auth_token", "hubsvc_api_token", "jupyterhub_cookie_secret")
secrets = {n: open("/var/lib/hubsvc/" + n).read().strip() for n in names}
assert all(len(v) >= 32 for v in secrets.values()), "secrets missing or short"
def run(*argv):
    return subprocess.run(argv, capture_output=True, text=True, errors="replace").stdout
found = []
def scan(where, text):
    found.extend(f"{n} in {where}" for n, v in secrets.items() if v in text)
scan("the journal (every field)", run("journalctl", "-o", "export", "--no-pager"))
for unit in ("hubsvc", "hubsvc-proxy", "hubsvc-hub", "jupyter-alice-singleuser"):
    scan(f"systemctl show {unit}", run("systemctl", "show", unit))
    scan(f"systemctl cat {unit}", run("systemctl", "cat", unit))
for path in glob.glob("/proc/[0-9]*/cmdline"):
    try:
        scan(path, open(path, "rb").read().decode("utf-8", "replace"))
    except OSError:
        pass
scan("an environment nobody can read", run("setpriv", "--reuid=nobody", "--regid=nogroup",
     "--clear-groups", "sh", "-c", "cat /proc/[0-9]*/environ 2>/dev/null"))
scan("files nobody can read under /run/hubsvc and /etc/hubsvc",
     run("setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "sh", "-c",
         "find /run/hubsvc /etc/hubsvc -type f -exec cat {} + 2>/dev/null"))
print("\n".join(found))
print("scanned", len(glob.glob("/proc/[0-9]*/cmdline")), "processes")
"""


def test_no_secret_in_journal_unit_properties_or_processes(machine: Machine) -> None:
    """No secret in any journal field, `systemctl show`/`cat` output, process command line,
    an environment or a file another local account can read."""
    r = machine.run(f"python3 - <<'EOF'\n{_SECRET_SCAN}\nEOF", timeout=120)
    leaks = [ln for ln in r.stdout.splitlines() if " in " in ln]
    assert leaks == [], leaks
    assert "scanned" in r.stdout, r.stdout + r.stderr


def test_kill_proxy_then_hub(machine: Machine) -> None:
    pid = STATE["server_pid"]
    cursor = machine.cursor()
    st = machine.status()
    old_proxy = st["components"]["proxy"]["pid"]
    assert old_proxy > 1
    t0 = time.monotonic()
    machine.run(f"kill -9 {old_proxy}")
    wait_until(lambda: _ready_with(machine, proxy=old_proxy), 60, "a new CHP, ready")
    _server_alive(machine, pid)
    print(f"kill -9 CHP -> user's server reachable again: {time.monotonic() - t0:.1f} s")

    old_hub = machine.status()["components"]["hub"]["pid"]
    assert old_hub > 1
    t0 = time.monotonic()
    machine.run(f"kill -9 {old_hub}")
    wait_until(lambda: _ready_with(machine, hub=old_hub), 90, "a new hub, ready")
    _server_alive(machine, pid)
    print(f"kill -9 hub -> user's server reachable again: {time.monotonic() - t0:.1f} s")
    assert machine.health_through_proxy() == 200
    st = machine.status()
    assert st["components"]["proxy"]["restarts"] >= 1
    assert st["components"]["hub"]["restarts"] >= 1
    assert machine.out(f"systemctl is-active {UNIT}") == "active"
    assert machine.prop(UNIT, "NRestarts") == "0", "systemd should not have had to step in"
    # The supervisor said what happened, at warning priority or worse.
    own = [e for e in machine.journal(since_cursor=cursor) if e.get("SYSLOG_IDENTIFIER") == "hubsvc"]
    bad = [e for e in own if int(e.get("PRIORITY", 6)) <= 4]
    assert {e.get("HUBSVC_COMPONENT") for e in bad} >= {"proxy", "hub"}, [e["MESSAGE"] for e in own]


def test_restart_keeps_user_server(machine: Machine) -> None:
    pid = STATE["server_pid"]
    old_main = machine.main_pid(UNIT)
    _, dt = _timed(machine.run, f"systemctl restart {UNIT}", timeout=150)
    print(f"systemctl restart: {dt:.1f} s")
    assert machine.main_pid(UNIT) != old_main
    assert machine.health_through_proxy() == 200
    _server_alive(machine, pid)


def test_watchdog_restarts_hung_supervisor(machine: Machine) -> None:
    pid = STATE["server_pid"]
    main = machine.main_pid(UNIT)
    assert main > 1, "hubsvc is not running"
    restarts = int(machine.prop(UNIT, "NRestarts"))
    watchdog_s = _seconds(machine.prop(UNIT, "WatchdogUSec"))
    assert 0 < watchdog_s <= 60
    t0 = time.monotonic()
    machine.run(f"kill -STOP {main}")
    wait_until(
        lambda: (
            machine.main_pid(UNIT) not in (0, main)
            and machine.out(f"systemctl is-active {UNIT} || true") == "active"
        ),
        watchdog_s + 90,
        "systemd's watchdog to replace the hung supervisor",
        interval=1,
    )
    print(
        f"SIGSTOP supervisor -> restarted by the watchdog and ready: {time.monotonic() - t0:.1f} s "
        f"(WatchdogSec={watchdog_s:.0f})"
    )
    assert int(machine.prop(UNIT, "NRestarts")) == restarts + 1
    assert machine.prop(UNIT, "Result") in ("success", "watchdog")
    logs = machine.out(f"journalctl -u {UNIT} --no-pager -n 300")
    assert "Watchdog timeout" in logs
    # PYTHONFAULTHANDLER=1: the hung supervisor's stack is in the journal.
    assert "Fatal Python error: Aborted" in logs
    # Exactly one supervisor, one CHP and one hub; the old ones are gone.
    assert len(machine.supervisor_procs()) == 1, machine.supervisor_procs()
    assert len(machine.chp_procs()) == 1, machine.chp_procs()
    assert len(machine.hub_procs()) == 1, machine.hub_procs()
    assert machine.health_through_proxy() == 200
    _server_alive(machine, pid)


def test_bad_config_fails_start_without_restart_loop(machine: Machine) -> None:
    machine.run(f"systemctl stop {UNIT}", timeout=90)
    machine.run("cp /etc/hubsvc/hubsvc.toml /root/hubsvc.toml.good")
    machine.run("""sed -i '/^\\[proxy\\]/a api_url = "http://0.0.0.0:8001"' /etc/hubsvc/hubsvc.toml""")
    cursor = machine.cursor()
    p = machine.run(f"systemctl start {UNIT}", check=False, timeout=60)
    assert p.returncode != 0
    assert machine.prop(UNIT, "ExecMainStatus") == "78"
    # Not restarted: RestartPreventExitStatus=78. Give systemd several RestartSec= to try.
    time.sleep(8)
    assert machine.prop(UNIT, "ActiveState") == "failed"
    assert machine.prop(UNIT, "NRestarts") == "0"
    # the hub's unit, started held before the file was validated (hubsvc.hubhold), was
    # stopped again: nothing is left running by a start that failed its checks
    assert machine.prop("hubsvc-hub.service", "ActiveState") in ("inactive", "failed")
    assert machine.hub_procs() == [], machine.hub_procs()
    hub_lines = machine.out(f"journalctl -q --no-pager -o cat --after-cursor='{cursor}' "
                            "-u hubsvc-hub.service | grep -c . || true")
    if machine.launcher == "systemd":
        assert hub_lines != "0", "the hub's unit was not started held at all"
    else:  # launcher "process" in the file: the hub's unit is never started early
        assert hub_lines == "0", machine.out("journalctl -q --no-pager -o cat "
                                             f"--after-cursor='{cursor}' -u hubsvc-hub.service")
    text = "\n".join(
        e.get("MESSAGE", "")
        for e in machine.journal(since_cursor=cursor)
        if isinstance(e.get("MESSAGE"), str)
    )
    assert "proxy.api_url" in text, text
    assert "loopback" in text, text
    assert (
        machine.out(
            f"journalctl -u {UNIT} --no-pager -o cat --after-cursor='{cursor}' | grep -c 'Traceback' || true"
        )
        == "0"
    )
    # Fixed: it starts again, and the user's server was kept through it all.
    machine.run("cp /root/hubsvc.toml.good /etc/hubsvc/hubsvc.toml")
    machine.run(f"systemctl reset-failed {UNIT}; systemctl start {UNIT}", timeout=150)
    _server_alive(machine, STATE["server_pid"])


def test_upgrade_keeps_edited_config_and_restarts(machine: Machine) -> None:
    pid = STATE["server_pid"]
    machine.run(r"sed -i '/^\[health\]/a # edited by the admin\ninterval_s = 3.0' /etc/hubsvc/hubsvc.toml")
    edited = machine.out("sha256sum /etc/hubsvc/hubsvc.toml")
    old_main = machine.main_pid(UNIT)
    _, dt = _timed(machine.run, f"rpm -U --nodeps {machine.rpm_upgrade}", timeout=300)
    print(f"rpm -U: {dt:.1f} s")
    assert machine.out("rpm -q --qf '%{RELEASE}' hubsvc") == "2"
    assert machine.out("sha256sum /etc/hubsvc/hubsvc.toml") == edited
    wait_until(
        lambda: machine.main_pid(UNIT) not in (0, old_main) and machine.status().get("ready"),
        120,
        "hubsvc restarted by the upgrade",
    )
    assert machine.out(f"systemctl is-active {UNIT}") == "active"
    assert machine.health_through_proxy() == 200
    _server_alive(machine, pid)


def test_stop_leaves_no_process(machine: Machine) -> None:
    _, dt = _timed(machine.run, f"systemctl stop {UNIT}", timeout=90)
    print(f"systemctl stop: {dt:.1f} s")
    assert machine.prop(UNIT, "ActiveState") == "inactive"
    assert machine.prop(UNIT, "ExecMainStatus") == "0", "the ordered stop should exit 0"
    assert machine.supervisor_procs() == []
    assert machine.chp_procs() == []
    assert machine.hub_procs() == []
    for unit in machine.units:
        assert machine.prop(unit, "ActiveState") == "inactive", unit
    # Users' servers are their own units: kept (user_servers_on_stop = "auto" under systemd).
    assert machine.prop(SERVER_UNIT, "ActiveState") == "active"
    machine.run(f"systemctl start {UNIT}", timeout=150)


def test_erase_leaves_nothing(machine: Machine) -> None:
    machine.run("rpm -ql hubsvc > /root/hubsvc-files.txt")
    nfiles = int(machine.out("wc -l < /root/hubsvc-files.txt"))
    configs = set(machine.out("rpm -qc hubsvc").splitlines())
    _, dt = _timed(machine.run, "rpm -e --nodeps hubsvc", timeout=180)
    print(f"rpm -e: {dt:.1f} s ({nfiles} files)")
    assert machine.run("rpm -q hubsvc", check=False).returncode != 0
    # No unit: neither hubsvc's own nor a user's server.
    assert machine.prop(UNIT, "LoadState") == "not-found"
    units = machine.out("systemctl list-units --all --plain --no-legend 'hubsvc*' 'jupyter-*'")
    assert units == "", units
    # No process from the package.
    left = [p for p in machine.procs() if "/opt/hubsvc" in p.args or "hubsvc run" in p.args]
    assert left == [], left
    # No package file. State may stay (/var/lib/hubsvc); an edited config is kept as
    # .rpmsave, rpm's rule for edited %config files, and so is its folder.
    remaining = machine.out(
        'while read -r f; do [ -e "$f" ] || [ -L "$f" ] && echo "$f"; done '
        "< /root/hubsvc-files.txt | grep -v -x -e /var/lib/hubsvc -e /etc/hubsvc || true",
        timeout=120,
    )
    assert remaining == "", remaining[:2000]
    assert "/etc/hubsvc/hubsvc.toml" in configs
    machine.run("test -f /etc/hubsvc/hubsvc.toml.rpmsave")
    machine.run("test ! -e /opt/hubsvc && test ! -e /usr/bin/hubsvc")
