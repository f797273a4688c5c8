"""hubsvc.launch.systemd, the pure parts: when hubsvc.service's ExecStopPost leaves the
component units for the next supervisor, and what a unit must match to be adopted.
(The real systemd 252 behaviour is in tests/system.)"""

from __future__ import annotations

import subprocess
import sys

import pytest

from hubsvc.launch.systemd import successor_follows

pytestmark = pytest.mark.unit

KILLED = {"SERVICE_RESULT": "signal", "EXIT_CODE": "killed", "EXIT_STATUS": "KILL"}
CLEAN = {"SERVICE_RESULT": "success", "EXIT_CODE": "exited", "EXIT_STATUS": "0"}


@pytest.mark.parametrize("job", ["restart", "try-restart"])
def test_restart_jobs_keep_the_units(job: str) -> None:
    # systemctl restart / the package's try-restart: whatever the old supervisor did
    assert successor_follows(job, CLEAN, "on-failure")
    assert successor_follows(job, KILLED, "no")


@pytest.mark.parametrize("env", [CLEAN, KILLED, {"SERVICE_RESULT": "timeout"}])
def test_a_stop_job_stops_them(env: dict[str, str]) -> None:
    # systemctl stop, rpm -e, shutdown; also when the supervisor was killed on its timeout
    assert not successor_follows("stop", env, "on-failure")


def test_a_crash_is_followed_by_systemds_restart() -> None:
    assert successor_follows(None, KILLED, "on-failure")
    assert successor_follows(None, {"SERVICE_RESULT": "watchdog", "EXIT_CODE": "killed",
                                    "EXIT_STATUS": "ABRT"}, "on-failure")
    assert successor_follows("start", KILLED, "on-failure")  # killed while starting


def test_no_restart_follows_a_clean_exit_a_config_error_or_restart_no() -> None:
    assert not successor_follows(None, CLEAN, "on-failure")
    assert not successor_follows(None, {"SERVICE_RESULT": "exit-code", "EXIT_CODE": "exited",
                                        "EXIT_STATUS": "78"}, "on-failure")
    assert not successor_follows(None, KILLED, "no")


def test_the_launch_doc_names_chps_version(tmp_path) -> None:
    """An upgrade that brings another CHP at the same path is not adopted: the version
    is part of what must match."""
    import json
    import os

    from hubsvc.launch.unitstart import program_version

    pkg = tmp_path / "node_modules" / "configurable-http-proxy"
    (pkg / "bin").mkdir(parents=True)
    (pkg / "bin" / "configurable-http-proxy").write_text("#!/usr/bin/env node\n")
    (pkg / "package.json").write_text(json.dumps({"name": "configurable-http-proxy",
                                                  "version": "5.3.0"}))
    (tmp_path / "node_modules" / ".bin").mkdir()
    link = tmp_path / "node_modules" / ".bin" / "configurable-http-proxy"
    os.symlink("../configurable-http-proxy/bin/configurable-http-proxy", link)
    assert program_version(str(link)) == "configurable-http-proxy 5.3.0"
    (pkg / "package.json").write_text(json.dumps({"name": "configurable-http-proxy",
                                                  "version": "5.4.0"}))
    assert program_version(str(link)) == "configurable-http-proxy 5.4.0"
    assert program_version(str(tmp_path / "nothing")) is None


def test_the_dbus_binding_loads_without_pystemds_introspection_layer() -> None:
    """hubsvc uses pystemd's sd-bus binding only; its package __init__ would also load lxml
    (~40 ms before CHP's unit is started). Checked in a fresh interpreter."""
    code = ("import sys\nfrom hubsvc.launch import systemd\n"
            "print(systemd.DBus.__module__, 'lxml' in sys.modules, 'pystemd.base' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == ["pystemd.dbuslib", "False", "False"], out.stdout + out.stderr
