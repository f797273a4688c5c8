"""The hub's head start (hubsvc.hold), with real processes of this Python: a held command
loads the modules its script imports its entry point from, runs nothing else until it is
released, and then runs the script as executing it would; one that is never released, or
released after it ended, never runs it. The real hub held by `hubsvc run` is checked in
test_supervisor (process launcher) and tests/system/test_component_units (systemd)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hubsvc.components import ComponentSpec
from hubsvc.hold import hold_argv
from hubsvc.launch.process import EarlyHandle, ProcessHandle, ProcessLauncher, hold_start
from hubsvc.output import Sink

pytestmark = pytest.mark.integration


def make_script(tmp_path: Path, shebang: str | None = None) -> Path:
    """A console script like pip's: `from holdprobe_app import main`, whose module marks
    its import, and whose main() writes what it sees and exits 3."""
    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / "holdprobe_app.py").write_text(
        "import os, pathlib, json, sys\n"
        "pathlib.Path(os.environ['PROBE_DIR'], 'imported').write_text(str(os.getpid()))\n"
        "def main():\n"
        "    pathlib.Path(os.environ['PROBE_DIR'], 'ran').write_text(json.dumps({\n"
        "        'pid': os.getpid(), 'argv': sys.argv, 'path0': sys.path[0], 'cwd': os.getcwd(),\n"
        "        'hold_env': [k for k in os.environ if k.startswith('HUBSVC_HOLD')],\n"
        "        'main': sys.modules['__main__'].__dict__.get('__file__')}))\n"
        "    return 3\n")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "probe-hub"
    script.write_text(f"{shebang or '#!' + sys.executable}\nimport re\nimport sys\n"
                      "from holdprobe_app import main\n"
                      "if __name__ == '__main__':\n    sys.exit(main())\n")
    script.chmod(0o755)
    return script


def env_for(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "PROBE_DIR": str(tmp_path),
            "PYTHONPATH": os.pathsep.join([str(tmp_path / "lib"), *sys.path[1:]])}


def wait_for(path: Path, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.02)


def spec_for(argv: list[str], env: dict[str, str], cwd: Path) -> ComponentSpec:
    async def never() -> object:
        raise AssertionError("not probed here")

    return ComponentSpec(name="hub", argv=argv, env=env, cwd=cwd, start_timeout_s=10,
                         stop_timeout_s=5, ready=never, alive=never)  # type: ignore[arg-type]


def test_held_loads_then_runs_as_the_script_once_released(tmp_path: Path) -> None:
    script = make_script(tmp_path)
    argv = [str(script), "--config", "x.py"]
    env = env_for(tmp_path)
    sink = Sink("hub")
    head = hold_start("hub", argv, env, tmp_path, sink)
    assert head is not None
    try:
        # the entry point's module loads at once; the script does not run
        wait_for(tmp_path / "imported")
        time.sleep(0.3)
        assert not (tmp_path / "ran").exists()
        assert head.handle.returncode is None
        cmdline = Path(f"/proc/{head.handle.pid}/cmdline").read_bytes().split(b"\0")
        assert cmdline[:3] == [sys.executable.encode(), b"-m", b"hubsvc.hold"]
        assert cmdline[3:6] == [a.encode() for a in argv]  # ps shows the hub's command line
        # released: the same process runs the script, as executing it would
        spec = spec_for(argv, env, tmp_path)
        handle = asyncio.run(ProcessLauncher([head]).start(spec, sink))
        assert handle is head.handle
        assert head.handle._popen.wait(20) == 3  # its exit status
        ran = json.loads((tmp_path / "ran").read_text())
        assert ran["pid"] == head.handle.pid == int((tmp_path / "imported").read_text())
        assert ran["argv"] == argv
        assert ran["path0"] == str(script.parent)
        assert ran["cwd"] == str(tmp_path)
        assert ran["hold_env"] == []  # the hub and its children never see it
        assert ran["main"] == str(script)
    finally:
        head.discard()


def test_never_released_ends_without_running(tmp_path: Path) -> None:
    script = make_script(tmp_path)
    env = env_for(tmp_path)
    head = hold_start("hub", [str(script)], env, tmp_path, Sink("hub"))
    assert head is not None
    wait_for(tmp_path / "imported")
    t0 = time.monotonic()
    head.discard()  # the end of its pipe, then SIGTERM: ended and reaped
    assert head.handle.returncode is not None and time.monotonic() - t0 < 3
    assert not (tmp_path / "ran").exists()
    # the end of the pipe alone ends it too, without running the script
    head = hold_start("hub", [str(script)], env, tmp_path, Sink("hub"))
    assert head is not None
    os.close(head._go)
    head._go = -1
    assert head.handle._popen.wait(20) == 0
    assert not (tmp_path / "ran").exists()


def test_exited_before_release_is_started_afresh(tmp_path: Path) -> None:
    script = make_script(tmp_path)
    argv = [str(script)]
    env = env_for(tmp_path)
    sink = Sink("hub")
    head = hold_start("hub", argv, env, tmp_path, sink)
    assert head is not None
    wait_for(tmp_path / "imported")
    head.handle.signal(9)
    head.handle._popen.wait(10)
    handle = asyncio.run(_start_and_wait(ProcessLauncher([head]), spec_for(argv, env, tmp_path), sink))
    assert isinstance(handle, ProcessHandle) and handle.pid != head.handle.pid
    assert json.loads((tmp_path / "ran").read_text())["pid"] == handle.pid


async def _start_and_wait(launcher: ProcessLauncher, spec: ComponentSpec,
                          sink: Sink) -> ProcessHandle | EarlyHandle:
    handle = await launcher.start(spec, sink)
    assert await asyncio.wait_for(handle.wait(), 20) == 3
    return handle


def test_a_different_command_line_is_not_taken(tmp_path: Path) -> None:
    script = make_script(tmp_path)
    env = env_for(tmp_path)
    sink = Sink("hub")
    head = hold_start("hub", [str(script), "--old"], env, tmp_path, sink)
    assert head is not None
    wait_for(tmp_path / "imported")
    spec = spec_for([str(script), "--new"], env, tmp_path)
    handle = asyncio.run(_start_and_wait(ProcessLauncher([head]), spec, sink))
    assert head.handle.returncode is not None  # the held one was stopped, never run
    assert json.loads((tmp_path / "ran").read_text())["argv"] == [str(script), "--new"]
    assert handle.pid != head.handle.pid


def test_only_scripts_of_this_python_are_held(tmp_path: Path) -> None:
    ok = make_script(tmp_path)
    assert hold_argv([str(ok), "x"]) == [sys.executable, "-m", "hubsvc.hold", str(ok), "x"]
    for shebang in (f"#!{sys.executable} -I", "#!/usr/bin/env python3", "#!/bin/sh"):
        d = tmp_path / f"s{abs(hash(shebang))}"
        d.mkdir()
        assert hold_argv([str(make_script(d, shebang))]) is None, shebang
    binary = tmp_path / "binary"
    binary.write_bytes(b"\x7fELF\0\0")
    assert hold_argv([str(binary)]) is None
    assert hold_argv([str(tmp_path / "missing")]) is None
    # not held means not started early at all: the supervisor executes it, in order
    assert hold_start("hub", ["/bin/true"], dict(os.environ), tmp_path, Sink("hub")) is None


def test_run_without_a_hold_runs_at_once(tmp_path: Path) -> None:
    script = make_script(tmp_path)
    p = subprocess.run([sys.executable, "-m", "hubsvc.hold", str(script), "a"],
                       env=env_for(tmp_path), cwd=tmp_path, timeout=30)
    assert p.returncode == 3
    assert json.loads((tmp_path / "ran").read_text())["argv"] == [str(script), "a"]


# --- held on a FIFO (the systemd launcher: hubsvc-hub.service reads /run/hubsvc/hub.hold)


def start_held_on(tmp_path: Path, fifo: Path) -> subprocess.Popen[bytes]:
    script = make_script(tmp_path)
    held = hold_argv([str(script)])
    assert held is not None
    return subprocess.Popen(held, env={**env_for(tmp_path), "HUBSVC_HOLD": str(fifo)},
                            cwd=tmp_path, stderr=subprocess.PIPE)


def new_fifo(path: Path) -> int:
    """As launch.unitstart.head_start makes it: hubsvc's end, open read-write."""
    os.mkfifo(path, 0o600)
    return os.open(path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)


def test_a_fifo_let_go_before_the_held_process_opened_it_still_ends_it(tmp_path: Path) -> None:
    """hubsvc let go of its FIFO (a check failed, it was stopped) before the held process
    opened it: Linux then reports no end of the FIFO to that reader. hubsvc unlinks it, and
    the held process ends on that, without running the hub, instead of waiting an hour."""
    from hubsvc.launch.unitstart import UnitHeadStart

    fifo = tmp_path / "hub.hold"
    early = UnitHeadStart("hub", {}, 0.0, go=new_fifo(fifo), fifo=fifo)
    os.close(os.open(fifo, os.O_RDONLY | os.O_NONBLOCK))  # it is a FIFO hubsvc holds open
    early.close()  # hubsvc lets go before the held process exists
    assert not fifo.exists()
    os.mkfifo(fifo, 0o600)  # the same path, no writer ever: the worst case for the reader
    proc = start_held_on(tmp_path, fifo)
    try:
        wait_for(tmp_path / "imported")
        time.sleep(1.0)
        assert proc.poll() is None, "no writer was ever seen: the FIFO alone does not end it"
        fifo.unlink()
        assert proc.wait(timeout=5) == 0
    finally:
        proc.kill()
        proc.wait()
    assert not (tmp_path / "ran").exists()


def test_a_fifo_replaced_by_the_next_head_start_ends_the_old_held_process(tmp_path: Path) -> None:
    fifo = tmp_path / "hub.hold"
    go = new_fifo(fifo)
    proc = start_held_on(tmp_path, fifo)
    try:
        wait_for(tmp_path / "imported")
        fifo.unlink()
        go2 = new_fifo(fifo)  # the next head start's FIFO, at the same path
        os.write(go2, b"g")   # released: for the new held process, not this one
        assert proc.wait(timeout=5) == 0
    finally:
        proc.kill()
        proc.wait()
        os.close(go)
    assert not (tmp_path / "ran").exists()


def test_released_then_let_go_at_once_still_runs(tmp_path: Path) -> None:
    """The byte written, then the FIFO closed and unlinked (hubsvc's stop) before the held
    process read it: the byte is in the FIFO it opened, and it runs."""
    from hubsvc.launch.unitstart import UnitHeadStart

    fifo = tmp_path / "hub.hold"
    early = UnitHeadStart("hub", {}, 0.0, go=new_fifo(fifo), fifo=fifo)
    proc = start_held_on(tmp_path, fifo)
    try:
        wait_for(tmp_path / "imported")
        assert early.release()
        early.close()
        assert proc.wait(timeout=20) == 3
    finally:
        proc.kill()
        proc.wait()
    assert json.loads((tmp_path / "ran").read_text())["hold_env"] == []


@pytest.mark.parametrize("kind", ["file", "symlink"])
def test_only_a_fifo_releases_it(tmp_path: Path, kind: str) -> None:
    """A regular file holding `g`, or a symbolic link to a real FIFO, where the FIFO
    should be: refused at once, the hub not run."""
    path = tmp_path / "hub.hold"
    go = -1
    if kind == "file":
        path.write_bytes(b"g")
    else:
        go = new_fifo(tmp_path / "real.hold")
        os.write(go, b"g")
        path.symlink_to(tmp_path / "real.hold")
    proc = start_held_on(tmp_path, path)
    try:
        assert proc.wait(timeout=20) == 0
    finally:
        proc.kill()
        proc.wait()
        if go >= 0:
            os.close(go)
    assert b"cannot open" in proc.stderr.read()
    assert not (tmp_path / "ran").exists()
