from __future__ import annotations

import io
import socket
import time
from pathlib import Path

import pytest
import structlog

from hubsvc import logs
from hubsvc.notify import Notifier


def test_full_notify_queue_never_blocks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "n.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(str(path))  # bound, never read: the queue fills up
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    monkeypatch.setenv("WATCHDOG_USEC", "4000000")
    n = Notifier()
    import os
    assert "NOTIFY_SOCKET" not in os.environ and "WATCHDOG_USEC" not in os.environ
    assert n.watchdog_interval_s == 2.0
    t0 = time.monotonic()
    for _ in range(500):
        n.watchdog()
    assert time.monotonic() - t0 < 1.0
    assert n._dropped > 0
    listener.close()


def test_watchdog_for_another_pid_is_ignored(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = tmp_path / "n.sock"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(str(path))
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    monkeypatch.setenv("WATCHDOG_USEC", "4000000")
    monkeypatch.setenv("WATCHDOG_PID", "1")
    assert Notifier().watchdog_interval_s is None
    s.close()


def test_line_mode_has_priority_prefix_and_stable_keys() -> None:
    buf = io.StringIO()
    assert logs.configure(stream=buf, mode="line") == "line"
    log = structlog.get_logger("t")
    log.error("component_failed", component="hub", reason="exited with status 1", pid=7)
    log.info("ready", url="http://x/")
    log.info("[W 2026 app:1] careful", _child="hub")
    out = buf.getvalue().splitlines()
    assert out[0] == '<3>component_failed component=hub pid=7 reason="exited with status 1"'
    assert out[1] == "<6>ready url=http://x/"
    assert out[2] == "<6>hub| [W 2026 app:1] careful"
