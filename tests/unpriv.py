"""Run a command as another local account, wherever this checkout lives.

A clone under a 0700 home (root's, for one) cannot be entered by `nobody`: neither its
virtualenv nor its sources, nor the programs a test config names inside it (CHP in
node_modules) can be used by that account. When that is the case the command runs in a
private mount namespace in which the closed folder is covered by an empty, open tmpfs and
the checkout is bind-mounted back at its own path, so every path stays what it is. The
host's mount table never changes.
"""

from __future__ import annotations

import atexit
import functools
import grp
import os
import pwd
import stat
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PYTHON = Path(sys.executable)  # the checkout's virtualenv (not resolved: it is a symlink)


def group_of(user: str) -> str:
    return grp.getgrgid(pwd.getpwnam(user).pw_gid).gr_name


def drop_to(user: str) -> list[str]:
    return ["setpriv", f"--reuid={user}", f"--regid={group_of(user)}", "--clear-groups"]


@functools.cache
def reachable(user: str) -> bool:
    """Can `user` run this checkout's Python and read its sources where they are?"""
    r = subprocess.run([*drop_to(user), str(PYTHON), "-c", "import hubsvc"],
                       capture_output=True, cwd="/", timeout=30)
    return r.returncode == 0


def closed_ancestor() -> Path | None:
    """The outermost folder above the checkout that other accounts cannot enter."""
    for d in reversed(REPO.parents):  # "/" first
        if d != Path("/") and not os.stat(d).st_mode & stat.S_IXOTH:
            return d
    return None


@functools.cache
def _mirror() -> str:
    d = tempfile.mkdtemp(prefix="hubsvc-checkout-")
    atexit.register(os.rmdir, d)
    return d


_OPEN_UP = """set -e
repo=$1 mirror=$2 closed=$3; shift 3
mount --bind "$repo" "$mirror"
mount -t tmpfs -o mode=0755 hubsvc-test "$closed"
mkdir -p "$repo"
mount --bind "$mirror" "$repo"
exec "$@"
"""


def as_user(user: str, argv: Sequence[str], python_module: str | None = None) -> list[str]:
    """argv, run as `user`. `python_module`: run `python -m MODULE argv...` with this
    checkout's Python (console scripts carry the checkout's path in their shebang)."""
    cmd = [str(PYTHON), "-m", python_module, *argv] if python_module else list(argv)
    closed = closed_ancestor()
    if closed is None or reachable(user):
        return [*drop_to(user), *cmd]
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", _OPEN_UP, "sh",
            str(REPO), _mirror(), str(closed), *drop_to(user), *cmd]
