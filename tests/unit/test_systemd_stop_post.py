"""hubsvc.launch.systemd: when hubsvc.service's ExecStopPost leaves the component units for
the next supervisor (pure; the real systemd 252 behaviour is in tests/system)."""

from __future__ import annotations

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
