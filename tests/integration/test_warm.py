"""CHP's node loaded while `hubsvc run` checks its config (hubsvc.warm, chp_warm.mjs):
with the real CHP from node_modules and the real node.

Before its hand-over it binds nothing and reads nothing; handed CHP's command line it *is*
CHP (same pid, the token given then); when not wanted, or when hubsvc dies or fails a
check, it ends by itself; and anything that differs from what it loaded means CHP is
executed as before.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import pytest

from hubsvc import ports, warm
from hubsvc.launch.process import head_start

from .hubsvc_harness import free_port

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
CHP = REPO / "node_modules" / ".bin" / "configurable-http-proxy"


def toml(tmp_path: Path, launcher: str = "process", command: str | None = None) -> Path:
    path = tmp_path / "hubsvc.toml"
    proxy = f'[proxy]\ncommand = "{command}"\n' if command is not None else ""
    path.write_text(f'[supervisor]\nlauncher = "{launcher}"\n{proxy}')
    return path


def listening_inodes() -> set[int]:
    return {li.inode for li in ports.listeners()}


def sockets_of(pid: int) -> set[int]:
    out = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            out.add(int(target[8:-1]))
    return out


def wait_gone(pid: int, timeout: float = 5.0) -> bool:
    """No /proc entry (exited and reaped) within `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not Path(f"/proc/{pid}").exists():
            return True
        time.sleep(0.02)
    return False


def chp_args(api_port: int) -> list[str]:
    return ["--ip", "127.0.0.1", "--port", str(free_port()), "--api-ip", "127.0.0.1",
            "--api-port", str(api_port), "--log-level", "warn"]


def api_answers(api_port: int, token: str, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    with httpx.Client(trust_env=False, timeout=1) as c:
        while time.monotonic() < deadline:
            try:
                r = c.get(f"http://127.0.0.1:{api_port}/api/routes",
                          headers={"Authorization": f"token {token}"})
                return r.status_code == 200
            except httpx.HTTPError:
                time.sleep(0.02)
    return False


@pytest.fixture
def loaded(tmp_path: Path):
    """A warm node for the checkout's CHP, with its output captured."""
    w = warm.start(toml(tmp_path, command=str(CHP)), "line")
    assert w is not None, "the checkout's CHP is an npm bin script run by node"
    lines: list[str] = []
    yield w, lines
    w.stop()
    w.sink.close()


def test_it_binds_nothing_then_becomes_chp_with_the_token_it_is_given(loaded) -> None:
    w, _lines = loaded
    time.sleep(0.5)  # long enough to have loaded CHP's library
    assert w.popen.poll() is None
    assert not sockets_of(w.popen.pid) & listening_inodes(), "listens before its hand-over"
    assert "CONFIGPROXY_AUTH_TOKEN" not in Path(f"/proc/{w.popen.pid}/environ").read_text()
    api = free_port()
    # hubsvc's environment as it was when node started (pytest changes its own meanwhile)
    env = {**w.env, "CONFIGPROXY_AUTH_TOKEN": "t0ken-given-at-hand-over"}
    head = head_start("proxy", [str(CHP), *chp_args(api)], env, warm.CWD, w.sink, w)
    assert head is not None and head.warm == "loaded"
    assert head.handle.pid == w.popen.pid  # the same process, now CHP
    assert api_answers(api, "t0ken-given-at-hand-over")
    holder = ports.port_holder("127.0.0.1", api)
    assert holder is not None and holder.pid == w.popen.pid
    with httpx.Client(trust_env=False, timeout=2) as c:  # and no other token
        r = c.get(f"http://127.0.0.1:{api}/api/routes", headers={"Authorization": "token x"})
        assert r.status_code == 403
    assert os.readlink(f"/proc/{w.popen.pid}/fd/0") == "/dev/null"  # as when executed
    head.handle.stop_and_reap()
    assert head.handle.returncode == 2  # CHP's own answer to SIGTERM


@pytest.mark.parametrize("what", ["argv", "env", "cwd"])
def test_anything_else_is_executed_as_before(loaded, what: str) -> None:
    w, _lines = loaded
    api = free_port()
    argv = [str(CHP), *chp_args(api)]
    env = {**w.env, "CONFIGPROXY_AUTH_TOKEN": "tok"}
    cwd = warm.CWD
    if what == "argv":
        argv = ["/bin/sleep", "30"]
    elif what == "env":
        env["NODE_OPTIONS"] = "--max-old-space-size=256"  # node reads it at its start
    else:
        cwd = Path("/tmp")
    head = head_start("proxy", argv, env, cwd, w.sink, w)
    assert head is not None and head.warm == what
    assert head.handle.pid != w.popen.pid
    assert w.popen.returncode is not None  # stopped, and reaped
    if what != "argv":
        assert api_answers(api, "tok")  # CHP executed as before
    head.handle.stop_and_reap()


def test_not_wanted_it_ends_by_itself(loaded) -> None:
    w, _lines = loaded
    time.sleep(0.3)
    w._close_control()  # what stop() does first
    assert w.popen.wait(5) == 0  # ended on its own: no signal needed


def test_an_environment_json_cannot_carry_is_executed_as_before(loaded) -> None:
    w, _lines = loaded
    w.env["ODD"] = b"caf\xe9".decode(errors="surrogateescape")  # not UTF-8
    api = free_port()
    head = head_start("proxy", [str(CHP), *chp_args(api)], {**w.env, "CONFIGPROXY_AUTH_TOKEN": "t"},
                      warm.CWD, w.sink, w)
    assert head is not None and head.warm == "env" and head.handle.pid != w.popen.pid
    head.handle.stop_and_reap()


def test_nothing_is_loaded_where_it_could_not_be_matched(tmp_path: Path) -> None:
    fake = tmp_path / "chp"
    fake.write_text("#!/bin/sh\nexec sleep 30\n")
    fake.chmod(0o755)
    assert warm.start(toml(tmp_path, command=str(fake)), "line") is None  # not CHP's bin
    # CHP's bin whose #! line gives node options the loader would not pass on
    pkg = tmp_path / "node_modules" / "configurable-http-proxy"
    (pkg / "bin").mkdir(parents=True)
    (pkg / "package.json").write_text('{"name": "configurable-http-proxy"}')
    script = pkg / "bin" / "configurable-http-proxy"
    script.write_text("#!/usr/bin/env -S node --max-old-space-size=64\n")
    script.chmod(0o755)
    assert warm.start(toml(tmp_path, command=str(script)), "line") is None
    assert warm.start(toml(tmp_path, launcher="systemd", command=str(CHP)), "line") is None
    (tmp_path / "hubsvc.toml").write_text("[proxy\n")  # config.load reports it
    assert warm.start(tmp_path / "hubsvc.toml", "line") is None
    assert warm.start(tmp_path / "missing.toml", "line") is None


SUBREAPER = textwrap.dedent("""
    # Run argv[1:] with this process as the subreaper: whatever it leaves behind becomes
    # our child. Print each one's pid and how it ended (bounded), then exit.
    import ctypes, os, subprocess, sys, time
    ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
    p = subprocess.run(sys.argv[1:], capture_output=True, text=True, timeout=60)
    print("rc", p.returncode, flush=True)
    sys.stderr.write(p.stderr)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break  # none left
        if pid:
            print("orphan", pid, os.waitstatus_to_exitcode(status), flush=True)
        else:
            time.sleep(0.02)
    else:
        # left running (the failure this test looks for): ended here, not left to init
        kids = set()
        for task in os.listdir(f"/proc/{os.getpid()}/task"):
            with open(f"/proc/{os.getpid()}/task/{task}/children") as f:
                kids.update(int(pid) for pid in f.read().split())
        for pid in kids:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
        print("still running", *sorted(kids), flush=True)
""")


def under_subreaper(tmp_path: Path, *argv: str) -> tuple[int, list[str], str]:
    script = tmp_path / "subreaper.py"
    script.write_text(SUBREAPER)
    env = {k: v for k, v in os.environ.items()
           if k not in ("NOTIFY_SOCKET", "INVOCATION_ID", "JOURNAL_STREAM", "HUBSVC_CONFIG")}
    out = subprocess.run([sys.executable, str(script), *argv], capture_output=True,
                         text=True, timeout=90, env=env, cwd=REPO)
    lines = out.stdout.splitlines()
    assert lines and lines[0].startswith("rc "), out.stdout + out.stderr
    return int(lines[0].split()[1]), lines[1:], out.stderr


def test_a_hubsvc_that_dies_leaves_nothing(tmp_path: Path) -> None:
    """hubsvc killed with -9 right after starting it: it ends (its stdin closes; it was
    also told SIGTERM by PDEATHSIG), having bound nothing."""
    code = ("import os, signal, sys, time\nfrom hubsvc import warm\n"
            f"warm.begin(['run', '--config', {str(toml(tmp_path, command=str(CHP)))!r}])\n"
            "assert warm._pending is not None\n"
            "print('warm', warm._pending.popen.pid, flush=True)\n"
            "time.sleep(0.2)\nos.kill(os.getpid(), signal.SIGKILL)\n")
    rc, lines, err = under_subreaper(tmp_path, sys.executable, "-c", code)
    assert rc == -9, err
    assert len(lines) == 1 and lines[0].startswith("orphan "), lines
    assert int(lines[0].split()[2]) in (0, -15), lines  # ended itself, or by PDEATHSIG


def test_chp_handed_over_dies_with_hubsvc(tmp_path: Path) -> None:
    """After the hand-over the process is CHP, which ignores the closed pipe: it must still
    end when hubsvc is killed with -9 (PR_SET_PDEATHSIG), not hold the ports."""
    code = ("import os, signal, sys, time\nfrom hubsvc import warm\n"
            "from hubsvc.launch.process import head_start\n"
            f"w = warm.start(__import__('pathlib').Path({str(toml(tmp_path, command=str(CHP)))!r}), 'line')\n"
            f"argv = [{str(CHP)!r}, *{chp_args(free_port())!r}]\n"
            "env = {**w.env, 'CONFIGPROXY_AUTH_TOKEN': 't'}\n"
            "head = head_start('proxy', argv, env, warm.CWD, w.sink, w)\n"
            "assert head.warm == 'loaded', head.warm\n"
            "print('chp', head.handle.pid, flush=True)\n"
            "time.sleep(1.0)\nos.kill(os.getpid(), signal.SIGKILL)\n")
    rc, lines, err = under_subreaper(tmp_path, sys.executable, "-c", code)
    assert rc == -9, err
    assert lines == [lines[0]] and lines[0].split()[0] == "orphan", lines
    assert int(lines[0].split()[2]) in (2, -15), lines  # SIGTERM: CHP exits 2


def test_a_config_that_fails_its_checks_leaves_nothing(tmp_path: Path) -> None:
    """`hubsvc run` with a config refused at validation (78): the node it started is gone
    before hubsvc exits."""
    path = toml(tmp_path, command=str(CHP))
    path.write_text(path.read_text() + "public_url = 42\n")  # wrong type: refused
    rc, lines, err = under_subreaper(tmp_path, str(Path(sys.executable).parent / "hubsvc"), "run",
                                     "--config", str(path))
    assert rc == 78, err
    assert "proxy.public_url" in err and "Traceback" not in err
    assert lines == [], lines  # reaped by hubsvc itself: nothing left to us
