"""CHP's head start: `hubsvc run` executes CHP once the config and every preflight check
have passed, before it loads the supervisor; the supervisor's first start of CHP then
takes that process (hubsvc.launch.process)."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from hubsvc import probes
from hubsvc.components import ComponentSpec
from hubsvc.launch.process import EarlyHandle, ProcessLauncher, head_start
from hubsvc.output import Sink

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]


async def _never() -> probes.Result:
    return probes.Result(False, "not used")


def spec(argv: list[str], name: str = "proxy") -> ComponentSpec:
    return ComponentSpec(name=name, argv=argv, env={"PATH": os.defpath}, cwd=Path("/"),
                         start_timeout_s=5, stop_timeout_s=5, ready=_never, alive=_never)


def early(argv: list[str]) -> tuple[ComponentSpec, Sink, EarlyHandle, ProcessLauncher]:
    s = spec(argv)
    sink = Sink("proxy")
    sink.prepare("pipe")
    head = head_start(s.name, s.argv, s.env, s.cwd, sink)
    assert head is not None
    return s, sink, head.handle, ProcessLauncher([head])


def gone(pid: int) -> bool:
    """Reaped (not a zombie): no /proc entry any more."""
    return not Path(f"/proc/{pid}").exists()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def setup(tmp_path: Path, public_port: int) -> tuple[Path, Path]:
    """A stand-in CHP (a shell that sleeps) and a hubsvc.toml naming it; (chp, toml)."""
    chp = tmp_path / "chp"
    chp.write_text("#!/bin/sh\nexec sleep 30\n")
    chp.chmod(0o755)
    toml = tmp_path / "hubsvc.toml"
    toml.write_text(
        f'[paths]\nstate_dir = "{tmp_path}/state"\nruntime_dir = "{tmp_path}/run"\n'
        f'[proxy]\ncommand = "{chp}"\npublic_url = "http://127.0.0.1:{public_port}"\n'
        f'api_url = "http://127.0.0.1:{free_port()}"\n'
        f'[hub]\ncommand = "{Path(sys.executable).parent / "jupyterhub"}"\n'
        f'bind_url = "http://127.0.0.1:{free_port()}"\nconfig_file = ""\n'
        '[supervisor]\nlauncher = "process"\n')
    return chp, toml


def run_hubsvc(toml: Path, patch: str) -> subprocess.CompletedProcess[str]:
    """`hubsvc run --config toml` in a fresh interpreter, through the real entry point,
    with `patch` (code that replaces hubsvc.launch.process.head_start) applied first."""
    code = (f"import gc, sys\nfrom hubsvc.launch import process\n{patch}"
            f"sys.argv = ['hubsvc', 'run', '--config', {str(toml)!r}]\n"
            "from hubsvc.__main__ import main\nsys.exit(main())\n")
    env = {k: v for k, v in os.environ.items()
           if k not in ("NOTIFY_SOCKET", "INVOCATION_ID", "JOURNAL_STREAM", "HUBSVC_CONFIG")}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, env=env, cwd=REPO)


def test_chp_is_executed_before_the_supervisor_is_loaded(tmp_path: Path) -> None:
    """At the moment CHP is executed, hubsvc has validated the config and run its preflight
    (pydantic is loaded) but has not loaded asyncio, structlog or the supervisor."""
    chp, toml = setup(tmp_path, free_port())
    out = run_hubsvc(toml, (
        "real = process.head_start\n"
        "def seen(name, argv, env, cwd, sink, *rest):\n"
        "    mods = ('asyncio', 'structlog', 'hubsvc.supervisor', 'pydantic')\n"
        "    print(name, argv[0], *(m in sys.modules for m in mods), gc.isenabled(), flush=True)\n"
        "    head = real(name, argv, env, cwd, sink, *rest)\n"
        "    print(head.handle.pid, flush=True)\n"
        "    from hubsvc import supervisor\n"  # loaded only now, as cli._run would
        "    async def run(self):\n"  # the supervisor as it would start: GC back on
        "        print('supervisor', gc.isenabled(), flush=True)\n"
        "        return 0\n"
        "    supervisor.Supervisor.run = run\n"
        "    return head\n"
        "process.head_start = seen\n"))
    assert out.returncode == 0, out.stderr
    first, pid, last = out.stdout.splitlines()
    # at CHP's exec: config validated (pydantic loaded), nothing of the supervisor loaded,
    # the garbage collector off while the modules load
    assert first.split() == ["proxy", str(chp), "False", "False", "False", "True", "False"], \
        out.stdout + out.stderr
    assert last == "supervisor True"
    # a supervisor that ends before it took the early CHP leaves none behind
    assert gone(int(pid)), out.stdout


def test_bad_input_executes_nothing(tmp_path: Path) -> None:
    """A port in use is refused (78) before CHP would be executed: no head start."""
    held = socket.socket()
    held.bind(("127.0.0.1", 0))
    held.listen()
    _chp, toml = setup(tmp_path, held.getsockname()[1])
    try:
        out = run_hubsvc(toml, (
            "def seen(*a, **k):\n"
            "    print('HEAD START', flush=True)\n"
            "    raise SystemExit(99)\n"
            "process.head_start = seen\n"))
    finally:
        held.close()
    assert out.returncode == 78, out.stdout + out.stderr
    assert "ports.public" in out.stderr and "Traceback" not in out.stderr
    assert "HEAD START" not in out.stdout


def test_the_first_start_takes_the_early_process() -> None:
    s, sink, handle, launcher = early(["/bin/sleep", "30"])

    async def go() -> None:
        got = await launcher.start(s, sink)
        assert got is handle and got.returncode is None
        assert not got.is_stopped()
        got.signal(signal.SIGKILL)
        assert await asyncio.wait_for(got.wait(), 5) == -signal.SIGKILL
        assert got.returncode == -signal.SIGKILL
        got.signal(signal.SIGTERM)  # reaped: never signalled again (its pid may be reused)

    asyncio.run(go())
    assert gone(handle.pid)
    sink.close()


def test_an_early_process_that_exits_is_seen_with_its_code_and_output() -> None:
    s, sink, handle, launcher = early(["/bin/sh", "-c", "echo port in use >&2; exit 3"])
    lines: list[str] = []
    sink.consumers.append(lambda _c, line: lines.append(line))

    async def go() -> None:
        sink.open(asyncio.get_running_loop(), "pipe")
        # it has exited before the supervisor takes it (waited for, not reaped)
        await asyncio.to_thread(os.waitid, os.P_PID, handle.pid, os.WEXITED | os.WNOWAIT)
        got = await launcher.start(s, sink)
        assert got is handle  # its failure is this start's, reported as any other
        assert await asyncio.wait_for(got.wait(), 5) == 3
        assert got.returncode == 3
        for _ in range(100):
            if lines:
                break
            await asyncio.sleep(0.01)

    asyncio.run(go())
    assert "port in use" in lines
    sink.close()


def test_an_early_process_with_another_command_line_is_stopped_and_replaced() -> None:
    _s, sink, handle, launcher = early(["/bin/sleep", "30"])
    other = spec(["/bin/sleep", "31"])

    async def go() -> int:
        got = await launcher.start(other, sink)
        assert got is not handle
        got.signal(signal.SIGKILL)
        await asyncio.wait_for(got.wait(), 5)
        return got.pid

    pid = asyncio.run(go())
    assert pid != handle.pid
    assert handle.returncode == -signal.SIGTERM and gone(handle.pid)
    sink.close()


def test_an_early_process_never_taken_is_stopped() -> None:
    _s, sink, handle, launcher = early(["/bin/sleep", "30"])
    launcher.discard_head_starts()
    assert handle.returncode == -signal.SIGTERM and gone(handle.pid)
    launcher.discard_head_starts()  # nothing left: a no-op
    sink.close()


def test_a_command_that_cannot_be_executed_gets_no_head_start(tmp_path: Path) -> None:
    """The supervisor's own start then fails with the reason, like any failed start."""
    sink = Sink("proxy")
    sink.prepare("pipe")
    assert head_start("proxy", [str(tmp_path / "missing")], {}, Path("/"), sink) is None
    sink.close()


def test_an_early_process_given_up_on_is_killed_and_reaped() -> None:
    """The supervisor's orphan path (a launch that completed after its start was given up)
    kills the process and reaps it: asyncio's watcher does not know an early child."""
    from . import supsim

    _s, sink, handle, _launcher = early(["/bin/sleep", "30"])

    async def go() -> None:
        sim = supsim.make()
        sim.sup._orphan(sim.sup.by_name["proxy"], handle)
        for _ in range(200):
            if gone(handle.pid):
                break
            await asyncio.sleep(0.01)
        assert gone(handle.pid), "killed but left a zombie"  # before anything polls it

    asyncio.run(go())
    assert handle.returncode == -signal.SIGKILL
    sink.close()
