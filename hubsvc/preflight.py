"""Checks of the machine before anything starts: folders, then the doctor's cheap checks
(programs, files, secrets, ports) — the same words `hubsvc doctor` uses.

Each failure is a `Problem` naming the config field or check, what is wrong and the fix.
Nothing here changes the system except creating state_dir/runtime_dir when missing.
"""

from __future__ import annotations

import errno
import os
import stat
import tempfile
from pathlib import Path

from .config import Config, Problem
from .doctor.finding import Finding, blocking
from .doctor.quick import port_findings, preflight_findings


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


def _ownership_problem(field: str, path: Path) -> Problem | None:
    """A state or runtime folder another account owns or may write to is refused: whoever
    can write there can replace the secrets, the hub database or status.json."""
    try:
        st = path.stat()
    except OSError as e:
        return Problem(field, f"{path} cannot be examined: {e.strerror}", "choose another path")
    uid = os.geteuid()
    if st.st_uid != uid:
        return Problem(field, f"{path} is owned by uid {st.st_uid}, not by uid {uid} that "
                       "runs hubsvc: that account could replace hubsvc's secrets and state",
                       f"chown {uid} {path} (if it is meant for hubsvc), or choose another path")
    if stat.S_IMODE(st.st_mode) & 0o022:
        return Problem(field, f"{path} has mode {stat.S_IMODE(st.st_mode):04o}: other "
                       "accounts can create or replace files in it",
                       f"chmod go-w {path}")
    return None


def _problem(f: Finding) -> Problem:
    return Problem(f.id, f.what, f.fix, evidence=f.evidence)


def ensure_dirs(cfg: Config) -> list[Problem]:
    out: list[Problem] = []
    for field, path, mode in (("paths.state_dir", cfg.paths.state_dir, 0o700),
                              ("paths.runtime_dir", cfg.paths.runtime_dir, 0o755)):
        p = _dir_problem(field, path, mode) or _ownership_problem(field, path)
        if p is not None:
            out.append(p)
    return out


def static_problems(cfg: Config) -> list[Problem]:
    """What check-config reports: folders (created when missing), then the doctor's cheap
    checks that make a start pointless — everything but ports (a running hubsvc holds
    those)."""
    out = ensure_dirs(cfg)
    if out:
        return out
    return [_problem(f) for f in blocking(preflight_findings(cfg))
            if f.group != "ports"]


def run_problems(cfg: Config) -> list[Problem]:
    """Everything `hubsvc run` checks before it starts anything: `static_problems` and
    `port_problems` together, from one pass of the doctor's checks (each port is looked
    up once: reading every socket on a busy host is the slowest check of all)."""
    out = ensure_dirs(cfg)
    if out:
        return out + port_problems(cfg)
    return [_problem(f) for f in blocking(preflight_findings(cfg))]


_PORT_IDS = {"ports.public": "public", "ports.api": "api", "ports.hub": "hub_bind"}


def port_problems(cfg: Config, only_changed_from: Config | None = None) -> list[Problem]:
    """Addresses that cannot be listened on (the doctor's words: who holds the port).
    With `only_changed_from` (a reload), only addresses that differ from the running config
    are checked: the others are ours."""
    out = []
    for f in blocking(port_findings(cfg)):
        attr = _PORT_IDS.get(f.id)
        if attr and only_changed_from is not None:
            new, old = getattr(cfg, attr), getattr(only_changed_from, attr)
            if (new.host, new.port) == (old.host, old.port):
                continue
        out.append(_problem(f))
    return out
