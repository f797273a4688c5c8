"""Run the real hubsvc (real CHP, real JupyterHub) on free loopback ports for tests.

`Instance` starts `hubsvc run` as a subprocess with a NOTIFY_SOCKET the test binds, so the
sd_notify sequence can be asserted; helpers talk to the hub's REST API with a test
service token declared in the test's own JupyterHub config (which also proves the admin's
services survive next to hubsvc's own).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[2]
HUBSVC = Path(sys.executable).parent / "hubsvc"
TEST_TOKEN = "test-admin-token-0123456789abcdef0123456789abcdef"

HUB_CONFIG = '''
import os
c = get_config()
c.JupyterHub.authenticator_class = "dummy"
c.Authenticator.allow_all = True
c.JupyterHub.spawner_class = "simple"
c.SimpleLocalProcessSpawner.home_dir_template = {homes!r} + "/{{username}}"
c.Spawner.default_url = "/lab"
c.Spawner.start_timeout = 60
c.Spawner.http_timeout = 60
if os.geteuid() == 0:
    c.Spawner.args = ["--allow-root"]
c.JupyterHub.services = [{{"name": "tests", "api_token": {token!r}}}]
c.JupyterHub.load_roles = [{{
    "name": "tests-admin",
    "scopes": ["admin:users", "admin:servers", "tokens", "access:servers", "list:users",
               "read:users", "proxy"],
    "services": ["tests"],
}}]
{extra}
'''


def unit_watchdog_usec() -> int:
    """WATCHDOG_USEC as systemd gives it to hubsvc under the shipped unit (WatchdogSec=):
    benchmarks of idle cost run with it, not with the tests' short one."""
    for line in (REPO / "units" / "hubsvc.service").read_text().splitlines():
        if line.startswith("WatchdogSec="):
            value = line.split("=", 1)[1].strip()
            assert value.endswith("s") and value[:-1].isdigit(), line
            return int(value[:-1]) * 1_000_000
    raise AssertionError("units/hubsvc.service sets no WatchdogSec=")


_handed_out: set[int] = set()


def free_port() -> int:
    """A free loopback port not handed out before in this test run: the kernel may give a
    just-closed port again, and one instance's public and hub ports must differ."""
    for _ in range(200):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _handed_out:
            _handed_out.add(port)
            return port
    raise RuntimeError("no fresh free loopback port in 200 tries")


class NotifyListener:
    """A real unix datagram socket standing in for systemd's NOTIFY_SOCKET."""

    def __init__(self, path: Path):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.messages: list[tuple[float, str]] = []
        self._stop = False
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self) -> None:
        while not self._stop:
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            self.messages.append((time.monotonic(), data.decode()))

    def lines(self) -> list[str]:
        out = []
        for _, m in self.messages:
            out.extend(m.split("\n"))
        return out

    def wait_for(self, line: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if line in self.lines():
                return True
            time.sleep(0.05)
        return False

    def close(self) -> None:
        self._stop = True
        self._t.join(1)
        self.sock.close()


@dataclass
class Instance:
    root: Path
    public_port: int = field(default_factory=free_port)
    api_port: int = field(default_factory=free_port)
    hub_port: int = field(default_factory=free_port)
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    hub_extra: str = ""
    proc: subprocess.Popen[bytes] | None = None
    notify: NotifyListener | None = None
    pids_seen: set[int] = field(default_factory=set)
    # systemd's WATCHDOG_USEC for hubsvc: short in tests (a wedged loop shows within
    # seconds); benchmarks pass the unit's own value (units/hubsvc.service, WatchdogSec=)
    watchdog_usec: int = 2_000_000

    def __post_init__(self) -> None:
        self.state = self.root / "state"
        self.run_dir = self.root / "run"
        self.homes = self.root / "homes"
        self.homes.mkdir(parents=True, exist_ok=True)
        self.hub_config = self.root / "jupyterhub_config.py"
        self.config = self.root / "hubsvc.toml"
        self.log_path = self.root / "hubsvc.log"
        self.write_config()

    # ---- files -------------------------------------------------------------------
    def settings(self) -> dict[str, dict[str, Any]]:
        base: dict[str, dict[str, Any]] = {
            "paths": {"state_dir": str(self.state), "runtime_dir": str(self.run_dir)},
            "proxy": {"public_url": self.public, "api_url": self.api},
            "hub": {"bind_url": self.hub, "config_file": str(self.hub_config)},
            "health": {"interval_s": 0.5, "timeout_s": 0.5, "failures_before_restart": 3},
            "restart": {"backoff_initial_s": 0.1, "backoff_max_s": 1.0, "max_restarts": 5,
                        "window_s": 60},
        }
        for section, values in self.overrides.items():
            base.setdefault(section, {}).update(values)
        return base

    def toml(self) -> str:
        out = []
        for section, values in self.settings().items():
            out.append(f"[{section}]")
            out.extend(f"{k} = {json.dumps(v)}" for k, v in values.items())
        return "\n".join(out) + "\n"

    def write_config(self) -> None:
        self.config.write_text(self.toml())
        self.hub_config.write_text(
            HUB_CONFIG.format(homes=str(self.homes), token=TEST_TOKEN, extra=self.hub_extra))

    # ---- urls --------------------------------------------------------------------
    @property
    def public(self) -> str:
        return f"http://127.0.0.1:{self.public_port}"

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def hub(self) -> str:
        return f"http://127.0.0.1:{self.hub_port}"

    def secret(self, name: str) -> str:
        return (self.state / name).read_text().strip()

    # ---- process -------------------------------------------------------------------
    def start(self, wait_ready: bool = True, timeout: float = 90, output: Any = None) -> Instance:
        """`output`: where hubsvc's stdout and stderr go (a file or fd); its log file if None."""
        env = {k: v for k, v in os.environ.items()
               if k not in ("NOTIFY_SOCKET", "INVOCATION_ID", "JOURNAL_STREAM", "HUBSVC_CONFIG")}
        if self.notify is not None:  # a restart of the same instance
            self.notify.close()
        (self.root / "notify.sock").unlink(missing_ok=True)
        self.notify = NotifyListener(self.root / "notify.sock")
        env["NOTIFY_SOCKET"] = str(self.notify.path)
        env["WATCHDOG_USEC"] = str(self.watchdog_usec)
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [str(HUBSVC), "run", "--config", str(self.config)],
            stdin=subprocess.DEVNULL, stdout=self.log if output is None else output,
            stderr=subprocess.STDOUT, env=env,
        )
        if wait_ready:
            ok = self.wait_ready(timeout)
            assert ok, f"hubsvc not READY within {timeout}s; log:\n{self.log_text()[-4000:]}"
        return self

    def wait_ready(self, timeout: float) -> bool:
        assert self.notify is not None and self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if "READY=1" in self.notify.lines():
                self._remember_pids()
                return True
            if self.proc.poll() is not None:
                return False
            time.sleep(0.05)
        return False

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def status(self) -> dict[str, Any]:
        return json.loads((self.run_dir / "status.json").read_text())

    def argv(self, component: str) -> list[str]:
        """The command line hubsvc last started `component` with (its `component_started`
        line: a CHP run by hubsvc.warm's loader shows the loader in /proc/PID/cmdline)."""
        found = re.findall(rf'component_started component={component} .*?argv="((?:[^"\\]|\\.)*)"',
                           self.log_text())
        assert found, f"no component_started for {component}"
        return json.loads(json.loads(f'"{found[-1]}"'))  # a quoted, escaped JSON list

    def pid(self, component: str) -> int:
        pid = self.status()["components"][component]["pid"]
        assert isinstance(pid, int), self.status()
        self.pids_seen.add(pid)
        return pid

    def _remember_pids(self) -> None:
        with contextlib.suppress(Exception):
            for c in self.status()["components"].values():
                if c.get("pid"):
                    self.pids_seen.add(c["pid"])

    def wait_status(self, pred: Any, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        last: dict[str, Any] = {}
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError, ValueError):
                last = self.status()
                if pred(last):
                    self._remember_pids()
                    return last
            time.sleep(0.05)
        raise AssertionError(f"status never matched within {timeout}s: {last}\n"
                             f"{self.log_text()[-3000:]}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(10)

    def cleanup(self) -> None:
        """Stop hubsvc, then end (by pid) anything it started that is still alive."""
        if self.proc is not None:
            self.stop()
        for server_pid in self.user_server_pids():
            self.pids_seen.add(server_pid)
        for pid in self.pids_seen:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        if self.notify is not None:
            self.notify.close()
        if getattr(self, "log", None):
            self.log.close()

    def user_server_pids(self) -> list[int]:
        """Pids of users' servers recorded by the spawner (SimpleLocalProcessSpawner state)."""
        db = self.state / "jupyterhub.sqlite"
        if not db.exists():
            return []
        import sqlite3

        try:
            con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=2)
            rows = con.execute("select state from spawners").fetchall()
            con.close()
        except sqlite3.Error:
            return []
        out = []
        for (st,) in rows:
            with contextlib.suppress(TypeError, ValueError):
                pid = json.loads(st or "{}").get("pid")
                if pid:
                    out.append(int(pid))
        return out

    # ---- hub API as the test service ---------------------------------------------------
    def api_call(self, method: str, path: str, **kw: Any) -> httpx.Response:
        # longer than the hub's own slow_spawn_timeout (10 s): on a loaded machine a spawn
        # request is answered (202) only after it
        with httpx.Client(trust_env=False, timeout=30) as c:
            return c.request(method, f"{self.hub}/hub/api/{path}",
                             headers={"Authorization": f"token {TEST_TOKEN}"}, **kw)

    def spawn(self, user: str, timeout: float = 90) -> dict[str, Any]:
        """Create `user`, start its server, wait until the hub says it is ready."""
        r = self.api_call("POST", f"users/{user}")
        assert r.status_code in (201, 409), r.text
        r = self.api_call("POST", f"users/{user}/server", timeout=60)
        assert r.status_code in (201, 202, 400), r.text
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            info = self.api_call("GET", f"users/{user}").json()
            srv = (info.get("servers") or {}).get("")
            if srv and srv.get("ready"):
                return srv
            time.sleep(0.2)
        raise AssertionError(f"{user}'s server not ready in {timeout}s:\n{self.log_text()[-3000:]}")

    def user_token(self, user: str) -> str:
        r = self.api_call("POST", f"users/{user}/tokens", json={"expires_in": 3600})
        assert r.status_code in (200, 201), r.text
        return r.json()["token"]

    def routes(self) -> dict[str, Any]:
        with httpx.Client(trust_env=False, timeout=5) as c:
            r = c.get(f"{self.api}/api/routes",
                      headers={"Authorization": f"token {self.secret('proxy_auth_token')}"})
            r.raise_for_status()
            return r.json()

    def get_public(self, path: str, token: str | None = None, timeout: float = 5) -> int:
        headers = {"Authorization": f"token {token}"} if token else {}
        with httpx.Client(trust_env=False, timeout=timeout) as c:
            try:
                return c.get(f"{self.public}{path}", headers=headers).status_code
            except httpx.HTTPError:
                return 0

    def wait_public(self, path: str, token: str | None, want: int, timeout: float) -> float:
        """Seconds until GET path through the proxy answers `want`."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            if self.get_public(path, token, timeout=2) == want:
                return time.monotonic() - t0
            time.sleep(0.02)
        raise AssertionError(f"{path} never answered {want} within {timeout}s\n"
                             f"{self.log_text()[-3000:]}")


def new_root(prefix: str = "hubsvc-it-") -> Path:
    return Path(tempfile.mkdtemp(prefix=prefix))


def proc_alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"
