"""Real faults against the real CHP and JupyterHub: the compound failures that once broke
hubsvc, random (seeded) kills and stops of either or both components during start,
restart and reload, and the proxy's port taken while CHP is down. After every fault:
ready again within a bound derived from the config, the chain through the public URL,
the user's route back, and the same server process."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import time
from typing import Any

import pytest

from tests.integration.hubsvc_harness import HUBSVC, Instance, proc_alive

from .conftest import USER, Chaos

pytestmark = pytest.mark.chaos

SEED = int(os.environ.get("HUBSVC_CHAOS_SEED", "20261130"))
RANDOM_FAULTS = int(os.environ.get("HUBSVC_CHAOS_FAULTS", "8"))


def bound(inst: Instance) -> float:
    """Longest a recovery may take under this config: noticing a hung component, the
    longest back-off, then a proxy start and a hub start, each within its start timeout."""
    s = inst.settings()
    h, r = s["health"], s["restart"]
    notice = h["interval_s"] * (h["failures_before_restart"] + 1) + h["timeout_s"]
    starts = s["proxy"].get("start_timeout_s", 15) + s["hub"].get("start_timeout_s", 60)
    return notice + 2 * r["backoff_max_s"] + starts + 10


def pids(inst: Instance) -> dict[str, int | None]:
    return {k: v["pid"] for k, v in inst.status()["components"].items()}


def recovered(c: Chaos, replaced: dict[str, int]) -> dict[str, Any]:
    """Wait until every component in `replaced` runs as a new process and hubsvc is ready;
    then prove what users see."""
    inst = c.inst

    def ok(s: dict[str, Any]) -> bool:
        comps = s["components"]
        return s["ready"] and all(comps[n]["pid"] not in (None, old) and proc_alive(comps[n]["pid"])
                                  for n, old in replaced.items())

    st = inst.wait_status(ok, bound(inst))
    for pid in replaced.values():
        assert not proc_alive(pid), f"old process {pid} still alive"
    assert inst.get_public("/hub/health") == 200
    inst.wait_public(f"/user/{USER}/api/status", c.token, 200, timeout=bound(inst))
    assert f"/user/{USER}" in inst.routes()
    assert inst.user_server_pids() == [c.server_pid] and proc_alive(c.server_pid)
    return st


def hit(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def wait_hub_starting(inst: Instance, old_hub: int, timeout: float = 30) -> int:
    st = inst.wait_status(lambda s: s["components"]["hub"]["state"] == "starting"
                          and s["components"]["hub"]["pid"] not in (None, old_hub), timeout)
    return st["components"]["hub"]["pid"]


# ---- the three compound failures from the field -----------------------------------------
def test_kill_hub_then_proxy_while_hub_restarts(chaos: Chaos) -> None:
    inst = chaos.inst
    before = pids(inst)
    hit(before["hub"], signal.SIGKILL)
    new_hub = wait_hub_starting(inst, before["hub"])
    hit(before["proxy"], signal.SIGKILL)
    st = recovered(chaos, {"proxy": before["proxy"], "hub": before["hub"]})
    # the hub's start was given up while the proxy was down, and retried after it
    log = inst.log_text()
    assert "start_abandoned component=hub" in log or st["components"]["hub"]["pid"] == new_hub
    assert st["components"]["proxy"]["last_failure"] == "killed by signal SIGKILL"


def test_kill_proxy_and_hub_at_once(chaos: Chaos) -> None:
    inst = chaos.inst
    before = pids(inst)
    hit(before["proxy"], signal.SIGKILL)
    hit(before["hub"], signal.SIGKILL)
    st = recovered(chaos, {"proxy": before["proxy"], "hub": before["hub"]})
    assert st["state"] == "running" and st["failure"] is None
    assert inst.proc.poll() is None  # did not give up


def reload_cli(inst: Instance, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(HUBSVC), "reload", "--config", str(inst.config),
                           "--timeout", str(timeout)],
                          capture_output=True, text=True, timeout=timeout + 30)


def test_reload_with_syntax_error_in_admin_config_is_refused(chaos: Chaos) -> None:
    inst = chaos.inst
    before = pids(inst)
    good = inst.hub_config.read_text()
    inst.hub_config.write_text(good + "\nc.JupyterHub.template_vars = {'a': 1\n")
    try:
        r = reload_cli(inst)
    finally:
        inst.hub_config.write_text(good)
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert "refused" in r.stderr and "SyntaxError" in r.stderr
    assert f"{inst.hub_config}:" in r.stderr  # file:line
    st = inst.status()
    assert st["last_reload"]["outcome"] == "refused" and st["ready"] is True
    assert pids(inst) == before  # nothing was touched
    assert inst.get_public(f"/user/{USER}/api/status", chaos.token) == 200
    lines = inst.notify.lines()
    assert "RELOADING=1" in lines and any(ln.startswith("STATUS=reload failed") for ln in lines)
    # the fixed file reloads fine (exit 0)
    r = reload_cli(inst)
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert "applied" in r.stdout


def test_new_hub_that_never_gets_ready_is_rolled_back(chaos: Chaos) -> None:
    """The admin's file loads, but the hub it makes cannot start (here: a hub that sleeps
    past its start timeout at import of the config would take too long; a spawner class
    that does not exist makes the hub exit at start). The previous hub comes back."""
    inst = chaos.inst
    before = pids(inst)
    good = inst.hub_config.read_text()
    inst.hub_config.write_text(good + "\nc.JupyterHub.spawner_class = 'no.such.Spawner'\n")
    try:
        r = reload_cli(inst, timeout=bound(inst) + 60)
    finally:
        inst.hub_config.write_text(good)
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert "rolled back" in r.stderr
    st = recovered(chaos, {"hub": before["hub"]})
    assert st["last_reload"]["outcome"] == "rolled_back"
    assert st["components"]["proxy"]["pid"] == before["proxy"]
    snap = inst.run_dir / "jupyterhub_config.last_good.py"
    assert snap.stat().st_mode & 0o777 == 0o600
    # the next good reload starts the hub from the admin's own file again
    r = reload_cli(inst)
    assert r.returncode == 0, (r.stdout, r.stderr)


def test_reload_cli_without_supervisor_exits_3(tmp_path: Any) -> None:
    cfg = tmp_path / "hubsvc.toml"
    cfg.write_text(f'[paths]\nstate_dir = "{tmp_path}/s"\nruntime_dir = "{tmp_path}/r"\n')
    r = subprocess.run([str(HUBSVC), "reload", "--config", str(cfg)], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 3 and "no running supervisor" in r.stderr


# ---- the proxy's port taken while CHP is down ------------------------------------------
def test_proxy_port_taken_while_chp_is_down(chaos: Chaos) -> None:
    inst = chaos.inst
    before = pids(inst)
    squatter = socket.socket()
    squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    hit(before["proxy"], signal.SIGKILL)
    deadline = time.monotonic() + 5
    while True:
        try:
            squatter.bind(("127.0.0.1", inst.public_port))
            squatter.listen(1)
            break
        except OSError:
            if time.monotonic() > deadline:
                pytest.skip("CHP took the port back before the test could")
            time.sleep(0.005)
    try:
        # CHP cannot listen: it fails and is retried under the budget, hubsvc stays up
        inst.wait_status(lambda s: s["components"]["proxy"]["restarts"] >= 2
                         and s["ready"] is False, 30)
        assert inst.proc.poll() is None
    finally:
        squatter.close()
    st = recovered(chaos, {"proxy": before["proxy"]})
    assert st["components"]["hub"]["pid"] == before["hub"]  # the hub was left alone


# ---- random faults, seeded ---------------------------------------------------------------
SIGNALS = {"SIGKILL": signal.SIGKILL, "SIGSTOP": signal.SIGSTOP, "SIGTERM": signal.SIGTERM}


def test_random_faults(chaos: Chaos) -> None:
    rng = random.Random(SEED)
    inst = chaos.inst
    done: list[str] = []
    for _ in range(RANDOM_FAULTS):
        sig_name = rng.choice(list(SIGNALS))
        target = rng.choice(["proxy", "hub", "both"])
        moment = rng.choice(["steady", "hub_start", "reload"])
        what = f"{sig_name} {target} during {moment}"
        before = pids(inst)
        assert before["proxy"] and before["hub"], inst.status()
        if moment == "hub_start":  # a hub restart in progress (kill it first)
            hit(before["hub"], signal.SIGKILL)
            hub_pid = wait_hub_starting(inst, before["hub"])
        elif moment == "reload":  # a reload that replaces the hub, hit while it runs
            inst.hub_extra = f"c.JupyterHub.template_vars = {{'chaos': {rng.random()!r}}}"
            inst.write_config()
            inst.proc.send_signal(signal.SIGHUP)
            hub_pid = wait_hub_starting(inst, before["hub"])
        else:
            hub_pid = before["hub"]  # type: ignore[assignment]
        victims = {"proxy": before["proxy"], "hub": hub_pid}
        chosen = {n: p for n, p in victims.items() if target in (n, "both")}
        for pid in chosen.values():
            hit(pid, SIGNALS[sig_name])
        replaced = dict(chosen)
        if moment in ("hub_start", "reload"):
            replaced["hub"] = before["hub"]
        try:
            recovered(chaos, replaced)  # type: ignore[arg-type]
        finally:
            for pid in chosen.values():  # never leave a stopped process behind
                if proc_alive(pid):
                    hit(pid, signal.SIGCONT)
        done.append(what)
    assert len(done) == RANDOM_FAULTS
    st = inst.status()
    assert st["state"] == "running" and st["failure"] is None
    log = inst.log_text()
    assert "gave_up" not in log and "Traceback" not in log, log[-3000:]
