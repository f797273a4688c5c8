"""Components as systemd units of their own, driven over D-Bus with pystemd.

The shipped units `hubsvc-proxy.service` and `hubsvc-hub.service` run
`hubsvc exec proxy|hub`, which executes the command line hubsvc built (the same
`ComponentSpec.argv` the process launcher runs), handed over as a systemd credential
(`/run/hubsvc/<component>.launch.json`, no secret inside; CHP's token comes as its own
credential). The units have `Restart=no`: hubsvc stays the one restart authority.

State changes arrive as D-Bus signals (`PropertiesChanged` of each unit, after
`Subscribe()`), read from the bus's file descriptor by the asyncio loop — no polling.
Method calls are synchronous sd-bus calls to PID 1; each takes a millisecond or two, and
each is bounded (`SYSTEMD_BUS_TIMEOUT`): a PID 1 that does not answer cannot wedge hubsvc.

The component units do not depend on hubsvc.service (no BindsTo=/PartOf=, which would
propagate a restart of hubsvc to them): across `systemctl restart hubsvc` or an upgrade's
try-restart the proxy keeps running (`keep_on_stop`) and the next supervisor adopts it
(`adopt`), so users' open connections survive. On a real stop the supervisor stops them
itself, in order; if it cannot (killed on its stop timeout), hubsvc.service's
ExecStopPost (`hubsvc exec stop-post` → `stop_post`) does.
"""

from __future__ import annotations

import asyncio
import functools
import os
import signal
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import structlog

from ..components import ComponentSpec
from ..output import Sink
from . import ByPid, unitstart
from .unitstart import (
    BUS_TIMEOUT_S,
    DEST,
    JOB,
    MANAGER,
    MANAGER_PATH,
    PROPS,
    RUNTIME_DIR,
    SERVICE,
    STATE_DIR,
    UNIT,
    UNITS,
    DBus,
    UnitHeadStart,
    apply_signature,
    launch_doc,
    write_launch,
)
from .unitstart import as_str as _s
from .unitstart import bus_timeout as _bus_timeout
from .unitstart import load_unit as _load_unit
from .unitstart import read_json as _read_json

log = structlog.get_logger("hubsvc")


def _head_start_failed(unit: str, error: str) -> None:
    log.info("head_start_skipped", unit=unit, error=error)


# unitstart.head_start, which logs why a head start was not made
head_start = functools.partial(unitstart.head_start, failed=_head_start_failed)


# Components a new supervisor may take over running. CHP's whole configuration is its
# command line (the launch file) plus its token, both checked before adoption. The
# hub is not: it also reads the admin's JupyterHub config at start, which a restart is
# meant to apply, so it is always replaced.
ADOPTABLE = ("proxy",)
# systemd job types of hubsvc.service after which a new supervisor starts at once.
# `systemctl restart` and the package's try-restart both give "restart" (try-restart of an
# active unit collapses to restart); "try-restart" is listed for completeness.
RESTART_JOBS = ("restart", "try-restart")
# Every method call to PID 1 gives up after this (sd-bus's default is 25 s).
JOB_QUERY_TIMEOUT_S = 2.0
STOP_POST_TIMEOUT_S = 40.0
# ExecMainCode values (siginfo si_code)
_CLD_EXITED = 1


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
        self._closed = False
        loop.add_reader(self.bus.get_fd(), self.pump)
        with _bus_timeout(BUS_TIMEOUT_S):  # the first call fixes this connection's timeout
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
        self._closed = True

    def pump(self) -> None:
        if self._closed:  # a pump scheduled by call() after close()
            return
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


class UnitHandle(ByPid):
    """A started component unit; `wait()` resolves when systemd reports it inactive/failed."""

    def __init__(self, bus: Bus, name: str, path: bytes, pid: int):
        self.bus = bus
        self.name = name
        self.path = path
        self.pid = pid
        # KillMode=process (the hub's unit): the unit's other processes are users' servers
        # of a spawner that runs them as the hub's children; a hung hub must not take them.
        self._kill_mode = _s(bus.get(path, SERVICE, b"KillMode", b"s"))
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
        # a hung component gets SIGKILL for its whole unit (unless the unit keeps its other
        # processes on stop, KillMode=process), a stop request the main process only
        who = b"all" if sig == signal.SIGKILL and self._kill_mode != "process" else b"main"
        try:
            self.bus.call(MANAGER_PATH, MANAGER, b"KillUnit", b"ssi",
                          [self.name.encode(), who, int(sig)])
        except Exception as e:  # the unit may just have gone
            log.debug("kill_unit_failed", unit=self.name, error=str(e))


class SystemdLauncher:
    """Starts each component as its shipped unit. Requires root and systemd as PID 1."""

    name = "systemd"

    def __init__(self, runtime_dir: Path = RUNTIME_DIR, head_starts: Sequence[UnitHeadStart] = ()):
        self.runtime_dir = runtime_dir
        self._bus: Bus | None = None
        self._head = {h.name: h for h in head_starts}
        self._released: list[UnitHeadStart] = []  # their FIFOs close with this launcher

    @property
    def bus(self) -> Bus:
        if self._bus is None:
            self._bus = Bus(asyncio.get_running_loop())
        return self._bus

    @staticmethod
    def launch_doc(spec: ComponentSpec) -> dict[str, Any]:
        return launch_doc(spec.argv, spec.cwd, spec.env)

    def write_launch(self, spec: ComponentSpec) -> Path:
        return write_launch(self.runtime_dir, spec.name, self.launch_doc(spec))

    def _active_pid(self, name: str) -> tuple[bytes, int]:
        """The unit's object path and its main pid (0 unless it is active and running)."""
        bus = self.bus
        path = bus.unit_path(name)
        if _s(bus.get(path, UNIT, b"ActiveState", b"s")) != "active":
            return path, 0
        return path, int(bus.get(path, SERVICE, b"MainPID", b"u"))

    async def start(self, spec: ComponentSpec, sink: Sink) -> UnitHandle:
        name = UNITS[spec.name]
        early = self._head.pop(spec.name, None)
        if early is not None:
            differs = early.differs(spec)
            if not differs:
                self._released.append(early)
                handle = await self._take(early, spec)
                if early.release():
                    if early.go >= 0:
                        handle.warm = "loaded"  # type: ignore[attr-defined]  # component_started
                    return handle
                differs = ["exited"]
            early.close()
            # stopped as a leftover below, then started with this spec's launch file
            log.warning("head_start_discarded", component=spec.name, unit=name,
                        differs=differs, action="stopped; started afresh")
        path, leftover = self._active_pid(name)
        if leftover:
            # running from before this start (not adopted): a start is a fresh process
            # with the command line written below, never the old one reused
            log.warning("stopping_leftover_unit", unit=name, pid=leftover)
            await self._stop_unit(name, spec.stop_timeout_s + 5)
        self.write_launch(spec)
        return await self._start_unit(name, path, spec.start_timeout_s)

    async def _take(self, early: UnitHeadStart, spec: ComponentSpec) -> UnitHandle:
        """The unit the head start started: wait for that start (a start job on a unit
        still starting joins its job; on one already active it is done at once), like
        any start. One that failed meanwhile is started again by the same call."""
        handle = await self._start_unit(early.unit, self.bus.unit_path(early.unit),
                                        spec.start_timeout_s)
        handle.executed_at = early.started_at  # type: ignore[attr-defined]  # component_started
        return handle

    async def _start_unit(self, name: str, path: bytes, timeout: float) -> UnitHandle:
        """StartUnit, and wait for systemd's job; the unit's main process."""
        bus = self.bus
        if _s(bus.get(path, UNIT, b"ActiveState", b"s")) == "failed":
            bus.call(MANAGER_PATH, MANAGER, b"ResetFailedUnit", b"s", [name.encode()])
        try:
            result = await bus.run_job(b"StartUnit", name, timeout)
        except TimeoutError:
            raise OSError(f"{name} did not start within {timeout:g}s") from None
        if result != "done":
            raise OSError(f"systemd could not start {name}: job {result} "
                          f"(see journalctl -u {name})")
        return UnitHandle(bus, name, path, int(bus.get(path, SERVICE, b"MainPID", b"u")))

    def discard_head_starts(self) -> None:
        """Stop a unit the head start started that no start took (a stop came first)."""
        while self._head:
            early = self._head.popitem()[1]
            error = early.stop()
            if error is None:
                log.info("head_start_stopped", unit=early.unit)
            else:  # hubsvc.service's ExecStopPost stops it then
                log.warning("head_start_not_stopped", unit=early.unit, error=error)

    async def adopt(self, spec: ComponentSpec, sink: Sink) -> UnitHandle | None:
        """The component's unit left running by the previous supervisor (a restart or an
        upgrade of hubsvc), when it runs exactly the command line and program version
        this config gives; otherwise None (the caller starts it afresh, and `start` stops
        the leftover first). The caller still checks that it answers with the current
        token before relying on it."""
        name = UNITS[spec.name]
        if spec.name not in ADOPTABLE or spec.name in self._head:
            return None  # the head start's unit is this supervisor's own: start() takes it
        path, pid = self._active_pid(name)
        if not pid:
            return None
        # What the unit runs is the launch file the previous supervisor wrote right before
        # starting it (the unit's own copy under /run/credentials is hidden from this
        # sandbox). /run/hubsvc survives a restart of hubsvc: RuntimeDirectoryPreserve=.
        running = _read_json(self.runtime_dir / f"{spec.name}.launch.json")
        if running != self.launch_doc(spec):
            log.info("not_adopted", unit=name, pid=pid,
                     reason="its command line or version differs from this config's"
                     if running is not None else "its launch file is gone")
            return None
        log.info("adopted_unit", unit=name, pid=pid)
        return UnitHandle(self.bus, name, path, pid)

    async def keep_on_stop(self, spec: ComponentSpec) -> bool:
        """True when this stop of the supervisor is a restart (`systemctl restart hubsvc`,
        an upgrade's try-restart) and the component is one the next supervisor adopts:
        then it is left running. False on any doubt: a real stop stops everything."""
        if spec.name not in ADOPTABLE:
            return False
        job = await asyncio.to_thread(own_job_type)
        log.info("stop_job", job=job, keep=job in RESTART_JOBS, component=spec.name)
        return job in RESTART_JOBS

    async def _stop_unit(self, name: str, timeout: float) -> None:
        try:
            result = await self.bus.run_job(b"StopUnit", name, timeout)
        except TimeoutError:
            raise OSError(f"{name} did not stop within {timeout:g}s") from None
        if result != "done":
            raise OSError(f"systemd could not stop {name}: job {result}")

    async def stop_leftovers(self) -> list[str]:
        """Stop the component units still running, the hub before the proxy."""
        stopped = []
        for name in (UNITS["hub"], UNITS["proxy"]):
            state = _s(self.bus.get(self.bus.unit_path(name), UNIT, b"ActiveState", b"s"))
            if state in ("inactive", "failed"):
                continue
            await self._stop_unit(name, STOP_POST_TIMEOUT_S)
            stopped.append(name)
        return stopped

    def close(self) -> None:
        while self._released:
            self._released.pop().close()
        if self._bus is not None:
            self._bus.close()
            self._bus = None


def own_job_type() -> str | None:
    """The type of the job systemd is running on the unit this process belongs to
    ("stop", "restart", ...), None when there is none. Its own connection, each call
    bounded by JOB_QUERY_TIMEOUT_S; any D-Bus error is None."""
    try:
        with _bus_timeout(JOB_QUERY_TIMEOUT_S), DBus() as bus:
            unit = bytes(bus.call_method(DEST, MANAGER_PATH, MANAGER, b"GetUnitByPID",
                                         apply_signature(b"u", [os.getpid()])).body)
            job_id, job_path = bus.get_property(DEST, unit, UNIT, b"Job", b"(uo)")
            if not job_id:
                return None
            return _s(bus.get_property(DEST, bytes(job_path), JOB, b"JobType", b"s"))
    except Exception as e:  # no systemd, no such job any more, a timeout
        log.debug("job_type_unknown", error=str(e))
        return None


def running_units() -> dict[str, int]:
    """Component units active now ({component: main pid}), e.g. a proxy kept across a
    restart of hubsvc for the next supervisor to adopt. Empty on any D-Bus error."""
    out: dict[str, int] = {}
    try:
        with _bus_timeout(JOB_QUERY_TIMEOUT_S), DBus() as bus:
            for comp, name in UNITS.items():
                path = _load_unit(bus, name)
                if _s(bus.get_property(DEST, path, UNIT, b"ActiveState", b"s")) == "active":
                    out[comp] = int(bus.get_property(DEST, path, SERVICE, b"MainPID", b"u"))
    except Exception as e:
        log.debug("units_unknown", error=str(e))
    return out


def successor_follows(job_type: str | None, env: Mapping[str, str], restart: str) -> bool:
    """Whether a new supervisor starts right after this stop of hubsvc.service, as seen by
    its ExecStopPost: a restart job, or a failure that systemd's Restart= answers.

    env is what systemd gives ExecStopPost ($SERVICE_RESULT, $EXIT_CODE, $EXIT_STATUS);
    restart the unit's Restart= setting."""
    if job_type in RESTART_JOBS:
        return True
    if job_type not in (None, "start"):  # stop (systemctl stop, rpm -e, shutdown), ...
        return False
    # no job (or its start failed): the supervisor ended on its own. A clean exit is not
    # restarted; 78 (bad config) is in RestartPreventExitStatus=; other failures are,
    # unless Restart=no. (If the start limit stops that restart, hubsvc.service fails and
    # its OnFailure=hubsvc-stop.service stops the components.)
    if env.get("SERVICE_RESULT", "success") == "success":
        return False
    if env.get("EXIT_CODE") == "exited" and env.get("EXIT_STATUS") == "78":
        return False
    return restart != "no"


def _restart_setting() -> str:
    try:
        with _bus_timeout(JOB_QUERY_TIMEOUT_S), DBus() as bus:
            unit = bytes(bus.call_method(DEST, MANAGER_PATH, MANAGER, b"GetUnitByPID",
                                         apply_signature(b"u", [os.getpid()])).body)
            return _s(bus.get_property(DEST, unit, SERVICE, b"Restart", b"s"))
    except Exception:
        return "no"


async def _stop_all() -> list[str]:
    launcher = SystemdLauncher()
    try:
        return await launcher.stop_leftovers()
    finally:
        launcher.close()


def stop_post(env: Mapping[str, str]) -> int:
    """`hubsvc exec stop-post`, hubsvc.service's ExecStopPost: the supervisor is gone.
    Stop the component units unless a new supervisor follows to adopt or replace them —
    so a supervisor killed on its stop timeout leaves nothing running."""
    job = own_job_type()
    follows = successor_follows(job, env, _restart_setting())
    print(f"hubsvc stop-post: job={job or 'none'} result={env.get('SERVICE_RESULT', '?')} "
          f"-> {'component units left for the next supervisor' if follows else 'stopping component units'}",
          flush=True)
    if follows:
        return 0

    try:
        stopped = asyncio.run(_stop_all())
    except Exception as e:
        print(f"hubsvc stop-post: could not stop the component units: {e}", flush=True)
        return 1
    if stopped:
        print(f"hubsvc stop-post: stopped {' '.join(stopped)}", flush=True)
    return 0


def unit_view(bus: DBus, name: str) -> dict[str, Any]:
    """systemd's own view of a unit (for `hubsvc status`), over an open DBus."""
    path = _load_unit(bus, name)
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
                path = _load_unit(bus, name)
                state = _s(bus.get_property(DEST, path, UNIT, b"LoadState", b"s"))
                if state != "loaded":
                    return f"{name} is {state} (is the package installed completely?)"
    except Exception as e:
        return f"cannot talk to systemd over D-Bus: {e}"
    return None


# the doctor's port checks each component's own listeners answer to
_UNIT_PORTS = {"proxy": ("ports.public", "ports.api"), "hub": ("ports.hub",)}


def units_at_start(launcher: str, held: Sequence[str] = ()) -> set[str]:
    """`hubsvc run` under systemd, before its port preflight: the port checks to skip.
    Component units still running (the proxy kept across `systemctl restart hubsvc`) hold
    their own ports: with the systemd launcher the supervisor adopts or replaces them;
    with another launcher (the config switched launchers) they are stopped here. The
    components in `held` are this run's own held units (hubsvc.hubhold): not running
    yet, and holding no port."""
    running = {c: pid for c, pid in running_units().items() if c not in held}
    if launcher == "systemd" or not running:
        return {port for comp in running for port in _UNIT_PORTS[comp]}

    log.warning("stopping_component_units", units=sorted(running), launcher=launcher)
    try:
        asyncio.run(_stop_all())
    except Exception as e:  # the port preflight then names what holds the ports
        log.warning("component_units_not_stopped", error=str(e))
    return set()
