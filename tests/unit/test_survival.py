"""hubsvc.survival: whether users' servers outlive what hubsvc does under systemd (pure)."""

from __future__ import annotations

import pytest

from hubsvc import survival

pytestmark = pytest.mark.unit

LOCAL = ["jupyterhub.spawner.LocalProcessSpawner", "jupyterhub.spawner.Spawner"]
SUDO = ["sudospawner.spawner.SudoSpawner", *LOCAL]
SYSTEMD = ["systemdspawner.systemdspawner.SystemdSpawner", "jupyterhub.spawner.Spawner"]
SUBCLASS = ["mysite.spawner.MySpawner", *LOCAL]


@pytest.mark.parametrize("mro", [LOCAL, SUBCLASS, SUDO])
def test_process_launcher_kills_child_servers_and_says_how_to_fix(mro: list[str]) -> None:
    f = survival.assess(mro, "process", "mixed")
    assert f.severity == "warning" and f.id == "systemd.user_servers"
    assert "systemctl restart hubsvc" in f.what
    assert "hubsvc.service" in f.evidence and "KillMode=mixed" in f.evidence
    assert mro[0] in f.evidence
    assert 'launcher = "systemd"' in f.fix and 'spawner_class = "systemd"' in f.fix


def test_hub_unit_with_killmode_process_keeps_them() -> None:
    f = survival.assess(LOCAL, "systemd", "process")
    assert f.severity == "ok" and "hubsvc-hub.service" in f.what


@pytest.mark.parametrize("mode", ["control-group", "mixed"])
def test_dropin_changing_the_hub_units_killmode_is_named(mode: str) -> None:
    f = survival.assess(LOCAL, "systemd", mode)
    assert f.severity == "warning"
    assert "every restart of the hub" in f.what
    assert f"KillMode={mode}" in f.evidence and "hubsvc-hub.service" in f.evidence
    assert "systemctl revert hubsvc-hub.service" in f.fix


@pytest.mark.parametrize("launcher", ["process", "systemd"])
def test_servers_outside_the_hubs_cgroup_are_fine(launcher: str) -> None:
    f = survival.assess(SYSTEMD, launcher, "mixed")
    assert f.severity == "ok" and "SystemdSpawner" in f.evidence


def test_unknown_killmode_is_not_a_verdict() -> None:
    assert survival.assess(LOCAL, "process", None).severity == "skipped"


def test_no_finding_without_a_spawner_or_with_a_failed_probe(tmp_path) -> None:
    from hubsvc import config

    cfg = config.parse({"paths": {"state_dir": str(tmp_path / "s"), "runtime_dir": str(tmp_path / "r")},
                        "hub": {"config_file": ""}}, source=tmp_path / "hubsvc.toml")
    assert survival.findings(cfg, "the hub's Python did not start") == []
    assert survival.findings(cfg, {"spawner": {"error": "ImportError"}}) == []
