"""The generated JupyterHub config, loaded by traitlets exactly as the hub loads it."""

from __future__ import annotations

import json
from pathlib import Path

from traitlets.config.loader import PyFileConfigLoader

from hubsvc import config, hubconfig, secrets


def load_generated(tmp_path: Path, admin: str) -> tuple[object, config.Config]:
    admin_file = tmp_path / "admin.py"
    admin_file.write_text(admin)
    toml = tmp_path / "hubsvc.toml"
    toml.write_text(f'[paths]\nstate_dir = "{tmp_path}/s"\nruntime_dir = "{tmp_path}/r"\n'
                    f'[hub]\nconfig_file = "{admin_file}"\n')
    cfg = config.load(toml)
    cfg.paths.state_dir.mkdir()
    cfg.paths.runtime_dir.mkdir()
    files, _ = secrets.ensure(cfg.paths.state_dir)
    path = hubconfig.write(cfg, files)
    loader = PyFileConfigLoader(path.name, path=str(path.parent))
    return loader.load_config(), cfg


def test_admin_services_and_roles_are_kept_and_hubsvc_appended(tmp_path: Path) -> None:
    c, cfg = load_generated(tmp_path, (
        'c.JupyterHub.services = [{"name": "mine", "api_token": "x" * 40}]\n'
        'c.JupyterHub.load_roles = [{"name": "r", "scopes": ["read:users"], "services": ["mine"]}]\n'
    ))
    names = [s["name"] for s in c.JupyterHub.services]
    assert names == ["mine", "hubsvc"]
    token = secrets.read(secrets.SecretFiles.in_dir(cfg.paths.state_dir).hub_api_token)
    assert c.JupyterHub.services[1]["api_token"] == token
    roles = {r["name"]: r for r in c.JupyterHub.load_roles}
    assert set(roles) == {"r", "hubsvc"} and "proxy" in roles["hubsvc"]["scopes"]


def test_works_when_admin_declares_no_services(tmp_path: Path) -> None:
    c, _ = load_generated(tmp_path, "")
    services = c.JupyterHub.services.get_value([])  # lazy: appended to the trait's default
    assert [s["name"] for s in services] == ["hubsvc"]


def test_owned_settings_win_and_are_reported(tmp_path: Path) -> None:
    c, cfg = load_generated(tmp_path, (
        'c.JupyterHub.bind_url = "http://0.0.0.0:9999"\n'
        'c.ConfigurableHTTPProxy.should_start = True\n'
        'c.JupyterHub.cleanup_servers = True\n'
    ))
    assert c.JupyterHub.bind_url == cfg.proxy.public_url
    assert c.ConfigurableHTTPProxy.should_start is False
    assert c.JupyterHub.cleanup_servers is False
    assert c.JupyterHub.hub_bind_url == cfg.hub.bind_url
    assert hubconfig.read_overrides(cfg) == [
        "ConfigurableHTTPProxy.should_start", "JupyterHub.bind_url", "JupyterHub.cleanup_servers"]


def test_generated_file_holds_no_secret(tmp_path: Path) -> None:
    _, cfg = load_generated(tmp_path, "")
    text = (cfg.paths.runtime_dir / hubconfig.GENERATED_NAME).read_text()
    for p in secrets.SecretFiles.in_dir(cfg.paths.state_dir).all():
        assert secrets.read(p) not in text
    assert json.loads((cfg.paths.runtime_dir / hubconfig.OVERRIDES_NAME).read_text())


class _Request:
    def __init__(self, method: str):
        self.method = method
        self.path = "/hub/api/users"
        self.uri = self.path
        self.remote_ip = "127.0.0.1"
        self.headers: dict[str, str] = {}

    def request_time(self) -> float:
        return 0.001


class _Handler:
    """What tornado hands a log_function: the status, the request, the current user."""

    def __init__(self, status: int, method: str, who: object):
        self._status = status
        self.request = _Request(method)
        self.current_user = who
        self._headers: dict[str, str] = {}

    def get_status(self) -> int:
        return self._status


class _Who:
    def __init__(self, kind: str, name: str):
        self.kind = kind
        self.name = name


def _levels(log_function: object, handler: _Handler) -> list[int]:
    import logging

    from tornado.log import access_log

    seen: list[int] = []

    class Catch(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.levelno)

    h = Catch(logging.DEBUG)
    old = access_log.level
    access_log.addHandler(h)
    access_log.setLevel(logging.DEBUG)
    try:
        log_function(handler)  # type: ignore[operator]
    finally:
        access_log.removeHandler(h)
        access_log.setLevel(old)
    return seen


def test_only_hubsvcs_own_successful_reads_are_quiet(tmp_path: Path) -> None:
    import logging

    c, _ = load_generated(tmp_path, "")
    log_function = c.JupyterHub.tornado_settings.get_value({})["log_function"]
    svc = _Who("service", "hubsvc")
    assert _levels(log_function, _Handler(200, "GET", svc)) == [logging.DEBUG]
    # a user who calls themself hubsvc, another service, a write, a failure: as before
    assert _levels(log_function, _Handler(200, "GET", _Who("user", "hubsvc"))) == [logging.INFO]
    assert _levels(log_function, _Handler(200, "GET", _Who("service", "other"))) == [logging.INFO]
    assert _levels(log_function, _Handler(200, "POST", svc)) == [logging.INFO]
    assert _levels(log_function, _Handler(404, "GET", svc)) == [logging.WARNING]


def test_admins_own_log_function_is_kept_behind_the_quiet_one(tmp_path: Path) -> None:
    out = tmp_path / "admin-log"
    c, _ = load_generated(tmp_path, (
        "def mine(handler):\n"
        f"    open({str(out)!r}, 'a').write(str(handler.get_status()))\n"
        "c.JupyterHub.tornado_settings = {'log_function': mine, 'xsrf_cookies': True}\n"
    ))
    settings = c.JupyterHub.tornado_settings
    assert settings["xsrf_cookies"] is True
    settings["log_function"](_Handler(500, "GET", None))
    settings["log_function"](_Handler(200, "GET", _Who("service", "hubsvc")))
    assert out.read_text() == "500"
