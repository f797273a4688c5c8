"""Read the flow-deciding parts of the effective JupyterHub config (the admin's file as
the hub loads it; hubsvc's own generated settings never touch these keys).

The admin's file is Python and may do anything, so it is executed in a child interpreter
(hubsvc's own, which has traitlets), never in the process that asks: the supervisor's
periodic probe must not import whatever the file imports, nor wait on it."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from typing import Any

from .. import host
from ..config import Config
from .model import FlowSettings

TIMEOUT_S = 20.0

_LOADER = r'''
import json, os, sys
from traitlets.config.loader import PyFileConfigLoader
path = sys.argv[1]
cfg = PyFileConfigLoader(os.path.basename(path), path=os.path.dirname(path)).load_config()
def get(sections, key, default):
    for s in sections:
        if s in cfg and key in cfg[s]:
            return cfg[s][key]
    return default
jh = ("JupyterHub",)
tornado = get(jh, "tornado_settings", {}) or {}
opts = tornado.get("cookie_options", {}) if isinstance(tornado, dict) else {}
du = get(jh, "default_url", None)
sdu = get(("Spawner", "LocalProcessSpawner", "SimpleLocalProcessSpawner"), "default_url", None)
out = {
    "default_url": du if isinstance(du, str) and du else None,
    "public_url": get(jh, "public_url", None) or None,
    "cookie_options": {str(k): v for k, v in opts.items()
                       if isinstance(v, (str, int, float, bool, type(None)))}
                      if isinstance(opts, dict) else {},
    "spawner_default_url": sdu if isinstance(sdu, str) else None,
    "redirect_to_server": bool(get(jh, "redirect_to_server", True)),
    "cookie_host_prefix": bool(get(jh, "cookie_host_prefix_enabled", False)),
    "cookie_max_age_days": float(ma) if isinstance(
        ma := get(jh, "cookie_max_age_days", None), (int, float)) else None,
}
print("\n" + json.dumps(out))
'''


def _parse(path: str, rc: int | None, out: str, err: str) -> tuple[FlowSettings | None, str | None]:
    if rc != 0:
        last = (err.strip().splitlines() or ["no output"])[-1]
        return None, f"{path}: {last[:300]}"
    try:
        data: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return None, f"{path}: unexpected output from the config loader"
    return FlowSettings(**data, source=path), None


def load(cfg: Config) -> tuple[FlowSettings | None, str | None]:
    """(settings, None) or (None, why they could not be read)."""
    path = cfg.hub.config_file
    if path is None:
        return FlowSettings(), None
    r = host.run([sys.executable, "-c", _LOADER, str(path)], TIMEOUT_S)
    return _parse(str(path), r.rc, r.out, r.err)


async def load_async(cfg: Config) -> tuple[FlowSettings | None, str | None]:
    """load() without blocking the event loop."""
    path = cfg.hub.config_file
    if path is None:
        return FlowSettings(), None
    try:
        p = await asyncio.create_subprocess_exec(
            sys.executable, "-c", _LOADER, str(path), stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    except OSError as e:
        return None, f"{path}: {type(e).__name__}: {e}"
    try:
        out, err = await asyncio.wait_for(p.communicate(), TIMEOUT_S)
    except TimeoutError:
        p.kill()
        await p.wait()
        return None, f"{path}: the config loader did not finish in {TIMEOUT_S:.0f} s"
    return _parse(str(path), p.returncode, out.decode(errors="replace"),
                  err.decode(errors="replace"))
