"""The supervisor: a level-triggered reconcile loop over the components (proxy, hub).

    proxy ─ready─▶ hub ─ready─▶ chain proven (public URL → hub, hub route in CHP) ─▶ READY

Each component has a desired state (running, unless hubsvc stops) and an observed one
(which process instance, did it exit, do its probes pass). One loop re-evaluates both
components on every event and every tick and acts on what *is*, not on a backlog of what
happened: any interleaving of faults converges.

- Work that takes time (launching, probing, stopping, proving the chain, validating a
  reload) runs in bounded tasks that only *report* events; only the loop changes state.
- Every event names the process instance (generation) it is about; an event about an
  instance already replaced is dropped (a late exit of an old hub never touches the new).
- The order is a constraint, not a lock: the hub is started only while the proxy is
  ready; a proxy failure seen while the hub starts is acted on at once, and the hub's
  start is given up and retried once the proxy is back. A hub that is already ready
  keeps running while the proxy is replaced (its routes are re-synced afterwards).
- Giving up follows only the restart budget (policy.py), never a timeout.
- The watchdog is fed by the loop itself and only while no task overran its bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import inspect
import os
import signal
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import structlog

from . import logs, probes, status
from .components import ComponentSpec
from .config import Config, ConfigError
from .hubapi import HubAPI, HubAPIError
from .launch import Handle, Launcher
from .loopback import Client as LoopbackClient
from .notify import Notifier
from .output import Sink
from .policy import RestartTracker, decide

log = structlog.get_logger("hubsvc")

POLL_S = 0.02  # readiness polling while a component starts (~0.1 ms of CPU each)
CHAIN_SYNC_AFTER_S = 2.0  # ask the hub to sync routes when its route is this late
KILL_WAIT_S = 5.0  # after SIGKILL: how long an exit may take to be reported
LAUNCHER_CALL_S = 30.0  # keep_on_stop() and other calls into a launcher
ADOPT_S = 8.0  # adopt(): well inside any WatchdogSec (the loop does not run yet)
BUSY_FACTOR = 5  # probe failures tolerated per failures_before_restart while the process uses CPU
OVERRUN_GRACE_S = 10.0  # a task this far past its own bound means the loop is wedged


class State(enum.StrEnum):
    STARTING = "starting"
    READY = "ready"
    RESTARTING = "restarting"
    BACKOFF = "backoff"
    STOPPING = "stopping"
    STOPPED = "stopped"
    FAILED = "failed"


class Phase(enum.Enum):
    """What the loop knows about a component's process (finer than the published State)."""

    DOWN = "down"  # no process; start when allowed and due
    STARTING = "starting"  # launched or adopted, waiting for its readiness probe
    UP = "up"  # ready; liveness probed every health interval
    STOPPING = "stopping"  # being stopped (a restart, or a start given up)
    FAILED = "failed"  # budget exhausted


class GiveUp(Exception):
    def __init__(self, component: str, reason: str):
        super().__init__(f"{component}: {reason}")
        self.component = component
        self.reason = reason


class Checks(Protocol):
    """System-level checks beyond one component: the chain and route restore."""

    async def chain(self, cfg: Config) -> probes.Result: ...

    async def sync_routes(self, cfg: Config) -> tuple[int, int] | str: ...


class HubChecks:
    """The chain through the public URL and the route re-sync, against the real programs."""

    def __init__(self, hub_api: HubAPI, proxy_token: str,
                 probe_client: probes.AnyClient | None = None):
        self.hub_api = hub_api
        self.proxy_token = proxy_token
        # the chain and CHP's table: plain loopback reads, on the probes' cheap client
        self.client = probe_client or hub_api.client
        # CHP's table as last read (by the drift watch), for replay_routes
        self.snapshot: Callable[[], bytes | None] | None = None

    async def chain(self, cfg: Config) -> probes.Result:
        return await probes.chain(self.client, cfg, self.proxy_token, cfg.health.timeout_s)

    async def replay_routes(self, cfg: Config) -> int | None:
        """Write the table the drift watch last read from the previous CHP into the new one
        (routewatch.replay): routes written, or None when there is no table to write."""
        body = self.snapshot() if self.snapshot is not None else None
        if not body or not isinstance(self.client, LoopbackClient):
            return None
        from .routewatch import replay

        return await replay(self.client, cfg, self.proxy_token, body, cfg.health.timeout_s)

    async def sync_routes(self, cfg: Config) -> tuple[int, int] | str:
        """Have the hub push its routing table into CHP now: (routes, user routes) or why not."""
        try:
            await self.hub_api.sync_proxy()
        except HubAPIError as e:
            return str(e)
        table = await probes.routes(self.client, cfg, self.proxy_token, cfg.health.timeout_s)
        return (len(table), len(table.user_routes())) if table is not None else (0, 0)


@dataclass
class Component:
    spec: ComponentSpec
    sink: Sink
    tracker: RestartTracker
    handle: Handle | None = None
    state: State = State.STOPPED
    restarts: int = 0
    last_failure: str | None = None
    last_failure_at: float | None = None
    # --- observed and in-flight, owned by the loop ---
    gen: int = 0  # process instance; every event names the one it is about
    phase: Phase = Phase.DOWN
    action: asyncio.Task[None] | None = field(default=None, repr=False)
    action_deadline: float = 0.0
    probe: asyncio.Task[None] | None = field(default=None, repr=False)
    probe_failures: int = 0
    cpu_ticks: int | None = None  # CPU time of the process at its last probe
    next_probe_at: float = 0.0
    retry_at: float = 0.0
    watcher: asyncio.Task[None] | None = field(default=None, repr=False)
    started_at: float = 0.0
    ever_ready: bool = False
    recovering: bool = False  # a failure is being recovered from (log `recovered` once ready)
    admin_text: str | None = None  # the hub: the admin's config file as this instance read it

    @property
    def name(self) -> str:
        return self.spec.name

    def alive(self) -> bool:
        return self.handle is not None and self.handle.returncode is None

    def to_json(self) -> dict[str, object]:
        state = self.state
        if state is State.READY and not self.alive():
            state = State.RESTARTING  # never report a gone process as ready
        return {
            "pid": self.handle.pid if self.alive() else None,  # type: ignore[union-attr]
            "state": str(state),
            "restarts": self.restarts,
            "last_failure": self.last_failure,
            "last_failure_at": self.last_failure_at,
        }


def describe_exit(rc: int) -> str:
    if rc < 0:
        try:
            return f"killed by signal {signal.Signals(-rc).name}"
        except ValueError:
            return f"killed by signal {-rc}"
    return f"exited with status {rc}"


Reloader = Callable[[], "tuple[Config, list[ComponentSpec]] | Awaitable[tuple[Config, list[ComponentSpec]]]"]
Rollback = Callable[[Config, "str | None"], list[ComponentSpec]]


@dataclass
class Reload:
    """One reload as a transaction: validated, applied, then proven or rolled back."""

    id: int
    started_at: float
    old_cfg: Config | None = None
    old_specs: dict[str, ComponentSpec] = field(default_factory=dict)
    changed: list[str] = field(default_factory=list)
    rolled_back: str | None = None  # why, once rolled back
    task: asyncio.Task[None] | None = None


class Supervisor:
    def __init__(
        self,
        cfg: Config,
        specs: list[ComponentSpec],
        launcher: Launcher,
        notifier: Notifier,
        hub_api: HubAPI,
        proxy_token: str,
        keep_user_servers: bool,
        output_mode: str = "pipe",
        reloader: Reloader | None = None,
        rollback: Rollback | None = None,
        checks: Checks | None = None,
        status_writer: Callable[[Any, dict[str, Any]], None] = status.write,
        probe_client: probes.AnyClient | None = None,
        sinks: Mapping[str, Sink] | None = None,
    ):
        """`sinks`: output sinks already prepared for some components (CHP's head start
        writes to one before the supervisor exists); the others get a new one."""
        self.cfg = cfg
        self.launcher = launcher
        self.notify = notifier
        self.hub_api = hub_api
        self.proxy_token = proxy_token
        self.keep_user_servers = keep_user_servers
        self.output_mode = output_mode
        self.checks: Checks = checks or HubChecks(hub_api, proxy_token, probe_client)
        self._write_status = status_writer
        self.components = [
            Component(spec, (sinks or {}).get(spec.name) or Sink(spec.name),
                      RestartTracker(cfg.restart)) for spec in specs
        ]
        self.by_name = {c.name: c for c in self.components}
        self._reapers: set[asyncio.Task[int]] = set()  # orphans being reaped (_orphan)
        self.total = RestartTracker(cfg.restart, total=True)
        self.state = "starting"
        self.ready = False
        self.failure: dict[str, str] | None = None
        self.started_at = time.time()
        self.extra_status: dict[str, object] = {}
        self.reloader = reloader
        self.rollback = rollback
        # run every health interval, right after the liveness probes (see _periodic)
        self.periodic: list[Callable[[], Awaitable[None]]] = []
        self.on_start: list[Callable[[], Awaitable[None]]] = []  # once, before the bring-up
        self.on_stop: list[Callable[[], None]] = []  # once, after everything stopped
        self.on_ready: list[Callable[[], None]] = []  # once, at the first READY
        # at each reload's outcome, before its status is published (status blocks that
        # describe what a reload may have changed, e.g. the certificate CHP now serves)
        self.on_reload_end: list[Callable[[], None]] = []
        # loop state
        self._events: list[tuple[Any, ...]] = []
        self._wake = asyncio.Event()
        self._probes_done = asyncio.Event()  # the proxy's liveness probe was applied
        self._stop = False
        self._give_up: GiveUp | None = None
        self._chain: asyncio.Task[None] | None = None
        self._chain_key: tuple[int, int] | None = None
        self._routes_dirty = False  # the proxy was replaced under a running hub
        self._followup_sync_at: float | None = None  # a second re-sync after a route replay
        self._reload: Reload | None = None
        self._reload_requests = 0  # SIGHUPs not yet taken up by a reload
        self._reload_seq = 0
        self._last_good: dict[str, tuple[Config, str | None]] = {}
        self.poll_s = POLL_S
        self._wedged = False
        self._admin_text: str | None = None  # after a rollback: the admin's file as last good
        self._admin_pinned = False
        self._fed_at = -1e9
        self._brought_up = False  # adoption done; the loop may start components

    # ---- time, events -------------------------------------------------------------
    @staticmethod
    def _now() -> float:
        return asyncio.get_running_loop().time()

    def _post(self, *event: Any) -> None:
        self._events.append(event)
        self._wake.set()

    # ---- status -------------------------------------------------------------------
    def publish(self, sentence: str | None = None) -> None:
        if sentence:
            self.notify.status(sentence)
        doc = {
            "pid": os.getpid(),
            "state": self.state,
            "ready": self.ready and all(c.alive() and c.phase is Phase.UP for c in self.components),
            "public_url": self.cfg.public.origin + self.cfg.public.path,
            "launcher": getattr(self.launcher, "name", "process"),
            "started_at": self.started_at,
            "failure": self.failure,
            "components": {c.name: c.to_json() for c in self.components},
            **self.extra_status,
        }
        lost = logs.lost_lines()
        if lost:  # whoever read hubsvc's stderr has gone: its log is incomplete
            doc["log_lines_lost"] = lost
        try:
            self._write_status(self.cfg.paths.runtime_dir, doc)
        except OSError as e:
            log.warning("status_write_failed", path=str(self.cfg.paths.runtime_dir), error=str(e))

    def _set(self, comp: Component, state: State, sentence: str | None = None) -> None:
        comp.state = state
        if state is not State.READY:
            self.ready = False
        self.publish(sentence)

    # ---- entry point --------------------------------------------------------------
    async def run(self, install_signals: bool = True) -> int:
        loop = asyncio.get_running_loop()
        if install_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self.request_stop, sig)
            loop.add_signal_handler(signal.SIGHUP, self.request_reload)
        for c in self.components:
            c.sink.open(loop, self.output_mode)
        periodic = asyncio.create_task(self._periodic())
        code = 0
        try:
            self.publish("starting")
            for hook in self.on_start:
                await asyncio.wait_for(hook(), LAUNCHER_CALL_S)
            await self._adopt_all()
            self._brought_up = True
            await self._loop()
            if self._give_up is not None:
                code = self._outcome(self._give_up)
        finally:
            periodic.cancel()
            await self._shutdown()
            for stop_hook in self.on_stop:
                stop_hook()
            for c in self.components:
                c.sink.close()
        return code

    def _outcome(self, exc: GiveUp) -> int:
        self.failure = {"component": exc.component, "reason": exc.reason}
        self.state = "failed"
        log.error("gave_up", component=exc.component, reason=exc.reason,
                  budget=self.cfg.restart.max_restarts,
                  budget_total=self.cfg.restart.total_budget, window_s=self.cfg.restart.window_s)
        self.publish(f"failed: gave up on {exc.component}: {exc.reason}")
        return 1

    def request_stop(self, sig: int = signal.SIGTERM) -> None:
        if self._stop:
            log.info("already_stopping", signal=signal.Signals(sig).name)
            return
        self._stop = True  # before anything that could fail (a log write)
        self._wake.set()
        log.info("stop_requested", signal=signal.Signals(sig).name)

    def request_reload(self) -> None:
        if self.reloader is None:
            log.warning("reload_unsupported", reason="no configuration source to reload")
            return
        log.info("reload_requested", signal="SIGHUP")
        self._reload_requests += 1  # taken up once the bring-up is done and no reload runs
        self._wake.set()

    # ---- adoption ------------------------------------------------------------------
    async def _adopt_all(self) -> None:
        """Components still running from before this supervisor (e.g. CHP kept across a
        restart of the service) are taken over if the launcher knows them; they count
        only once their own readiness probe passes (the loop checks)."""
        adopt = getattr(self.launcher, "adopt", None)
        if adopt is None:
            return
        for c in self.components:
            self.notify.watchdog()
            try:
                handle = await asyncio.wait_for(adopt(c.spec, c.sink), ADOPT_S)
            except Exception as e:  # a failed adoption only means a fresh start
                log.warning("adopt_failed", component=c.name, error=f"{type(e).__name__}: {e}")
                continue
            if handle is None:
                continue
            if handle.returncode is not None:
                continue
            c.gen += 1
            c.handle = handle
            c.phase = Phase.STARTING
            c.started_at = self._now()
            log.info("component_adopted", component=c.name, pid=handle.pid)
            self._set(c, State.STARTING, f"checking {c.name} (adopted pid {handle.pid})")
            self._watch_exit(c)
            c.action_deadline = self._now() + c.spec.start_timeout_s
            c.action = asyncio.create_task(self._await_ready(c, c.gen, handle, adopted=True))
            if c.name == "proxy":
                self._routes_dirty = True  # re-sync from the (new) hub once it is ready

    # ---- the loop -------------------------------------------------------------------
    async def _loop(self) -> None:
        while True:
            self._wake.clear()
            events, self._events = self._events, []
            for ev in events:
                self._apply(ev)
            if self._stop or self._give_up is not None:
                return
            self._reconcile()
            self._feed_watchdog()
            if self._events:
                continue
            # asyncio.timeout, not wait_for: no task made per wake-up (the loop wakes
            # several times every health interval, for as long as hubsvc runs)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._tick_s()):
                    await self._wake.wait()

    def _tick_s(self) -> float:
        """Sleep until the next thing is due (a retry, a probe), at most one health interval."""
        now = self._now()
        due = [now + self.cfg.health.interval_s]
        wd = self.notify.watchdog_interval_s
        if wd:
            due.append(self._fed_at + wd)
        for c in self.components:
            if c.phase is Phase.DOWN and c.retry_at > now:
                due.append(c.retry_at)
            if c.phase is Phase.UP and c.probe is None:
                due.append(c.next_probe_at)
        return max(0.001, min(due) - now)

    def _feed_watchdog(self) -> None:
        """WATCHDOG=1 only from the loop, and only while every in-flight task is inside its
        own bound: a recovery that wedges is ended by systemd's watchdog, not hidden."""
        now = self._now()
        for c in self.components:
            if c.action is not None and not c.action.done() and now > c.action_deadline + OVERRUN_GRACE_S:
                if not self._wedged:
                    log.error("loop_wedged", component=c.name, phase=c.phase.value,
                              overrun_s=round(now - c.action_deadline, 1))
                    self._wedged = True
                return
        self._wedged = False
        wd = self.notify.watchdog_interval_s
        if wd and now - self._fed_at >= wd * 0.9:
            self._fed_at = now
            self.notify.watchdog()

    # ---- events ---------------------------------------------------------------------
    def _apply(self, ev: tuple[Any, ...]) -> None:
        kind = ev[0]
        if kind == "reload_validated" or kind == "reload_refused":
            self._reload_result(ev)
            return
        if kind == "chain":
            _, key, res = ev
            if key == self._chain_key:
                self._chain_done(res)
            return
        comp = self.by_name[ev[1]]
        gen = ev[2]
        if kind == "started":
            handle = ev[3]
            if gen != comp.gen or comp.phase is not Phase.STARTING:
                self._orphan(comp, handle)
                return
            comp.handle = handle
            early = getattr(handle, "executed_at", None)  # CHP's head start (launch.process)
            extra: dict[str, Any] = {}
            if early is not None:
                extra["head_start_s"] = round(time.monotonic() - early, 3)
                if getattr(handle, "warm", None) is not None:  # hubsvc.warm
                    extra["warm"] = handle.warm
            log.info("component_started", component=comp.name, pid=handle.pid,
                     argv=comp.spec.argv, **extra)
            self._watch_exit(comp)
            self.publish()
            return
        if gen != comp.gen:
            log.info("stale_event", component=comp.name, kind=kind, gen=gen, current=comp.gen)
            return
        if kind == "ready":
            if comp.phase is Phase.STARTING:
                self._became_up(comp)
        elif kind == "exited":
            rc = ev[3]
            if comp.phase is Phase.STARTING:
                self._fail(comp, f"{describe_exit(rc)} before it was ready{self._tail(comp)}")
            elif comp.phase is Phase.UP:
                self._fail(comp, describe_exit(rc))
        elif kind == "start_failed":
            if comp.phase is Phase.STARTING:
                self._fail(comp, ev[3], hung=ev[4])
        elif kind == "probe":
            comp.probe = None
            if comp.phase is Phase.UP:
                self._probed(comp, ev[3])
            # the periodic checks follow the proxy's probe (the drift watch's read of
            # CHP's table stands for the next one); without a proxy probe they run on
            # their own every 1.5 intervals (_periodic)
            if comp.name == "proxy":
                self._probes_done.set()
        elif kind == "stopped":
            if comp.phase is Phase.STOPPING:
                comp.phase = Phase.DOWN
                comp.action = None

    def _orphan(self, comp: Component, handle: Handle) -> None:
        """A launch that completed after its start was given up: end that process, so two
        instances of a component never run at once."""
        log.warning("orphan_stopped", component=comp.name, pid=handle.pid,
                    reason="started after its start was given up")
        with contextlib.suppress(Exception):
            handle.signal(signal.SIGKILL)
        # and reap it: a child executed before the loop ran (CHP's head start) has no
        # watcher of asyncio's to do it
        reaper = asyncio.create_task(asyncio.wait_for(handle.wait(), KILL_WAIT_S))
        self._reapers.add(reaper)
        reaper.add_done_callback(self._reapers.discard)
        reaper.add_done_callback(lambda t: t.cancelled() or t.exception())

    def _watch_exit(self, comp: Component) -> None:
        if comp.watcher is not None:
            comp.watcher.cancel()
        handle, gen = comp.handle, comp.gen
        assert handle is not None

        async def watch() -> None:
            rc = await handle.wait()
            self._post("exited", comp.name, gen, rc)

        comp.watcher = asyncio.create_task(watch())

    def _became_up(self, comp: Component) -> None:
        now = self._now()
        comp.phase = Phase.UP
        comp.action = None
        comp.probe_failures = 0
        comp.cpu_ticks = None
        comp.next_probe_at = now + self.cfg.health.interval_s
        comp.ever_ready = True
        assert comp.handle is not None
        log.info("component_ready", component=comp.name, pid=comp.handle.pid,
                 ready_s=round(now - comp.started_at, 3))
        self._set(comp, State.READY, f"{comp.name} ready")
        if comp.name == "proxy" and self.by_name["hub"].phase is Phase.UP:
            self._routes_dirty = True

    def _probed(self, comp: Component, res: probes.Result) -> None:
        h = self.cfg.health
        comp.next_probe_at = self._now() + h.interval_s
        busy = self._used_cpu(comp)
        if res:
            comp.probe_failures = 0
            return
        comp.probe_failures += 1
        # A process that keeps using CPU while it fails its probes is busy (a hub creating
        # a thousand users in one request answers nothing for seconds), not hung: it gets
        # BUSY_FACTOR times the patience. One that uses none (stopped, deadlocked) does not.
        limit = h.failures_before_restart * (BUSY_FACTOR if busy else 1)
        pid = comp.handle.pid if comp.handle else None
        log.warning("health_check_failed", component=comp.name, pid=pid, reason=res.detail,
                    failures=comp.probe_failures, limit=limit, busy=busy)
        if comp.probe_failures >= limit:
            stopped = " (process is stopped)" if self._is_stopped(comp) else ""
            self._fail(comp, f"health check failed {comp.probe_failures} times in a row: "
                             f"{res.detail}{stopped}", hung=True)

    @staticmethod
    def _used_cpu(comp: Component) -> bool:
        """Did comp's process use CPU since its last probe? (False when unknown.)"""
        read = getattr(comp.handle, "cpu_ticks", None)
        try:
            ticks = read() if read is not None else None
        except Exception:
            ticks = None
        before, comp.cpu_ticks = comp.cpu_ticks, ticks
        if ticks is None or before is None or ticks <= before:
            return False
        return not Supervisor._is_stopped(comp)

    @staticmethod
    def _is_stopped(comp: Component) -> bool:
        try:
            return bool(comp.handle and comp.handle.is_stopped())
        except Exception:
            return False

    # ---- failure and restart ------------------------------------------------------------
    def _fail(self, comp: Component, reason: str, hung: bool = False) -> None:
        """Act on a failure of the current instance of `comp` at once: stop what is left of
        it and schedule its next start under the restart budget."""
        now = self._now()
        self._cancel_work(comp)
        comp.last_failure, comp.last_failure_at = reason, time.time()
        self.ready = False
        log.error("component_failed", component=comp.name,
                  pid=comp.handle.pid if comp.handle else None, reason=reason)
        txn = self._reload
        if (txn is not None and comp.name in txn.changed and txn.rolled_back is None
                and self.rollback is not None and comp.name in self._last_good):
            self._roll_back(txn, comp, reason)
            self._stop_instance(comp, hung or comp.phase is Phase.STARTING)
            comp.retry_at = now
            self._set(comp, State.RESTARTING, f"restarting {comp.name}: reload rolled back")
            return
        d = decide(comp.tracker, self.total, now)
        if d.give_up:
            what = (f"more than {d.budget} restarts within {self.cfg.restart.window_s:g}s"
                    if d.scope == "component" else
                    f"more than {d.budget} restarts of all components together within "
                    f"{self.cfg.restart.window_s:g}s")
            self._stop_instance(comp, True)
            comp.phase = Phase.FAILED
            self._set(comp, State.FAILED)
            self._give_up = GiveUp(comp.name, f"{reason} ({what})")
            return
        comp.restarts += 1
        comp.recovering = comp.ever_ready or comp.recovering
        log.warning("restart_scheduled", component=comp.name, attempt=d.attempt,
                    budget=d.budget, delay_s=d.delay_s, reason=reason)
        self.notify.extend_timeout(d.delay_s + comp.spec.start_timeout_s + 10)
        # A component that failed its probes (or never got ready) is hung: it may not act
        # on SIGTERM at all.
        self._stop_instance(comp, hung or comp.phase is Phase.STARTING)
        comp.retry_at = now + d.delay_s
        self._set(comp, State.BACKOFF,
                  f"restarting {comp.name} ({d.attempt}/{d.budget}): {reason}")

    def _cancel_work(self, comp: Component) -> None:
        for task in (comp.action, comp.probe):
            if task is not None and task is not asyncio.current_task():
                task.cancel()
        comp.action = comp.probe = None
        comp.probe_failures = 0
        if self._chain is not None:
            self._chain.cancel()
            self._chain = self._chain_key = None

    def _stop_instance(self, comp: Component, kill_now: bool) -> None:
        """Stop the current instance in a bounded task; the loop sees `stopped`."""
        handle = comp.handle
        comp.phase = Phase.STOPPING
        comp.action_deadline = self._now() + comp.spec.stop_timeout_s + KILL_WAIT_S
        comp.action = asyncio.create_task(self._stop_task(comp, comp.gen, handle, kill_now))

    async def _stop_task(self, comp: Component, gen: int, handle: Handle | None,
                         kill_now: bool) -> None:
        try:
            await self._terminate(comp, handle, kill_now)
        finally:
            self._post("stopped", comp.name, gen)

    # ---- reconcile -------------------------------------------------------------------
    def _reconcile(self) -> None:
        if not self._brought_up:
            return
        now = self._now()
        proxy, hub = self.by_name["proxy"], self.by_name["hub"]
        # The order is a constraint: a hub starting without a ready proxy waits ~30 s for
        # it and exits; give its start up now and retry once the proxy is back.
        if hub.phase is Phase.STARTING and proxy.phase is not Phase.UP:
            log.warning("start_abandoned", component="hub",
                        pid=hub.handle.pid if hub.alive() else None, reason="the proxy is not ready")
            self._cancel_work(hub)
            self._stop_instance(hub, kill_now=True)
            hub.retry_at = now
            self._set(hub, State.RESTARTING, "hub waits for the proxy")
        for c in self.components:
            if c.phase is Phase.DOWN and now >= c.retry_at:
                if c is hub and proxy.phase is not Phase.UP:
                    if c.state not in (State.STARTING, State.RESTARTING):
                        self._set(c, State.RESTARTING if c.ever_ready else State.STARTING)
                    continue
                self._start(c)
            elif c.phase is Phase.UP and c.probe is None and now >= c.next_probe_at:
                # every component due within half an interval is probed in this same
                # wake-up: the probes fall into step, one wake-up per interval for all
                for d in self.components:
                    if (d.phase is Phase.UP and d.probe is None
                            and d.next_probe_at <= now + self.cfg.health.interval_s / 2):
                        d.probe = asyncio.create_task(self._probe_task(d, d.gen))
        if (proxy.phase is Phase.UP and hub.phase is Phase.UP and not self.ready
                and self._chain is None):
            self._chain_key = (proxy.gen, hub.gen)
            self._chain = asyncio.create_task(self._chain_task(self._chain_key))
        if self.ready and self._reload is None and self._reload_requests:
            self._begin_reload()

    def _start(self, comp: Component) -> None:
        comp.gen += 1
        comp.phase = Phase.STARTING
        comp.handle = None
        comp.started_at = self._now()
        if comp.name == "hub":
            comp.admin_text = (self._admin_text if self._admin_pinned
                               else _read_or_none(self.cfg.hub.config_file))
        self._set(comp, State.STARTING, f"starting {comp.name}")
        self.notify.extend_timeout(comp.spec.start_timeout_s + 10)
        # the launcher call and the readiness wait share the start timeout
        comp.action_deadline = self._now() + 2 * comp.spec.start_timeout_s + self.cfg.health.timeout_s
        comp.action = asyncio.create_task(self._start_task(comp, comp.gen, comp.spec))

    async def _start_task(self, comp: Component, gen: int, spec: ComponentSpec) -> None:
        try:
            handle = await asyncio.wait_for(self.launcher.start(spec, comp.sink),
                                            spec.start_timeout_s)
        except TimeoutError:
            self._post("start_failed", comp.name, gen,
                       f"the launcher did not start it within {spec.start_timeout_s:g}s", False)
            return
        except OSError as e:
            self._post("start_failed", comp.name, gen,
                       f"could not execute {spec.argv[0]}: {e.strerror or e}", False)
            return
        except Exception as e:
            self._post("start_failed", comp.name, gen,
                       f"the launcher failed: {type(e).__name__}: {e}", False)
            return
        self._post("started", comp.name, gen, handle)
        await self._await_ready(comp, gen, handle)

    async def _await_ready(self, comp: Component, gen: int, handle: Handle,
                           adopted: bool = False) -> None:
        spec = comp.spec
        deadline = self._now() + spec.start_timeout_s
        while True:
            res = await self._bounded_probe(spec.ready)
            if res:
                self._post("ready", comp.name, gen)
                return
            if handle.returncode is not None:
                return  # the exit watcher reports it
            if self._now() >= deadline:
                what = "adopted, but not ready" if adopted else "not ready"
                self._post("start_failed", comp.name, gen,
                           f"{what} within {spec.start_timeout_s:g}s (last check: {res.detail})"
                           + self._tail(comp), True)
                return
            await asyncio.sleep(self.poll_s)

    async def _bounded_probe(self, probe: Callable[[], Awaitable[probes.Result]]) -> probes.Result:
        t = self.cfg.health.timeout_s
        try:
            async with asyncio.timeout(t + 1):  # in the caller's task: no task per probe
                return await probe()
        except TimeoutError:
            return probes.Result(False, f"no answer within {t:g}s")
        except Exception as e:  # a probe must never take the loop down
            return probes.Result(False, f"{type(e).__name__}: {e}")

    async def _probe_task(self, comp: Component, gen: int) -> None:
        res = await self._bounded_probe(comp.spec.alive)
        self._post("probe", comp.name, gen, res)

    def _tail(self, comp: Component) -> str:
        if comp.sink.kind in ("journal", "unit"):
            return f" (its output: journalctl -t hubsvc-{comp.name})"
        lines = comp.sink.last_lines(6)
        return ("; last output: " + " | ".join(lines)) if lines else ""

    # ---- the chain ---------------------------------------------------------------------
    async def _chain_task(self, key: tuple[int, int]) -> None:
        """READY only once a request through the public URL reaches the hub and CHP holds
        the hub's route. A proxy replaced under a running hub gets the hub's table pushed at
        once; otherwise the hub adds its route itself, and is asked to sync if it is late."""
        t0 = self._now()
        synced = replayed = False
        if self._routes_dirty:
            self._routes_dirty = False
            replayed = await self._replay_routes(t0)
            synced = await self._sync_routes(t0)
        limit = max(15.0, self.cfg.hub.start_timeout_s)
        next_sync = t0 + CHAIN_SYNC_AFTER_S
        while True:
            res = await self._bounded_probe(lambda: self.checks.chain(self.cfg))
            # replayed routes are the old CHP's: not ready until the hub has corrected them
            if res and (synced or not replayed):
                if replayed:  # a stop that raced the replay is settled by a second sync
                    self._followup_sync_at = self._now() + 2 * self.cfg.health.interval_s
                self._post("chain", key, res)
                return
            if self._now() - t0 >= limit:
                why = res.detail if not res else \
                    "the hub did not re-sync the routes written back into the new proxy"
                self._post("chain", key, probes.Result(
                    False, f"the chain through the public URL did not work within {limit:g}s: "
                           f"{why}"))
                return
            if not synced and self._now() >= next_sync:
                synced = await self._sync_routes(t0)
                next_sync = self._now() + CHAIN_SYNC_AFTER_S
            await asyncio.sleep(self.poll_s)

    async def _replay_routes(self, t0: float) -> bool:
        """A proxy replaced under a running hub gets the previous proxy's routes written
        back at once (checks.replay_routes, optional); the hub's re-sync that follows
        corrects whatever changed since that table was read."""
        replay = getattr(self.checks, "replay_routes", None)
        if replay is None:
            return False
        try:
            n = await asyncio.wait_for(replay(self.cfg), self.cfg.health.timeout_s * 4 + 5)
        except Exception as e:  # the hub's re-sync follows whatever happened here
            log.warning("route_replay_failed", component="proxy",
                        reason=f"{type(e).__name__}: {e}" if str(e) else type(e).__name__)
            return True  # some routes may have been written
        if not n:
            return False
        log.info("routes_replayed", component="proxy", routes=n,
                 took_ms=round((self._now() - t0) * 1000, 1))
        return True

    async def _sync_routes(self, t0: float) -> bool:
        try:
            got = await asyncio.wait_for(self.checks.sync_routes(self.cfg),
                                         self.cfg.health.timeout_s * 4 + 5)
        except TimeoutError:
            got = "no answer"
        except Exception as e:  # a failed sync only delays readiness; the chain decides
            got = f"{type(e).__name__}: {e}"
        if isinstance(got, str):
            log.warning("route_sync_failed", component="hub", reason=got)
            return False
        log.info("routes_restored", component="proxy", routes=got[0], user_routes=got[1],
                 took_ms=round((self._now() - t0) * 1000, 1))
        return True

    def _chain_done(self, res: probes.Result) -> None:
        self._chain = self._chain_key = None
        if not res:
            # Both processes answer their own probes but users cannot reach the hub: the
            # hub's start is what failed (its route, its base_url); restart it in budget.
            self._fail(self.by_name["hub"], res.detail, hung=False)
            return
        first = self.state == "starting"
        self.ready = True
        self.state = "running"
        url = self.cfg.public.origin + self.cfg.public.path
        for c in self.components:
            if c.recovering:
                c.recovering = False
                log.info("recovered", component=c.name, pid=c.handle.pid if c.handle else None,
                         restarts=c.restarts)
        for c in self.components:
            if c.name == "hub" and c.handle is not None:
                self._last_good["hub"] = (self.cfg, c.admin_text)
            elif c.handle is not None:
                self._last_good[c.name] = (self.cfg, None)
        if self._reload is not None and self._reload.task is None:
            self._finish_reload()
        if first:
            log.info("ready", url=url, proxy_pid=self.by_name["proxy"].to_json()["pid"],
                     hub_pid=self.by_name["hub"].to_json()["pid"],
                     startup_s=round(time.time() - self.started_at, 3))
            self.notify.ready(f"ready: {url}")
            self.publish()
            for hook in self.on_ready:
                hook()
        elif self._reload is None:
            self.publish(f"ready: {url}")

    async def _periodic(self) -> None:
        """The periodic checks, once per health interval, right after the proxy's liveness
        probe (one wake-up serves both; the drift watch's read of CHP's table then also
        stands for the proxy's API check one interval later, see probes.ApiAnswers); after
        1.5 intervals without one, on their own."""
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.5 * self.cfg.health.interval_s):
                    await self._probes_done.wait()
            self._probes_done.clear()
            if not self.ready:
                continue
            if self._followup_sync_at is not None and self._now() >= self._followup_sync_at:
                # a user's stop that raced the replay deleted the route before the replay
                # wrote it back; the first re-sync kept it while that server was pending
                self._followup_sync_at = None
                await self._sync_routes(self._now())
            for fn in self.periodic:
                try:
                    await fn()
                except Exception as e:  # a watch must never take the supervisor down
                    log.warning("periodic_check_failed", check=getattr(fn, "__name__", "?"),
                                error=f"{type(e).__name__}: {e}")

    # ---- reload: a transaction ------------------------------------------------------------
    def _begin_reload(self) -> None:
        self._reload_requests = 0
        self._reload_seq += 1
        txn = Reload(id=self._reload_seq, started_at=time.time())
        self._reload = txn
        self.notify.reloading("reloading configuration")
        self.extra_status["last_reload"] = {"id": txn.id, "started_at": txn.started_at,
                                            "outcome": "in_progress", "ok": None}
        self.publish()
        txn.task = asyncio.create_task(self._validate(txn))

    async def _validate(self, txn: Reload) -> None:
        """Everything is checked before anything is touched: hubsvc.toml, the ports, and the
        admin's JupyterHub config loaded by the hub's own Python (in the reloader)."""
        assert self.reloader is not None
        try:
            got = self.reloader()
            if inspect.isawaitable(got):
                got = await asyncio.wait_for(got, LAUNCHER_CALL_S + 30)
            self._post("reload_validated", txn.id, got)
        except ConfigError as e:
            self._post("reload_refused", txn.id, [(p.field, p.message, p.fix) for p in e.problems])
        except TimeoutError:
            self._post("reload_refused", txn.id, [("reload", "validating the new configuration "
                                                   "did not finish in time", "try again")])
        except Exception as e:
            self._post("reload_refused", txn.id, [("reload", f"{type(e).__name__}: {e}",
                                                   "see the log")])

    def _reload_result(self, ev: tuple[Any, ...]) -> None:
        kind, txn_id, payload = ev
        txn = self._reload
        if txn is None or txn.id != txn_id:
            return
        txn.task = None
        if kind == "reload_refused":
            for fld, msg, fix in payload:
                log.error("reload_rejected", field=fld, problem=msg, fix=fix)
            fld, msg, _ = payload[0]
            self._end_reload(txn, "refused", problems=[f"{f}: {m}" for f, m, _ in payload],
                             reason=f"{fld}: {msg}")
            self.notify.send("READY=1", f"STATUS=reload failed ({fld}: {msg}); "
                                        "still running the previous configuration")
            self.publish()
            return
        cfg, specs = payload
        new = {s.name: s for s in specs}
        txn.old_cfg = self.cfg
        txn.old_specs = {c.name: c.spec for c in self.components}
        txn.changed = [c.name for c in self.components if c.spec.fingerprint != new[c.name].fingerprint]
        self.cfg = cfg
        self._admin_pinned = False
        self.hub_api.retarget(cfg)
        for c in self.components:
            c.spec = new[c.name]
            c.tracker.policy = cfg.restart
        self.total.policy = cfg.restart
        log.info("reload_applied", restart=txn.changed or "nothing")
        if not txn.changed:
            self._finish_reload()
            return
        # reverse order down; the loop brings them up in order (a hub never runs against a
        # missing proxy) and the chain proof closes the transaction
        for name in reversed(txn.changed):
            c = self.by_name[name]
            self._cancel_work(c)
            self.ready = False
            self._stop_instance(c, kill_now=False)
            c.retry_at = self._now()
            self._set(c, State.RESTARTING, f"restarting {c.name}: configuration changed")

    def _roll_back(self, txn: Reload, comp: Component, reason: str) -> None:
        """A changed component did not come up with the new configuration: go back to the
        last good one (its generated JupyterHub config, the admin's file as it was read)."""
        assert self.rollback is not None and txn.old_cfg is not None
        admin_text = self._last_good.get("hub", (txn.old_cfg, None))[1]
        txn.rolled_back = f"{comp.name}: {reason}"
        log.error("reload_rolled_back", component=comp.name, reason=reason)
        try:
            specs = {s.name: s for s in self.rollback(txn.old_cfg, admin_text)}
        except Exception as e:
            log.error("rollback_failed", error=f"{type(e).__name__}: {e}")
            specs = txn.old_specs
        self.cfg = txn.old_cfg
        self._admin_text, self._admin_pinned = admin_text, True
        self.hub_api.retarget(self.cfg)
        for c in self.components:
            c.spec = specs.get(c.name, txn.old_specs[c.name])
            c.tracker.policy = self.cfg.restart
        self.total.policy = self.cfg.restart
        # the other changed components run the new configuration: put them back too
        for name in txn.changed:
            other = self.by_name[name]
            if other is not comp and other.phase in (Phase.UP, Phase.STARTING):
                self._cancel_work(other)
                self._stop_instance(other, kill_now=False)
                other.retry_at = self._now()
                self._set(other, State.RESTARTING, f"restarting {other.name}: reload rolled back")

    def _finish_reload(self) -> None:
        txn = self._reload
        assert txn is not None
        url = f"{self.cfg.public.origin}{self.cfg.public.path}"
        if txn.rolled_back:
            self._end_reload(txn, "rolled_back", reason=txn.rolled_back)
            self.notify.send("READY=1", f"STATUS=reload rolled back ({txn.rolled_back}); "
                                        f"ready: {url} with the previous configuration")
        else:
            self._end_reload(txn, "applied", restarted=txn.changed)
            names = ", ".join(txn.changed)
            self.notify.send("READY=1", f"STATUS=ready: {url} "
                                        f"(reloaded{': restarted ' + names if names else ''})")
        self.publish()

    def _end_reload(self, txn: Reload, outcome: str, **extra: Any) -> None:
        self._reload = None
        self.extra_status["last_reload"] = {
            "id": txn.id, "started_at": txn.started_at, "at": time.time(), "outcome": outcome,
            "ok": outcome == "applied", "restarted": [], **extra}
        for hook in self.on_reload_end:
            try:
                hook()
            except Exception as e:  # a status block must never take the supervisor down
                log.warning("status_refresh_failed", error=f"{type(e).__name__}: {e}")

    # ---- stopping -----------------------------------------------------------------
    async def _terminate(self, comp: Component, h: Handle | None, kill_now: bool = False) -> None:
        """SIGTERM, grace period, SIGKILL; every wait bounded. A stopped (SIGSTOP) or hung
        child goes straight to SIGKILL: it cannot act on SIGTERM."""
        if h is None or h.returncode is not None:
            return
        try:
            killed = kill_now or h.is_stopped()
        except Exception:
            killed = True
        try:
            h.signal(signal.SIGKILL if killed else signal.SIGTERM)
        except Exception as e:
            log.warning("signal_failed", component=comp.name, pid=h.pid, error=str(e))
        if not killed:
            try:
                await asyncio.wait_for(h.wait(), comp.spec.stop_timeout_s)
            except TimeoutError:
                log.warning("stop_timeout", component=comp.name, pid=h.pid,
                            timeout_s=comp.spec.stop_timeout_s, action="SIGKILL")
                with contextlib.suppress(Exception):
                    h.signal(signal.SIGKILL)
        try:
            rc = await asyncio.wait_for(h.wait(), KILL_WAIT_S)
        except TimeoutError:
            log.error("exit_not_reported", component=comp.name, pid=h.pid, waited_s=KILL_WAIT_S,
                      reason="SIGKILLed but its exit was never reported; going on")
            return
        clean = rc in comp.spec.clean_exit_codes or rc == -signal.SIGTERM
        log.info("component_stopped", component=comp.name, pid=h.pid, status=describe_exit(rc),
                 clean=clean and not killed)

    async def _stop_user_servers(self) -> None:
        hub = self.by_name["hub"]
        if not hub.alive():
            return
        try:
            servers = await asyncio.wait_for(self.hub_api.servers(), 30)
        except (HubAPIError, TimeoutError) as e:
            log.warning("user_servers_unknown", reason=str(e) or "no answer")
            return
        if not servers:
            return
        log.info("stopping_user_servers", count=len(servers),
                 users=sorted({s.user for s in servers}))
        for s in servers:
            with contextlib.suppress(HubAPIError, TimeoutError):
                await asyncio.wait_for(self.hub_api.stop_server(s.user, s.name), 10)
        deadline = time.monotonic() + hub.spec.stop_timeout_s
        while time.monotonic() < deadline:
            try:
                left = await asyncio.wait_for(self.hub_api.servers(), 10)
            except (HubAPIError, TimeoutError):
                break
            if not left:
                return
            await asyncio.sleep(0.2)
        log.warning("user_servers_still_running", reason="not stopped in time")

    async def _keep(self, comp: Component) -> bool:
        keep = getattr(self.launcher, "keep_on_stop", None)
        if keep is None or not comp.alive():
            return False
        try:
            return bool(await asyncio.wait_for(keep(comp.spec), LAUNCHER_CALL_S))
        except Exception as e:
            log.warning("keep_on_stop_failed", component=comp.name, error=f"{type(e).__name__}: {e}")
            return False

    async def _shutdown(self) -> None:
        if self.state != "failed":
            self.state = "stopping"
        self.ready = False
        self.notify.stopping("stopping")
        log.info("stopping", keep_user_servers=self.keep_user_servers)
        if self._chain is not None:
            self._chain.cancel()
        if self._reload is not None:
            if self._reload.task is not None:
                self._reload.task.cancel()
            self._end_reload(self._reload, "interrupted", reason="hubsvc stopped during the reload")
        in_flight = []
        for c in self.components:
            for task in (c.action, c.probe):
                if task is not None and not task.done():
                    task.cancel()
                    in_flight.append(task)
        if in_flight:
            await asyncio.wait(in_flight, timeout=KILL_WAIT_S)
        # a launch that finished while we were stopping is still ours to stop
        for ev in self._events:
            if ev[0] == "started":
                comp = self.by_name[ev[1]]
                if ev[2] == comp.gen and comp.handle is None:
                    comp.handle = ev[3]
                else:
                    self._orphan(comp, ev[3])
        self._events = []
        # Asked once, before anything stops: a component kept means the service restarts,
        # and a restart never stops users' servers, whatever user_servers_on_stop says.
        kept = {c.name for c in self.components if await self._keep(c)}
        for c in reversed(self.components):
            if c.watcher is not None:
                c.watcher.cancel()
            if not c.alive():
                if c.state is not State.FAILED:
                    c.state = State.STOPPED
                continue
            if c.name in kept:
                log.info("component_kept", component=c.name, pid=c.handle.pid if c.handle else None,
                         reason="the service restarts; it keeps running for the next supervisor")
                c.state = State.STOPPED
                continue
            failed = c.state is State.FAILED
            self._set(c, State.STOPPING, f"stopping {c.name}")
            if c.name == "hub" and not self.keep_user_servers and not kept:
                await self._stop_user_servers()
            await self._terminate(c, c.handle)
            c.state = State.FAILED if failed else State.STOPPED
        if self.state != "failed":
            self.state = "stopped"
        self.publish()
        log.info("stopped")


def _read_or_none(path: Any) -> str | None:
    if path is None:
        return None
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except OSError:
        return None
