"""`hubsvc doctor`: find the install-day failures before users meet them.

Each check group is a module and yields `Finding`s (finding.py: id, group, severity,
what, evidence, fix). Nothing here changes the system: the doctor reads files, the
kernel's socket tables, runs programs with `--version`, loads the admin's JupyterHub
config once in the hub's own Python (hubprobe.py runs hubside.py) and, when hubsvc runs,
asks CHP's API and the hub's API.

- `run.run_doctor(cfg_path, as_json=..., out=...) -> int` for `hubsvc doctor`;
- `quick.preflight_findings(cfg)` for `hubsvc run`: the cheap checks only.

Importing this package imports nothing else: `hubsvc run` reaches `quick` before it
starts anything, and `run_doctor`/`main`/`collect` are loaded on first use.
"""

from __future__ import annotations

from typing import Any

__all__ = ["collect", "main", "run_doctor"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from . import run

        return getattr(run, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
