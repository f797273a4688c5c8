"""The doctor's scheduler group (`hubsvc.doctor.scheduler.findings`): the Slurm traps of
FACTS.md, against the real cluster."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from hubsvc import config as config_mod
from hubsvc import host, slurm
from hubsvc.doctor import scheduler

from .cluster import SLURM_CONF, Cluster
from .conftest import EXAMPLE


def by_id(findings: list[Any]) -> dict[str, Any]:
    return {f.id: f for f in findings}


def problems(findings: list[Any]) -> dict[str, str]:
    return {f.id: f.severity for f in findings if f.severity in ("error", "warning")}


def test_example_hubsvc_toml_is_valid() -> None:
    cfg = config_mod.load(EXAMPLE / "hubsvc.toml")
    assert cfg.hub.connect_url and not cfg.hub_bind.is_loopback
    assert cfg.hub.user_servers_on_stop == "keep"
    assert cfg.api.is_loopback


def test_healthy_setup_has_no_problem(cluster: Cluster, slurm_hub: Any) -> None:
    hub = slurm_hub(extra='c.Authenticator.allowed_users = {"hsvcs1", "hsvcs2"}\n', start=False)
    found = scheduler.findings(config_mod.load(hub.inst.config))
    assert problems(found) == {}, [(f.id, f.what, f.evidence) for f in found]
    ids = by_id(found)
    for key in ("spawner", "commands", "munge", "controller", "users", "env.cmd",
                "env.batchspawner_singleuser_cmd"):
        assert ids[f"scheduler.{key}"].severity == "ok", key
    assert " is UP" in ids["scheduler.controller"].evidence
    assert all(f.group == "scheduler" for f in found)


def test_not_slurm_no_findings(cluster: Cluster, slurm_hub: Any) -> None:
    hub = slurm_hub(extra='c.JupyterHub.spawner_class = "simple"\n', start=False)
    assert scheduler.findings(config_mod.load(hub.inst.config)) == []


def test_config_traps(cluster: Cluster, slurm_hub: Any, open_tmp: Path) -> None:
    private = open_tmp / "private"  # like a venv on a Python under /root (0700)
    (private / "bin").mkdir(parents=True)
    tool = private / "bin" / "batchspawner-singleuser"
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o755)
    private.chmod(0o700)
    extra = (
        'c.JupyterHub.spawner_class = "batchspawner.SlurmSpawner"\n'  # stock class ...
        'c.SlurmSpawner.ip = "127.0.0.1"\n'  # ... whose start() resets ip to 0.0.0.0
        'c.Spawner.cmd = ["jupyterhub-singleuser"]\n'  # not absolute
        f'c.SlurmSpawner.batchspawner_singleuser_cmd = {str(tool)!r}\n'
        'c.Authenticator.allowed_users = {"hsvcs1", "nosuchuser7"}\n'
        'c.Spawner.start_timeout = 20\n'
    )
    hub = slurm_hub(extra=extra, start=False)
    found = scheduler.findings(config_mod.load(hub.inst.config))
    ids = by_id(found)
    assert problems(found) == {
        "scheduler.ip": "warning",
        "scheduler.cmd.cmd": "error",
        "scheduler.env.batchspawner_singleuser_cmd": "error",
        "scheduler.users": "error",
        "scheduler.start_timeout": "warning",
    }, [(f.id, f.what) for f in found]
    assert "'0.0.0.0'" in ids["scheduler.ip"].what and "Unicode" in ids["scheduler.ip"].fix
    assert "nosuchuser7" in ids["scheduler.users"].evidence
    assert "hsvcs1" not in ids["scheduler.users"].evidence
    ev = ids["scheduler.env.batchspawner_singleuser_cmd"].evidence
    assert ev.startswith(f"{private} (drwx------) cannot be entered"), ev
    assert "secure_path" in ids["scheduler.cmd.cmd"].evidence
    for f in found:
        if f.severity in ("error", "warning"):
            assert f.fix, f.id


def test_commands_missing(cluster: Cluster, slurm_hub: Any) -> None:
    hub = slurm_hub(start=False)
    found = scheduler.findings(config_mod.load(hub.inst.config), path="/nonexistent")
    ids = by_id(found)
    assert ids["scheduler.commands"].severity == "error"
    assert "sbatch" in ids["scheduler.commands"].evidence
    assert "scheduler.controller" not in ids  # nothing to ask it with
    assert ids["scheduler.sudo"].severity == "error"


def test_controller_unreachable_and_munge_down(cluster: Cluster, slurm_hub: Any,
                                               tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    # the real scontrol, pointed at a port where no slurmctld listens
    conf = tmp_path / "slurm.conf"
    port = cluster_port = None
    lines = []
    for ln in SLURM_CONF.read_text().splitlines():
        if ln.startswith("SlurmctldPort="):
            cluster_port = int(ln.split("=", 1)[1])
            port = cluster_port + 1 if cluster_port < 65000 else cluster_port - 1
            ln = f"SlurmctldPort={port}"
        lines.append(ln)
    assert port is not None
    conf.write_text("\n".join(lines) + "\n")
    monkeypatch.setenv("SLURM_CONF", str(conf))

    def runner(argv: Sequence[str], timeout: float) -> host.Completed:
        if argv[0] == "munge":  # the real munge, asked on a socket where no munged listens
            argv = ["munge", "--socket", str(tmp_path / "no-munged.sock"), *argv[1:]]
        return slurm.run(argv, timeout)

    hub = slurm_hub(start=False)
    found = scheduler.findings(config_mod.load(hub.inst.config), runner=runner)
    ids = by_id(found)
    assert ids["scheduler.controller"].severity == "error", ids["scheduler.controller"]
    assert "DOWN" in ids["scheduler.controller"].evidence
    assert ids["scheduler.munge"].severity == "error"
    assert "no-munged.sock" in ids["scheduler.munge"].evidence
    assert "systemctl enable --now munge" in ids["scheduler.munge"].fix
