"""A real one-node Slurm cluster (Debian's slurm-wlm + munge) on loopback for the session,
and hubsvc instances whose JupyterHub uses the shipped Slurm example config.

Every daemon the session starts is ended by pid at the end (tests/slurm/cluster.py)."""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.hubsvc_harness import Instance, new_root

from .cluster import Cluster

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "etc" / "hubsvc" / "examples" / "slurm"
CACHE_ENV = Path("/var/cache/hubsvc-test/user-env")
USER_ENV_PINS = ["jupyterhub==6.1.1", "jupyterlab", "batchspawner==1.3.0"]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slurm: a real one-node Slurm cluster + munge on loopback")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "slurm" in Path(str(item.fspath)).parts:
            item.add_marker(pytest.mark.slurm)


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    if os.geteuid() != 0:
        pytest.skip("the Slurm tests need root (apt, daemons, test users)")
    c = Cluster().up()
    try:
        yield c
    finally:
        c.down()


@pytest.fixture
def open_tmp() -> Iterator[Path]:
    """A temporary folder others may enter (pytest's tmp_path sits under a 0700 folder)."""
    d = Path(tempfile.mkdtemp(prefix="hubsvc-slurm-t-", dir="/tmp"))
    d.chmod(0o755)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def _world_runnable(p: Path) -> bool:
    real = p.resolve()
    for d in real.parents:
        if not d.stat().st_mode & stat.S_IXOTH:
            return False
    return bool(real.stat().st_mode & stat.S_IROTH and real.stat().st_mode & stat.S_IXOTH)


@pytest.fixture(scope="session")
def user_env() -> Path:
    """A Python environment the job users can run: the dev venv when it is world-readable
    (it is built from /usr/bin/python3), else a cached one under /var/cache."""
    dev = Path(sys.prefix)
    need = ["bin/python", "bin/jupyterhub-singleuser", "bin/batchspawner-singleuser"]
    if all((dev / n).exists() and _world_runnable(dev / n) for n in need):
        return dev
    if not all((CACHE_ENV / n).exists() for n in need):
        shutil.rmtree(CACHE_ENV, ignore_errors=True)
        CACHE_ENV.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["/usr/bin/python3", "-m", "venv", str(CACHE_ENV)], check=True, timeout=120)
        subprocess.run([str(CACHE_ENV / "bin" / "pip"), "install", "-q", *USER_ENV_PINS],
                       check=True, timeout=600)
        subprocess.run(["chmod", "-R", "a+rX", str(CACHE_ENV)], check=True)
    return CACHE_ENV


def site_example(values: dict[str, Any]) -> str:
    """The shipped example jupyterhub_config.py with its SITE lines set to `values`."""
    text = (EXAMPLE / "jupyterhub_config.py").read_text()
    for name, v in values.items():
        text, n = re.subn(rf"^{name} = .*$", f"{name} = {v!r}", text, count=1, flags=re.M)
        assert n == 1, f"the example has no SITE line {name} = ..."
    return text


class SlurmHub:
    """hubsvc (real CHP + JupyterHub) with the example Slurm config, on loopback."""

    def __init__(self, cluster: Cluster, user_env: Path, site: dict[str, Any] | None = None,
                 extra: str = ""):
        self.cluster = cluster
        self.root = new_root("hubsvc-slurm-")
        os.chmod(self.root, 0o755)
        values = {"USER_ENV": str(user_env), "SERVER_IP": "127.0.0.1", "PARTITION": "",
                  "RUNTIME": "00:30:00", "MEMORY": "500M", "NPROCS": "1",
                  "START_TIMEOUT": 120, "POLL_INTERVAL": 3}
        values.update(site or {})
        self.site_file = self.root / "slurm_site.py"
        self.site_file.write_text(site_example(values))
        hub_extra = (f"load_subconfig({str(self.site_file)!r})\n"
                     "c.Spawner.args = []\n" + extra)
        self.inst = Instance(self.root, hub_extra=hub_extra)
        # the example's [hub] keys, on loopback: connect_url is what jobs are told
        self.inst.overrides = {"hub": {"connect_url": self.inst.hub,
                                       "user_servers_on_stop": "keep"}}
        self.inst.write_config()

    def start(self) -> SlurmHub:
        self.inst.start(timeout=90)
        return self

    def cleanup(self) -> None:
        self.inst.cleanup()


@pytest.fixture
def slurm_hub(cluster: Cluster, user_env: Path,
              request: pytest.FixtureRequest) -> Iterator[Any]:
    made: list[SlurmHub] = []

    def factory(site: dict[str, Any] | None = None, extra: str = "", start: bool = True) -> SlurmHub:
        h = SlurmHub(cluster, user_env, site, extra)
        made.append(h)
        return h.start() if start else h

    yield factory
    failed = getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed
    for h in made:
        h.cleanup()
        if failed:
            print(f"--- hubsvc log ({h.root}) ---\n{h.inst.log_text()[-8000:]}")
            print("--- slurmctld log ---\n" + _tail(Path("/var/lib/hubsvc-test/slurm/slurmctld.log")))
    cluster.cancel_all()
    for h in made:
        if not failed:
            shutil.rmtree(h.root, ignore_errors=True)


def _tail(p: Path, n: int = 3000) -> str:
    try:
        return p.read_text(errors="replace")[-n:]
    except OSError:
        return ""


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: Any) -> Any:
    rep = yield
    setattr(item, "rep_" + rep.when, rep)
    return rep
