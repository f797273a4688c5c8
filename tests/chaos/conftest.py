"""One hubsvc (real CHP, real JupyterHub) with a user's server running, shared by the chaos
tests of a module: every fault is followed by the same recovery proof, so the suite stays
short enough to run inside `make test`."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.integration.conftest import pytest_runtest_makereport  # noqa: F401
from tests.integration.hubsvc_harness import Instance, new_root

USER = "chaos"


@dataclass
class Chaos:
    inst: Instance
    token: str
    server_pid: int


@pytest.fixture(scope="module")
def chaos() -> Iterator[Chaos]:
    root = new_root("hubsvc-chaos-")
    # A budget large enough for the whole series (each fault costs one or two restarts);
    # exhausting it is tested in the unit simulation.
    inst = Instance(root, overrides={"restart": {"max_restarts": 40, "max_restarts_total": 80,
                                                 "backoff_max_s": 1.0},
                                     "proxy": {"start_timeout_s": 10},
                                     "hub": {"start_timeout_s": 20}})
    ok = False
    try:
        inst.start()
        inst.spawn(USER, timeout=120)
        token = inst.user_token(USER)
        pids = inst.user_server_pids()
        assert len(pids) == 1
        yield Chaos(inst, token, pids[0])
        ok = True
    finally:
        inst.cleanup()
        if ok:
            shutil.rmtree(root, ignore_errors=True)
        else:
            print(f"--- hubsvc log ({root}) ---\n{inst.log_text()[-8000:]}")
