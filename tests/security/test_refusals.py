"""`hubsvc run` refuses, with exit 78 naming the file and the fix, to start on secrets or
folders another account could know or change; nothing is started and nothing is changed."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hubsvc import host, status
from tests.integration.hubsvc_harness import HUBSVC, Instance, new_root

from .conftest import LocalUser


def _run(inst: Instance) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("NOTIFY_SOCKET", "INVOCATION_ID", "JOURNAL_STREAM", "HUBSVC_CONFIG")}
    return subprocess.run([str(HUBSVC), "run", "--config", str(inst.config)], env=env,
                          capture_output=True, text=True, timeout=60)


@pytest.fixture
def inst() -> Iterator[Instance]:
    i = Instance(new_root("hubsvc-refuse-"))
    yield i
    shutil.rmtree(i.root, ignore_errors=True)


def _prepared(inst: Instance) -> None:
    """state_dir with its three secrets, as a first start leaves it."""
    from hubsvc import secrets

    inst.state.mkdir(mode=0o700)
    inst.run_dir.mkdir(mode=0o755)
    secrets.ensure(inst.state)


@pytest.mark.parametrize("name,content,mode,words", [
    ("proxy_auth_token", "", 0o600, "is empty"),
    ("jupyterhub_cookie_secret", "abc", 0o600, "holds 3 characters"),
    ("hubsvc_api_token", "z" * 64, 0o644, "mode 0644"),
])
def test_bad_secret_file_refused_with_78(inst: Instance, name: str, content: str, mode: int,
                                         words: str) -> None:
    _prepared(inst)
    path = inst.state / name
    path.write_text(content)
    path.chmod(mode)
    r = _run(inst)
    assert r.returncode == 78, r.stderr
    assert str(path) in r.stderr and words in r.stderr and f"fix: remove {path}" in r.stderr
    assert "Traceback" not in r.stderr
    assert path.read_text() == content  # left alone for the admin
    assert not (inst.run_dir / "status.json").exists()  # nothing was started


def test_foreign_owned_secret_and_folders_refused(inst: Instance, local_user: LocalUser) -> None:
    _prepared(inst)
    token = inst.state / "proxy_auth_token"
    os.chown(token, local_user.uid, local_user.gid)
    r = _run(inst)
    # (refused by the doctor's preflight check before the secrets module sees it)
    assert r.returncode == 78, r.stderr
    assert str(token) in r.stderr and str(local_user.uid) in r.stderr, r.stderr
    os.chown(token, 0, 0)
    for folder, field in ((inst.state, "paths.state_dir"), (inst.run_dir, "paths.runtime_dir")):
        os.chown(folder, local_user.uid, local_user.gid)
        r = _run(inst)
        assert r.returncode == 78, r.stderr
        assert field in r.stderr and f"{folder} is owned by uid {local_user.uid}" in r.stderr
        os.chown(folder, 0, 0)
    inst.run_dir.chmod(0o777)
    r = _run(inst)
    assert r.returncode == 78 and "chmod go-w" in r.stderr, r.stderr


def test_status_names_a_process_by_pid_and_start_time(tmp_path: Path) -> None:
    """A status file is "running" only while the very process that wrote it lives: a pid
    reused by another process (whatever its command line says) is not the supervisor."""
    status.write(tmp_path, {"pid": os.getpid(), "state": "ready"})
    doc = status.read(tmp_path)
    assert doc is not None and status.supervisor_running(doc)
    # another process whose command line even says "hubsvc", given the same pid in the file
    p = subprocess.Popen(["/bin/sh", "-c", "exec -a hubsvc sleep 30"])
    try:
        time.sleep(0.2)
        forged = {**doc, "pid": p.pid}
        assert not status.supervisor_running(forged)
        assert status.supervisor_running({**forged, "pid_start_time":
                                          host.start_time(p.pid)})
    finally:
        p.kill()
        p.wait()
    assert not status.supervisor_running({"pid": os.getpid()})  # no start time: not trusted
