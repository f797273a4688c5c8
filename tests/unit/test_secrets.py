from __future__ import annotations

import os
from pathlib import Path

from hubsvc import secrets


def test_created_once_0600_and_kept(tmp_path: Path) -> None:
    files, fixes = secrets.ensure(tmp_path)
    assert fixes == []
    values = {}
    for p in files.all():
        assert p.stat().st_mode & 0o777 == 0o600
        values[p] = secrets.read(p)
        assert len(values[p]) == 64
    assert len(set(values.values())) == 3
    files2, _ = secrets.ensure(tmp_path)
    assert {p: secrets.read(p) for p in files2.all()} == values  # nothing rewritten


def test_loose_mode_is_tightened_content_kept(tmp_path: Path) -> None:
    files, _ = secrets.ensure(tmp_path)
    before = secrets.read(files.cookie_secret)
    os.chmod(files.cookie_secret, 0o644)
    _, fixes = secrets.ensure(tmp_path)
    assert files.cookie_secret.stat().st_mode & 0o777 == 0o600
    assert secrets.read(files.cookie_secret) == before
    assert any("0644" in f for f in fixes)
