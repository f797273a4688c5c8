"""The hub held from the first milliseconds of `hubsvc run`: its unit under the systemd
launcher, a child of hubsvc under the process launcher.

The hub's start is mostly its interpreter importing JupyterHub (~1 s of ~1.3 s in the
RPM's bundle), and hubsvc.hold lets that happen before the hub may run. Started after
the config is validated, the preflight has passed and CHP's unit is started (~0.4-0.5 s
into `hubsvc run`), the held hub was still importing when CHP became ready, and READY
waited for it. So `hubsvc run` starts hubsvc-hub.service held first, ~0.05 s after its
exec, before pydantic is loaded, from the raw TOML: the hub's command line, environment
and working directory as the validated config will give them, for the keys that decide
them (`hub.command`, `hub.extra_args`, `paths`, `supervisor.launcher`).

It only loads JupyterHub's modules and waits (hubsvc.hold): it reads no configuration,
opens no database and binds no port until the supervisor's start of the hub releases it,
after CHP is proven ready, so the start order is kept. Nothing else happens before the
config is validated, but for the process launcher's opening of the hub's output file
(`state_dir/log/hub-output.log`, never rotated or followed through a link then: only
when both folders exist and pass the preflight's ownership checks, and the file is
missing or a regular file not due for rotation).

After validation (cli._unit_head_start) the command line, environment and working
directory are built again from the validated config and compared: anything different,
the launcher not being systemd, a check failing, CHP's unit not started, or hubsvc
ending first, stops it (`discard`; its FIFO is closed and unlinked, so the held process
ends by itself within hold._CHECK_S even if the stop is lost). Tried only for a plain
`hubsvc run` command line (argv.plain_run: nothing the parser would refuse or answer with
--help), and only when the hub's unit is inactive (a failed one keeps its status for the
admin until the supervisor's start) and CHP's is stopped: a proxy kept across a restart
of hubsvc is adopted first, as before.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import host
from .argv import DEFAULT_CONFIG as DEFAULT_CONFIG  # the constant tests compare
from .argv import config_path as early_config_path
from .argv import plain_run
from .commands import resolve_command

if TYPE_CHECKING:
    from .launch.process import HeadStart
    from .launch.unitstart import UnitHeadStart

# config.py's defaults and hubconfig.GENERATED_NAME (tests/unit/test_hubhold.py keeps
# them equal to what the validated config gives)
DEFAULT_HUB_COMMAND = "jupyterhub"
GENERATED_NAME = "jupyterhub_config.py"

DEFAULT_STATE_DIR = Path("/var/lib/hubsvc")
DEFAULT_RUNTIME_DIR = Path("/run/hubsvc")

# the hub held early: a unit (systemd launcher) or a child process (process launcher,
# with the output mode its sink was prepared for)
_unit: UnitHeadStart | None = None
_child: tuple[HeadStart, str] | None = None


def _sections(raw: dict[str, Any]) -> tuple[str, dict[str, Any], dict[str, Any]] | None:
    supervisor, hub, paths = raw.get("supervisor", {}), raw.get("hub", {}), raw.get("paths", {})
    if not all(isinstance(d, dict) for d in (supervisor, hub, paths)):
        return None
    launcher = supervisor.get("launcher", "auto")
    return (launcher, hub, paths) if isinstance(launcher, str) else None


def _paths(paths: dict[str, Any], base: Path) -> tuple[Path, Path] | None:
    """paths.state_dir and paths.runtime_dir as config.load gives them."""
    out = []
    for key, default in (("state_dir", DEFAULT_STATE_DIR), ("runtime_dir", DEFAULT_RUNTIME_DIR)):
        value = paths.get(key, str(default))
        if not isinstance(value, str) or not value:
            return None
        path = Path(value)  # as config._anchor_paths: absolute kept, relative resolved
        out.append(path if path.is_absolute() else (base / path).resolve())
    return out[0], out[1]


def _command(hub: dict[str, Any], base: Path, runtime_dir: Path) -> list[str] | None:
    """components.hub_command from the raw [hub] table."""
    command, extra = hub.get("command", DEFAULT_HUB_COMMAND), hub.get("extra_args", [])
    if not isinstance(command, str) or not isinstance(extra, list) \
            or not all(isinstance(a, str) for a in extra):
        return None
    # the config's strings are stripped of surrounding white space (str_strip_whitespace)
    command, extra = command.strip(), [a.strip() for a in extra]
    if not command:
        return None
    found = resolve_command(command, base)
    return [str(found or command), "--config", str(runtime_dir / GENERATED_NAME), *extra]


def guess(raw: dict[str, Any], config_path: Path, state_dir: Path,
          runtime_dir: Path) -> tuple[list[str], dict[str, str], Path] | None:
    """The hub's command line, environment and working directory under the systemd
    launcher, from the raw TOML `raw` (a sketch of components.hub_command and
    cli._hub_command; a wrong guess only costs the early start), or None: the file would
    not run the systemd launcher with the shipped paths."""
    sections = _sections(raw)
    if sections is None or sections[0] not in ("auto", "systemd"):
        return None
    _, hub, paths = sections
    base = config_path.resolve().parent  # config.load anchors relative paths there
    if _paths(paths, base) != (state_dir, runtime_dir):
        return None
    argv = _command(hub, base, runtime_dir)
    return (argv, host.child_env(), state_dir) if argv is not None else None


def guess_process(raw: dict[str, Any], config_path: Path,
                  log_mode: str) -> tuple[list[str], dict[str, str], Path, str] | None:
    """The same under the process launcher, with the output mode of the hub's sink
    (cli._output_mode), or None: the file would not run the process launcher (a fallback
    from "auto" under systemd is not guessed)."""
    sections = _sections(raw)
    if sections is None:
        return None
    launcher, hub, paths = sections
    if not (launcher == "process" or (launcher == "auto" and not host.started_by_systemd())):
        return None
    base = config_path.resolve().parent
    dirs = _paths(paths, base)
    argv = _command(hub, base, dirs[1]) if dirs is not None else None
    if dirs is None or argv is None:
        return None
    mode = "journal" if log_mode == "journal" else f"file:{dirs[0] / 'log'}"
    return argv, host.child_env(), dirs[0], mode


def _private(path: Path) -> bool:
    """A folder of this account that it may write to and no other may (preflight's checks
    of the state folder): the hub's output file may be opened in it before the preflight."""
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid() \
        and not st.st_mode & 0o022 and os.access(path, os.W_OK | os.X_OK)


def _usable_log(folder: Path) -> bool:
    """The hub's output file can be opened in `folder` as it is, changing nothing else:
    missing, or a regular file not due for rotation (output.Sink rotates it past
    ROTATE_BYTES; that waits for the preflight, which refuses a second instance)."""
    if not _private(folder):
        return False
    from .output import ROTATE_BYTES

    try:
        st = os.lstat(folder / "hub-output.log")
    except FileNotFoundError:
        return True
    except OSError:
        return False
    return stat.S_ISREG(st.st_mode) and st.st_size <= ROTATE_BYTES


def begin(argv: Sequence[str]) -> None:
    """`hubsvc run ARGV`: start the hub held, as a unit under systemd or as a child of
    this process (never raises: without it, the hub is held later)."""
    global _unit, _child
    if not plain_run(list(argv)):
        return  # a usage error, --help or an abbreviated option: nothing early
    config_path = early_config_path(argv)
    try:
        import tomllib

        raw = tomllib.loads(config_path.read_text())
        if host.started_by_systemd() and os.geteuid() == 0 \
                and os.path.isdir("/run/systemd/system"):  # launch.systemd.usable's own
            from .launch import unitstart

            command = guess(raw, config_path, unitstart.STATE_DIR, unitstart.RUNTIME_DIR)
            if command is not None:
                hub_argv, env, cwd = command
                _unit = unitstart.head_start("hub", hub_argv, cwd, env, unitstart.RUNTIME_DIR,
                                             hold=True, stopped=("proxy",), from_failed=False)
                return
        _child = _start_child(raw, config_path)
    except Exception:  # config.load says what is wrong with the file; nothing was started
        pass


def _start_child(raw: dict[str, Any], config_path: Path) -> tuple[HeadStart, str] | None:
    from .warm import early_log_mode

    command = guess_process(raw, config_path, early_log_mode())
    if command is None:
        return None
    hub_argv, env, cwd, mode = command
    if not _private(cwd) or (mode.startswith("file:") and not _usable_log(cwd / "log")):
        return None  # a first start, or one the preflight refuses: nothing before it
    from .hold import hold_argv

    if hold_argv(hub_argv) is None:
        return None  # not a script of this Python: nothing to hold, nothing opened
    from .launch.process import hold_start
    from .output import Sink

    sink = Sink("hub")
    held = None
    try:
        sink.prepare(mode)
        held = hold_start("hub", hub_argv, env, cwd, sink)
    finally:
        if held is None:
            sink.close()
    return (held, mode) if held is not None else None


def held_unit() -> bool:
    return _unit is not None


def take_unit() -> UnitHeadStart | None:
    """The held hub's unit, for cli._unit_head_start to compare and keep or stop."""
    global _unit
    early, _unit = _unit, None
    return early


def take_child() -> tuple[HeadStart, str] | None:
    """The held hub's process and its sink's output mode, for cli._head_start."""
    global _child
    early, _child = _child, None
    return early


def discard(launcher: str | None = None) -> None:
    """Stop what was held and not taken: all of it (`hubsvc run` ends, a check failed),
    or what `launcher` will not take."""
    unit = take_unit() if launcher != "systemd" else None
    if unit is not None:
        unit.stop()
    child = take_child() if launcher != "process" else None
    if child is not None:
        child[0].discard()
        child[0].sink.close()
