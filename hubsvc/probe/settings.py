"""Read the flow-deciding parts of the effective JupyterHub config (the admin's file as
the hub loads it; hubsvc's own generated settings never touch these keys)."""

from __future__ import annotations

from typing import Any

from ..config import Config
from .model import FlowSettings


def _get(cfg: Any, sections: tuple[str, ...], key: str, default: Any) -> Any:
    for s in sections:
        if s in cfg and key in cfg[s]:
            return cfg[s][key]
    return default


def from_traitlets(tcfg: Any, source: str = "") -> FlowSettings:
    jh = ("JupyterHub",)
    tornado = _get(tcfg, jh, "tornado_settings", {}) or {}
    opts = tornado.get("cookie_options", {}) if isinstance(tornado, dict) else {}
    default_url = _get(tcfg, jh, "default_url", None)
    sp_default = _get(tcfg, ("Spawner", "LocalProcessSpawner", "SimpleLocalProcessSpawner"),
                      "default_url", None)
    return FlowSettings(
        default_url=default_url if isinstance(default_url, str) and default_url else None,
        public_url=_get(tcfg, jh, "public_url", None) or None,
        cookie_options=dict(opts) if isinstance(opts, dict) else {},
        spawner_default_url=sp_default if isinstance(sp_default, str) else None,
        redirect_to_server=bool(_get(tcfg, jh, "redirect_to_server", True)),
        cookie_host_prefix=bool(_get(tcfg, jh, "cookie_host_prefix_enabled", False)),
        source=source,
    )


def load(cfg: Config) -> tuple[FlowSettings | None, str | None]:
    """(settings, None) or (None, why they could not be read). Executes the admin's
    JupyterHub config file the way the hub does (traitlets' loader)."""
    path = cfg.hub.config_file
    if path is None:
        return FlowSettings(), None
    try:
        from traitlets.config.loader import PyFileConfigLoader

        tcfg = PyFileConfigLoader(path.name, path=str(path.parent)).load_config()
    except BaseException as e:  # the admin's file may raise anything, even SystemExit
        return None, f"{path}: {type(e).__name__}: {str(e)[:200]}"
    return from_traitlets(tcfg, str(path)), None
