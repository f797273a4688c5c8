"""The supervisor's reconcile loop against a simulated world (tests/unit/supsim.py):
fake launcher, fake probes, virtual clock. Every schedule of up to three faults — exit,
SIGTERM, SIGSTOP, hung probes, slow start, failed start, launcher errors and hangs, an exit
never reported, reloads good and bad, a stop — must end with both components ready (or a
give-up the budget explains), no duplicate process, no lost failure, truthful status, and
a watchdog fed all along."""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
from dataclasses import dataclass
from typing import Any

import pytest
import structlog
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hubsvc import supervisor

from . import supsim
from .supsim import FakeProc, Sim

SETTLE_S = 900.0  # virtual seconds a schedule may take to converge after its last fault

PROC_FAULTS = ("kill", "term", "sigstop", "hang")
NEXT_START = ("slow_start", "fail_start", "launcher_error", "launcher_oserror", "launcher_hang",
              "no_exit_report")
RELOADS = ("reload:same", "reload:hub", "reload:proxy", "reload:bad", "reload:broken-hub",
           "reload:crash-hub")
KINDS = PROC_FAULTS + NEXT_START + RELOADS + ("stop",)


@dataclass(frozen=True)
class Fault:
    at: float
    kind: str
    target: str  # proxy, hub, both


@dataclass
class Outcome:
    rc: int
    logs: list[dict[str, Any]]
    expect_failed: list[tuple[str, int]]  # (component, pid) a fault hit while it was up
    stop_requested: bool
    reloads: int
    converged: bool


def _inject(sim: Sim, f: Fault, expect: list[tuple[str, int]], state: dict[str, Any]) -> None:
    loop = asyncio.get_running_loop()
    targets = ["proxy", "hub"] if f.target == "both" else [f.target]
    if f.kind.startswith("reload:"):
        sim.reload_plan.append(f.kind.split(":", 1)[1])
        state["reloads"] += 1
        sim.sup.request_reload()
        return
    if f.kind == "stop":
        state["stop"] = True
        sim.sup.request_stop()
        return
    for t in targets:
        if f.kind in NEXT_START:
            sim.world.armed[t].append(f.kind)
            continue
        comp = sim.sup.by_name[t]
        for p in sim.world.alive(t):
            if comp.handle is p and comp.phase.value == "up":
                expect.append((t, p.pid))
            if f.kind == "kill":
                p.signal(signal.SIGKILL)
            elif f.kind == "term":
                p.die(2 if t == "proxy" else 0)
            elif f.kind == "sigstop":
                p.stopped = True
            elif f.kind == "hang":
                p.hang = True
    del loop


def converged(sim: Sim) -> bool:
    w, sup = sim.world, sim.sup
    proxy, hub = w.serving("proxy"), w.serving("hub")
    return (sup.ready and proxy is not None and hub is not None
            and len(w.alive("proxy")) == 1 and len(w.alive("hub")) == 1
            and sup.by_name["proxy"].handle is proxy and sup.by_name["hub"].handle is hub
            and {"hub", *supsim.USERS} <= proxy.routes)


async def drive(sim: Sim, faults: list[Fault]) -> Outcome:
    loop = asyncio.get_running_loop()
    expect: list[tuple[str, int]] = []
    state: dict[str, Any] = {"stop": False, "reloads": 0}
    runner = asyncio.create_task(sim.sup.run(install_signals=False))
    t0 = loop.time()
    for f in faults:
        loop.call_at(t0 + f.at, _inject, sim, f, expect, state)
    last = t0 + max((f.at for f in faults), default=0.0)
    ok = False
    while loop.time() < last + SETTLE_S and not runner.done():
        await asyncio.sleep(2.0)
        if loop.time() > last and converged(sim) and sim.sup._reload is None \
                and not sim.sup._reload_requests:
            ok = True
            break
    if ok:  # stays converged: nothing left to be noticed late
        await asyncio.sleep(sim.cfg.health.interval_s * 4)
        ok = converged(sim)
    if not runner.done():
        sim.sup.request_stop()
    rc = await asyncio.wait_for(runner, 600)
    return Outcome(rc, [], expect, state["stop"], state["reloads"], ok)


def run_schedule(faults: list[Fault], cfg: Any = None) -> tuple[Sim, Outcome]:
    sim = supsim.make(cfg)
    with structlog.testing.capture_logs() as logs:
        out = supsim.run(drive(sim, faults))
    out.logs = logs
    return sim, out


def events(out: Outcome, name: str, **match: Any) -> list[dict[str, Any]]:
    return [e for e in out.logs if e["event"] == name
            and all(e.get(k) == v for k, v in match.items())]


def check(sim: Sim, out: Outcome) -> None:
    w = sim.world
    assert not w.violations, w.violations
    gave_up = events(out, "gave_up")
    if out.rc == 1:
        # a give-up is explained by the budget, never by a timeout
        assert gave_up and "more than" in gave_up[0]["reason"], gave_up
        assert sim.docs[-1]["failure"]["component"] == gave_up[0]["component"]
    else:
        assert out.rc == 0 and not gave_up
        assert out.stop_requested or out.converged, (
            f"did not converge: {[(c.name, c.phase, c.state) for c in sim.sup.components]} "
            f"alive={[(p.comp, p.pid) for p in w.procs if p.alive]}")
    # no lost failure: every component a fault hit while it was up was seen failing
    failed = {(e["component"], e["pid"]) for e in events(out, "component_failed")}
    replaced = {(e["component"], e["pid"]) for e in events(out, "component_stopped")}
    if not out.stop_requested and out.rc == 0:
        for c, pid in out.expect_failed:
            assert (c, pid) in failed or (c, pid) in replaced, (c, pid, failed)
    # nothing left running after the stop (the launcher kept nothing here)
    assert [p.pid for p in w.procs if p.alive] == []
    # status: a published `ready` is never about a gone process, and the final doc says stopped
    final = sim.docs[-1]
    assert final["ready"] is False and final["state"] in ("stopped", "failed")
    for doc in sim.docs:
        if doc["ready"]:
            assert all(c["state"] == "ready" and c["pid"] for c in doc["components"].values()), doc
    # every process instance was reported started once, with its own pid
    started = [e["pid"] for e in events(out, "component_started")]
    assert len(started) == len(set(started))
    # the watchdog was fed from the loop without a gap until the stop
    pings = [t for t, ln in sim.notifier.lines if ln == "WATCHDOG=1"]
    stop_at = next((t for t, ln in sim.notifier.lines if ln == "STOPPING=1"), pings[-1] if pings else 0)
    pings = [t for t in pings if t <= stop_at]
    assert pings or stop_at - 1000.0 < 3, "no watchdog ping before the stop"
    assert all(b - a <= 2.5 for a, b in itertools.pairwise(pings)), pings[:20]
    # systemd saw every reload: RELOADING=1, then READY=1 once it was applied, refused or
    # rolled back (plus the one READY=1 of the bring-up)
    finished = {d["last_reload"]["id"] for d in sim.docs
                if d.get("last_reload", {}).get("outcome") not in (None, "in_progress", "interrupted")}
    # no reload is left "in progress" once hubsvc has stopped
    assert final.get("last_reload", {}).get("outcome") != "in_progress"
    assert len(finished) <= sim.notifier.count("RELOADING=1")
    assert sim.notifier.count("READY=1") == min(1, len(events(out, "ready"))) + len(finished)


fault = st.builds(
    Fault,
    at=st.integers(0, 160).map(lambda n: n / 4),
    kind=st.sampled_from(KINDS),
    target=st.sampled_from(("proxy", "hub", "both")),
)


@settings(max_examples=int(os.environ.get("HUBSVC_SIM_EXAMPLES", "1000")), deadline=None,
          derandomize=not os.environ.get("HUBSVC_SIM_SEED"),
          suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(fault, max_size=3))
def test_any_three_faults_converge(faults: list[Fault]) -> None:
    sim, out = run_schedule(faults)
    check(sim, out)


# ---- the compound failures that broke the replaying supervisor ------------------------
def test_hub_killed_then_proxy_killed_while_hub_restarts() -> None:
    # hub killed at 10 s; its replacement starts ~0.1 s later; CHP killed 1 s into that start
    sim, out = run_schedule([Fault(10, "kill", "hub"), Fault(11.2, "kill", "proxy")])
    check(sim, out)
    assert out.converged and out.rc == 0
    assert events(out, "start_abandoned", component="hub") or \
        len(events(out, "component_failed", component="hub")) >= 1
    st_ = sim.docs[-2] if len(sim.docs) > 1 else sim.docs[-1]
    assert st_["components"]["proxy"]["restarts"] >= 1


def test_routes_written_back_into_a_new_proxy_wait_for_the_hubs_resync() -> None:
    """A replaced CHP gets the old table written back at once, a stopped user's route
    included: hubsvc is not ready again until the hub has re-synced (retried while it
    fails), and syncs once more after that (a stop that raced the replay)."""
    sim = supsim.make(None)
    sim.world.replay_table = {"hub", "stale", *supsim.USERS}

    def fail_syncs() -> None:
        sim.world.sync_failures = 3

    with structlog.testing.capture_logs() as logs:
        async def go() -> Outcome:
            asyncio.get_running_loop().call_later(9.9, fail_syncs)
            return await drive(sim, [Fault(10, "kill", "proxy")])
        out = supsim.run(go())
    out.logs = logs
    check(sim, out)
    assert out.converged and out.rc == 0
    names = [e["event"] for e in logs]
    replayed = names.index("routes_replayed")
    recovered = names.index("recovered", replayed)
    assert names[replayed:recovered].count("route_sync_failed") == 3
    assert "routes_restored" in names[replayed:recovered]
    assert names[recovered:].count("routes_restored") >= 1  # the second sync
    assert sim.world.sync_failures == 0


def test_probes_and_periodic_checks_share_one_wake_up_per_interval() -> None:
    """A restarted hub's probes start out of step with the proxy's: they fall into step,
    and the periodic checks (the drift watch) run once per interval, right after them."""
    sim = supsim.make(None)
    interval = sim.cfg.health.interval_s
    runs: list[float] = []

    async def periodic() -> None:
        runs.append(asyncio.get_running_loop().time())

    sim.sup.periodic.append(periodic)

    async def go() -> None:
        loop = asyncio.get_running_loop()
        runner = asyncio.create_task(sim.sup.run(install_signals=False))
        t0 = loop.time()
        loop.call_at(t0 + 30.3, lambda: sim.world.serving("hub").die(-9))  # type: ignore[union-attr]
        await asyncio.sleep(150)
        assert sim.sup.ready
        sim.sup.request_stop()
        assert await asyncio.wait_for(runner, 600) == 0
        # the last minute: every probe round holds both components, at one instant
        late = [(c, t) for c, t in sim.world.alive_probes if t >= t0 + 90]
        times = sorted({t for _, t in late})
        assert times and all({c for c, t2 in late if t2 == t} == {"proxy", "hub"} for t in times)
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert all(interval <= g < 1.5 * interval for g in gaps), gaps
        # one periodic run per round, at the round's own instant (nothing to wait for)
        late_runs = [t for t in runs if times[0] <= t <= times[-1]]
        assert len(late_runs) == len(times), (late_runs, times)
        assert all(min(abs(r - t) for t in times) < 0.01 for r in late_runs)

    with structlog.testing.capture_logs():
        supsim.run(go())
    assert sim.world.starts[-1][0] == "hub"  # the kill did restart the hub


def test_both_killed_at_once_recover_within_budget() -> None:
    sim, out = run_schedule([Fault(10, "kill", "both")])
    check(sim, out)
    assert out.converged and out.rc == 0
    assert {e["component"] for e in events(out, "component_failed")} == {"proxy", "hub"}
    # the new hub was started only once the new proxy was ready
    started = [(e["component"], e["pid"]) for e in events(out, "component_started")]
    ready = [(e["component"], e["pid"]) for e in events(out, "component_ready")]
    assert out.logs.index(events(out, "component_ready", pid=started[2][1])[0]) < \
        out.logs.index(events(out, "component_started", pid=started[3][1])[0])
    assert started[2][0] == "proxy" and started[3][0] == "hub" and len(ready) == 4


def test_reload_with_broken_admin_config_is_refused_and_nothing_restarts() -> None:
    sim, out = run_schedule([Fault(10, "reload:bad", "hub")])
    check(sim, out)
    assert out.converged
    assert [s[0] for s in sim.world.starts] == ["proxy", "hub"]  # nothing restarted
    assert events(out, "reload_rejected", field="hub.config_file")
    lr = sim.docs[-1]["last_reload"]
    assert lr["outcome"] == "refused" and lr["ok"] is False
    assert "SyntaxError" in lr["reason"]


def test_new_hub_that_never_gets_ready_is_rolled_back() -> None:
    sim, out = run_schedule([Fault(10, "reload:broken-hub", "hub")])
    check(sim, out)
    assert out.converged
    fps = [s[2] for s in sim.world.starts if s[0] == "hub"]
    assert fps == ["hub-v1", "hub-never-ready", "hub-rolled-back"]
    lr = sim.docs[-1]["last_reload"]
    assert lr["outcome"] == "rolled_back" and "not ready within" in lr["reason"]
    assert events(out, "reload_rolled_back", component="hub")
    # the rollback is not charged to the restart budget
    assert sim.docs[-1]["components"]["hub"]["restarts"] == 0


def test_stale_exit_of_a_replaced_hub_is_dropped() -> None:
    """A reload replaces the hub; the old instance's exit arrives late (after its
    successor started): it must not touch the new hub."""
    sim = supsim.make()

    async def scenario() -> None:
        runner = asyncio.create_task(sim.sup.run(install_signals=False))
        await supsim.until(lambda: sim.sup.ready)
        old: FakeProc = sim.sup.by_name["hub"].handle  # type: ignore[assignment]
        old.report_exit = False  # its exit is reported only later, by hand
        sim.reload_plan.append("hub")
        sim.sup.request_reload()
        await supsim.until(lambda: sim.sup.ready and sim.sup.by_name["hub"].handle is not old)
        new = sim.sup.by_name["hub"].handle
        sim.sup._post("exited", "hub", sim.sup.by_name["hub"].gen - 1, -9)
        await asyncio.sleep(5)
        assert sim.sup.by_name["hub"].handle is new and sim.sup.ready
        sim.sup.request_stop()
        assert await runner == 0

    with structlog.testing.capture_logs() as logs:
        supsim.run(scenario())
    assert not [e for e in logs if e["event"] == "component_failed"]
    assert [e for e in logs if e["event"] == "stale_event"]


def test_busy_hub_gets_more_patience_than_a_hung_one() -> None:
    """A hub that does not answer while it keeps using CPU (a spawn storm) rides out more
    failed probes than one that uses none (deadlocked): both are bounded."""
    sim = supsim.make()
    h = sim.cfg.health
    per = h.interval_s + 2 * h.timeout_s  # one failed probe and the wait for the next

    async def scenario() -> None:
        runner = asyncio.create_task(sim.sup.run(install_signals=False))
        await supsim.until(lambda: sim.sup.ready)
        busy: FakeProc = sim.sup.by_name["hub"].handle  # type: ignore[assignment]
        busy.hang = busy.busy = True
        # longer than a hung hub is given, shorter than a busy one is
        await asyncio.sleep(per * (h.failures_before_restart + 2))
        assert sim.sup.by_name["hub"].handle is busy and busy.alive
        busy.hang = busy.busy = False  # done with its work: answers again
        await supsim.until(lambda: sim.sup.ready)
        assert sim.sup.by_name["hub"].handle is busy
        busy.hang = True  # now hung for real, using no CPU
        await supsim.until(lambda: not busy.alive, limit_s=per * (h.failures_before_restart + 2))
        await supsim.until(lambda: sim.sup.ready)
        busy2: FakeProc = sim.sup.by_name["hub"].handle  # type: ignore[assignment]
        busy2.hang = busy2.busy = True  # busy for ever: replaced too, only later
        await supsim.until(lambda: not busy2.alive,
                           limit_s=per * (supervisor.BUSY_FACTOR * h.failures_before_restart + 2))
        sim.sup.request_stop()
        assert await runner == 0

    with structlog.testing.capture_logs() as logs:
        supsim.run(scenario())
    failed = [e for e in logs if e["event"] == "health_check_failed"]
    assert any(e["busy"] and e["limit"] == supervisor.BUSY_FACTOR * h.failures_before_restart
               for e in failed)
    assert len([e for e in logs if e["event"] == "component_failed"]) == 2


def test_give_up_only_when_the_budget_is_spent() -> None:
    cfg = supsim.config(max_restarts=3)
    sim = supsim.make(cfg)
    sim.world.armed["hub"] = ["fail_start"] * 10
    with structlog.testing.capture_logs() as logs:
        rc = supsim.run(sim.sup.run(install_signals=False))
    assert rc == 1
    gave = [e for e in logs if e["event"] == "gave_up"]
    assert gave[0]["component"] == "hub" and "more than 3 restarts" in gave[0]["reason"]
    assert sim.docs[-1]["components"]["hub"]["restarts"] == 3
    assert sim.docs[-1]["components"]["hub"]["state"] == "failed"
    assert not [p for p in sim.world.procs if p.alive]


def test_total_budget_ends_components_failing_in_turn() -> None:
    cfg = supsim.config(max_restarts=4, max_restarts_total=5)
    sim = supsim.make(cfg)
    sim.world.armed["hub"] = ["fail_start"] * 3

    async def scenario() -> int:
        runner = asyncio.create_task(sim.sup.run(install_signals=False))
        await supsim.until(lambda: runner.done() or sim.world.alive("proxy"))
        for _ in range(3):  # proxy killed three times while the hub keeps failing to start
            await asyncio.sleep(3)
            for p in sim.world.alive("proxy"):
                p.signal(signal.SIGKILL)
        return await asyncio.wait_for(runner, 900)

    with structlog.testing.capture_logs() as logs:
        rc = supsim.run(scenario())
    gave = [e for e in logs if e["event"] == "gave_up"]
    assert rc == 1 and "of all components together" in gave[0]["reason"]


def test_no_fixed_timeout_gives_up_while_the_budget_lasts() -> None:
    """A proxy that takes longer than the old 15 s chain limit to come back does not end
    supervision: the hub waits for it, and everything converges."""
    sim, out = run_schedule([Fault(10, "slow_start", "proxy"), Fault(10, "kill", "both")])
    check(sim, out)
    assert out.converged and out.rc == 0


def test_watchdog_not_fed_while_a_task_overruns_its_bound() -> None:
    sim = supsim.make()

    async def scenario() -> None:
        runner = asyncio.create_task(sim.sup.run(install_signals=False))
        await supsim.until(lambda: sim.sup.ready)
        comp = sim.sup.by_name["hub"]
        comp.action = asyncio.create_task(asyncio.sleep(1e6))  # a wedged action
        comp.action_deadline = asyncio.get_running_loop().time() - 60
        n = sim.notifier.count("WATCHDOG=1")
        await asyncio.sleep(10)
        assert sim.notifier.count("WATCHDOG=1") == n
        comp.action.cancel()
        comp.action = None
        await asyncio.sleep(3)
        assert sim.notifier.count("WATCHDOG=1") > n
        sim.sup.request_stop()
        await runner

    with structlog.testing.capture_logs() as logs:
        supsim.run(scenario())
    assert [e for e in logs if e["event"] == "loop_wedged"]


# ---- adoption (a component kept running across a restart of the service) --------------
def _running_proxy(sim: Sim, serving: bool = True) -> FakeProc:
    async def make() -> FakeProc:
        p = FakeProc(sim.world, "proxy", 42, "proxy-v1")
        p.ready_at = asyncio.get_running_loop().time() if serving else None
        p.routes |= {*supsim.USERS}
        sim.world.procs.append(p)
        return p
    return make()  # type: ignore[return-value]


@pytest.mark.parametrize("healthy", [True, False])
def test_adopted_proxy_counts_only_after_its_probe(healthy: bool) -> None:
    sim = supsim.make()

    async def scenario() -> FakeProc:
        p = await _running_proxy(sim, serving=healthy)  # type: ignore[misc]
        sim.world.adoptable["proxy"] = p
        sim.world.keep = {"proxy"}
        runner = asyncio.create_task(sim.sup.run(install_signals=False))
        await supsim.until(lambda: sim.sup.ready)
        sim.sup.request_stop()
        assert await runner == 0
        return p

    with structlog.testing.capture_logs() as logs:
        p = supsim.run(scenario())
    adopted = [e for e in logs if e["event"] == "component_adopted"]
    assert adopted == [{"event": "component_adopted", "component": "proxy", "pid": 42,
                        "log_level": "info"}]
    proxy_starts = [s for s in sim.world.starts if s[0] == "proxy"]
    if healthy:
        assert proxy_starts == []  # not started afresh
        assert [e for e in logs if e["event"] == "routes_restored"]
        # kept running across the stop: this stop is a restart of the service
        assert p.alive and [e for e in logs if e["event"] == "component_kept"]
        p.die(-9)
    else:
        assert len(proxy_starts) == 1 and not p.alive  # replaced by a fresh one
    assert not sim.world.violations


def test_process_launcher_adopts_nothing_and_keeps_nothing() -> None:
    from hubsvc.launch.process import ProcessLauncher

    pl = ProcessLauncher()
    sim = supsim.make()
    spec = sim.world.spec("proxy")
    assert asyncio.run(pl.adopt(spec, None)) is None  # type: ignore[arg-type]
    assert asyncio.run(pl.keep_on_stop(spec)) is False
