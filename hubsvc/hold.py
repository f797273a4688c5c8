"""The hub's head start: its Python loads JupyterHub's modules while CHP starts, and runs
the hub only once hubsvc says so.

`python -m hubsvc.hold SCRIPT ARG...` is the hub's own command line (SCRIPT is the
`jupyterhub` console script, run by the interpreter its `#!` line names) with this module
in front. With HUBSVC_HOLD naming a pipe (`fd:N`) or a FIFO (a path), it:

1. takes HUBSVC_HOLD out of the environment (the hub and users' servers never see it),
   and puts SCRIPT's directory first on sys.path, where executing SCRIPT puts it;
2. imports the modules SCRIPT imports its entry point from (`from jupyterhub.app import
   main`): ~1 s of the hub's start on this project's machines, spent while CHP starts;
3. waits for one byte: `g` runs SCRIPT in this process, as executing it would (same
   interpreter, argv, environment, working directory, pid); anything else, the end of the
   pipe, its FIFO unlinked or replaced, or HOLD_LIMIT_S without a byte, exits 0 without
   running it.

The hub's configuration, database, port and proxy are only touched by SCRIPT, after `g`:
the start order (CHP proven ready, then the hub) is kept. Nothing may be imported here that
the hub's interpreter would not have: this runs before JupyterHub, in its environment.

hubsvc's side (`hold_argv`) uses it only when SCRIPT's `#!` line names hubsvc's own
interpreter, with no options: the one that has this module.
"""

from __future__ import annotations

import os
import re
import stat
import sys

ENV = "HUBSVC_HOLD"
GO = b"g"
# a held hub nobody released (hubsvc gone without stopping it) gives up after this
HOLD_LIMIT_S = 3600.0
# how often a process held on a FIFO checks the FIFO is still hubsvc's
_CHECK_S = 0.5
_SHEBANG_MAX = 512
_ENTRY = re.compile(rb"^from ([A-Za-z_][\w.]*) import [A-Za-z_]\w*\s*$", re.M)


def hold_argv(argv: list[str], interpreter: str | None = None) -> list[str] | None:
    """The held form of a hub command line, or None when the command cannot be held: not a
    script whose `#!` line is exactly `interpreter` (default: this Python)."""
    want = interpreter or sys.executable
    try:
        with open(argv[0], "rb") as f:
            first = f.readline(_SHEBANG_MAX)
    except (OSError, IndexError, ValueError):
        return None
    if first.rstrip(b"\r\n") != b"#!" + os.fsencode(want):
        return None
    return [want, "-m", __name__, *argv]


def _entry_modules(script: str) -> list[str]:
    try:
        with open(script, "rb") as f:
            text = f.read(64 * 1024)
    except OSError:
        return []
    return [m.decode() for m in _ENTRY.findall(text)]


def _open(spec: str) -> int:
    if spec.startswith("fd:"):
        return int(spec[3:])
    # a FIFO hubsvc holds open for writing: this open does not block; never a symbolic
    # link or anything but a FIFO (a file holding `g` would release at once)
    fd = os.open(spec, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOFOLLOW)
    if not stat.S_ISFIFO(os.fstat(fd).st_mode):
        os.close(fd)
        raise ValueError("not a FIFO")
    return fd


def _same_file(path: str, fd: int) -> bool:
    try:
        a, b = os.stat(path, follow_symlinks=False), os.fstat(fd)
    except OSError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def _wait(fd: int, path: str | None = None) -> bytes:
    """The byte hubsvc writes, or b"" at the end of the pipe or after HOLD_LIMIT_S. A FIFO
    (`path`) opened after hubsvc's end of it was closed gives no end-of-pipe (Linux
    reports none until a writer was seen): hubsvc unlinks its FIFO when it lets go of it,
    and the next head start replaces it, so the held process also ends, within
    _CHECK_S, when `path` is no longer the FIFO it opened."""
    import select
    import time

    p = select.poll()
    p.register(fd, select.POLLIN | select.POLLHUP)
    deadline = time.monotonic() + HOLD_LIMIT_S
    while not p.poll(_CHECK_S * 1000):
        if time.monotonic() >= deadline or (path is not None and not _same_file(path, fd)):
            return b""
    try:
        return os.read(fd, 1)
    except BlockingIOError:
        return b""


def main() -> int:
    if len(sys.argv) < 2:
        print("usage: python -m hubsvc.hold SCRIPT [ARG...]  (started by hubsvc with "
              f"{ENV} set)", file=sys.stderr)
        return 64
    script = sys.argv[1]
    spec = os.environ.pop(ENV, None)
    if spec is None:
        fd = -1
    else:
        try:
            fd = _open(spec)
        except (OSError, ValueError) as e:
            print(f"hubsvc.hold: cannot open {spec}: {e}", file=sys.stderr)
            return 0
    sys.argv = sys.argv[1:]
    # `python -m` put the working directory first; executing the script puts its own
    # (symbolic links followed)
    sys.path[0] = os.path.dirname(os.path.realpath(script))
    if fd >= 0:
        import importlib

        for name in _entry_modules(script):
            try:
                importlib.import_module(name)
            except Exception:  # the script meets it again, and reports it
                pass
        got = _wait(fd, None if spec.startswith("fd:") else spec)
        os.close(fd)
        if got != GO:
            return 0
    import runpy

    runpy.run_path(script, run_name="__main__")
    return 0


if __name__ == "__main__":
    sys.exit(main())
