"""Finding the programs hubsvc runs, so that a bare name works without PATH edits.

A bare name is looked up on PATH, then next to hubsvc's own interpreter (the bundled
environment's bin/), then in the bundled node_modules/.bin (CHP installed by npm next to
the environment, or in a source checkout).
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path


def bundled_dirs() -> list[Path]:
    prefix = Path(sys.prefix)
    dirs = [prefix / "bin", prefix / "node_modules" / ".bin"]
    checkout = Path(__file__).resolve().parent.parent / "node_modules" / ".bin"
    if checkout not in dirs:
        dirs.append(checkout)
    return dirs


def search_path(path: str | None = None) -> str:
    """PATH for resolving and for children: `path` (default: the caller's PATH), then the
    bundled dirs."""
    if path is None:
        path = os.environ.get("PATH", "/usr/bin:/bin")
    parts = [p for p in path.split(os.pathsep) if p]
    for d in bundled_dirs():
        if str(d) not in parts:
            parts.append(str(d))
    return os.pathsep.join(parts)


def resolve_command(name: str, base: Path | None = None, search: str | None = None) -> Path | None:
    """Absolute path of an executable `name`, or None.

    A name with a slash is a path (relative ones to `base`, the config file's folder);
    a bare name is looked up on `search` (default: `search_path()`).
    """
    if "/" in name:
        p = Path(name)
        if not p.is_absolute() and base is not None:
            p = base / p
        return p if p.is_file() and os.access(p, os.X_OK) else None
    found = shutil.which(name, path=search if search is not None else search_path())
    return Path(found) if found else None
