"""hubsvc whose stderr reader has gone (a closed pipe: a terminal closed, a log shipper
that died) still does what it is asked: a log line it cannot write is lost, the stop
request is not."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from .hubsvc_harness import HUBSVC

pytestmark = pytest.mark.integration


def test_sigterm_stops_hubsvc_whose_stderr_pipe_is_closed(make_hubsvc: Any) -> None:
    inst = make_hubsvc(start=False)
    r, w = os.pipe()
    seen = bytearray()
    closing = threading.Event()

    def drain() -> None:  # read until told to go, then close the read end: EPIPE from then on
        deadline = time.monotonic() + 180
        while not closing.is_set() and time.monotonic() < deadline:
            if select.select([r], [], [], 0.1)[0]:
                chunk = os.read(r, 65536)
                if not chunk:
                    break
                seen.extend(chunk)
        os.close(r)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        inst.start(output=w)
    finally:
        os.close(w)
    closing.set()
    reader.join(10)
    assert not reader.is_alive()
    assert b"ready" in seen, bytes(seen[-2000:])
    assert inst.proc is not None
    # something that logs happens with nobody reading: CHP killed, then restarted
    chp = inst.pid("proxy")
    os.kill(chp, signal.SIGKILL)
    inst.wait_status(lambda s: s["components"]["proxy"]["pid"] not in (None, chp)
                     and s["ready"], 60)
    # the lines about it were lost, and status says how many
    st = inst.wait_status(lambda s: s.get("log_lines_lost", 0) > 0, 30)
    assert st["ready"] is True
    inst.proc.send_signal(signal.SIGTERM)
    try:
        rc = inst.proc.wait(60)
    except Exception:
        rc = None
    assert rc == 0, "hubsvc ignored SIGTERM once its stderr reader had gone"
    inst.proc = None  # stopped: the fixture's cleanup ends what is left by pid


def test_a_refusal_keeps_its_exit_code_when_nobody_reads_stderr(tmp_path: Path) -> None:
    """`hubsvc run` refusing a config exits 78 whether or not its stderr is read (a closed
    pipe turned the refusal into exit 0)."""
    bad = tmp_path / "hubsvc.toml"
    bad.write_text("no_such_key = 1\n")
    for closed in (False, True):
        r, w = os.pipe()
        if closed:
            os.close(r)
        p = subprocess.run([str(HUBSVC), "run", "--config", str(bad)], stdin=subprocess.DEVNULL,
                           stdout=subprocess.DEVNULL, stderr=w, timeout=60)
        os.close(w)
        if not closed:
            assert b"no_such_key" in os.read(r, 4096)
            os.close(r)
        assert p.returncode == 78, (closed, p.returncode)
