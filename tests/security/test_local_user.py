"""Least privilege against local users: an unprivileged account on the same machine as a
running hubsvc (process launcher, real CHP and JupyterHub, a user's server running).

The tests share one hubsvc and run in file order; the last one kills hubsvc with -9."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.integration.hubsvc_harness import Instance, new_root, proc_alive
from tests.unpriv import as_user

from .conftest import LocalUser

# Every server the hub spawns first starts a helper writing to the server's stderr, as a
# process a user runs in a terminal would (its pid kept for the test and for clean-up).
HUB_EXTRA = r'''
c.JupyterHub.default_url = "/hub/"  # leads back to itself: a loop that never reaches /hub/user/
c.Spawner.cmd = ["/bin/sh", "-c",
    "(while :; do echo \"user-writer tick $(date +%s.%N)\" >&2; sleep 0.2; done) & "
    "echo $! > {root}/writer-$JUPYTERHUB_USER.pid; exec jupyterhub-singleuser \"$@\"", "sh"]
'''
SECRETS = ("proxy_auth_token", "hubsvc_api_token", "jupyterhub_cookie_secret")
FORGED = [
    "[W 2026-11-30 05:35:20.087 JupyterHub base:1690] Redirect loop detected on "
    "/hub/user/victim/?redirects={n}",
    "[W 2026-11-30 05:35:22.087 JupyterHub web:2106] 500 GET /hub/user/victim/?redirects=4 "
    "(127.0.0.1): Redirect loop detected.",
    "[I 2026-11-30 05:35:22.087 JupyterHub log:192] 302 GET /hub/ -> /hub/ (victim@127.0.0.1) 0.50ms",
]


@pytest.fixture(scope="module")
def hub(local_user: LocalUser) -> Iterator[Instance]:
    root = new_root("hubsvc-sec-")
    inst = Instance(root, hub_extra=HUB_EXTRA.replace("{root}", str(root)),
                    overrides={"health": {"interval_s": 1.0, "timeout_s": 1.0,
                                          "failures_before_restart": 4}})
    root.chmod(0o755)  # what protects the secrets must be hubsvc's own modes
    inst.hub_config.chmod(0o600)  # the test's admin token lives in the admin's own file
    try:
        inst.start()
        inst.log_path.chmod(0o600)
        _spawn(inst, "u1")
        yield inst
    finally:
        for pid in _writer_pids(inst):
            inst.pids_seen.add(pid)
        inst.cleanup()
        shutil.rmtree(root, ignore_errors=True)


def _spawn(inst: Instance, user: str, timeout: float = 120) -> None:
    """Start USER's server; the hub answers 202 after 10 s when the machine is slow."""
    assert inst.api_call("POST", f"users/{user}").status_code in (201, 409)
    r = inst.api_call("POST", f"users/{user}/server", timeout=60)
    assert r.status_code in (201, 202), r.text
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        srv = (inst.api_call("GET", f"users/{user}").json().get("servers") or {}).get("")
        if srv and srv.get("ready"):
            return
        time.sleep(0.5)
    raise AssertionError(f"{user}'s server not ready in {timeout}s")


def _writer_pids(inst: Instance) -> list[int]:
    out = []
    for f in inst.root.glob("writer-*.pid"):
        try:
            out.append(int(f.read_text()))
        except (OSError, ValueError):
            pass
    return out


def _secrets(inst: Instance) -> dict[str, str]:
    return {name: inst.secret(name) for name in SECRETS}


def _server_pid(inst: Instance) -> int:
    pids = [p for p in inst.user_server_pids() if proc_alive(p)]
    assert pids, "no user server running"
    return pids[0]


ATTACK_FILES = r'''
import json, os, sys
state, run, output_log = sys.argv[1:4]
out = {"read": {}, "write": {}, "list_state": None}
for name in os.listdir(run) + ["../state/" + n for n in
        ("proxy_auth_token", "hubsvc_api_token", "jupyterhub_cookie_secret", "jupyterhub.sqlite")]:
    p = os.path.join(run, name)
    try:
        with open(p, "rb") as f:
            f.read(1)
        out["read"][name] = "ok"
    except OSError as e:
        out["read"][name] = e.strerror
for name in ("status.json", "hub-log.fifo", "new-file"):
    p = os.path.join(run, name)
    try:
        fd = os.open(p, os.O_WRONLY | os.O_NONBLOCK | (os.O_CREAT if name == "new-file" else 0))
        os.close(fd)
        out["write"][name] = "ok"
    except OSError as e:
        out["write"][name] = e.strerror
try:
    out["list_state"] = os.listdir(state)
except OSError as e:
    out["list_state"] = e.strerror
try:
    with open(output_log, "rb") as f:
        f.read(1)
    out["output_log"] = "ok"
except OSError as e:
    out["output_log"] = e.strerror
print(json.dumps(out))
'''


def test_cannot_read_a_secret_or_write_hubsvcs_files(hub: Instance, local_user: LocalUser) -> None:
    res = local_user.python(ATTACK_FILES, str(hub.state), str(hub.run_dir),
                            str(hub.state / "log" / "hub-output.log"))
    assert res["list_state"] == "Permission denied"
    for name in SECRETS:
        assert res["read"]["../state/" + name] == "Permission denied"
        assert (hub.state / name).stat().st_mode & 0o777 == 0o600
    assert res["read"]["status.json"] == "ok"  # `hubsvc status` works for everyone
    assert res["read"].get("hub-log.fifo") == "Permission denied"
    assert res["write"] == {"status.json": "Permission denied",
                            "hub-log.fifo": "Permission denied",
                            "new-file": "Permission denied"}
    assert res["output_log"] == "Permission denied"  # users' servers' output is private too


ATTACK_CHP = r'''
import json, sys, urllib.request, urllib.error
api = sys.argv[1]
out = {}
for label, headers, method, path, body in [
    ("no token", {}, "GET", "/api/routes", None),
    ("empty token", {"Authorization": "token "}, "GET", "/api/routes", None),
    ("guessed token", {"Authorization": "token " + "0" * 64}, "GET", "/api/routes", None),
    ("add route", {}, "POST", "/api/routes/user/u1", b'{"target": "http://127.0.0.1:1"}'),
    ("delete route", {"Authorization": "token "}, "DELETE", "/api/routes/user/u1", None),
]:
    req = urllib.request.Request(api + path, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            out[label] = r.status
    except urllib.error.HTTPError as e:
        out[label] = e.code
    except OSError as e:
        out[label] = str(e)
print(json.dumps(out))
'''


def test_cannot_use_chps_api(hub: Instance, local_user: LocalUser) -> None:
    before = hub.routes()
    res = local_user.python(ATTACK_CHP, hub.api)
    assert set(res.values()) == {403}, res
    assert hub.routes() == before


ATTACK_PROC = r'''
import json, os, sys
secrets = json.loads(sys.stdin.read())
found, readable_env = [], 0
for pid in os.listdir("/proc"):
    if not pid.isdigit():
        continue
    for what in ("cmdline", "environ"):
        try:
            with open(f"/proc/{pid}/{what}", "rb") as f:
                data = f.read()
        except OSError:
            continue
        readable_env += what == "environ"
        for name, value in secrets.items():
            if value.encode() in data:
                found.append([pid, what, name])
print(json.dumps({"found": found, "readable_environ": readable_env}))
'''


def test_no_secret_in_any_cmdline_environment_or_log(hub: Instance, local_user: LocalUser) -> None:
    secrets = _secrets(hub)
    script = local_user.workdir / "proc.py"
    script.write_text(ATTACK_PROC)
    script.chmod(0o644)
    r = local_user.run(["/usr/bin/python3", str(script)], input=json.dumps(secrets))
    res = json.loads(r.stdout)
    assert res["found"] == [], res
    assert res["readable_environ"] > 0  # it did read its own processes' environments
    # as root: no command line of any process carries a secret
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        for name, value in secrets.items():
            assert value.encode() not in cmdline, f"{name} in the command line of pid {pid}"
    logs = hub.log_text() + (hub.state / "log" / "hub-output.log").read_text(errors="replace")
    logs += (hub.run_dir / "jupyterhub_config.py").read_text()
    for name, value in secrets.items():
        assert value not in logs, f"{name} appears in a log or the generated config"


def _write_as_users_server(inst: Instance, lines: list[str]) -> None:
    """Write to the output a user's server inherited from the hub (its stderr), as code
    running in that server could."""
    with open(f"/proc/{_server_pid(inst)}/fd/2", "a") as f:
        f.write("\n".join(lines) + "\n")


def _fd_targets(pid: int) -> list[str]:
    out = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            out.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
        except OSError:
            pass
    return out


def test_only_the_hub_holds_its_log_stream(hub: Instance) -> None:
    fifo = str(hub.run_dir / "hub-log.fifo")
    assert fifo in _fd_targets(hub.pid("hub"))  # the hub writes its log there ...
    for pid in (_server_pid(hub), *_writer_pids(hub)):  # ... what it spawned cannot
        targets = _fd_targets(pid)
        assert fifo not in targets, (pid, targets)
        assert str(hub.state / "log" / "hub-output.log") in targets  # stdout/stderr


def test_forged_loop_lines_raise_nothing(hub: Instance, local_user: LocalUser) -> None:
    _write_as_users_server(hub, [FORGED[0].format(n=n) for n in (1, 2, 3)] + FORGED[1:] * 30)
    logger = shutil.which("logger")
    if logger and Path("/dev/log").exists():
        for line in FORGED[:2]:
            local_user.run([logger, "-t", "hubsvc-hub", line])
    r = local_user.run(["/usr/bin/python3", "-c",
                        f"open({str(hub.run_dir / 'status.json')!r}, 'a').write('x')"])
    assert "Permission denied" in r.stderr
    time.sleep(3)  # several health intervals: an episode would have been reported
    st = hub.status()
    assert "redirect_loop" not in hub.log_text(), hub.log_text()[-2000:]
    assert not st.get("redirect_loops"), st
    assert st["ready"] is True
    from tests.integration.hubsvc_harness import HUBSVC

    r = subprocess.run([str(HUBSVC), "status", "--json", "--config", str(hub.config)],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    shown = json.loads(r.stdout)
    assert shown["running"] is True and not shown.get("redirect_loops")
    # the forged lines did land in the users' servers' output, not in hubsvc's view
    assert "redirects=4" in (hub.state / "log" / "hub-output.log").read_text(errors="replace")


def test_cannot_obtain_a_token_through_probe_spawn(hub: Instance, local_user: LocalUser) -> None:
    """The account runs this checkout's probe-spawn itself (wherever the checkout lives:
    tests/unpriv.py opens a closed home to it) and asks the hub directly."""
    tokens_before = hub.api_call("GET", "users/u1/tokens").json()
    r = subprocess.run(as_user(local_user.name, ["probe-spawn", "--config", str(hub.config),
                                                 "--user", "u1"], python_module="hubsvc"),
                       capture_output=True, text=True, timeout=120, cwd=local_user.workdir)
    out = r.stdout + r.stderr
    assert r.returncode == 78, out  # refused for want of hubsvc's token, not a crash
    assert "No module named" not in out and "Traceback" not in out, out
    tokens_after = hub.api_call("GET", "users/u1/tokens").json()
    assert tokens_after == tokens_before  # nothing minted for u1
    assert not re.search(r"\b[0-9a-f]{32}\b", out), out  # no token printed
    # and the hub's API gives nothing without one
    with httpx.Client(trust_env=False, timeout=5) as c:
        r = c.post(f"{hub.hub}/hub/api/users/u1/tokens", json={})
    assert r.status_code == 403


def _login_and_follow(inst: Instance, user: str) -> tuple[str, int]:
    """A browser logging in: the login form, then every redirect followed."""
    with httpx.Client(trust_env=False, timeout=20, follow_redirects=True,
                      max_redirects=20) as c:
        page = c.get(f"{inst.public}/hub/login")
        xsrf = re.search(r'name="_xsrf" value="([^"]+)"', page.text)
        assert xsrf, page.text[:500]
        try:
            r = c.post(f"{inst.public}/hub/login", data={"username": user, "password": "x",
                                                          "_xsrf": xsrf.group(1)})
        except httpx.TooManyRedirects as e:
            return "too many redirects", len(e.request.url.path)
        return f"ended {r.status_code} at {r.url}", 0


def _loop_events(inst: Instance, user: str) -> list[str]:
    return [ln for ln in inst.log_text().splitlines()
            if ln.startswith("<4>redirect_loop") and re.search(rf"\buser={user}(\s|$)", ln)]


def test_passive_detection_of_a_loop_that_never_reaches_hub_user(hub: Instance) -> None:
    outcome, _ = _login_and_follow(hub, "loopy")
    assert outcome == "too many redirects"
    st = hub.wait_status(lambda s: any(e.get("user") == "loopy"
                                       for e in s.get("redirect_loops") or []), 15)
    (ev,) = [e for e in st["redirect_loops"] if e["user"] == "loopy"]
    # the chain starts at the login form's POST, then /hub/ sends the browser to itself
    assert ev["cause"] == "hub_redirect_cycle" and ev["hops"] == ["/hub/login", "/hub/"]
    assert "hubsvc probe-spawn --user loopy" in ev["hint"]
    # the browser tries again at once: the same episode, still one event
    assert _login_and_follow(hub, "loopy")[0] == "too many redirects"
    time.sleep(2)
    assert len(_loop_events(hub, "loopy")) == 1, _loop_events(hub, "loopy")
    # another user caught in the same loop: an event of its own
    _login_and_follow(hub, "loopy2")
    hub.wait_status(lambda s: any(e.get("user") == "loopy2"
                                  for e in s.get("redirect_loops") or []), 15)
    assert len(_loop_events(hub, "loopy2")) == 1


def _cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def _latency(url: str, n: int) -> list[float]:
    out = []
    with httpx.Client(trust_env=False, timeout=5) as c:
        for _ in range(n):
            t0 = time.monotonic()
            r = c.get(url)
            out.append(time.monotonic() - t0)
            assert r.status_code == 200
            time.sleep(0.05)
    return out


FLOOD = r'''
import json, sys, threading, time, urllib.request, urllib.error
hub, seconds = sys.argv[1], float(sys.argv[2])
count = [0]
def worker(k):
    end = time.monotonic() + seconds
    i = 0
    while time.monotonic() < end:
        i += 1
        # each request is a real access-log line of the hub, a redirect to the login page
        try:
            urllib.request.urlopen(f"{hub}/hub/?x={k}-{i}", timeout=5).read()
        except (urllib.error.URLError, OSError):
            pass
        count[0] += 1
ts = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
[t.start() for t in ts]
[t.join() for t in ts]
print(json.dumps({"requests": count[0]}))
'''


def test_forged_and_real_line_flood_leaves_probes_and_watch_unaffected(
        hub: Instance, local_user: LocalUser) -> None:
    sup = hub.proc.pid  # type: ignore[union-attr]
    failed_checks_before = hub.log_text().count("health_check_failed")
    restarts = {k: v["restarts"] for k, v in hub.status()["components"].items()}
    hub_health = f"{hub.public}/hub/health"
    base = _latency(hub_health, 10)
    cpu0, t0 = _cpu_ticks(sup), time.monotonic()
    # 1. forged lines from a user's server position: 50 000 loop lines into its stderr
    blob = "\n".join(FORGED[i % 3].format(n=i % 4) for i in range(50_000)) + "\n"
    with open(f"/proc/{_server_pid(hub)}/fd/2", "a") as f:
        f.write(blob)
    # 2. real access-log lines from the local account: as many requests as it can make
    script = local_user.workdir / "flood.py"
    script.write_text(FLOOD)
    script.chmod(0o644)
    flood = subprocess.Popen(
        ["setpriv", f"--reuid={local_user.uid}", f"--regid={local_user.gid}", "--clear-groups",
         "--", "/usr/bin/python3", str(script), hub.public, "10"],
        stdout=subprocess.PIPE, text=True, cwd=local_user.workdir)
    during = _latency(hub_health, 60)
    out, _ = flood.communicate(timeout=60)
    cpu_s = (_cpu_ticks(sup) - cpu0) / os.sysconf("SC_CLK_TCK")
    wall = time.monotonic() - t0
    requests = json.loads(out)["requests"]
    st = hub.status()
    figures = {"requests": requests, "forged_lines": 50_000,
               "health_p50_ms_before": round(sorted(base)[len(base) // 2] * 1000, 1),
               "health_p50_ms_during": round(sorted(during)[len(during) // 2] * 1000, 1),
               "health_max_ms_during": round(max(during) * 1000, 1),
               "hubsvc_cpu_pct": round(100 * cpu_s / wall, 1),
               "hubsvc_failed_health_checks": hub.log_text().count("health_check_failed")
               - failed_checks_before}
    print(f"\nFLOOD FIGURES {json.dumps(figures)}")
    # behaviour, not timing: nothing restarted, no event, still ready
    assert st["ready"] is True and st["state"] != "failed"
    assert {k: v["restarts"] for k, v in st["components"].items()} == restarts
    assert not any(e.get("user") == "victim" for e in st.get("redirect_loops") or [])
    assert requests > 0


def test_hubsvc_token_holds_only_the_scopes_it_uses(hub: Instance) -> None:
    """The hub itself reports the service's scopes: exactly SERVICE_SCOPES, nothing of
    the admin family beyond the server state it reads."""
    from hubsvc import hubconfig

    with httpx.Client(trust_env=False, timeout=10) as c:
        r = c.get(f"{hub.hub}/hub/api/user",
                  headers={"Authorization": f"token {hub.secret('hubsvc_api_token')}"})
    r.raise_for_status()
    model = r.json()
    assert model["kind"] == "service" and model["name"] == "hubsvc"
    held = set(model["scopes"])
    assert {"proxy", "list:users", "read:servers", "servers", "tokens"} <= held
    assert not held & {"admin:users", "admin:servers", "admin:auth_state", "admin-ui",
                       "delete:users", "read:roles", "groups", "shutdown"}, held
    assert set(hubconfig.SERVICE_SCOPES) <= held


def test_reload_refuses_a_secret_made_readable(hub: Instance) -> None:
    """A secret file loosened while hubsvc runs: a reload is refused, naming it, and
    everything keeps running on the values already in use."""
    path = hub.state / "jupyterhub_cookie_secret"
    pids = (hub.pid("proxy"), hub.pid("hub"))
    path.chmod(0o644)
    try:
        hub.proc.send_signal(signal.SIGHUP)  # type: ignore[union-attr]
        st = hub.wait_status(lambda s: (s.get("last_reload") or {}).get("ok") is False, 30)
        assert any(str(path) in p and "mode 0644" in p for p in st["last_reload"]["problems"])
        assert "reload_rejected" in hub.log_text()
        assert st["ready"] is True and (hub.pid("proxy"), hub.pid("hub")) == pids
    finally:
        path.chmod(0o600)


def test_users_output_outlives_hubsvc(hub: Instance) -> None:
    """kill -9 of hubsvc: a process started from a user's server keeps writing to the
    server's stderr, does not die of SIGPIPE, and its lines are in the output file."""
    (writer,) = _writer_pids(hub)
    out = hub.state / "log" / "hub-output.log"
    assert proc_alive(writer)
    assert Path(f"/proc/{writer}/fd/2").resolve() == out.resolve()
    server = _server_pid(hub)
    hub.stop(signal.SIGKILL)
    size = out.stat().st_size
    deadline = time.monotonic() + 10
    while out.stat().st_size == size and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(1)
    assert proc_alive(writer), "the user's process died after hubsvc was killed"
    assert proc_alive(server), "the user's server died after hubsvc was killed"
    tail = out.read_bytes()[size:].decode(errors="replace")
    assert tail.count("user-writer tick") >= 3, tail[-500:]
