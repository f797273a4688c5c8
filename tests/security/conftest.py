"""Fixtures for tests/security: a throwaway unprivileged local account, and one running
hubsvc (process launcher; real CHP and JupyterHub) shared by the module's tests.

The account is created with useradd and removed afterwards; its code runs with
/usr/bin/python3 from a folder it can read (the checkout and its .venv may sit under a
0700 home). The hubsvc root is made traversable (0755) so that what protects the secrets
is hubsvc's own file modes, not the test's temporary folder.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

SYS_PYTHON = "/usr/bin/python3"


@dataclass
class LocalUser:
    name: str
    uid: int
    gid: int
    workdir: Path  # readable and writable by the account

    def run(self, argv: list[str], timeout: float = 60, **kw: Any) -> subprocess.CompletedProcess[str]:
        cmd = ["setpriv", f"--reuid={self.uid}", f"--regid={self.gid}", "--clear-groups",
               "--reset-env", "--", *argv]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                               cwd=self.workdir, **kw)

    def python(self, code: str, *args: str, timeout: float = 60) -> Any:
        """Run `code` as this account; it prints one JSON document, returned decoded."""
        script = self.workdir / f"attack-{uuid.uuid4().hex[:8]}.py"
        script.write_text(code)
        script.chmod(0o644)
        r = self.run([SYS_PYTHON, str(script), *args], timeout=timeout)
        assert r.returncode == 0, f"attacker script failed: {r.stderr[-3000:]}"
        return json.loads(r.stdout)


@pytest.fixture(scope="session")
def local_user() -> Iterator[LocalUser]:
    if os.geteuid() != 0:
        pytest.skip("creating a throwaway local account needs root")
    for tool in ("useradd", "userdel", "setpriv"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is missing (packages passwd, util-linux in the Makefile)")
    name = f"hubsvc-x{uuid.uuid4().hex[:6]}"
    subprocess.run(["useradd", "--system", "--no-create-home", "--home-dir", "/nonexistent",
                    "--shell", "/usr/sbin/nologin", name], check=True, capture_output=True)
    try:
        import pwd

        pw = pwd.getpwnam(name)
        workdir = Path(tempfile.mkdtemp(prefix="hubsvc-attacker-"))
        os.chown(workdir, pw.pw_uid, pw.pw_gid)
        workdir.chmod(0o700)
        yield LocalUser(name, pw.pw_uid, pw.pw_gid, workdir)
    finally:
        subprocess.run(["userdel", name], capture_output=True)
        shutil.rmtree(locals().get("workdir", "/nonexistent-hubsvc"), ignore_errors=True)
