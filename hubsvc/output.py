"""Where a component's stdout and stderr go. One sink per component, created once and
handed to every incarnation of it — and so inherited by every server the hub spawns
(LocalProcessSpawner passes the hub's own stdout/stderr on). Users' servers must keep a
working output when hubsvc itself dies (kill -9), so the hub's sink never depends on
hubsvc staying alive:

- "journal": a stream connection to journald of the component's own
  (SYSLOG_IDENTIFIER=hubsvc-proxy / hubsvc-hub). journald reads it whatever hubsvc does.
- "file:DIR": the hub writes to DIR/hub-output.log (0600, appended, rotated once at
  start past ROTATE_BYTES). Used in the foreground, where there is no journal.
- "pipe": a pipe hubsvc reads in its event loop, each line a log event with the
  component's name. Only for CHP, which inherits it to nobody and dies with hubsvc.
- "unit": the component is a systemd unit that writes to the journal itself.

Nothing read from these sinks is trusted for decisions: a user's server can write
anything to them. The hub's own log reaches hubsvc through hublog.py instead.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # neither is loaded with this module: CHP's head start (cli.cmd_run)
    import asyncio

JOURNAL_STDOUT = "/run/systemd/journal/stdout"
ROTATE_BYTES = 50 * 1024 * 1024

# JupyterHub: "[E 2026-…"; CHP: "12:00:00.000 [ConfigProxy] error: …"
_HUB_LEVEL = re.compile(r"^\[([CEWID]) ")
_CHP_LEVEL = re.compile(r"\] (error|warn|info|debug): ")
_LEVELS = {"C": "critical", "E": "error", "W": "warning", "I": "info", "D": "debug",
           "error": "error", "warn": "warning", "info": "info", "debug": "debug"}

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")

LineConsumer = Callable[[str, str], None]  # (component, line)


def line_level(line: str) -> str:
    m = _HUB_LEVEL.match(line) or _CHP_LEVEL.search(line)
    return _LEVELS[m.group(1)] if m else "info"


class Sink:
    def __init__(self, component: str, tail_lines: int = 40):
        self.component = component
        self.fd = -1
        self.kind = "none"
        self.tail: deque[str] = deque(maxlen=tail_lines)
        self.consumers: list[LineConsumer] = []
        self._read_fd = -1
        self._buf = b""
        self._loop: asyncio.AbstractEventLoop | None = None
        self.path: Path | None = None

    def open(self, loop: asyncio.AbstractEventLoop, mode: str) -> None:
        """mode: "pipe", "journal", "file:DIR" or "unit" (see the module's docstring).
        "file:DIR" applies to the hub only: CHP's output stays a pipe. A sink already
        prepared (with the same mode) only starts being read."""
        if self.kind == "none":
            self.prepare(mode)
        if self.kind == "pipe" and self._loop is None:
            self._loop = loop
            loop.add_reader(self._read_fd, self._on_readable)

    def prepare(self, mode: str) -> None:
        """Create the descriptor a process writes to, before there is an event loop (CHP's
        head start): what it writes to a pipe waits there until open() reads it."""
        if mode == "unit":
            self.kind = "unit"
            return
        if mode == "journal" and self._open_journal():
            return
        if mode.startswith("file:") and self.component == "hub":
            self._open_file(Path(mode[len("file:"):]))
            return
        r, w = os.pipe2(os.O_CLOEXEC)
        os.set_blocking(r, False)
        self._read_fd, self.fd, self.kind = r, w, "pipe"

    def _open_journal(self) -> bool:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(JOURNAL_STDOUT)
            s.shutdown(socket.SHUT_RD)
            header = f"hubsvc-{self.component}\n\n6\n0\n0\n0\n0\n"
            s.sendall(header.encode())
        except OSError:
            s.close()
            return False
        self.fd, self.kind = s.detach(), "journal"
        return True

    def _open_file(self, folder: Path) -> None:
        folder.mkdir(mode=0o700, exist_ok=True)
        path = folder / f"{self.component}-output.log"
        with contextlib.suppress(OSError):
            if path.stat().st_size > ROTATE_BYTES:
                os.replace(path, path.with_name(path.name + ".1"))
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC
                          | os.O_NOFOLLOW, 0o600)
        self.path, self.kind = path, "file"

    def _on_readable(self) -> None:
        try:
            chunk = os.read(self._read_fd, 65536)
        except BlockingIOError:
            return
        if not chunk:
            return
        self._buf += chunk
        *lines, self._buf = self._buf.split(b"\n")
        if len(self._buf) > 65536:  # a very long line without newline: flush it anyway
            lines.append(self._buf)
            self._buf = b""
        import structlog

        log = structlog.get_logger("hubsvc.child")
        for raw in lines:
            line = _ANSI.sub("", raw.decode("utf-8", "replace")).rstrip("\r")
            if not line:
                continue
            self.tail.append(line)
            getattr(log, line_level(line))(line, _child=self.component)
            for consume in self.consumers:
                consume(self.component, line)

    def last_lines(self, n: int = 8) -> list[str]:
        if self.kind == "file" and self.path is not None:
            return _file_tail(self.path, n)
        return list(self.tail)[-n:]

    def close(self) -> None:
        if self._read_fd >= 0:
            if self._loop is not None:
                self._loop.remove_reader(self._read_fd)
            self._on_readable()
            os.close(self._read_fd)
            self._read_fd = -1
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        self.kind, self._loop = "none", None  # a later open() starts afresh


def _file_tail(path: Path, n: int) -> list[str]:
    """The last `n` lines of `path` (reads at most the last 16 KiB)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 16384))
            data = f.read()
    except OSError:
        return []
    lines = [_ANSI.sub("", ln.decode("utf-8", "replace")).rstrip("\r")
             for ln in data.split(b"\n")]
    return [ln for ln in lines if ln][-n:]
