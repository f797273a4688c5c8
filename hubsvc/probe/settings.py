"""Read the flow-deciding parts of the effective JupyterHub config (the admin's file as
the hub loads it; hubsvc's own generated settings never touch these keys).

The admin's file is Python and may do anything, so it is executed in a child interpreter,
never in the process that asks: the supervisor's periodic probe must not import whatever
the file imports, nor wait on it. The child is the one hub-side program
(hubsvc/doctor/hubside.py, asked for `flow` only) run with the hub's own Python, in the
hub's working directory; the doctor gets the same answer from its one full run of it."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from ..config import Config
from ..doctor import hubprobe
from .model import FlowSettings


def from_probe(cfg: Config, probe: hubprobe.Probe) -> tuple[FlowSettings | None, str | None]:
    """The settings out of a hub probe's answer: (settings, None) or (None, why not)."""
    path = str(cfg.hub.config_file)
    if isinstance(probe, str):
        return None, f"{path}: {probe[:300]}"
    flow = probe.get("flow")
    if not isinstance(flow, dict):
        err = probe.get("load_error") or {}
        where = f" (line {err['line']})" if err.get("line") else ""
        return None, f"{path}{where}: {err.get('type', 'error')}: {err.get('message', '')}"[:400]
    return FlowSettings(**flow, source=path), None


def load(cfg: Config) -> tuple[FlowSettings | None, str | None]:
    """(settings, None) or (None, why they could not be read)."""
    if cfg.hub.config_file is None:
        return FlowSettings(), None
    # the hub's Python when it can be found; hubsvc's own (which has traitlets) otherwise
    py = hubprobe.python_of(cfg) or Path(sys.executable)
    return from_probe(cfg, hubprobe.run(cfg, py, only="flow"))


async def load_async(cfg: Config) -> tuple[FlowSettings | None, str | None]:
    """load() without blocking the event loop (the child's wait runs in a worker thread)."""
    return await asyncio.to_thread(load, cfg)
