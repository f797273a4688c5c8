"""`hubsvc reload`'s client side against a stand-in supervisor (a child process named
hubsvc that answers SIGHUP by publishing a reload outcome the way the supervisor does)."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from hubsvc import reload

STANDIN = r'''
import json, os, signal, sys, time
run, outcome = sys.argv[1], sys.argv[2]
def write(doc):
    # what status.write records next to the pid: this process's start time
    doc["pid_start_time"] = int(open("/proc/self/stat").read().rsplit(")", 1)[1].split()[19])
    tmp = os.path.join(run, ".s.tmp")
    with open(tmp, "w") as f:
        json.dump(doc, f)
    os.replace(tmp, os.path.join(run, "status.json"))
old = {"id": 1, "started_at": time.time() - 100, "at": time.time() - 99, "outcome": "applied",
       "ok": True, "restarted": []}
write({"pid": os.getpid(), "state": "running", "ready": True, "last_reload": old})
def hup(*_):
    started = time.time()
    write({"pid": os.getpid(), "state": "running", "ready": True,
           "last_reload": {"id": 2, "started_at": started, "outcome": "in_progress"}})
    time.sleep(0.3)
    lr = {"id": 2, "started_at": started, "at": time.time(), "outcome": outcome,
          "ok": outcome == "applied", "restarted": ["hub"] if outcome == "applied" else [],
          "reason": "hub: exited with status 1 before it was ready",
          "problems": ["hub.config_file: /etc/hubsvc/jupyterhub_config.py:3: SyntaxError: invalid syntax"]}
    write({"pid": os.getpid(), "state": "running", "ready": True, "last_reload": lr})
signal.signal(signal.SIGHUP, hup)
print("ready", flush=True)
for _ in range(600):
    time.sleep(0.1)
'''


@pytest.mark.parametrize("outcome,rc,text", [
    ("applied", 0, "reload 2: applied; restarted: hub"),
    ("refused", 1, "jupyterhub_config.py:3: SyntaxError"),
    ("rolled_back", 1, "rolled back to the previous configuration: hub: exited"),
])
def test_waits_for_its_own_reload(tmp_path: Path, outcome: str, rc: int, text: str) -> None:
    # argv[0] "hubsvc" makes the stand-in pass the "is it really the supervisor" check
    p = subprocess.Popen(["hubsvc", "-c", STANDIN, str(tmp_path), outcome], executable=sys.executable,
                         stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        out, err = io.StringIO(), io.StringIO()
        assert reload.request(tmp_path, timeout=20, out=out, err=err) == rc
        assert text in out.getvalue() + err.getvalue()
        # the earlier reload (id 1) in the file was not taken for this one
        assert "reload 1" not in out.getvalue() + err.getvalue()
    finally:
        p.kill()
        p.wait(10)


def test_no_supervisor_is_exit_3(tmp_path: Path) -> None:
    err = io.StringIO()
    assert reload.request(tmp_path, timeout=1, err=err) == 3
    (tmp_path / "status.json").write_text(json.dumps({"pid": 2**22 + 7, "state": "running"}))
    assert reload.request(tmp_path, timeout=1, err=err) == 3
    (tmp_path / "status.json").write_text(json.dumps({"pid": 1, "state": "stopped"}))
    assert reload.request(tmp_path, timeout=1, err=err) == 3
    assert "no running supervisor" in err.getvalue()


def test_no_outcome_in_time_is_exit_1(tmp_path: Path) -> None:
    p = subprocess.Popen(["hubsvc", "-c", "import signal, time, json, os, sys\n"
                          "st = int(open('/proc/self/stat').read().rsplit(')', 1)[1].split()[19])\n"
                          "json.dump({'pid': os.getpid(), 'state': 'running', 'pid_start_time': st}, "
                          "open(os.path.join(sys.argv[1], 'status.json'), 'w'))\n"
                          "signal.signal(signal.SIGHUP, lambda *a: None)\nprint('ready', flush=True)\n"
                          "time.sleep(60)", str(tmp_path)], executable=sys.executable,
                         stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        err = io.StringIO()
        assert reload.request(tmp_path, timeout=0.5, err=err) == 1
        assert "no outcome within 0.5s" in err.getvalue()
    finally:
        p.kill()
        p.wait(10)
