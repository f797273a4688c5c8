"""status.json in runtime_dir: what the running supervisor publishes for `hubsvc status`.

Written atomically on every state change. It names the supervisor's pid, so a file left
by a supervisor that was killed is recognised as stale.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from . import host

FILE = "status.json"
COMPONENT_STATES = ("starting", "ready", "restarting", "backoff", "stopping", "stopped", "failed")


def write(runtime_dir: Path, doc: dict[str, Any]) -> None:
    """Atomically replace status.json (0644: `hubsvc status` works for every account; it
    holds no secret). The writer's start time goes with its pid."""
    doc = {**doc, "updated_at": time.time()}
    if doc.get("pid") == os.getpid():
        doc["pid_start_time"] = host.start_time(os.getpid())
    data = (json.dumps(doc, indent=1, sort_keys=True) + "\n").encode()
    tmp = runtime_dir / f".{FILE}.{os.getpid()}.tmp"
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    try:
        os.write(fd, data)
        os.fchmod(fd, 0o644)
    finally:
        os.close(fd)
    os.replace(tmp, runtime_dir / FILE)


def read(runtime_dir: Path) -> dict[str, Any] | None:
    try:
        return json.loads((runtime_dir / FILE).read_text())
    except (OSError, ValueError):
        return None


def pid_is_supervisor(pid: int, start_time: int | None) -> bool:
    """True when the process that wrote the status file is still running: same pid and
    same start time. A pid reused by any other process (even another hubsvc) differs in
    start time; a file without a start time is not trusted."""
    if not isinstance(pid, int) or not isinstance(start_time, int):
        return False
    return host.start_time(pid) == start_time


def supervisor_running(doc: dict[str, Any]) -> bool:
    """`doc` (status.json) was written by a supervisor that still runs."""
    return pid_is_supervisor(doc.get("pid"), doc.get("pid_start_time"))  # type: ignore[arg-type]


def add_unit_views(doc: dict[str, Any]) -> None:
    """systemd's own view of each component unit, read now through pystemd."""
    try:
        from .launch.systemd import UNITS, DBus, unit_view

        with DBus() as bus:
            for comp, name in UNITS.items():
                doc.setdefault("components", {}).setdefault(comp, {})["systemd"] = unit_view(bus, name)
    except Exception as e:  # systemd's view is extra: never fail `status` for it
        doc["systemd_error"] = str(e)


def render_table(doc: dict[str, Any], running: bool) -> str:
    lines = []
    state = doc.get("state", "?") if running else f"not running (last state: {doc.get('state', '?')})"
    lines.append(f"hubsvc  pid {doc.get('pid')}  {state}  ready={'yes' if doc.get('ready') else 'no'}")
    if doc.get("public_url"):
        lines.append(f"users open: {doc['public_url']}")
    if doc.get("tls"):
        lines.append(tls_line(doc["tls"]))
    if doc.get("failure"):
        f = doc["failure"]
        lines.append(f"gave up on {f.get('component')}: {f.get('reason')}")
    lines.append("")
    lines.append(f"{'COMPONENT':<10} {'PID':>8}  {'STATE':<11} {'RESTARTS':>8}  LAST FAILURE")
    for name, c in doc.get("components", {}).items():
        lf = c.get("last_failure") or "-"
        if c.get("last_failure_at"):
            lf += time.strftime("  (%Y-%m-%d %H:%M:%S)", time.localtime(c["last_failure_at"]))
        pid = c.get("pid") or "-"
        lines.append(f"{name:<10} {pid!s:>8}  {c.get('state', '?'):<11} {c.get('restarts', 0):>8}  {lf}")
        if c.get("systemd"):
            u = c["systemd"]
            lines.append(f"{'':<10} {'':>8}  systemd: {u['unit']} {u['active_state']}/{u['sub_state']}"
                         f" MainPID={u['main_pid']} NRestarts={u['n_restarts']}")
    for key, title in (("probe", "last probe"), ("redirect_loops", "redirect loops")):
        if doc.get(key):
            lines.append(f"{title}: {json.dumps(doc[key])}")
    if doc.get("scheduler"):
        from .slurm import status_lines  # httpx: only when a scheduler is in the status

        lines += status_lines(doc["scheduler"])
    return "\n".join(lines)


def tls_line(t: dict[str, Any]) -> str:
    """The certificate CHP serves: `certificate: valid until … (N days), names …`."""
    if t.get("error"):
        return f"certificate ({t.get('mode')}): {t['error']}"
    warn = {"expiring": "  WARNING: renew it", "expired": "  ERROR: browsers refuse it"}
    line = (f"certificate ({t.get('mode')}): {t.get('summary')}, for "
            f"{', '.join(t.get('names') or []) or '?'}{warn.get(t.get('expiry', ''), '')}")
    acme = t.get("acme") or {}
    if acme.get("last_error"):
        line += f"\n  ACME: last attempt failed: {acme['last_error']}"
    if acme.get("next_attempt_at"):
        line += time.strftime("\n  ACME: next attempt %Y-%m-%d %H:%M:%S",
                              time.localtime(acme["next_attempt_at"]))
    return line
