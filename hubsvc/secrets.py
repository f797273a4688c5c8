"""The three secrets hubsvc owns, each in its own 0600 file in state_dir.

- proxy_auth_token: CHP's API token (reaches CHP through its environment, the hub
  through the generated config reading this file).
- hubsvc_api_token: hubsvc's own JupyterHub service token (scopes: hubconfig.SERVICE_SCOPES).
- jupyterhub_cookie_secret: the hub's cookie secret (cookie_secret_file).

Created once when missing, never rewritten, never logged. A file that exists but cannot
be trusted is refused, never repaired in place: an empty or short one would start CHP
with an unauthenticated API or the hub with a guessable cookie secret; a file readable
by others or owned by another account must be considered known to someone else. The
fix is always the same and safe: remove the file, and the next start creates a fresh one.
"""

from __future__ import annotations

import os
import secrets as _rand
import stat
from dataclasses import dataclass
from pathlib import Path

MODE = 0o600
# hubsvc writes 64 hex characters (32 random bytes); anything under 32 characters is
# less than 128 bits even if it were random.
MIN_LENGTH = 32


class SecretRefused(OSError):
    """A secret file exists but must not be used. `path`, `message`, `fix` for people.
    An OSError, so every caller that already handles an unreadable file handles it."""

    def __init__(self, path: Path, message: str, fix: str):
        super().__init__(f"{path}: {message}")
        self.path = path
        self.message = message
        self.fix = fix


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
    tmp.unlink(missing_ok=True)
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


_REMOVE = "remove {path} (hubsvc creates a fresh random one at its next start{extra})"


def _fix(path: Path, extra: str = "") -> str:
    return _REMOVE.format(path=path, extra=extra)


def _why_exposed(path: Path) -> str:
    if path.name == "jupyterhub_cookie_secret":
        return "; users log in again"
    return ""


def check_file(path: Path, uid: int | None = None) -> None:
    """Raise SecretRefused unless `path` is a regular file owned by `uid` (default: us),
    mode 0600 or stricter, holding at least MIN_LENGTH characters."""
    uid = os.geteuid() if uid is None else uid
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as e:
        if os.path.islink(path):
            raise SecretRefused(path, "is a symbolic link", _fix(path)) from None
        raise SecretRefused(path, f"cannot be read: {e.strerror}",
                            f"give it back to uid {uid} with mode 0600, or {_fix(path)}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise SecretRefused(path, "is not a regular file", _fix(path))
        if st.st_uid != uid:
            raise SecretRefused(
                path, f"is owned by uid {st.st_uid}, not by uid {uid} that runs hubsvc: "
                "another account may know it", _fix(path, _why_exposed(path)))
        mode = stat.S_IMODE(st.st_mode)
        if mode & 0o077:
            raise SecretRefused(
                path, f"has mode {mode:04o}: readable or writable by other accounts, so it "
                "must be considered known", _fix(path, _why_exposed(path)))
        content = os.read(fd, 4096).decode("utf-8", "replace").strip()
    finally:
        os.close(fd)
    if not content:
        raise SecretRefused(path, "is empty (CHP would run with an unauthenticated API, "
                            "the hub with no cookie secret)", _fix(path))
    if len(content) < MIN_LENGTH or any(c.isspace() for c in content):
        raise SecretRefused(path, f"holds {len(content)} characters; at least {MIN_LENGTH} "
                            "without spaces are required", _fix(path, _why_exposed(path)))


def ensure(state_dir: Path) -> tuple[SecretFiles, list[str]]:
    """Create missing secrets and check every file (SecretRefused on the first bad one).
    Returns the files and the names of the files created now (for logging)."""
    files = SecretFiles.in_dir(state_dir)
    created: list[str] = []
    for path in files.all():
        if not path.exists() and not path.is_symlink():
            _create(path)
            created.append(str(path))
        check_file(path)
    return files, created


def check(state_dir: Path) -> SecretFiles:
    """Check every secret without creating any (a reload: the running programs hold the
    current values, so a removed file is a restart's job)."""
    files = SecretFiles.in_dir(state_dir)
    for path in files.all():
        if not path.exists() and not path.is_symlink():
            raise SecretRefused(path, "was removed while hubsvc runs",
                                "restart hubsvc (systemctl restart hubsvc): it creates a fresh "
                                "one and hands it to CHP and the hub together")
        check_file(path)
    return files


def read(path: Path) -> str:
    """The secret in `path`; SecretRefused when it is empty or short, so that no caller
    can ever hand CHP or the hub an empty token."""
    value = path.read_text().strip()
    if len(value) < MIN_LENGTH:
        raise SecretRefused(path, "is empty or short" if value else "is empty", _fix(path))
    return value
