"""Bad input: one clear message naming the field or path and the fix, exit 78, no
traceback, and nothing already running or stored is lost."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
from pathlib import Path
from typing import Any

import pytest

from ..unpriv import as_user
from .hubsvc_harness import HUBSVC, Instance, free_port

pytestmark = pytest.mark.integration


def hubsvc(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    e = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "HUBSVC_CONFIG")}
    e.update(env or {})
    return subprocess.run([str(HUBSVC), *args], capture_output=True, text=True, timeout=60,
                          env=e, stdin=subprocess.DEVNULL)


def cfg_file(tmp_path: Path, body: str) -> Path:
    p = tmp_path / "hubsvc.toml"
    p.write_text(f'[paths]\nstate_dir = "{tmp_path}/state"\nruntime_dir = "{tmp_path}/run"\n'
                 + body)
    return p


def assert_config_error(r: subprocess.CompletedProcess[str], *words: str) -> None:
    assert r.returncode == 78, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr + r.stdout
    assert "fix:" in r.stderr
    for w in words:
        assert w in r.stderr, r.stderr


@pytest.mark.parametrize("cmd", ["run", "check-config"])
@pytest.mark.parametrize(
    ("body", "words"),
    [
        ("[proxy\n", ("not valid TOML", "line")),
        ("[proxy]\npublic_url = 8000\n", ("proxy.public_url",)),
        ("[hub]\nbind_ulr = \"http://127.0.0.1:9\"\n", ("hub.bind_ulr", "unknown key")),
        ("[proxy]\napi_url = \"http://0.0.0.0:8001\"\n", ("proxy.api_url", "loopback")),
        ("[proxy]\ncommand = \"/nonexistent/chp\"\n", ("proxy.command", "/nonexistent/chp")),
        ("[hub]\ncommand = \"no-such-jupyterhub\"\n", ("hub.command", "not on PATH")),
        ("[hub]\nconfig_file = \"/nonexistent/jh.py\"\n", ("hub.config_file", "does not exist")),
    ],
)
def test_bad_config_exit_78(tmp_path: Path, cmd: str, body: str, words: tuple[str, ...]) -> None:
    assert_config_error(hubsvc(cmd, "--config", str(cfg_file(tmp_path, body))), *words)


def test_unwritable_state_dir(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    p = tmp_path / "hubsvc.toml"
    p.write_text(f'[paths]\nstate_dir = "{blocker}/state"\nruntime_dir = "{tmp_path}/run"\n'
                 '[hub]\nconfig_file = ""\n')
    assert_config_error(hubsvc("run", "--config", str(p)), "paths.state_dir", str(blocker))


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"), reason="needs root")
def test_state_dir_not_writable_by_service_account() -> None:
    import tempfile

    tmp_path = Path(tempfile.mkdtemp(prefix="hubsvc-perm-"))
    tmp_path.chmod(0o755)
    state = tmp_path / "state"
    state.mkdir(mode=0o755)
    p = tmp_path / "hubsvc.toml"
    p.write_text(f'[paths]\nstate_dir = "{state}"\nruntime_dir = "/tmp"\n[hub]\nconfig_file = ""\n')
    p.chmod(0o644)
    r = subprocess.run(as_user("nobody", ["check-config", "--config", str(p)], python_module="hubsvc"),
                       capture_output=True, text=True, timeout=60)
    shutil.rmtree(tmp_path, ignore_errors=True)
    assert_config_error(r, "paths.state_dir", "not writable", "never chmod 777")


def test_missing_config_file(tmp_path: Path) -> None:
    assert_config_error(hubsvc("check-config", "--config", str(tmp_path / "none.toml")),
                        "no such file")


def test_config_from_environment_variable(tmp_path: Path) -> None:
    p = cfg_file(tmp_path, "[proxy]\nbogus = 1\n")
    assert_config_error(hubsvc("check-config", env={"HUBSVC_CONFIG": str(p)}), "proxy.bogus")


def test_check_config_prints_effective_settings(tmp_path: Path) -> None:
    p = cfg_file(tmp_path, '[hub]\nconfig_file = ""\n')
    r = hubsvc("check-config", "--config", str(p), "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["resolved"]["proxy.command"].endswith("configurable-http-proxy")
    assert doc["resolved"]["hub.command"].endswith("jupyterhub")
    assert doc["proxy"]["public_url"] == "http://0.0.0.0:8000"
    assert doc["paths"]["state_dir"] == str(tmp_path / "state")


def test_port_in_use_names_the_holder(tmp_path: Path) -> None:
    port = free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))
        s.listen()
        p = cfg_file(tmp_path, f'[proxy]\npublic_url = "http://127.0.0.1:{port}"\n'
                               f'api_url = "http://127.0.0.1:{free_port()}"\n'
                               f'[hub]\nbind_url = "http://127.0.0.1:{free_port()}"\n'
                               'config_file = ""\n')
        r = hubsvc("run", "--config", str(p))
    assert_config_error(r, "proxy.public_url", f"127.0.0.1:{port} is taken", f"pid {os.getpid()}")


def test_second_instance_refused_first_untouched(hubsvc_running: Instance) -> None:
    first = hubsvc_running
    pids = (first.pid("proxy"), first.pid("hub"))
    secret = first.secret("proxy_auth_token")
    r = hubsvc("run", "--config", str(first.config))
    assert_config_error(r, "is taken by another process", f"pid {first.pid('proxy')}")
    st = first.status()
    assert st["ready"] and (st["components"]["proxy"]["pid"], st["components"]["hub"]["pid"]) == pids
    assert first.secret("proxy_auth_token") == secret
    assert first.get_public("/hub/health") == 200


@pytest.fixture
def hubsvc_running(make_hubsvc: Any) -> Instance:
    return make_hubsvc()


def test_status_without_supervisor(tmp_path: Path) -> None:
    p = cfg_file(tmp_path, '[hub]\nconfig_file = ""\n')
    r = hubsvc("status", "--config", str(p))
    assert r.returncode == 3 and "not running" in r.stderr and "Traceback" not in r.stderr


def test_status_of_a_killed_supervisor_is_recognised_as_stale(make_hubsvc: Any) -> None:
    inst = make_hubsvc()
    r = hubsvc("status", "--config", str(inst.config), "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["ready"] is True
    inst.proc.kill()
    inst.proc.wait(10)
    r = hubsvc("status", "--config", str(inst.config))
    assert r.returncode == 3 and "not running" in r.stdout + r.stderr
    r = hubsvc("status", "--config", str(inst.config), "--json")
    assert r.returncode == 3 and json.loads(r.stdout)["running"] is False


def test_unknown_subcommand_is_usage_error() -> None:
    r = hubsvc("frobnicate")
    assert r.returncode == 64 and "Traceback" not in r.stderr
