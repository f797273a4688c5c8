"""Where a component's stdout and stderr go. One sink per component, created once and
handed to every incarnation of it (and so inherited by the hub's users' servers).

- Under systemd: a stream connection to journald of the component's own
  (SYSLOG_IDENTIFIER=hubsvc-proxy / hubsvc-hub). journald reads it whatever hubsvc does,
  so a stalled or restarted supervisor never blocks a child or a user's server.
- Elsewhere: a pipe hubsvc reads in its event loop; each line becomes a log event with
  the component's name, and the last lines are kept to explain a failed start.
"""

from __future__ import annotations

import asyncio
import os
import re
import socket
from collections import deque
from collections.abc import Callable

import structlog

JOURNAL_STDOUT = "/run/systemd/journal/stdout"
_log = structlog.get_logger("hubsvc.child")

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

    def open(self, loop: asyncio.AbstractEventLoop, mode: str) -> None:
        """mode: "pipe", "journal" (a journald stream of our own), or "unit" (the
        component runs as a systemd unit that writes to the journal itself)."""
        if mode == "unit":
            self.kind = "unit"
            return
        if mode == "journal" and self._open_journal():
            return
        r, w = os.pipe2(os.O_CLOEXEC)
        os.set_blocking(r, False)
        self._read_fd, self.fd, self.kind = r, w, "pipe"
        self._loop = loop
        loop.add_reader(r, self._on_readable)

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
        for raw in lines:
            line = _ANSI.sub("", raw.decode("utf-8", "replace")).rstrip("\r")
            if not line:
                continue
            self.tail.append(line)
            getattr(_log, line_level(line))(line, _child=self.component)
            for consume in self.consumers:
                consume(self.component, line)

    def last_lines(self, n: int = 8) -> list[str]:
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
