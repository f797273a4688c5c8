"""hubsvc/doctor/hubside.py, the hub-side probe: run by path with a real Python that has
JupyterHub (this checkout's), on real admin config files, through `hubprobe.run` (the
one way hubsvc starts it)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hubsvc import config
from hubsvc.doctor import hubprobe

pytestmark = pytest.mark.unit

PY = Path(sys.executable)


def _cfg(tmp_path: Path, admin: str | None, **hub_keys: object) -> config.Config:
    hub: dict[str, object] = {"config_file": "", **hub_keys}
    if admin is not None:
        f = tmp_path / "jupyterhub_config.py"
        f.write_text(admin)
        hub["config_file"] = str(f)
    return config.parse({"paths": {"state_dir": str(tmp_path / "state"),
                                   "runtime_dir": str(tmp_path / "run")}, "hub": hub},
                        source=tmp_path / "hubsvc.toml")


def test_what_the_hub_makes_of_the_admin_config(tmp_path: Path) -> None:
    admin = ("c = get_config()  # noqa\n"
             "c.JupyterHub.bind_url = 'http://:9000'\n"
             "c.JupyterHub.spawner_class = 'simple'\n"
             "c.Authenticator.allowed_users = {'ann', 'bo'}\n"
             "c.Authenticator.admin_users = {'root'}\n"
             "c.Spawner.cmd = '/opt/env/bin/jupyterhub-singleuser'\n"
             "c.Spawner.start_timeout = 42\n")
    probe = hubprobe.run(_cfg(tmp_path, admin), PY)
    assert isinstance(probe, dict), probe
    import jupyterhub

    # the script's folder (holding hubsvc's own jupyterhub.py check module) does not shadow
    # the real package
    assert probe["version"] == jupyterhub.__version__ and probe["error"] is None
    assert probe["python"] == str(PY) or Path(probe["python"]).resolve() == PY.resolve()
    assert probe["load_error"] is None
    assert ["JupyterHub", "bind_url", "'http://:9000'"] in probe["owned_set"]
    assert probe["spawner"]["class"] == "jupyterhub.spawner.SimpleLocalProcessSpawner"
    assert "jupyterhub.spawner.LocalProcessSpawner" in probe["spawner"]["mro"]
    assert probe["authenticator"]["class"] == "jupyterhub.auth.PAMAuthenticator"
    assert probe["spawner_cmd"] == ["/opt/env/bin/jupyterhub-singleuser"]
    assert probe["config_users"] == ["ann", "bo", "root"]
    values = probe["spawner_settings"]["values"]
    assert values["start_timeout"] == {"value": 42, "set_in": "Spawner"}
    assert values["cmd"]["value"] == ["/opt/env/bin/jupyterhub-singleuser"]
    assert values["ip"]["set_in"] is None  # the class default
    assert hubprobe.spawner_mro(probe) == probe["spawner"]["mro"]


def test_broken_config_and_unknown_classes(tmp_path: Path) -> None:
    probe = hubprobe.run(_cfg(tmp_path, "c = get_config()  # noqa\nc.JupyterHub.ip = (\n"), PY)
    assert isinstance(probe, dict)
    assert probe["load_error"]["type"] == "SyntaxError" and probe["load_error"]["line"] == 2
    assert probe["spawner"]["class"] == "jupyterhub.spawner.LocalProcessSpawner"  # defaults
    probe = hubprobe.run(_cfg(tmp_path, "c.JupyterHub.spawner_class = 'nosuch.Spawner'\n"
                                        "c.JupyterHub.authenticator_class = 'dummy'\n"), PY)
    assert isinstance(probe, dict) and probe["load_error"] is None
    assert "ModuleNotFoundError" in probe["spawner"]["error"]
    assert "mro" not in probe["spawner"] and "spawner_settings" not in probe
    assert probe["authenticator"]["class"] == "jupyterhub.auth.DummyAuthenticator"
    assert hubprobe.spawner_mro(probe) == [] and hubprobe.spawner_mro("failed") == []


def test_no_admin_config_and_no_jupyterhub(tmp_path: Path) -> None:
    probe = hubprobe.run(_cfg(tmp_path, None), PY)
    assert isinstance(probe, dict) and probe["load_error"] is None and probe["owned_set"] == []
    # a Python without JupyterHub says so instead of failing
    bare = subprocess.run(["/usr/bin/python3", "-I", str(hubprobe.SCRIPT),
                           json.dumps({"config_file": "", "owned": []})],
                          capture_output=True, text=True, timeout=60)
    out = json.loads(bare.stdout)
    if out["version"] is not None:
        pytest.skip("the system Python has JupyterHub")
    assert bare.returncode == 0 and out["error"].startswith("cannot import jupyterhub")
    failed = hubprobe.run(_cfg(tmp_path, None), Path("/bin/false"))
    assert isinstance(failed, str) and "exited 1" in failed


def test_the_hub_python_is_found_from_the_jupyterhub_script(tmp_path: Path) -> None:
    cfg = config.parse({"hub": {"command": str(PY.parent / "jupyterhub")}})
    py = hubprobe.python_of(cfg)
    assert py is not None and py.resolve() == PY.resolve()
    script = tmp_path / "jupyterhub"
    script.write_text("#!/bin/sh\n")
    script.chmod(0o755)
    assert hubprobe.hub_python(script, "/usr/bin:/bin") is None  # not a Python


def test_reload_refuses_an_admin_file_the_hub_cannot_load(tmp_path: Path) -> None:
    from hubsvc import reload

    def check(admin: str) -> config.Problem | None:
        # this checkout's jupyterhub, so its Python is the one running the tests
        return reload.check_admin_config(_cfg(tmp_path, admin, command=str(PY.parent / "jupyterhub")))

    assert check("c.JupyterHub.spawner_class = 'simple'\n") is None
    p = check("c = get_config()  # noqa\n\nc.JupyterHub.ip = undefined_name\n")
    assert p is not None and p.field == "hub.config_file"
    assert p.message.startswith(f"{tmp_path / 'jupyterhub_config.py'}:3: NameError")
    assert "the running hub keeps the previous one" in p.fix


def test_files_next_to_the_probe_do_not_shadow_what_it_imports(tmp_path: Path) -> None:
    """Python puts the script's folder first on sys.path: a module there named like one the
    probe imports (json, traceback, …) must not be the one it gets."""
    shutil.copy(hubprobe.SCRIPT, tmp_path / "hubside.py")
    for name in ("json", "traceback", "importlib", "traitlets", "jupyterhub"):
        (tmp_path / f"{name}.py").write_text("raise SystemExit('shadowed: ' + __name__)\n")
    r = subprocess.run([str(PY), str(tmp_path / "hubside.py"),
                        json.dumps({"config_file": "", "owned": []})],
                       capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["error"] is None and out["version"].startswith("6.")


def test_what_the_admin_config_prints_does_not_spoil_the_answer(tmp_path: Path) -> None:
    """An admin file that writes to stdout (no newline at the end, or straight to fd 1) is
    still a file that loads: neither the doctor nor a reload may call it broken."""
    from hubsvc import reload

    admin = ("import os, sys\n"
             "sys.stdout.write('loading site settings...')\n"
             "os.write(1, b'{\"not\": \"the answer\"')\n"
             "c.Spawner.start_timeout = 42\n")
    cfg = _cfg(tmp_path, admin, command=str(PY.parent / "jupyterhub"))
    probe = hubprobe.run(cfg, PY)
    assert isinstance(probe, dict), probe
    assert probe["load_error"] is None and probe["error"] is None
    assert reload.check_admin_config(cfg) is None


def test_the_admin_config_is_loaded_in_the_hubs_working_directory(tmp_path: Path) -> None:
    """The hub runs in paths.state_dir: a file the admin's config opens by a relative path
    is found there by the probe too, whatever folder the doctor is started from."""
    cfg = _cfg(tmp_path, "c.Authenticator.allowed_users = set(open('allowed.txt').read().split())\n")
    cfg.paths.state_dir.mkdir()
    (cfg.paths.state_dir / "allowed.txt").write_text("ann bo\n")
    probe = hubprobe.run(cfg, PY)
    assert isinstance(probe, dict) and probe["load_error"] is None, probe
    assert probe["config_users"] == ["ann", "bo"]


def test_a_python_that_does_not_run_is_named_once_without_an_invented_status(
        tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, None)
    probe = hubprobe.run(cfg, Path("/nonexistent/bin/python3"))
    assert probe == "/nonexistent/bin/python3: No such file or directory"
    failing = tmp_path / "python3"
    failing.write_text("#!/bin/sh\necho broken >&2\nexit 5\n")
    failing.chmod(0o755)
    assert hubprobe.run(cfg, failing) == f"{failing} exited 5: broken"


def test_flow_settings_come_from_the_same_probe_in_both_modes(tmp_path: Path) -> None:
    """The redirect-deciding settings: the doctor's full run and the flow-only run (the
    supervisor's and probe-spawn's) give the same answer, and a config that prints to
    fd 1 or fails to load does not spoil it."""
    from hubsvc.probe import settings as flow_settings

    admin = ("import os\nos.write(1, b'noise without newline')\n"
             "c = get_config()  # noqa\n"
             "c.JupyterHub.default_url = '/hub/home'\n"
             "c.JupyterHub.cookie_max_age_days = 0\n"
             "c.JupyterHub.tornado_settings = {'cookie_options': {'path': '/hub/', 'x': object()}}\n"
             "c.Spawner.default_url = '/lab'\n")
    cfg = _cfg(tmp_path, admin)
    full = hubprobe.run(cfg, PY)
    only = hubprobe.run(cfg, PY, only="flow")
    assert isinstance(full, dict) and isinstance(only, dict), (full, only)
    assert "version" not in only and only["flow"] == full["flow"]
    s, why = flow_settings.from_probe(cfg, full)
    assert why is None and s is not None
    assert (s.default_url, s.spawner_default_url, s.cookie_max_age_days) == ("/hub/home", "/lab", 0.0)
    assert s.cookie_options == {"path": "/hub/"}  # what is not plain data is left out
    assert flow_settings.load(cfg)[0] == s
    broken = _cfg(tmp_path, "c = get_config()  # noqa\nc.JupyterHub.default_url = (\n")
    s, why = flow_settings.load(broken)
    assert s is None and why and "SyntaxError" in why and "line" in why, why
