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

FILE = "status.json"
COMPONENT_STATES = ("starting", "ready", "restarting", "backoff", "stopping", "stopped", "failed")


def write(runtime_dir: Path, doc: dict[str, Any]) -> None:
    doc = {**doc, "updated_at": time.time()}
    tmp = runtime_dir / f".{FILE}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
    os.chmod(tmp, 0o644)
    os.replace(tmp, runtime_dir / FILE)


def read(runtime_dir: Path) -> dict[str, Any] | None:
    try:
        return json.loads((runtime_dir / FILE).read_text())
    except (OSError, ValueError):
        return None


def pid_is_supervisor(pid: int) -> bool:
    """True when `pid` is alive and is a hubsvc process (not a reused pid)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"hubsvc" in cmdline


def add_unit_views(doc: dict[str, Any]) -> None:
    """systemd's own view of each component unit, read now through pystemd."""
    try:
        from pystemd.dbuslib import DBus

        from .launch.systemd import UNITS, unit_view

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
        from .slurm import status_lines

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
