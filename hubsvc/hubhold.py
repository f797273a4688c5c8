"""The hub held from the first milliseconds of `hubsvc run`, under the systemd launcher.

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
config is validated.

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
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import host
from .argv import plain_run
from .commands import resolve_command

if TYPE_CHECKING:
    from .launch.unitstart import UnitHeadStart

# config.py's defaults and hubconfig.GENERATED_NAME (tests/unit/test_hubhold.py keeps
# them equal to what the validated config gives)
DEFAULT_CONFIG = "/etc/hubsvc/hubsvc.toml"
DEFAULT_HUB_COMMAND = "jupyterhub"
GENERATED_NAME = "jupyterhub_config.py"

_pending: UnitHeadStart | None = None


def guess(raw: dict[str, Any], config_path: Path, state_dir: Path,
          runtime_dir: Path) -> tuple[list[str], dict[str, str], Path] | None:
    """The hub's command line, environment and working directory under the systemd
    launcher, from the raw TOML `raw` (a sketch of components.hub_command and
    cli._hub_command; a wrong guess only costs the early start), or None: the file would
    not run the systemd launcher with the shipped paths."""
    supervisor, hub, paths = raw.get("supervisor", {}), raw.get("hub", {}), raw.get("paths", {})
    if not all(isinstance(d, dict) for d in (supervisor, hub, paths)):
        return None
    if supervisor.get("launcher", "auto") not in ("auto", "systemd"):
        return None
    base = config_path.resolve().parent  # config.load anchors relative paths there
    for key, shipped in (("state_dir", state_dir), ("runtime_dir", runtime_dir)):
        value = paths.get(key, str(shipped))
        if not isinstance(value, str) or not value:
            return None
        path = Path(value)  # as config._anchor_paths: absolute kept, relative resolved
        if (path if path.is_absolute() else (base / path).resolve()) != shipped:
            return None
    command, extra = hub.get("command", DEFAULT_HUB_COMMAND), hub.get("extra_args", [])
    if not isinstance(command, str) or not isinstance(extra, list) \
            or not all(isinstance(a, str) for a in extra):
        return None
    # the config's strings are stripped of surrounding white space (str_strip_whitespace)
    command, extra = command.strip(), [a.strip() for a in extra]
    if not command:
        return None
    found = resolve_command(command, base)
    argv = [str(found or command), "--config", str(runtime_dir / GENERATED_NAME), *extra]
    return argv, host.child_env(), state_dir


def begin(argv: Sequence[str]) -> None:
    """`hubsvc run ARGV` under systemd: start the hub's unit held, when the config file
    names the systemd launcher (never raises: without it, the hub is held later)."""
    global _pending
    if not host.started_by_systemd() or not plain_run(list(argv)):
        return  # a usage error, --help or an abbreviated option: nothing early
    if os.geteuid() != 0 or not os.path.isdir("/run/systemd/system"):
        return  # launch.systemd.usable says no
    from .warm import option_value

    config_path = Path(option_value(argv, "--config") or os.environ.get("HUBSVC_CONFIG")
                       or DEFAULT_CONFIG)
    try:
        import tomllib

        from .launch import unitstart

        raw = tomllib.loads(config_path.read_text())
        command = guess(raw, config_path, unitstart.STATE_DIR, unitstart.RUNTIME_DIR)
        if command is None:
            return
        hub_argv, env, cwd = command
        _pending = unitstart.head_start("hub", hub_argv, cwd, env, unitstart.RUNTIME_DIR,
                                        hold=True, stopped=("proxy",),
                                        from_failed=False)
    except Exception:  # config.load says what is wrong with the file; nothing was started
        _pending = None


def held() -> bool:
    return _pending is not None


def take() -> UnitHeadStart | None:
    """The held hub's unit, for cli._unit_head_start to compare and keep or stop."""
    global _pending
    early, _pending = _pending, None
    return early


def discard() -> None:
    """`hubsvc run` ends, or a check failed, before the held hub was taken."""
    early = take()
    if early is not None:
        early.stop()
