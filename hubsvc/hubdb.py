"""The hub's own database, read-only: what hubsvc may learn from it without the hub."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from urllib.parse import quote

from .host import is_file

FILE = "jupyterhub.sqlite"


def user_names(state_dir: Path) -> list[str]:
    """User names in the hub's database ([] when there is none yet or it cannot be read)."""
    db = state_dir / FILE
    if not is_file(db):
        return []
    try:
        # quoted: a '?', '#' or '%' in the path would otherwise end it (another file,
        # opened read-write)
        con = sqlite3.connect(f"file:{quote(str(db))}?mode=ro", uri=True, timeout=0.5)
        try:
            return [r[0] for r in con.execute("SELECT name FROM users")]
        finally:
            con.close()
    except sqlite3.Error:
        return []
