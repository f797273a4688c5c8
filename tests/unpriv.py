"""Run a command as another local account, wherever this checkout lives.

A clone under a 0700 home (root's, for one) cannot be entered by `nobody`, so neither its
virtualenv nor its sources can be used by that account. When that is the case the command
runs in a private mount namespace in which the checkout is bind-mounted onto an empty,
world-reachable folder, and every argument naming a path inside the checkout is rewritten
to that folder. The host's mount table never changes.
"""

from __future__ import annotations

import atexit
import functools
import grp
import os
import pwd
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


@functools.cache
def _mirror() -> str:
    d = tempfile.mkdtemp(prefix="hubsvc-checkout-")
    os.chmod(d, 0o755)
    atexit.register(os.rmdir, d)
    return d


def as_user(user: str, argv: Sequence[str], python_module: str | None = None) -> list[str]:
    """argv, run as `user`. `python_module`: run `python -m MODULE argv...` with this
    checkout's Python (console scripts carry the checkout's path in their shebang)."""
    cmd = [str(PYTHON), "-m", python_module, *argv] if python_module else list(argv)
    if reachable(user):
        return [*drop_to(user), *cmd]
    mirror, repo = _mirror(), str(REPO)
    moved = [mirror + a[len(repo):] if a == repo or a.startswith(repo + "/") else a for a in cmd]
    script = 'mount --bind "$1" "$2" && shift 2 && exec "$@"'
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh",
            repo, mirror, *drop_to(user), "env", f"PYTHONPATH={mirror}", *moved]
