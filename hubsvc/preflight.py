"""Checks of the machine before anything starts: programs, folders, files, ports.

Each failure is a `Problem` naming the config field (or path), what is wrong and the fix.
Nothing here changes the system except creating state_dir/runtime_dir when missing.
"""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path

from . import ports
from .commands import bundled_dirs, resolve_command, search_path
from .config import Config, Endpoint, Problem


def _dir_problem(field: str, path: Path, mode: int) -> Problem | None:
    try:
        path.mkdir(parents=True, exist_ok=True, mode=mode)
    except PermissionError:
        return Problem(field, f"{path} cannot be created by uid {os.geteuid()}",
                       "create it as root and give it to the account that runs hubsvc "
                       "(chown), or choose another path")
    except FileExistsError:
        return Problem(field, f"{path} exists and is not a directory", "remove it or choose another path")
    except OSError as e:
        return Problem(field, f"{path} cannot be created: {e.strerror}", "choose another path")
    if not path.is_dir():
        return Problem(field, f"{path} is not a directory", "remove it or choose another path")
    try:
        with tempfile.NamedTemporaryFile(dir=path, prefix=".hubsvc-write-test-"):
            pass
    except OSError as e:
        reason = "is on a read-only file system" if e.errno == errno.EROFS else "is not writable"
        return Problem(field, f"{path} {reason} for uid {os.geteuid()}",
                       "give the account that runs hubsvc write access to it (chown to that "
                       "account; never chmod 777), or choose another path")
    return None


def _command_problem(field: str, name: str, base: Path | None, what: str) -> Problem | None:
    path = resolve_command(name, base)
    if path is not None:
        return _interpreter_problem(field, path)
    where = ", ".join(str(d) for d in bundled_dirs())
    if "/" in name:
        return Problem(field, f"{name!r} ({what}) does not exist or is not executable",
                       f"install {what} there or set {field} to the right absolute path")
    return Problem(field, f"{name!r} ({what}) was not found on PATH or in hubsvc's own "
                          f"directories ({where})",
                   f"install {what} or set {field} to its absolute path")


def _interpreter_problem(field: str, path: Path) -> Problem | None:
    """A script whose '#!/usr/bin/env X' interpreter cannot be found (node for CHP)."""
    try:
        with open(path, "rb") as f:
            first = f.readline(200)
    except OSError as e:
        return Problem(field, f"{path} cannot be read: {e.strerror}", "fix its permissions")
    if first.startswith(b"#!/usr/bin/env "):
        interp = first[len(b"#!/usr/bin/env "):].split()[0].decode(errors="replace")
        if resolve_command(interp) is None:
            return Problem(field, f"{path} needs {interp!r}, which is not on PATH ({search_path()})",
                           f"install {interp} (for CHP: nodejs >= 18) or put it on PATH")
    return None


def static_problems(cfg: Config) -> list[Problem]:
    """What check-config reports: everything but ports (a running hubsvc holds those)."""
    base = cfg.source.parent if cfg.source else None
    found = [
        _dir_problem("paths.state_dir", cfg.paths.state_dir, 0o700),
        _dir_problem("paths.runtime_dir", cfg.paths.runtime_dir, 0o755),
        _command_problem("proxy.command", cfg.proxy.command, base, "configurable-http-proxy"),
        _command_problem("hub.command", cfg.hub.command, base, "JupyterHub"),
    ]
    cf = cfg.hub.config_file
    if cf is not None:
        if not cf.exists():
            found.append(Problem("hub.config_file", f"{cf} does not exist",
                                 "create it (it may be empty) or set hub.config_file = \"\""))
        elif not cf.is_file():
            found.append(Problem("hub.config_file", f"{cf} is not a file", "point it at a Python file"))
        elif not os.access(cf, os.R_OK):
            found.append(Problem("hub.config_file", f"{cf} cannot be read by uid {os.geteuid()}",
                                 "make it readable by the account that runs the hub "
                                 "(chown/chgrp and chmod 640), not world-writable"))
    return [p for p in found if p is not None]


def _endpoints(cfg: Config) -> list[tuple[str, Endpoint]]:
    return [("proxy.public_url", cfg.public), ("proxy.api_url", cfg.api),
            ("hub.bind_url", cfg.hub_bind)]


def port_problems(cfg: Config, only_changed_from: Config | None = None) -> list[Problem]:
    """Addresses that cannot be listened on. With `only_changed_from` (a reload), only the
    addresses that differ from the running config are checked: the others are ours."""
    out: list[Problem] = []
    running = {(ep.host, ep.port) for _, ep in _endpoints(only_changed_from)} if only_changed_from else set()
    for field, ep in _endpoints(cfg):
        if (ep.host, ep.port) in running:
            continue
        err = ports.bind_error(ep.host, ep.port)
        if err is None:
            continue
        if err.errno == errno.EADDRINUSE:
            holder = ports.port_holder(ep.host, ep.port)
            who = holder.describe() if holder else "another process"
            out.append(Problem(field, f"port {ep.port} on {ep.host} is in use by {who}",
                               "stop that process, or choose a free port for this field"))
        elif err.errno == errno.EADDRNOTAVAIL:
            out.append(Problem(field, f"{ep.host} is not an address of this machine",
                               "use an address this host has (see `ip addr`), 0.0.0.0 or 127.0.0.1"))
        elif err.errno == errno.EACCES:
            out.append(Problem(field, f"port {ep.port} needs privileges this account lacks",
                               "use a port >= 1024, or run hubsvc as root"))
        else:
            out.append(Problem(field, f"cannot listen on {ep.host}:{ep.port}: {err.strerror or err}",
                               "choose another address or port"))
    return out
