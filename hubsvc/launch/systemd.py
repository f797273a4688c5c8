"""Components as systemd units of their own, driven over D-Bus with pystemd.

The shipped units `hubsvc-proxy.service` and `hubsvc-hub.service` run
`hubsvc exec proxy|hub`, which executes the command line hubsvc built (the same
`ComponentSpec.argv` the process launcher runs), handed over as a systemd credential
(`/run/hubsvc/<component>.launch.json`, no secret inside; CHP's token comes as its own
credential). The units have `Restart=no`: hubsvc stays the one restart authority.

State changes arrive as D-Bus signals (`PropertiesChanged` of each unit, after
`Subscribe()`), read from the bus's file descriptor by the asyncio loop — no polling.
Method calls are synchronous sd-bus calls to PID 1; each takes a millisecond or two.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog
from pystemd.dbuslib import DBus, apply_signature

from ..components import ComponentSpec
from ..output import Sink
from . import pid_is_stopped

log = structlog.get_logger("hubsvc")

DEST = b"org.freedesktop.systemd1"
MANAGER_PATH = b"/org/freedesktop/systemd1"
MANAGER = b"org.freedesktop.systemd1.Manager"
UNIT = b"org.freedesktop.systemd1.Unit"
SERVICE = b"org.freedesktop.systemd1.Service"
PROPS = b"org.freedesktop.DBus.Properties"

UNITS = {"proxy": "hubsvc-proxy.service", "hub": "hubsvc-hub.service"}
RUNTIME_DIR = Path("/run/hubsvc")  # where the shipped units load their credentials from
STATE_DIR = Path("/var/lib/hubsvc")
# ExecMainCode values (siginfo si_code)
_CLD_EXITED = 1


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


class Bus:
    """One sd-bus connection to PID 1, pumped by the asyncio loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop = loop
        self.bus = DBus()
        self.bus.open()
        self._listeners: dict[bytes, list[Callable[[dict[str, Any]], None]]] = {}
        self._matched: set[bytes] = set()
        # pystemd's match_signal hands the callback to sd-bus without keeping a reference:
        # hold every one for the bus's lifetime, or the next signal calls freed memory.
        self._callbacks: list[Callable[..., None]] = []
        self._jobs: dict[bytes, asyncio.Future[str]] = {}
        loop.add_reader(self.bus.get_fd(), self.pump)
        self.call(MANAGER_PATH, MANAGER, b"Subscribe", b"", [])

        def on_job_removed(msg: Any, error: Any = None, userdata: Any = None) -> None:
            msg.process_reply(True)
            _id, job, _unit, result = msg.body
            fut = self._jobs.pop(bytes(job), None)
            if fut is not None and not fut.done():
                fut.set_result(_s(result))

        self._callbacks.append(on_job_removed)
        self.bus.match_signal(DEST, MANAGER_PATH, MANAGER, b"JobRemoved", on_job_removed, None)

    def close(self) -> None:
        self.loop.remove_reader(self.bus.get_fd())
        self.bus.close()

    def pump(self) -> None:
        # sd-bus may read several messages at once; drain them (a no-op when idle)
        for _ in range(64):
            self.bus.process()

    def call(self, path: bytes, iface: bytes, method: bytes, sig: bytes, args: list[Any]) -> Any:
        body = self.bus.call_method(DEST, path, iface, method, apply_signature(sig, args)).body
        self.loop.call_soon(self.pump)  # signals that arrived during the call
        return body

    def get(self, path: bytes, iface: bytes, prop: bytes, rtype: bytes) -> Any:
        return self.bus.get_property(DEST, path, iface, prop, rtype)

    async def run_job(self, method: bytes, name: str, timeout: float) -> str:
        """StartUnit/StopUnit and wait for systemd's JobRemoved: "done", "failed", …"""
        job = bytes(self.call(MANAGER_PATH, MANAGER, method, b"ss", [name.encode(), b"replace"]))
        fut = self.loop.create_future()
        self._jobs[job] = fut  # the signal is dispatched by a later pump(), never before
        try:
            return await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            self._jobs.pop(job, None)
            raise

    def unit_path(self, name: str) -> bytes:
        return bytes(self.call(MANAGER_PATH, MANAGER, b"LoadUnit", b"s", [name.encode()]))

    def listen(self, path: bytes, fn: Callable[[dict[str, Any]], None]) -> None:
        self._listeners.setdefault(path, []).append(fn)
        if path in self._matched:
            return
        self._matched.add(path)

        def on_signal(msg: Any, error: Any = None, userdata: Any = None) -> None:
            msg.process_reply(True)
            iface, changed = msg.body[0], msg.body[1]
            if _s(iface) != UNIT.decode():
                return
            props = {_s(k): v for k, v in changed.items()}
            for cb in list(self._listeners.get(path, [])):
                cb(props)

        self._callbacks.append(on_signal)
        self.bus.match_signal(DEST, path, PROPS, b"PropertiesChanged", on_signal, None)

    def unlisten(self, path: bytes, fn: Callable[[dict[str, Any]], None]) -> None:
        if fn in self._listeners.get(path, []):
            self._listeners[path].remove(fn)


class UnitHandle:
    """A started component unit; `wait()` resolves when systemd reports it inactive/failed."""

    def __init__(self, bus: Bus, name: str, path: bytes, pid: int):
        self.bus = bus
        self.name = name
        self.path = path
        self.pid = pid
        self._rc: int | None = None
        self._done: asyncio.Future[int] = bus.loop.create_future()
        bus.listen(path, self._on_change)
        self._check(_s(bus.get(path, UNIT, b"ActiveState", b"s")))  # a change before listen()

    def _on_change(self, props: dict[str, Any]) -> None:
        state = props.get("ActiveState")
        if state is not None:
            self._check(_s(state))

    def _check(self, state: str) -> None:
        if self._done.done() or state not in ("inactive", "failed"):
            return
        code = int(self.bus.get(self.path, SERVICE, b"ExecMainCode", b"i"))
        status = int(self.bus.get(self.path, SERVICE, b"ExecMainStatus", b"i"))
        self._rc = status if code == _CLD_EXITED else -status
        self.bus.unlisten(self.path, self._on_change)
        self._done.set_result(self._rc)

    async def wait(self) -> int:
        return await asyncio.shield(self._done)

    @property
    def returncode(self) -> int | None:
        return self._rc

    def signal(self, sig: int) -> None:
        if self._rc is not None:
            return
        # a hung component gets SIGKILL for its whole unit, a stop request the main process
        who = b"all" if sig == signal.SIGKILL else b"main"
        try:
            self.bus.call(MANAGER_PATH, MANAGER, b"KillUnit", b"ssi",
                          [self.name.encode(), who, int(sig)])
        except Exception as e:  # the unit may just have gone
            log.debug("kill_unit_failed", unit=self.name, error=str(e))

    def is_stopped(self) -> bool:
        return pid_is_stopped(self.pid)


class SystemdLauncher:
    """Starts each component as its shipped unit. Requires root and systemd as PID 1."""

    name = "systemd"

    def __init__(self, runtime_dir: Path = RUNTIME_DIR):
        self.runtime_dir = runtime_dir
        self._bus: Bus | None = None

    @property
    def bus(self) -> Bus:
        if self._bus is None:
            self._bus = Bus(asyncio.get_running_loop())
        return self._bus

    def write_launch(self, spec: ComponentSpec) -> Path:
        """The command line `hubsvc exec` runs inside the unit (no secret in it)."""
        doc = {"argv": spec.argv, "cwd": str(spec.cwd),
               "env": {k: v for k, v in spec.env.items() if k in ("PATH", "LANG", "LC_ALL")}}
        path = self.runtime_dir / f"{spec.name}.launch.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(doc))
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
        return path

    async def start(self, spec: ComponentSpec, sink: Sink) -> UnitHandle:
        name = UNITS[spec.name]
        self.write_launch(spec)
        bus = self.bus
        path = bus.unit_path(name)
        if _s(bus.get(path, UNIT, b"ActiveState", b"s")) == "failed":
            bus.call(MANAGER_PATH, MANAGER, b"ResetFailedUnit", b"s", [name.encode()])
        try:
            result = await bus.run_job(b"StartUnit", name, spec.start_timeout_s)
        except TimeoutError:
            raise OSError(f"{name} did not start within {spec.start_timeout_s:g}s") from None
        if result != "done":
            raise OSError(f"systemd could not start {name}: job {result} "
                          f"(see journalctl -u {name})")
        pid = int(bus.get(path, SERVICE, b"MainPID", b"u"))
        return UnitHandle(bus, name, path, pid)

    async def stop_leftovers(self) -> list[str]:
        """Stop component units left running (a supervisor that was killed, a restart that
        systemd propagated): a fresh supervisor starts from a clean slate."""
        stopped = []
        for name in UNITS.values():
            path = self.bus.unit_path(name)
            if _s(self.bus.get(path, UNIT, b"ActiveState", b"s")) in ("inactive", "failed"):
                continue
            await self.bus.run_job(b"StopUnit", name, 60)
            stopped.append(name)
        return stopped

    def close(self) -> None:
        if self._bus is not None:
            self._bus.close()
            self._bus = None


async def stop_leftover_units(runtime_dir: Path) -> list[str]:
    launcher = SystemdLauncher(runtime_dir)
    try:
        return await launcher.stop_leftovers()
    finally:
        launcher.close()


def unit_view(bus: DBus, name: str) -> dict[str, Any]:
    """systemd's own view of a unit (for `hubsvc status`), over an open DBus."""
    path = bytes(bus.call_method(DEST, MANAGER_PATH, MANAGER, b"LoadUnit",
                                 apply_signature(b"s", [name.encode()])).body)
    return {
        "unit": name,
        "active_state": _s(bus.get_property(DEST, path, UNIT, b"ActiveState", b"s")),
        "sub_state": _s(bus.get_property(DEST, path, UNIT, b"SubState", b"s")),
        "main_pid": int(bus.get_property(DEST, path, SERVICE, b"MainPID", b"u")),
        "n_restarts": int(bus.get_property(DEST, path, SERVICE, b"NRestarts", b"u")),
    }


def usable(state_dir: Path, runtime_dir: Path) -> str | None:
    """Why the systemd launcher cannot be used here, or None when it can."""
    if os.geteuid() != 0:
        return "hubsvc does not run as root"
    if not Path("/run/systemd/system").is_dir():
        return "systemd is not the init system"
    if state_dir != STATE_DIR or runtime_dir != RUNTIME_DIR:
        return (f"the shipped units read their credentials from {STATE_DIR} and {RUNTIME_DIR}; "
                f"this config uses {state_dir} and {runtime_dir}")
    try:
        with DBus() as bus:
            for name in UNITS.values():
                path = bytes(bus.call_method(DEST, MANAGER_PATH, MANAGER, b"LoadUnit",
                                             apply_signature(b"s", [name.encode()])).body)
                state = _s(bus.get_property(DEST, path, UNIT, b"LoadState", b"s"))
                if state != "loaded":
                    return f"{name} is {state} (is the package installed completely?)"
    except Exception as e:
        return f"cannot talk to systemd over D-Bus: {e}"
    return None
