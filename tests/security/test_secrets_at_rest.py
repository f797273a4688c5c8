"""Secret files: created once 0600; anything that cannot be trusted is refused, never used."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from hubsvc import secrets


def test_created_once_0600_and_kept(tmp_path: Path) -> None:
    files, created = secrets.ensure(tmp_path)
    assert sorted(created) == sorted(str(p) for p in files.all())
    values = {}
    for p in files.all():
        assert p.stat().st_mode & 0o777 == 0o600
        values[p] = secrets.read(p)
        assert len(values[p]) == 64
    assert len(set(values.values())) == 3
    files2, created2 = secrets.ensure(tmp_path)
    assert created2 == []
    assert {p: secrets.read(p) for p in files2.all()} == values  # nothing rewritten


@pytest.mark.parametrize("content,mode,words", [
    ("", 0o600, "is empty"),
    ("\n\n", 0o600, "is empty"),
    ("short-token", 0o600, "holds 11 characters"),
    ("a" * 40 + " " + "b" * 10, 0o600, "without spaces"),
    ("x" * 64, 0o644, "mode 0644"),
    ("x" * 64, 0o640, "mode 0640"),
    ("x" * 64, 0o602, "mode 0602"),
])
def test_untrustworthy_file_refused_and_left_alone(tmp_path: Path, content: str, mode: int,
                                                   words: str) -> None:
    files = secrets.SecretFiles.in_dir(tmp_path)
    files.proxy_token.write_text(content)
    os.chmod(files.proxy_token, mode)
    with pytest.raises(secrets.SecretRefused) as e:
        secrets.ensure(tmp_path)
    assert e.value.path == files.proxy_token
    assert words in e.value.message
    assert f"remove {files.proxy_token}" in e.value.fix
    # refused, not repaired: the admin decides (the file may be evidence)
    assert files.proxy_token.read_text() == content
    assert files.proxy_token.stat().st_mode & 0o777 == mode


def test_symlink_refused(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.write_text("y" * 64)
    os.chmod(target, 0o600)
    files = secrets.SecretFiles.in_dir(tmp_path)
    files.cookie_secret.symlink_to(target)
    with pytest.raises(secrets.SecretRefused, match="symbolic link"):
        secrets.ensure(tmp_path)


def test_foreign_owner_refused(tmp_path: Path) -> None:
    files, _ = secrets.ensure(tmp_path)
    with pytest.raises(secrets.SecretRefused, match=r"owned by uid \d+, not by uid 4242"):
        secrets.check_file(files.hub_api_token, uid=4242)


def test_read_never_returns_an_empty_token(tmp_path: Path) -> None:
    """Whatever happens to the file after start, no caller gets an empty token for CHP."""
    files, _ = secrets.ensure(tmp_path)
    files.proxy_token.write_text("")
    with pytest.raises(secrets.SecretRefused):
        secrets.read(files.proxy_token)
    with pytest.raises(OSError):  # callers that handle OSError handle a refusal too
        secrets.read(files.proxy_token)


def test_check_creates_nothing(tmp_path: Path) -> None:
    """A reload checks the secrets; a removed one is a restart's job, not the reload's."""
    files, _ = secrets.ensure(tmp_path)
    assert secrets.check(tmp_path) == files
    files.hub_api_token.unlink()
    with pytest.raises(secrets.SecretRefused, match="removed while hubsvc runs"):
        secrets.check(tmp_path)
    assert not files.hub_api_token.exists()
