"""The three secrets hubsvc owns, each in its own 0600 file in state_dir.

- proxy_auth_token: CHP's API token (reaches CHP through its environment, the hub
  through the generated config reading this file).
- hubsvc_api_token: hubsvc's own JupyterHub service token (role with scope `proxy` …).
- jupyterhub_cookie_secret: the hub's cookie secret (cookie_secret_file).

Created once, never rewritten, never logged. A file found with looser permissions is
tightened and reported (its content is kept: users' sessions stay valid).
"""

from __future__ import annotations

import os
import secrets as _rand
import stat
from dataclasses import dataclass
from pathlib import Path

MODE = 0o600


@dataclass(frozen=True)
class SecretFiles:
    proxy_token: Path
    hub_api_token: Path
    cookie_secret: Path

    @classmethod
    def in_dir(cls, state_dir: Path) -> SecretFiles:
        return cls(
            proxy_token=state_dir / "proxy_auth_token",
            hub_api_token=state_dir / "hubsvc_api_token",
            cookie_secret=state_dir / "jupyterhub_cookie_secret",
        )

    def all(self) -> tuple[Path, ...]:
        return (self.proxy_token, self.hub_api_token, self.cookie_secret)


def _create(path: Path) -> None:
    """Write a fresh secret atomically; never replaces an existing file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, MODE)
    try:
        os.write(fd, (_rand.token_hex(32) + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)  # fails if another process created it meanwhile
    except FileExistsError:
        pass
    finally:
        tmp.unlink(missing_ok=True)


def ensure(state_dir: Path) -> tuple[SecretFiles, list[str]]:
    """Create missing secrets; return the files and a list of fixes applied (for logging)."""
    files = SecretFiles.in_dir(state_dir)
    fixed: list[str] = []
    for path in files.all():
        if not path.exists():
            _create(path)
            continue
        st = path.lstat()
        if not stat.S_ISREG(st.st_mode):
            raise OSError(f"{path} is not a regular file")
        if stat.S_IMODE(st.st_mode) & 0o077:
            os.chmod(path, MODE, follow_symlinks=False)
            fixed.append(f"{path}: mode {stat.S_IMODE(st.st_mode):04o} tightened to 0600")
        if st.st_uid != os.geteuid():
            fixed.append(f"{path}: owned by uid {st.st_uid}, not {os.geteuid()}")
    return files, fixed


def read(path: Path) -> str:
    return path.read_text().strip()
