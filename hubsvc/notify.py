"""sd_notify, never blocking the event loop.

Uses sdnotify for the socket set-up, then makes the socket non-blocking: a datagram
queue that is full (journald/systemd not reading, ~10 messages by default) drops the
message instead of stalling the supervisor's loop. The variables systemd passes are
removed from os.environ so that no child inherits them.
"""

from __future__ import annotations

import os
import socket

import sdnotify
import structlog

log = structlog.get_logger("hubsvc.notify")

_SYSTEMD_VARS = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")


class Notifier:
    def __init__(self) -> None:
        self.socket_path = os.environ.get("NOTIFY_SOCKET") or None
        usec = os.environ.get("WATCHDOG_USEC")
        wpid = os.environ.get("WATCHDOG_PID")
        self.watchdog_usec: int | None = None
        if usec and usec.isdigit() and (not wpid or wpid == str(os.getpid())):
            self.watchdog_usec = int(usec) or None
        self._sock: socket.socket | None = None
        self._dropped = 0
        if self.socket_path:
            try:
                n = sdnotify.SystemdNotifier(debug=True)
                n.socket.setblocking(False)
                self._sock = n.socket
            except OSError as e:
                log.warning("notify_socket_unusable", path=self.socket_path, error=str(e))
        for var in _SYSTEMD_VARS:
            os.environ.pop(var, None)

    @property
    def enabled(self) -> bool:
        return self._sock is not None

    def send(self, *lines: str) -> None:
        if self._sock is None:
            return
        msg = "\n".join(lines).encode()
        try:
            self._sock.send(msg)
        except (BlockingIOError, InterruptedError):
            self._dropped += 1
            if self._dropped == 1:
                log.warning("notify_dropped", reason="notify socket queue full; dropping")
        except OSError as e:
            self._dropped += 1
            if self._dropped == 1:
                log.warning("notify_failed", error=str(e))

    def status(self, text: str) -> None:
        self.send(f"STATUS={text}")

    def ready(self, text: str) -> None:
        self.send("READY=1", f"STATUS={text}", f"MAINPID={os.getpid()}")

    def reloading(self, text: str) -> None:
        self.send("RELOADING=1", f"STATUS={text}")

    def stopping(self, text: str = "stopping") -> None:
        self.send("STOPPING=1", f"STATUS={text}")

    def watchdog(self) -> None:
        self.send("WATCHDOG=1")

    def extend_timeout(self, seconds: float) -> None:
        self.send(f"EXTEND_TIMEOUT_USEC={int(seconds * 1_000_000)}")

    @property
    def watchdog_interval_s(self) -> float | None:
        """Half of WATCHDOG_USEC, as systemd recommends; None without a watchdog."""
        if not self.watchdog_usec or not self.enabled:
            return None
        return self.watchdog_usec / 2_000_000
