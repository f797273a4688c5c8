"""The hub's own log stream: a FIFO in runtime_dir that only the hub process writes.

Why a stream of its own: the hub's stdout and stderr are inherited by every server it
spawns (LocalProcessSpawner passes neither), so whatever arrives there may have been
written by a user. The generated JupyterHub config (hubconfig.py) opens this FIFO for
writing when the hub loads it, close-on-exec, and points the hub's log handlers at it
(and still copies each line to its stderr, so the journal or the output file keeps the
hub's log too). A user's server never holds the FIFO: it is not inherited, and the file
is 0600 in a folder only hubsvc's account may write (preflight refuses anything else).

hubsvc keeps both ends open for its whole life: the read end for itself, a write end so
that a hub restart never gives the reader an end-of-file. Reading is bounded per call
and rate-limited: a flood of lines (even real ones: requests make access-log lines) is
dropped past the budget, counted, and never starves the event loop.
"""

from __future__ import annotations

import asyncio
import os
import stat
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

import structlog

FIFO_NAME = "hub-log.fifo"
READ_CHUNK = 65536
LINE_MAX = 4096

_log = structlog.get_logger("hubsvc.child")
log = structlog.get_logger("hubsvc")

LineConsumer = Callable[[str], None]


def fifo_path(runtime_dir: Path) -> Path:
    return runtime_dir / FIFO_NAME


class RateLimit:
    """A token bucket: `rate` lines per second, bursts up to `burst`."""

    def __init__(self, rate: float, burst: float, clock: Callable[[], float] = time.monotonic):
        self.rate, self.burst, self.clock = rate, burst, clock
        self.tokens = burst
        self.at = clock()

    def take(self) -> bool:
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


class HubLog:
    """Reads the hub's FIFO in the event loop; hands each line to the consumers."""

    def __init__(self, runtime_dir: Path, relay: bool, rate: float = 2000.0,
                 burst: float = 10000.0):
        self.path = fifo_path(runtime_dir)
        self.relay = relay  # log each line as hubsvc's own (only where nothing else keeps it)
        self.consumers: list[LineConsumer] = []
        self.limit = RateLimit(rate, burst)
        self.tail: deque[str] = deque(maxlen=40)
        self.lines = 0
        self.dropped = 0
        self._reported_drops = 0
        self._rfd = -1
        self._wfd = -1
        self._buf = b""
        self._loop: asyncio.AbstractEventLoop | None = None

    def open(self, loop: asyncio.AbstractEventLoop) -> None:
        """Create the FIFO afresh (0600) and start reading it."""
        self.path.unlink(missing_ok=True)
        os.mkfifo(self.path, 0o600)
        rfd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOFOLLOW)
        st = os.fstat(rfd)
        if not stat.S_ISFIFO(st.st_mode) or st.st_uid != os.geteuid():
            os.close(rfd)
            raise OSError(f"{self.path} was replaced while hubsvc created it")
        self._rfd = rfd
        self._wfd = os.open(self.path, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        self._loop = loop
        loop.add_reader(rfd, self._on_readable)

    def _on_readable(self) -> None:
        try:
            chunk = os.read(self._rfd, READ_CHUNK)
        except BlockingIOError:
            return
        if not chunk:
            return
        self._buf += chunk
        *lines, self._buf = self._buf.split(b"\n")
        if len(self._buf) > LINE_MAX:
            lines.append(self._buf)
            self._buf = b""
        for raw in lines:
            if not raw:
                continue
            self.lines += 1
            if not self.limit.take():
                self.dropped += 1
                continue
            line = raw[:LINE_MAX].decode("utf-8", "replace").rstrip("\r")
            self.tail.append(line)
            if self.relay:
                from .output import line_level

                getattr(_log, line_level(line))(line, _child="hub")
            for consume in self.consumers:
                consume(line)

    def report_drops(self) -> None:
        """One warning per call (every health interval) while lines are being dropped."""
        if self.dropped > self._reported_drops:
            log.warning("hub_log_lines_dropped", dropped=self.dropped - self._reported_drops,
                        total=self.lines, limit_per_s=self.limit.rate)
            self._reported_drops = self.dropped

    def close(self) -> None:
        if self._rfd >= 0:
            if self._loop is not None:
                self._loop.remove_reader(self._rfd)
            os.close(self._rfd)
            self._rfd = -1
        if self._wfd >= 0:
            os.close(self._wfd)
            self._wfd = -1
        self.path.unlink(missing_ok=True)
