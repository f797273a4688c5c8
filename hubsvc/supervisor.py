"""The supervisor: bring-up order, watch loop, restart decisions, ordered stop.

    proxy ─ready─▶ hub ─ready─▶ chain proven (public URL → hub, hub route in CHP) ─▶ READY

One restart authority: every failure (exit, or `failures_before_restart` failed liveness
probes in a row) goes through one queue and is handled one at a time, under the restart
policy. Stopping is the bring-up in reverse.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import os
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import structlog

from . import probes, status
from .components import ComponentSpec
from .config import Config, ConfigError
from .hubapi import HubAPI, HubAPIError
from .launch import Handle, Launcher
from .notify import Notifier
from .output import Sink
from .policy import RestartTracker

log = structlog.get_logger("hubsvc")

POLL_S = 0.02  # readiness polling while a component starts (cheap loopback requests)
CHAIN_TIMEOUT_S = 15.0


class State(enum.StrEnum):
    STARTING = "starting"
    READY = "ready"
    RESTARTING = "restarting"
    BACKOFF = "backoff"
    STOPPING = "stopping"
    STOPPED = "stopped"
    FAILED = "failed"


class StartFailed(Exception):
    pass


class GiveUp(Exception):
    def __init__(self, component: str, reason: str):
        super().__init__(f"{component}: {reason}")
        self.component = component
        self.reason = reason


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
    monitor: asyncio.Task[None] | None = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return self.spec.name

    def to_json(self) -> dict[str, object]:
        return {
            "pid": self.handle.pid if self.handle and self.handle.returncode is None else None,
            "state": str(self.state),
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
        reloader: Callable[[], tuple[Config, list[ComponentSpec]]] | None = None,
    ):
        self.cfg = cfg
        self.launcher = launcher
        self.notify = notifier
        self.hub_api = hub_api
        self.proxy_token = proxy_token
        self.keep_user_servers = keep_user_servers
        self.output_mode = output_mode
        self.components = [
            Component(spec, Sink(spec.name), RestartTracker(cfg.restart)) for spec in specs
        ]
        self.by_name = {c.name: c for c in self.components}
        self.state = "starting"
        self.ready = False
        self.failure: dict[str, str] | None = None
        self.started_at = time.time()
        self.extra_status: dict[str, object] = {}
        self.reloader = reloader
        # ("failure", component, reason, hung) or ("reload", None, "", False)
        self._events: asyncio.Queue[tuple[str, Component | None, str, bool]] = asyncio.Queue()
        self._reload_pending = False
        self._stop = asyncio.Event()
        self.periodic: list[Callable[[], Awaitable[None]]] = []  # run every health interval
        self.on_start: list[Callable[[], Awaitable[None]]] = []  # once, before the bring-up
        self.on_stop: list[Callable[[], None]] = []  # once, after everything stopped

    # ---- status -------------------------------------------------------------------
    def publish(self, sentence: str | None = None) -> None:
        if sentence:
            self.notify.status(sentence)
        doc = {
            "pid": os.getpid(),
            "state": self.state,
            "ready": self.ready,
            "public_url": self.cfg.public.origin + self.cfg.public.path,
            "launcher": getattr(self.launcher, "name", "process"),
            "started_at": self.started_at,
            "failure": self.failure,
            "components": {c.name: c.to_json() for c in self.components},
            **self.extra_status,
        }
        try:
            status.write(self.cfg.paths.runtime_dir, doc)
        except OSError as e:
            log.warning("status_write_failed", path=str(self.cfg.paths.runtime_dir), error=str(e))

    def _set(self, comp: Component, state: State, sentence: str | None = None) -> None:
        comp.state = state
        if state is not State.READY:
            self.ready = False
        self.publish(sentence)

    # ---- entry point --------------------------------------------------------------
    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_stop_signal, sig)
        loop.add_signal_handler(signal.SIGHUP, self._on_hup)
        for c in self.components:
            c.sink.open(loop, self.output_mode)
        watchdog = asyncio.create_task(self._watchdog())
        main = asyncio.create_task(self._main())
        stop = asyncio.create_task(self._stop.wait())
        code = 0
        try:
            await asyncio.wait({main, stop}, return_when=asyncio.FIRST_COMPLETED)
            if main.done():
                code = self._outcome(main)
            else:
                main.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await main
        finally:
            stop.cancel()
            await self._shutdown()
            watchdog.cancel()
            for stop_hook in self.on_stop:
                stop_hook()
            for c in self.components:
                c.sink.close()
        return code

    def _outcome(self, main: asyncio.Task[None]) -> int:
        exc = main.exception()
        if isinstance(exc, GiveUp):
            self.failure = {"component": exc.component, "reason": exc.reason}
            self.state = "failed"
            log.error("gave_up", component=exc.component, reason=exc.reason,
                      budget=self.cfg.restart.max_restarts, window_s=self.cfg.restart.window_s)
            self.publish(f"failed: gave up on {exc.component}: {exc.reason}")
            return 1
        if exc is not None:
            raise exc
        return 0

    def _on_stop_signal(self, sig: int) -> None:
        if self._stop.is_set():
            log.info("already_stopping", signal=signal.Signals(sig).name)
            return
        log.info("stop_requested", signal=signal.Signals(sig).name)
        self._stop.set()

    def _on_hup(self) -> None:
        if self.reloader is None:
            log.warning("reload_unsupported", reason="no configuration source to reload")
            return
        log.info("reload_requested", signal="SIGHUP")
        if self.state == "running":
            self._events.put_nowait(("reload", None, "", False))
        else:
            self._reload_pending = True  # applied once the bring-up is done

    async def _watchdog(self) -> None:
        interval = self.notify.watchdog_interval_s
        if interval is None:
            return
        while True:  # sent from the main loop: a stuck loop stops pinging
            self.notify.watchdog()
            await asyncio.sleep(interval)

    # ---- bring-up and watch ---------------------------------------------------------
    async def _main(self) -> None:
        proxy, hub = self.by_name["proxy"], self.by_name["hub"]
        self.publish("starting")
        for hook in self.on_start:
            await hook()
        await self._bring_up(proxy)
        await self._bring_up(hub)
        await self._prove_chain()
        self._became_ready()
        for c in self.components:
            c.monitor = asyncio.create_task(self._monitor(c))
        periodic = asyncio.create_task(self._periodic())
        if self._reload_pending:
            self._events.put_nowait(("reload", None, "", False))
        try:
            while True:
                kind, comp, reason, hung = await self._events.get()
                if kind == "reload":
                    await self._reload()
                elif comp is not None:
                    await self._recover(comp, reason, hung)
        finally:
            periodic.cancel()

    def _became_ready(self) -> None:
        self.ready = True
        self.state = "running"
        url = self.cfg.public.origin + self.cfg.public.path
        log.info("ready", url=url, proxy_pid=self.by_name["proxy"].to_json()["pid"],
                 hub_pid=self.by_name["hub"].to_json()["pid"],
                 startup_s=round(time.time() - self.started_at, 3))
        self.notify.ready(f"ready: {url}")
        self.publish()

    async def _bring_up(self, comp: Component) -> None:
        """Start `comp` until it is ready, retrying under the restart policy."""
        while True:
            try:
                await self._start_once(comp)
                return
            except StartFailed as e:
                reason = str(e)
            comp.last_failure, comp.last_failure_at = reason, time.time()
            log.error("start_failed", component=comp.name, reason=reason)
            await self._back_off(comp, reason)

    async def _back_off(self, comp: Component, reason: str) -> None:
        decision = comp.tracker.decide(time.monotonic())
        if decision.give_up:
            self._set(comp, State.FAILED)
            raise GiveUp(comp.name, f"{reason} (more than {decision.budget} restarts within "
                                    f"{self.cfg.restart.window_s:g}s)")
        comp.restarts += 1
        self._set(comp, State.BACKOFF,
                  f"restarting {comp.name} ({decision.attempt}/{decision.budget}): {reason}")
        log.warning("restart_scheduled", component=comp.name, attempt=decision.attempt,
                    budget=decision.budget, delay_s=decision.delay_s, reason=reason)
        self.notify.extend_timeout(decision.delay_s + comp.spec.start_timeout_s + 10)
        await asyncio.sleep(decision.delay_s)

    async def _start_once(self, comp: Component) -> None:
        spec = comp.spec
        self._set(comp, State.STARTING, f"starting {comp.name}")
        self.notify.extend_timeout(spec.start_timeout_s + 10)
        try:
            handle = await self.launcher.start(spec, comp.sink)
        except OSError as e:
            raise StartFailed(f"could not execute {spec.argv[0]}: {e.strerror or e}") from None
        comp.handle = handle
        log.info("component_started", component=comp.name, pid=handle.pid, argv=spec.argv)
        exited = asyncio.create_task(handle.wait())
        deadline = time.monotonic() + spec.start_timeout_s
        t0 = time.monotonic()
        try:
            while True:
                res = await spec.ready()
                if res:
                    break
                if exited.done():
                    raise StartFailed(self._exit_reason(comp, exited.result(), "before it was ready"))
                if time.monotonic() >= deadline:
                    await self._terminate(comp, kill_now=True)
                    raise StartFailed(
                        f"not ready within {spec.start_timeout_s:g}s (last check: {res.detail})"
                        + self._tail(comp))
                await asyncio.wait({exited}, timeout=POLL_S)
        finally:
            exited.cancel()
        self._set(comp, State.READY, f"{comp.name} ready")
        log.info("component_ready", component=comp.name, pid=handle.pid,
                 ready_s=round(time.monotonic() - t0, 3))

    def _exit_reason(self, comp: Component, rc: int, when: str) -> str:
        return f"{describe_exit(rc)} {when}" + self._tail(comp)

    def _tail(self, comp: Component) -> str:
        if comp.sink.kind in ("journal", "unit"):
            return f" (its output: journalctl -t hubsvc-{comp.name})"
        lines = comp.sink.last_lines(6)
        return ("; last output: " + " | ".join(lines)) if lines else ""

    async def _prove_chain(self) -> None:
        """READY only once a request through the public URL reaches the hub and CHP holds
        the hub's route. The hub adds that route itself; ask it to sync if it is slow."""
        hub = self.by_name["hub"]
        deadline = time.monotonic() + CHAIN_TIMEOUT_S
        synced = False
        t = self.cfg.health.timeout_s
        while True:
            res = await probes.chain(self.hub_api.client, self.cfg, self.proxy_token, t)
            if res:
                return
            if time.monotonic() >= deadline:
                raise GiveUp("hub", f"the chain through the public URL did not work within "
                                    f"{CHAIN_TIMEOUT_S:g}s: {res.detail}")
            if not synced and time.monotonic() >= deadline - CHAIN_TIMEOUT_S + 2:
                synced = await self._sync_routes(hub)
            await asyncio.sleep(POLL_S)

    async def _sync_routes(self, hub: Component) -> bool:
        try:
            await self.hub_api.sync_proxy()
            return True
        except HubAPIError as e:
            log.warning("route_sync_failed", component=hub.name, reason=str(e))
            return False

    async def _monitor(self, comp: Component) -> None:
        """Report comp's exit at once, or N failed liveness probes in a row."""
        assert comp.handle is not None
        handle = comp.handle
        exited = asyncio.create_task(handle.wait())
        failures = 0
        try:
            while True:
                h = self.cfg.health  # re-read: a reload may change it
                await asyncio.wait({exited}, timeout=h.interval_s)
                if exited.done():
                    self._report(comp, describe_exit(exited.result()), hung=False)
                    return
                probe = asyncio.create_task(comp.spec.alive())
                await asyncio.wait({exited, probe}, return_when=asyncio.FIRST_COMPLETED)
                if exited.done():
                    probe.cancel()
                    self._report(comp, describe_exit(exited.result()), hung=False)
                    return
                res = probe.result()
                if res:
                    failures = 0
                    continue
                failures += 1
                log.warning("health_check_failed", component=comp.name, pid=handle.pid,
                            reason=res.detail, failures=failures, limit=h.failures_before_restart)
                if failures >= h.failures_before_restart:
                    stopped = " (process is stopped)" if handle.is_stopped() else ""
                    self._report(comp, f"health check failed {failures} times in a row: "
                                       f"{res.detail}{stopped}", hung=True)
                    return
        finally:
            exited.cancel()

    def _report(self, comp: Component, reason: str, hung: bool) -> None:
        self._events.put_nowait(("failure", comp, reason, hung))

    async def _periodic(self) -> None:
        while True:
            await asyncio.sleep(self.cfg.health.interval_s)
            if not self.ready:
                continue
            for fn in self.periodic:
                try:
                    await fn()
                except Exception as e:  # a watch must never take the supervisor down
                    log.warning("periodic_check_failed", check=getattr(fn, "__name__", "?"),
                                error=f"{type(e).__name__}: {e}")

    async def _recover(self, comp: Component, reason: str, hung: bool) -> None:
        comp.last_failure, comp.last_failure_at = reason, time.time()
        log.error("component_failed", component=comp.name,
                  pid=comp.handle.pid if comp.handle else None, reason=reason)
        self._set(comp, State.RESTARTING, f"restarting {comp.name}: {reason}")
        # A component that failed its probes is hung: it may not act on SIGTERM at all.
        await self._terminate(comp, kill_now=hung)
        await self._back_off(comp, reason)
        await self._rejoin([comp])
        log.info("recovered", component=comp.name, pid=comp.handle.pid if comp.handle else None,
                 restarts=comp.restarts)

    async def _rejoin(self, comps: list[Component]) -> None:
        """Bring stopped components back in bring-up order, restore routes, prove the chain."""
        for comp in sorted(comps, key=self.components.index):
            await self._bring_up(comp)
            if comp.name == "proxy" and self.by_name["hub"].state is State.READY:
                await self._restore_routes()
        await self._prove_chain()
        for comp in comps:
            comp.monitor = asyncio.create_task(self._monitor(comp))
        self.ready = True
        self.notify.status(f"ready: {self.cfg.public.origin}{self.cfg.public.path}")
        self.publish()

    async def _reload(self) -> None:
        """Re-read the config: reject a bad one and keep running; otherwise restart only the
        components whose effective settings changed."""
        assert self.reloader is not None
        self.notify.reloading("reloading configuration")
        try:
            cfg, specs = self.reloader()
        except ConfigError as e:
            for p in e.problems:
                log.error("reload_rejected", field=p.field, problem=p.message, fix=p.fix)
            first = e.problems[0]
            self.extra_status["last_reload"] = {"ok": False, "at": time.time(),
                                                "problems": [str(p) for p in e.problems]}
            self.notify.send("READY=1", f"STATUS=reload failed ({first.field}: {first.message}); "
                                        "still running the previous configuration")
            self.publish()
            return
        new = {s.name: s for s in specs}
        changed = [c for c in self.components if c.spec.fingerprint != new[c.name].fingerprint]
        self.cfg = cfg
        self.hub_api.retarget(cfg)
        for c in self.components:
            c.spec = new[c.name]
            c.tracker.policy = cfg.restart
        names = [c.name for c in changed]
        log.info("reload_applied", restart=names or "nothing")
        if changed:
            # reverse order down, bring-up order up: a hub never runs against a missing proxy
            for c in reversed(changed):
                self._set(c, State.RESTARTING, f"restarting {c.name}: configuration changed")
                await self._terminate(c)
            await self._rejoin(changed)
        self.extra_status["last_reload"] = {"ok": True, "at": time.time(), "restarted": names}
        self.notify.send("READY=1", f"STATUS=ready: {cfg.public.origin}{cfg.public.path} "
                                    f"(reloaded{': restarted ' + ', '.join(names) if names else ''})")
        self.publish()

    async def _restore_routes(self) -> None:
        """A restarted CHP holds only its default route: have the hub push its table now."""
        t0 = time.monotonic()
        if not await self._sync_routes(self.by_name["hub"]):
            return
        table = await probes.routes(self.hub_api.client, self.cfg, self.proxy_token,
                                    self.cfg.health.timeout_s) or {}
        user_routes = sorted(s for s, d in table.items() if isinstance(d, dict) and d.get("user"))
        log.info("routes_restored", component="proxy", routes=len(table),
                 user_routes=len(user_routes), took_ms=round((time.monotonic() - t0) * 1000, 1))

    # ---- stopping -----------------------------------------------------------------
    async def _terminate(self, comp: Component, kill_now: bool = False) -> None:
        """SIGTERM, grace period, SIGKILL. A stopped (SIGSTOP) or hung child goes straight
        to SIGKILL: it cannot act on SIGTERM."""
        h = comp.handle
        if h is None or h.returncode is not None:
            return
        if comp.monitor is not None and comp.monitor is not asyncio.current_task():
            comp.monitor.cancel()
        if kill_now or h.is_stopped():
            h.signal(signal.SIGKILL)
        else:
            h.signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(h.wait(), comp.spec.stop_timeout_s)
            except TimeoutError:
                log.warning("stop_timeout", component=comp.name, pid=h.pid,
                            timeout_s=comp.spec.stop_timeout_s, action="SIGKILL")
                h.signal(signal.SIGKILL)
        rc = await h.wait()
        clean = rc in comp.spec.clean_exit_codes or rc == -signal.SIGTERM
        log.info("component_stopped", component=comp.name, pid=h.pid, status=describe_exit(rc),
                 clean=clean and not kill_now)

    async def _stop_user_servers(self) -> None:
        hub = self.by_name["hub"]
        if hub.handle is None or hub.handle.returncode is not None:
            return
        try:
            servers = await self.hub_api.servers()
        except HubAPIError as e:
            log.warning("user_servers_unknown", reason=str(e))
            return
        if not servers:
            return
        log.info("stopping_user_servers", count=len(servers),
                 users=sorted({s.user for s in servers}))
        for s in servers:
            with contextlib.suppress(HubAPIError):
                await self.hub_api.stop_server(s.user, s.name)
        deadline = time.monotonic() + hub.spec.stop_timeout_s
        while time.monotonic() < deadline:
            try:
                left = await self.hub_api.servers()
            except HubAPIError:
                break
            if not left:
                return
            await asyncio.sleep(0.2)
        log.warning("user_servers_still_running", reason="not stopped in time")

    async def _shutdown(self) -> None:
        if self.state != "failed":
            self.state = "stopping"
        self.ready = False
        self.notify.stopping("stopping")
        log.info("stopping", keep_user_servers=self.keep_user_servers)
        for c in self.components:
            if c.monitor is not None:
                c.monitor.cancel()
        for c in reversed(self.components):
            if c.handle is None or c.handle.returncode is not None:
                if c.state is not State.FAILED:
                    c.state = State.STOPPED
                continue
            self._set(c, State.STOPPING, f"stopping {c.name}")
            if c.name == "hub" and not self.keep_user_servers:
                await self._stop_user_servers()
            await self._terminate(c)
            c.state = State.STOPPED
        if self.state != "failed":
            self.state = "stopped"
        self.publish()
        log.info("stopped")
