"""Reload as a transaction, the parts outside the supervisor's loop.

- `check_admin_config`: before anything is touched, the admin's JupyterHub config is
  loaded by the hub's own Python in a child process (doctor's hub probe), so a typo is
  refused with its file:line instead of killing the running hub.
- `request`: what `hubsvc reload` (and `ExecReload=`) does: SIGHUP the running supervisor
  and wait for *its* reload's outcome in status.json's `last_reload`.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from . import status
from .config import Config, Problem
from .doctor import hubprobe

EX_OK = 0
EX_FAIL = 1
EX_NOT_RUNNING = 3


def check_admin_config(cfg: Config) -> Problem | None:
    """The admin's JupyterHub config file, loaded by the hub's Python: None when it loads
    (or when there is no such file or no way to tell which Python runs the hub)."""
    cfile = cfg.hub.config_file
    if cfile is None:
        return None
    if not cfile.is_file():
        return Problem("hub.config_file", f"{cfile} does not exist or is not a file",
                       "create it or correct hub.config_file")
    py = hubprobe.python_of(cfg)
    if py is None:
        return None  # cannot tell; a hub that then fails to start is rolled back
    probe = hubprobe.run(cfg, py)
    if isinstance(probe, str):
        return Problem("hub.command", f"the hub's Python cannot load the config: {probe}",
                       "run `hubsvc doctor`")
    le = probe.get("load_error")
    if not le:
        return None
    where = f"{cfile}:{le['line']}" if le.get("line") else str(cfile)
    return Problem("hub.config_file", f"{where}: {le['type']}: {le['message']}",
                   f"fix {where}, then reload again; the running hub keeps the previous one")


# ---- the client side: `hubsvc reload` -------------------------------------------------
def request(runtime_dir: Path, timeout: float, out: TextIO = sys.stdout,
            err: TextIO = sys.stderr) -> int:
    """SIGHUP the supervisor named by status.json and wait for the outcome of a reload
    that started after the signal was sent. 0 applied, 1 refused/rolled back/no outcome
    in time, 3 no supervisor running."""
    doc = status.read(runtime_dir)
    pid = doc.get("pid") if doc else None
    if (not isinstance(pid, int) or not doc or not status.supervisor_running(doc)
            or doc.get("state") in ("stopped", "failed")):
        print(f"hubsvc reload: no running supervisor (status file {runtime_dir / status.FILE})",
              file=err)
        return EX_NOT_RUNNING
    sent_at = time.time()
    try:
        os.kill(pid, signal.SIGHUP)
    except ProcessLookupError:
        print(f"hubsvc reload: supervisor pid {pid} is gone", file=err)
        return EX_NOT_RUNNING
    except PermissionError:
        print(f"hubsvc reload: not allowed to signal pid {pid}; run as the service's user "
              "or root", file=err)
        return EX_FAIL
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        doc = status.read(runtime_dir) or {}
        lr = doc.get("last_reload") or {}
        if (isinstance(lr.get("started_at"), int | float) and lr["started_at"] >= sent_at
                and lr.get("outcome") not in (None, "in_progress")):
            return _report(lr, out, err)
        if doc.get("pid") == pid and not status.supervisor_running(doc):
            print(f"hubsvc reload: the supervisor (pid {pid}) exited during the reload", file=err)
            return EX_NOT_RUNNING
        time.sleep(0.1)
    print(f"hubsvc reload: no outcome within {timeout:g}s (see `hubsvc status`)", file=err)
    return EX_FAIL


def _report(lr: dict[str, Any], out: TextIO, err: TextIO) -> int:
    outcome = lr["outcome"]
    if outcome == "applied":
        restarted = lr.get("restarted") or []
        print(f"reload {lr.get('id')}: applied; restarted: {', '.join(restarted) or 'nothing'}",
              file=out)
        return EX_OK
    if outcome == "refused":
        print(f"reload {lr.get('id')}: refused; still running the previous configuration",
              file=err)
        for p in lr.get("problems") or [lr.get("reason")]:
            print(f"  {p}", file=err)
    elif outcome == "rolled_back":
        print(f"reload {lr.get('id')}: rolled back to the previous configuration: "
              f"{lr.get('reason')}", file=err)
    else:
        print(f"reload {lr.get('id')}: {outcome}: {lr.get('reason')}", file=err)
    return EX_FAIL
