from __future__ import annotations

from pathlib import Path

import pytest

from hubsvc import config
from hubsvc.config import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "hubsvc.toml"
    p.write_text(text)
    return p


def fields(e: ConfigError) -> list[str]:
    return [p.field for p in e.problems]


def test_empty_file_gives_documented_defaults(tmp_path: Path) -> None:
    cfg = config.load(write(tmp_path, ""))
    assert cfg.paths.state_dir == Path("/var/lib/hubsvc")
    assert cfg.paths.runtime_dir == Path("/run/hubsvc")
    assert cfg.proxy.public_url == "http://0.0.0.0:8000"
    assert cfg.proxy.api_url == "http://127.0.0.1:8001"
    assert cfg.hub.bind_url == "http://127.0.0.1:8081"
    assert cfg.hub.config_file == Path("/etc/hubsvc/jupyterhub_config.py")
    assert (cfg.health.interval_s, cfg.health.timeout_s, cfg.health.failures_before_restart) == (
        2.0, 1.0, 3)
    r = cfg.restart
    assert (r.backoff_initial_s, r.backoff_max_s, r.max_restarts, r.window_s) == (0.1, 10, 5, 60)
    assert cfg.public.connect_host == "127.0.0.1"


def test_path_resolution_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HUBSVC_CONFIG", raising=False)
    assert config.resolve_path(None) == Path("/etc/hubsvc/hubsvc.toml")
    monkeypatch.setenv("HUBSVC_CONFIG", "/x/env.toml")
    assert config.resolve_path(None) == Path("/x/env.toml")
    assert config.resolve_path("/x/arg.toml") == Path("/x/arg.toml")


@pytest.mark.parametrize(
    ("text", "field", "words"),
    [
        ("[proxy]\npublic_url = 8000\n", "proxy.public_url", "string"),
        ("[proxy]\nbogus = 1\n", "proxy.bogus", "unknown key"),
        ("[bogus]\n", "bogus", "unknown key"),
        ("[health]\ninterval_s = -1\n", "health.interval_s", "greater than 0"),
        ("[health]\nfailures_before_restart = 0\n", "health.failures_before_restart",
         "greater than or equal to 1"),
        ("[health]\ninterval_s = 1.0\ntimeout_s = 5.0\n", "health", "timeout_s"),
        ("[proxy]\napi_url = \"http://0.0.0.0:8001\"\n", "proxy.api_url", "loopback"),
        ("[proxy]\napi_url = \"http://10.1.2.3:8001\"\n", "proxy.api_url", "loopback"),
        ("[proxy]\npublic_url = \"ftp://x:1\"\n", "proxy.public_url", "http"),
        ("[proxy]\npublic_url = \"http://h:99999\"\n", "proxy.public_url", "port"),
        ("[hub]\nbind_url = \"http://127.0.0.1:8000\"\n", "(top level)", "port 8000"),
        ("[proxy]\napi_url = \"http://127.0.0.1:8081\"\n", "(top level)", "port 8081"),
        ("[restart]\nbackoff_initial_s = 5\nbackoff_max_s = 1\n", "restart", "backoff_max_s"),
        ("[restart]\nmax_restarts = \"five\"\n", "restart.max_restarts", "integer"),
        ("[hub]\nconnect_url = \"http://10.0.0.5:8081\"\n", "hub", "loopback only"),
        ("[hub]\nconnect_url = \"http://0.0.0.0:8081\"\n", "hub.connect_url", "listening address"),
        ("[proxy]\nextra_args = [\"--api-ip=0.0.0.0\"]\n", "proxy.extra_args", "--api-ip is set by hubsvc"),
        ("[hub]\nextra_args = [\"--ip\", \"0.0.0.0\"]\n", "hub.extra_args", "--ip is set by hubsvc"),
        ("[probe]\nenabled = true\n", "probe", "probe.user"),
        ("[supervisor]\nlauncher = \"docker\"\n", "supervisor.launcher", "systemd"),
        ("[hub]\nuser_servers_on_stop = \"never\"\n", "hub.user_servers_on_stop", "auto"),
    ],
)
def test_bad_values_name_the_field(tmp_path: Path, text: str, field: str, words: str) -> None:
    with pytest.raises(ConfigError) as ei:
        config.load(write(tmp_path, text))
    e = ei.value
    assert field in fields(e), str(e)
    assert words in str(e)
    assert all(p.fix for p in e.problems)


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as ei:
        config.load(write(tmp_path, "[proxy]\nbogus = 1\n[health]\ninterval_s = \"x\"\n"))
    assert {"proxy.bogus", "health.interval_s"} <= set(fields(ei.value))


def test_broken_toml_names_the_file_and_line(tmp_path: Path) -> None:
    p = write(tmp_path, "[proxy\npublic_url = 1\n")
    with pytest.raises(ConfigError) as ei:
        config.load(p)
    assert ei.value.problems[0].field == str(p)
    assert "line 1" in str(ei.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as ei:
        config.load(tmp_path / "nope.toml")
    assert "no such file" in str(ei.value)


def test_relative_paths_are_relative_to_the_config_file(tmp_path: Path) -> None:
    cfg = config.load(write(tmp_path, '[paths]\nstate_dir = "s"\nruntime_dir = "r"\n'
                                      '[hub]\nconfig_file = "jh.py"\n'))
    assert cfg.paths.state_dir == tmp_path / "s"
    assert cfg.hub.config_file == tmp_path / "jh.py"


def test_empty_hub_config_file_means_none(tmp_path: Path) -> None:
    assert config.load(write(tmp_path, '[hub]\nconfig_file = ""\n')).hub.config_file is None


def test_base_url_path_on_public_url(tmp_path: Path) -> None:
    cfg = config.load(write(tmp_path, '[proxy]\npublic_url = "http://[::]:9000/jh"\n'))
    assert cfg.public.path == "/jh/"
    assert cfg.public.url("hub/health") == "http://[::1]:9000/jh/hub/health"


def test_connect_url_for_remote_servers(tmp_path: Path) -> None:
    cfg = config.load(write(tmp_path, '[hub]\nbind_url = "http://0.0.0.0:8081"\n'
                                      'connect_url = "http://head.example:8081"\n'))
    assert cfg.hub.connect_url == "http://head.example:8081"
    assert cfg.hub_bind.connect_origin == "http://127.0.0.1:8081"
