"""Starting a component's unit over D-Bus before the supervisor is loaded: pystemd's
sd-bus binding, the launch file a unit's `hubsvc exec` runs, and the head start
(`head_start`: CHP's unit right after the checks; the hub's, held, from the first
milliseconds of `hubsvc run`, hubsvc.hubhold).

Loads nothing but the standard library, pystemd's binding and hubsvc.hold: it runs
before pydantic, asyncio and structlog are imported. launch.systemd, the launcher
itself, builds on it.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..hold import ENV as HOLD_ENV
from ..hold import GO, hold_argv

if TYPE_CHECKING:
    from ..components import ComponentSpec

def dbuslib() -> Any:
    """pystemd's sd-bus binding (pystemd.dbuslib) alone. Importing it the usual way runs
    pystemd's package __init__, which also loads its introspection layer and lxml (~40 ms
    at every `hubsvc run` under systemd, before CHP's unit is started); hubsvc never uses
    them, so the package is registered without being run. Its submodules load as usual."""
    if "pystemd" not in sys.modules:
        spec = importlib.util.find_spec("pystemd")
        if spec is not None and spec.submodule_search_locations is not None:
            sys.modules["pystemd"] = importlib.util.module_from_spec(spec)
    from pystemd import dbuslib as lib

    return lib


_lib = dbuslib()
DBus, apply_signature = _lib.DBus, _lib.apply_signature

DEST = b"org.freedesktop.systemd1"
MANAGER_PATH = b"/org/freedesktop/systemd1"
MANAGER = b"org.freedesktop.systemd1.Manager"
UNIT = b"org.freedesktop.systemd1.Unit"
SERVICE = b"org.freedesktop.systemd1.Service"
PROPS = b"org.freedesktop.DBus.Properties"
JOB = b"org.freedesktop.systemd1.Job"


UNITS = {"proxy": "hubsvc-proxy.service", "hub": "hubsvc-hub.service"}
RUNTIME_DIR = Path("/run/hubsvc")  # where the shipped units load their credentials from
STATE_DIR = Path("/var/lib/hubsvc")
BUS_TIMEOUT_S = 5.0


def as_str(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


@contextlib.contextmanager
def bus_timeout(seconds: float) -> Iterator[None]:
    """sd-bus reads $SYSTEMD_BUS_TIMEOUT at a connection's first method call and keeps it for
    that connection (pystemd exposes no setter). pystemd holds the GIL during a call, so
    a thread cannot bound it: the connection itself must."""
    old = os.environ.get("SYSTEMD_BUS_TIMEOUT")
    os.environ["SYSTEMD_BUS_TIMEOUT"] = f"{seconds:g}s"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("SYSTEMD_BUS_TIMEOUT", None)
        else:
            os.environ["SYSTEMD_BUS_TIMEOUT"] = old


def load_unit(bus: DBus, name: str) -> bytes:
    return bytes(bus.call_method(DEST, MANAGER_PATH, MANAGER, b"LoadUnit",
                                 apply_signature(b"s", [name.encode()])).body)


def launch_doc(argv: list[str], cwd: Path, env: Mapping[str, str]) -> dict[str, Any]:
    """The command line `hubsvc exec` runs inside the unit (no secret in it), and the
    version of the program it names: an upgrade that brings another CHP must not adopt
    the old one (same path, new files on disk). As read back from its file (JSON)."""
    return json.loads(json.dumps({
        "argv": list(argv), "cwd": str(cwd),
        "env": {k: v for k, v in env.items() if k in ("PATH", "LANG", "LC_ALL")},
        "version": program_version(argv[0])}))


def write_launch(runtime_dir: Path, component: str, doc: dict[str, Any]) -> Path:
    path = runtime_dir / f"{component}.launch.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc))
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
    return path


class UnitHeadStart:
    """A component unit `hubsvc run` started before its supervisor was loaded (CHP's head
    start with this launcher; the hub's, held), and the launch file it was started with
    (for a held one, what it runs once released)."""

    def __init__(self, component: str, doc: dict[str, Any], started_at: float, go: int = -1,
                 fifo: Path | None = None):
        self.name, self.doc, self.started_at = component, doc, started_at
        self.unit = UNITS[component]
        # held (hubsvc.hold): the FIFO it waits on, open for writing; kept open until this
        # hubsvc ends, so the byte stays even if the held process opens it after the write
        self.go, self.fifo = go, fifo

    def release(self) -> bool:
        """Let a held unit run (one started for real: nothing to do)."""
        if self.go < 0:
            return True
        try:
            os.write(self.go, GO)
            return True
        except OSError:
            return False

    def close(self) -> None:
        """Let go of the FIFO: closed, and unlinked while it is still this one (a held
        process that opened it only now sees no end of it, but sees it gone)."""
        if self.go >= 0:
            _unlink_fifo(self.fifo, self.go)
            os.close(self.go)
            self.go = -1

    def differs(self, spec: ComponentSpec) -> list[str]:
        """What the supervisor's start would run differently (launch file keys, never
        values); empty when it may take this unit."""
        return self.differs_from(spec.argv, spec.cwd, spec.env)

    def differs_from(self, argv: list[str], cwd: Path, env: Mapping[str, str]) -> list[str]:
        doc = launch_doc(argv, cwd, env)
        return sorted(k for k in doc.keys() | self.doc.keys() if doc.get(k) != self.doc.get(k))

    def stop(self) -> str | None:
        """Not taken: close its FIFO (a held process then ends by itself) and stop the
        unit without waiting for the job; why it could not be stopped, or None."""
        self.close()
        try:
            with bus_timeout(BUS_TIMEOUT_S), DBus() as bus:
                bus.call_method(DEST, MANAGER_PATH, MANAGER, b"StopUnit",
                                apply_signature(b"ss", [self.unit.encode(), b"replace"]))
        except Exception as e:  # hubsvc.service's ExecStopPost stops it then
            return f"{type(e).__name__}: {e}"
        return None


def head_start(component: str, argv: list[str], cwd: Path, env: Mapping[str, str],
               runtime_dir: Path = RUNTIME_DIR, hold: bool = False,
               stopped: Sequence[str] = (), from_failed: bool = True,
               failed: Callable[[str, str], None] | None = None) -> UnitHeadStart | None:
    """Start the component's unit now, with the launch file the supervisor's first start
    would write, without waiting for systemd's job (SystemdLauncher.start takes the unit).
    With `hold`, the command line runs under hubsvc.hold: it loads its modules and waits
    for the supervisor's start to release it; None if it cannot be held. Only from a
    stopped unit (inactive or failed), and only while the components in `stopped` are
    stopped too: one still running (kept across a restart of hubsvc) is the supervisor's
    to adopt or replace. Without `from_failed`, not from a failed unit either (its
    failure is reset by the start). None then, or on any D-Bus or file error, which `failed(unit,
    error)` is told (the supervisor's own start does it, and says why)."""
    name = UNITS[component]
    doc = launch_doc(argv, cwd, env)
    run_doc, go, fifo = doc, -1, None
    if hold:
        held = hold_argv(argv)
        if held is None:
            return None
        run_doc = launch_doc(held, cwd, env)
    try:
        with bus_timeout(BUS_TIMEOUT_S), DBus() as bus:
            state = ""
            for comp in (*stopped, component):
                path = load_unit(bus, UNITS[comp])
                state = as_str(bus.get_property(DEST, path, UNIT, b"ActiveState", b"s"))
                if state not in ("inactive", "failed"):
                    return None
            if state == "failed" and not from_failed:
                return None  # its failure stays in `systemctl status` for the supervisor
            if hold:
                fifo = runtime_dir / f"{component}.hold"
                fifo.unlink(missing_ok=True)
                os.mkfifo(fifo, 0o600)
                # read-write: never blocks, and the FIFO keeps what is written until the
                # held process reads it
                go = os.open(fifo, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
                run_doc["env"][HOLD_ENV] = str(fifo)
            write_launch(runtime_dir, component, run_doc)
            if state == "failed":
                bus.call_method(DEST, MANAGER_PATH, MANAGER, b"ResetFailedUnit",
                                apply_signature(b"s", [name.encode()]))
            started_at = time.monotonic()
            bus.call_method(DEST, MANAGER_PATH, MANAGER, b"StartUnit",
                            apply_signature(b"ss", [name.encode(), b"replace"]))
    except Exception as e:
        if go >= 0:
            _unlink_fifo(fifo, go)
            os.close(go)
        if failed is not None:
            failed(name, f"{type(e).__name__}: {e}")
        return None
    return UnitHeadStart(component, doc, started_at, go, fifo)


def _unlink_fifo(path: Path | None, fd: int) -> None:
    try:
        if path is not None and os.path.samestat(os.stat(path, follow_symlinks=False),
                                                 os.fstat(fd)):
            path.unlink()
    except OSError:
        pass


def program_version(program: str) -> str | None:
    """"name version" of the npm package a program comes from (CHP's bin script sits in
    node_modules/configurable-http-proxy/bin/), None for anything else."""
    try:
        path = Path(program).resolve()
    except OSError:
        return None
    for parent in list(path.parents)[:2]:
        doc = read_json(parent / "package.json")
        if isinstance(doc, dict) and doc.get("name") and doc.get("version"):
            return f"{doc['name']} {doc['version']}"
    return None


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None
