"""The hub's view of the admin's JupyterHub config, asked once: `hubside.py` (in this
folder) run by path with the hub's own Python. Used by the doctor (jupyterhub, scheduler
and systemd groups), by the reload's check of the admin's file and by the start-up check
of users' servers (survival)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .. import host
from ..commands import resolve_command, search_path
from ..config import OWNED, Config

SCRIPT = Path(__file__).with_name("hubside.py")
TIMEOUT_S = 30.0

# The probe's answer (see hubside.py for its keys), or why there is none.
Probe = dict[str, Any] | str


def hub_python(prog: Path, search: str) -> Path | None:
    """The Python that runs the jupyterhub script `prog` (its '#!' line), or None."""
    py = host.interpreter(prog, search)
    return py if py is not None and "python" in py.name else None


def python_of(cfg: Config, search: str | None = None) -> Path | None:
    """The hub's Python for this config: hub.command resolved, then its interpreter."""
    search = search if search is not None else search_path()
    prog = resolve_command(cfg.hub.command, cfg.source.parent if cfg.source else None, search)
    return hub_python(prog, search) if prog is not None else None


def run(cfg: Config, py: Path, search: str | None = None, *, only: str | None = None) -> Probe:
    """Load the admin's config in `py` and report (a str: why the probe gave no answer).
    `only="flow"`: just the redirect-deciding settings, without importing JupyterHub."""
    cfile = cfg.hub.config_file
    args: dict[str, Any] = {"config_file": str(cfile) if cfile and cfile.is_file() else "",
                            "owned": OWNED}
    if only:
        args["only"] = only
    # the hub runs in state_dir: a relative path the admin's file opens is found there
    sd = cfg.paths.state_dir
    cwd = sd if os.path.isdir(sd) and os.access(sd, os.X_OK) else None
    r = host.run([str(py), str(SCRIPT), json.dumps(args)], TIMEOUT_S,
                 env=host.child_env(search), cwd=cwd)
    if r.rc is None:  # did not start or did not finish: err names py and says why
        return r.err
    if not r.ok:
        return f"{py} exited {r.rc}: {r.why(500)}"
    try:
        return dict(json.loads(r.out.strip().splitlines()[-1]))
    except (ValueError, IndexError):
        return f"unexpected output from {py}: {r.out[-300:]!r} {r.err[-300:]!r}"


def spawner_mro(probe: Probe) -> list[str]:
    if isinstance(probe, str):
        return []
    return list((probe.get("spawner") or {}).get("mro") or [])
