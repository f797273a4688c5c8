"""hubsvc.host: the one answer to each question about this host, on real processes and
real files (nothing faked: each answer comes from /proc, the kernel or a real child)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hubsvc import host
from hubsvc.host import Account

pytestmark = pytest.mark.unit


# ---- running a command ----------------------------------------------------------------------
def test_run_reports_the_real_exit_status_and_output() -> None:
    r = host.run(["sh", "-c", "echo out; echo err >&2; exit 3"], 10)
    assert (r.rc, r.out, r.err, r.ok) == (3, "out\n", "err\n", False)
    assert r.why() == "err"
    assert host.run(["cat"], 10, input="fed").out == "fed"
    assert host.run(["cat"], 10).out == ""  # no stdin: never waits on the caller's terminal
    assert host.run(["printf", r"\377ok"], 10).out == "\ufffdok"  # not UTF-8: no exception


def test_run_that_cannot_start_or_finish_has_no_exit_status() -> None:
    missing = host.run(["/nonexistent/prog", "--version"], 10)
    assert missing.rc is None and not missing.ok
    assert "/nonexistent/prog" in missing.err and "No such file" in missing.err
    slow = host.run(["sleep", "30"], 0.3)
    assert slow.rc is None and "no answer within 0.3 s" in slow.err


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return (host._stat_fields(pid) or ["Z"])[0] != "Z"


def test_run_kills_what_the_child_left_behind_and_keeps_its_exit_status(
        tmp_path: Path) -> None:
    """A child that exits but leaves a process holding its output open: its own exit
    status and output, not "no answer"; and the process it left is not left running."""
    pidfile = tmp_path / "pid"
    # the timeout only bounds the wait for the output the left process holds open; it is
    # generous so that a loaded machine still runs sh to its end within it
    r = host.run(["sh", "-c", f"sleep 60 & echo $! > {pidfile}; echo hi; exit 3"], 4)
    assert (r.rc, r.out) == (3, "hi\n"), r
    left = int(pidfile.read_text())
    for _ in range(50):  # reaped by init: bounded wait
        if not _alive(left):
            break
        time.sleep(0.1)
    assert not _alive(left), f"pid {left} left running"


def test_run_that_times_out_kills_the_whole_tree(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    code = ("import signal, subprocess, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
            f"p = subprocess.Popen(['sleep', '60']); open({str(pidfile)!r}, 'w').write(str(p.pid))\n"
            "print('started', flush=True); time.sleep(60)\n")
    r = host.run([sys.executable, "-c", code], 4)  # time enough to start and print
    assert r.rc is None and "no answer within 4 s" in r.err
    assert r.out == "started\n"  # what it said before it stopped answering
    left = int(pidfile.read_text())
    for _ in range(50):
        if not _alive(left):
            break
        time.sleep(0.1)
    assert not _alive(left), f"grandchild {left} left running"


def test_child_env_drops_hubsvc_private_variables() -> None:
    base = {"NOTIFY_SOCKET": "/run/x", "WATCHDOG_USEC": "1", "CONFIGPROXY_AUTH_TOKEN": "t",
            "HUBSVC_CONFIG": "/etc/x", "LANG": "C.UTF-8", "PATH": "/nowhere"}
    env = host.child_env("/a:/b", base=base, extra={"X": "1"})
    assert env == {"LANG": "C.UTF-8", "PATH": "/a:/b", "X": "1"}
    assert set(host.PRIVATE_ENV).isdisjoint(host.child_env())


# ---- scripts ---------------------------------------------------------------------------------
def test_interpreter_from_the_shebang(tmp_path: Path) -> None:
    py = Path(sys.executable)
    direct = tmp_path / "direct"
    direct.write_text(f"#!{py} -u\nprint(1)\n")
    assert host.shebang(direct) == [str(py), "-u"]
    assert host.interpreter(direct, "") == py
    via_env = tmp_path / "via-env"
    via_env.write_text(f"#!/usr/bin/env -S {py.name} -u\n")
    assert host.shebang(via_env) == [py.name]  # env's and the interpreter's options dropped
    assert host.interpreter(via_env, str(py.parent)) == py
    assert host.interpreter(via_env, str(tmp_path)) is None  # not on that PATH
    binary = tmp_path / "binary"
    binary.write_bytes(b"\x7fELF\x02\x01")
    assert host.shebang(binary) is None and host.interpreter(binary, str(py.parent)) is None
    assert host.shebang(tmp_path / "missing") is None


# ---- processes ---------------------------------------------------------------------------------
@pytest.fixture
def child() -> Iterator[subprocess.Popen[bytes]]:
    env = {**os.environ, "HUBSVC_HOST_TEST": "marker=1"}
    p = subprocess.Popen(["sleep", "60"], env=env)
    try:
        yield p
    finally:
        p.kill()
        p.wait(5)


def test_process_questions_on_a_real_child(child: subprocess.Popen[bytes]) -> None:
    # Popen returns when the exec closed its close-on-exec pipe, which the kernel does
    # before it lays out the new environment: an empty /proc/PID/environ for a moment
    env: dict[str, str] | None = {}
    for _ in range(200):
        env = host.environ(child.pid)
        if env:
            break
        time.sleep(0.01)
    assert env is not None and env["HUBSVC_HOST_TEST"] == "marker=1"
    assert host.cmdline(child.pid) == "sleep 60"
    assert child.pid in set(host.pids_of_tree(os.getpid()))
    started = host.start_time(child.pid)
    assert isinstance(started, int) and started >= (host.start_time(os.getpid()) or 0)
    assert host.cpu_ticks(child.pid) is not None
    assert not host.is_stopped(child.pid)
    os.kill(child.pid, signal.SIGSTOP)
    for _ in range(50):  # bounded: the kernel marks it stopped within milliseconds
        if host.is_stopped(child.pid):
            break
        time.sleep(0.02)
    assert host.is_stopped(child.pid)
    os.kill(child.pid, signal.SIGCONT)
    child.kill()
    child.wait(5)
    for ask in (host.environ, host.cmdline, host.start_time, host.cpu_ticks):
        assert ask(child.pid) is None, ask  # reaped: gone
    assert not host.is_stopped(child.pid)


# ---- accounts and permission bits --------------------------------------------------------------
def test_mode_bits_for_owner_group_and_others(tmp_path: Path) -> None:
    f = tmp_path / "f"
    f.write_text("")

    def st_of(mode: int) -> os.stat_result:
        f.chmod(mode)
        return f.stat()

    me = Account.from_uid(os.geteuid(), "test")
    owner = Account("owner", f.stat().st_uid, -1, frozenset(), "test")
    member = Account("member", -2, f.stat().st_gid, frozenset({f.stat().st_gid}), "test")
    other = Account.anyone()
    assert host.mode_allows(st_of(0o640), owner, 6)
    assert host.mode_allows(st_of(0o640), member, 4) and not host.mode_allows(f.stat(), member, 2)
    assert not host.mode_allows(f.stat(), other, 4)
    assert host.mode_allows(st_of(0o604), other, 4)
    assert not host.mode_allows(st_of(0o644), other, 1)
    root = Account("root", 0, 0, frozenset({0}), "test")
    assert host.mode_allows(st_of(0o000), root, 6)  # root reads and writes anything ...
    assert not host.mode_allows(f.stat(), root, 1)  # ... but runs only what has an exec bit
    assert host.mode_allows(tmp_path.stat(), root, 1)
    assert me.is_me and not other.is_me


def test_access_as_another_account_walks_every_folder() -> None:
    top = Path(tempfile.mkdtemp(prefix="hubsvc-host-"))  # pytest's tmp may sit in a 0700 home
    try:
        top.chmod(0o755)
        other = Account.anyone()
        if host.access_as(top, other, 1) is not None:
            pytest.skip(f"a folder above {top} is closed to other accounts")
        open_file = top / "open"
        open_file.write_text("")
        open_file.chmod(0o644)
        assert host.access_as(open_file, other, 4) is None
        open_file.chmod(0o600)
        assert "mode 0600" in (host.access_as(open_file, other, 4) or "")
        closed = top / "closed"
        closed.mkdir(mode=0o700)
        inside = closed / "f"
        inside.write_text("")
        inside.chmod(0o644)
        assert f"cannot enter {closed}" in (host.access_as(inside, other, 4) or "")
        assert host.access_as(top / "missing", other, 4) is not None
    finally:
        shutil.rmtree(top)


def test_local_accounts() -> None:
    root = host.local_user("root")
    assert root is not None and root.pw_uid == 0
    assert host.local_user("no-such-user-hubsvc-7") is None
    assert Account.from_name("no-such-user-hubsvc-7", "test") is None
    assert host.user_name(0) == "root" and host.user_name(2**31 - 7) == str(2**31 - 7)


# ---- addresses ---------------------------------------------------------------------------------
def test_local_and_loopback_hosts() -> None:
    for local in ("127.0.0.1", "::1", "localhost", "0.0.0.0", "", "[::1]"):
        assert host.is_local_host(local), local
    assert not host.is_local_host("192.0.2.1")  # TEST-NET-1: no host has it
    assert not host.is_local_host("no-such-host.invalid")
    assert host.is_loopback_host("localhost") and host.is_loopback_host("127.0.0.5")
    assert not host.is_loopback_host("0.0.0.0") and not host.is_loopback_host("")
    assert not host.is_loopback_host("no-such-host.invalid")


def test_parse_systemctl_show() -> None:
    got = host.parse_systemctl_show("LoadState=loaded\nUser=\nDropInPaths=/a.conf /b.conf\n")
    assert got == {"LoadState": "loaded", "User": "", "DropInPaths": "/a.conf /b.conf"}
