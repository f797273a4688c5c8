"""SystemdLauncher.adopt / start / keep_on_stop against a fake of PID 1's D-Bus API: which
running unit is taken over, and that a start never reuses a running one. (The same calls
against a real systemd 252: tests/system/test_restart_keeps_users.py.)"""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path
from typing import Any

import pytest

from hubsvc.components import ComponentSpec
from hubsvc.launch import systemd as sd

pytestmark = pytest.mark.unit


class FakeBus:
    """What SystemdLauncher uses of launch.systemd.Bus, with units as plain dicts."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.units: dict[str, dict[str, Any]] = {
            name: {"ActiveState": "inactive", "MainPID": 0, "KillMode": "control-group",
                   "ExecMainCode": 1, "ExecMainStatus": 0}
            for name in sd.UNITS.values()}
        self.units["hubsvc-hub.service"]["KillMode"] = "process"
        self.jobs: list[tuple[str, str]] = []
        self.kills: list[tuple[str, str, int]] = []
        self.next_pid = 100

    def unit_path(self, name: str) -> bytes:
        return name.encode()

    def get(self, path: bytes, iface: bytes, prop: bytes, rtype: bytes) -> Any:
        return self.units[path.decode()][prop.decode()]

    def call(self, path: bytes, iface: bytes, method: bytes, sig: bytes, args: list[Any]) -> Any:
        if method == b"KillUnit":
            self.kills.append((args[0].decode(), args[1].decode(), args[2]))
        return None

    async def run_job(self, method: bytes, name: str, timeout: float) -> str:
        self.jobs.append((method.decode(), name))
        unit = self.units[name]
        if method == b"StopUnit":
            unit.update(ActiveState="inactive", MainPID=0)
        elif unit["ActiveState"] != "active":  # a start job on an active unit: done, nothing new
            self.next_pid += 1
            unit.update(ActiveState="active", MainPID=self.next_pid)
        return "done"

    def listen(self, path: bytes, fn: Any) -> None:
        pass

    def unlisten(self, path: bytes, fn: Any) -> None:
        pass


def spec(name: str, argv: list[str]) -> ComponentSpec:
    async def probe() -> Any:
        return True

    return ComponentSpec(name=name, argv=argv, env={"PATH": "/usr/bin", "SECRET": "x"},
                         cwd=Path("/"), start_timeout_s=5, stop_timeout_s=5, ready=probe,
                         alive=probe)


PROXY_ARGV = ["/opt/hubsvc/node_modules/.bin/configurable-http-proxy", "--port", "8000"]


def run(coro_fn: Any) -> Any:
    return asyncio.run(coro_fn())


def launcher(tmp_path: Path) -> tuple[sd.SystemdLauncher, FakeBus]:
    la = sd.SystemdLauncher(tmp_path)
    bus = FakeBus(asyncio.get_running_loop())
    la._bus = bus  # type: ignore[assignment]
    return la, bus


def test_a_proxy_started_by_the_previous_supervisor_is_adopted(tmp_path: Path) -> None:
    async def go() -> None:
        la, bus = launcher(tmp_path)
        proxy = spec("proxy", PROXY_ARGV)
        first = await la.start(proxy, None)  # type: ignore[arg-type]
        # the launch file holds no secret from the environment
        assert "SECRET" not in (tmp_path / "proxy.launch.json").read_text()
        # a new supervisor (new launcher object, same runtime dir, same unit running)
        la2 = sd.SystemdLauncher(tmp_path)
        la2._bus = bus  # type: ignore[assignment]
        h = await la2.adopt(spec("proxy", list(PROXY_ARGV)), None)  # type: ignore[arg-type]
        assert h is not None and h.pid == first.pid
        assert bus.jobs == [("StartUnit", "hubsvc-proxy.service")]  # nothing restarted

    run(go)


def test_not_adopted_when_the_command_line_changed_or_the_file_is_gone(tmp_path: Path) -> None:
    async def go() -> None:
        la, bus = launcher(tmp_path)
        await la.start(spec("proxy", PROXY_ARGV), None)  # type: ignore[arg-type]
        changed = spec("proxy", [*PROXY_ARGV, "--timeout", "1000"])
        assert await la.adopt(changed, None) is None  # type: ignore[arg-type]
        (tmp_path / "proxy.launch.json").unlink()
        assert await la.adopt(spec("proxy", PROXY_ARGV), None) is None  # type: ignore[arg-type]
        # and the start that follows replaces the running unit: stop, then start
        old = bus.units["hubsvc-proxy.service"]["MainPID"]
        h = await la.start(changed, None)  # type: ignore[arg-type]
        assert h.pid != old
        assert bus.jobs[-2:] == [("StopUnit", "hubsvc-proxy.service"),
                                 ("StartUnit", "hubsvc-proxy.service")]
        assert json.loads((tmp_path / "proxy.launch.json").read_text())["argv"] == changed.argv

    run(go)


def test_the_hub_and_stopped_units_are_never_adopted(tmp_path: Path) -> None:
    async def go() -> None:
        la, _ = launcher(tmp_path)
        assert await la.adopt(spec("proxy", PROXY_ARGV), None) is None  # type: ignore[arg-type]
        hub = spec("hub", ["/opt/hubsvc/bin/jupyterhub"])
        await la.start(hub, None)  # type: ignore[arg-type]
        assert await la.adopt(hub, None) is None  # type: ignore[arg-type]

    run(go)


def test_a_hung_hub_is_killed_alone_a_hung_proxy_with_its_unit(tmp_path: Path) -> None:
    async def go() -> None:
        la, bus = launcher(tmp_path)
        hub = await la.start(spec("hub", ["/opt/hubsvc/bin/jupyterhub"]), None)  # type: ignore[arg-type]
        proxy = await la.start(spec("proxy", PROXY_ARGV), None)  # type: ignore[arg-type]
        hub.signal(signal.SIGKILL)
        proxy.signal(signal.SIGKILL)
        hub.signal(signal.SIGTERM)
        assert bus.kills == [("hubsvc-hub.service", "main", signal.SIGKILL),
                             ("hubsvc-proxy.service", "all", signal.SIGKILL),
                             ("hubsvc-hub.service", "main", signal.SIGTERM)]

    run(go)


@pytest.mark.parametrize(("job", "keep"), [("restart", True), ("try-restart", True),
                                           ("stop", False), (None, False)])
def test_keep_on_stop_follows_systemds_job(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                           job: str | None, keep: bool) -> None:
    monkeypatch.setattr(sd, "own_job_type", lambda: job)

    async def go() -> None:
        la, _ = launcher(tmp_path)
        assert await la.keep_on_stop(spec("proxy", PROXY_ARGV)) is keep
        assert await la.keep_on_stop(spec("hub", ["/opt/hubsvc/bin/jupyterhub"])) is False

    run(go)


def head_started(tmp_path: Path, bus: FakeBus, argv: list[str]) -> sd.UnitHeadStart:
    """What launch.systemd.head_start leaves: the launch file, the unit started (pid 555)."""
    doc = sd.launch_doc(argv, Path("/"), {"PATH": "/usr/bin", "SECRET": "x"})
    sd.write_launch(tmp_path, "proxy", doc)
    bus.units["hubsvc-proxy.service"].update(ActiveState="active", MainPID=555)
    return sd.UnitHeadStart("proxy", doc, started_at=123.0)


def test_the_head_started_unit_is_taken_by_the_first_start_not_adopted(tmp_path: Path) -> None:
    async def go() -> None:
        la, bus = launcher(tmp_path)
        la._head = {"proxy": head_started(tmp_path, bus, PROXY_ARGV)}
        proxy = spec("proxy", list(PROXY_ARGV))
        assert await la.adopt(proxy, None) is None  # type: ignore[arg-type]  # its own: no "adopted"
        h = await la.start(proxy, None)  # type: ignore[arg-type]
        assert h.pid == 555 and h.executed_at == 123.0  # type: ignore[attr-defined]
        assert bus.jobs == [("StartUnit", "hubsvc-proxy.service")]  # joins its start: no stop

    run(go)


def test_a_head_started_unit_with_another_launch_file_is_replaced(tmp_path: Path) -> None:
    async def go() -> None:
        la, bus = launcher(tmp_path)
        la._head = {"proxy": head_started(tmp_path, bus, [*PROXY_ARGV, "--timeout", "9"])}
        proxy = spec("proxy", list(PROXY_ARGV))
        assert la._head["proxy"].differs(proxy) == ["argv"]
        h = await la.start(proxy, None)  # type: ignore[arg-type]
        assert h.pid != 555
        assert bus.jobs == [("StopUnit", "hubsvc-proxy.service"), ("StartUnit", "hubsvc-proxy.service")]
        assert json.loads((tmp_path / "proxy.launch.json").read_text())["argv"] == PROXY_ARGV

    run(go)
