"""A deterministic world for the supervisor: virtual time, fake processes, fake probes.

`VirtualLoop` is a real asyncio selector loop whose clock jumps to the next timer whenever
nothing is ready, so minutes of supervision run in milliseconds and every run of one
schedule is the same. `World` plays CHP and JupyterHub as the supervisor sees them through
its Launcher and probes: processes that start, become ready, answer probes, exit, stop
(SIGSTOP), hang, and ignore SIGTERM when stopped; a hub that waits ~30 s for the proxy
API and exits; a proxy whose routes live in memory; faults armed for the next launch.
"""

from __future__ import annotations

import asyncio
import selectors
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hubsvc import probes
from hubsvc.components import ComponentSpec
from hubsvc.config import Config, ConfigError, Problem
from hubsvc.supervisor import Supervisor

HUB_PROXY_WAIT_S = 30.0  # JupyterHub gives up on an unreachable proxy API after ~30 s
PROXY_READY_S = 0.2
HUB_READY_S = 2.0
USERS = ("/user/ann", "/user/bo")


class Wedged(Exception):
    """Nothing is scheduled and nothing can happen: the loop would wait forever."""


class _Selector(selectors.DefaultSelector):
    def __init__(self, clock: list[float]):
        super().__init__()
        self.clock = clock

    def select(self, timeout: float | None = None) -> list[Any]:
        ready = super().select(0)
        if ready:
            return ready
        if timeout is None:
            raise Wedged("no timer and nothing ready")
        self.clock[0] += max(timeout, 0.0)
        return []


class VirtualLoop(asyncio.SelectorEventLoop):
    def __init__(self) -> None:
        self.clock = [1000.0]
        super().__init__(_Selector(self.clock))

    def time(self) -> float:
        return self.clock[0]


def run(coro: Any) -> Any:
    loop = VirtualLoop()
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.close()


async def until(pred: Any, limit_s: float = 600.0, step: float = 0.5) -> None:
    """Poll `pred` in virtual time; fail if it does not hold within `limit_s`."""
    for _ in range(int(limit_s / step)):
        if pred():
            return
        await asyncio.sleep(step)
    raise AssertionError(f"not within {limit_s:g} virtual seconds")


class FakeProc:
    """A component process as the supervisor's Handle sees it."""

    def __init__(self, world: World, comp: str, pid: int, fingerprint: str):
        self.world = world
        self.comp = comp
        self.pid = pid
        self.fingerprint = fingerprint
        loop = asyncio.get_running_loop()
        self.started_at = loop.time()
        self.ready_at: float | None = None  # set once it serves
        self.alive = True  # the process exists (whether or not its exit is reported)
        self.stopped = False  # SIGSTOP
        self.hang = False  # alive, but probes never answer
        self.busy = False  # working (uses CPU) while it does not answer
        self._ticks = 0
        self.report_exit = True
        self.rc: int | None = None
        self._exit = loop.create_future()
        self.routes: set[str] = {"/"}  # CHP: routes in memory

    # Handle protocol
    async def wait(self) -> int:
        return await asyncio.shield(self._exit)

    @property
    def returncode(self) -> int | None:
        return self.rc if self._exit.done() else None

    def is_stopped(self) -> bool:
        return self.alive and self.stopped

    def cpu_ticks(self) -> int:
        """A busy process uses CPU between two reads; a hung or stopped one does not."""
        if self.alive and self.busy and not self.stopped:
            self._ticks += 1
        return self._ticks

    def signal(self, sig: int) -> None:
        self.world.signals.append((self.comp, self.pid, sig))
        if not self.alive:
            return
        if sig == signal.SIGKILL:
            self.die(-signal.SIGKILL)
        elif sig == signal.SIGTERM and not self.stopped:
            rc = 2 if self.comp == "proxy" else 0
            asyncio.get_running_loop().call_later(0.05, self.die, rc)

    # world side
    def die(self, rc: int) -> None:
        if not self.alive:
            return
        self.alive = False
        self.rc = rc
        if self.report_exit:
            self._exit.set_result(rc)

    def serving(self) -> bool:
        now = asyncio.get_running_loop().time()
        return (self.alive and not self.stopped and not self.hang and self.ready_at is not None
                and now >= self.ready_at)


@dataclass
class World:
    cfg: Config
    procs: list[FakeProc] = field(default_factory=list)
    armed: dict[str, list[str]] = field(default_factory=lambda: {"proxy": [], "hub": []})
    violations: list[str] = field(default_factory=list)
    signals: list[tuple[str, int, int]] = field(default_factory=list)
    starts: list[tuple[str, int, str]] = field(default_factory=list)
    adoptable: dict[str, FakeProc] = field(default_factory=dict)
    keep: set[str] = field(default_factory=set)
    next_pid: int = 100
    routes_synced: int = 0
    replay_table: set[str] | None = None  # what replay_routes writes into a new CHP
    sync_failures: int = 0  # the next this many route syncs fail (the hub's API busy)
    alive_probes: list[tuple[str, float]] = field(default_factory=list)  # (component, when)

    # ---- who answers on a port ------------------------------------------------------
    def alive(self, comp: str) -> list[FakeProc]:
        return [p for p in self.procs if p.comp == comp and p.alive]

    def serving(self, comp: str) -> FakeProc | None:
        s = [p for p in self.alive(comp) if p.serving()]
        return s[0] if len(s) == 1 else None

    # ---- Launcher ----------------------------------------------------------------------
    async def start(self, spec: ComponentSpec, sink: Any) -> FakeProc:
        comp = spec.name
        fault = self.armed[comp].pop(0) if self.armed[comp] else None
        if fault == "launcher_hang":
            await asyncio.sleep(1e9)
        if fault == "launcher_error":
            raise RuntimeError("D-Bus: connection reset")
        if fault == "launcher_oserror":
            raise FileNotFoundError(2, "No such file or directory")
        others = self.alive(comp)
        if others:
            self.violations.append(f"duplicate {comp}: started while pid "
                                   f"{[p.pid for p in others]} alive")
        self.next_pid += 1
        p = FakeProc(self, comp, self.next_pid, spec.fingerprint)
        self.procs.append(p)
        self.starts.append((comp, p.pid, spec.fingerprint))
        loop = asyncio.get_running_loop()
        if fault == "no_exit_report":
            p.report_exit = False
        if fault == "fail_start" or spec.fingerprint.endswith("-crash"):
            loop.call_later(0.3, p.die, 1)
        elif spec.fingerprint.endswith("-never-ready"):
            pass
        elif comp == "proxy":
            delay = 12.0 if fault == "slow_start" else PROXY_READY_S
            loop.call_later(delay, self._proxy_up, p)
        else:
            delay = 40.0 if fault == "slow_start" else HUB_READY_S
            loop.call_later(0.1, self._hub_connect, p, delay)
        return p

    async def adopt(self, spec: ComponentSpec, sink: Any) -> FakeProc | None:
        p = self.adoptable.pop(spec.name, None)
        return p if p is not None and p.alive else None

    async def keep_on_stop(self, spec: ComponentSpec) -> bool:
        return spec.name in self.keep

    def _proxy_up(self, p: FakeProc) -> None:
        if p.alive:
            p.ready_at = asyncio.get_running_loop().time()

    def _hub_connect(self, p: FakeProc, delay: float) -> None:
        """The hub contacts the proxy API before it listens; ~30 s without it: exit 1."""
        if not p.alive:
            return
        loop = asyncio.get_running_loop()
        if p.stopped:
            loop.call_later(0.5, self._hub_connect, p, delay)
            return
        proxy = self.serving("proxy")
        if proxy is None:
            if loop.time() - p.started_at >= HUB_PROXY_WAIT_S:
                p.die(1)
            else:
                loop.call_later(0.5, self._hub_connect, p, delay)
            return
        loop.call_later(delay, self._hub_up, p)

    def _hub_up(self, p: FakeProc) -> None:
        if not p.alive:
            return
        p.ready_at = asyncio.get_running_loop().time()
        proxy = self.serving("proxy")
        if proxy is not None:  # the hub adds its routes at start
            proxy.routes |= {"hub", *USERS}

    # ---- probes ------------------------------------------------------------------------
    async def _answer(self, comp: str) -> probes.Result:
        alive = self.alive(comp)
        if len(alive) == 1 and alive[0].alive and (alive[0].hang or alive[0].stopped):
            await asyncio.sleep(1e9)  # a request that never gets an answer
        return probes.Result(True, "200") if self.serving(comp) else probes.Result(False, "refused")

    def spec(self, name: str, fingerprint: str = "v1") -> ComponentSpec:
        timeouts = {"proxy": (self.cfg.proxy.start_timeout_s, self.cfg.proxy.stop_timeout_s),
                    "hub": (self.cfg.hub.start_timeout_s, self.cfg.hub.stop_timeout_s)}[name]

        async def probe() -> probes.Result:
            return await self._answer(name)

        async def alive() -> probes.Result:
            self.alive_probes.append((name, asyncio.get_running_loop().time()))
            return await self._answer(name)

        return ComponentSpec(name=name, argv=[name], env={}, cwd=Path("/"),
                             start_timeout_s=timeouts[0], stop_timeout_s=timeouts[1],
                             ready=probe, alive=alive,
                             clean_exit_codes=frozenset({0, 2}) if name == "proxy" else frozenset({0}),
                             fingerprint=f"{name}-{fingerprint}")

    # ---- Checks --------------------------------------------------------------------------
    async def chain(self, cfg: Config) -> probes.Result:
        proxy, hub = self.serving("proxy"), self.serving("hub")
        if proxy is None or hub is None:
            return probes.Result(False, "hub health through the proxy: 503")
        if "hub" not in proxy.routes:
            return probes.Result(False, "CHP's table has no route from the hub yet")
        return probes.Result(True, "ok")

    async def replay_routes(self, cfg: Config) -> int | None:
        proxy = self.serving("proxy")
        if self.replay_table is None or proxy is None:
            return None
        proxy.routes |= self.replay_table
        return len(self.replay_table)

    async def sync_routes(self, cfg: Config) -> tuple[int, int] | str:
        proxy, hub = self.serving("proxy"), self.serving("hub")
        if proxy is None or hub is None:
            return "HTTP 503"
        if self.sync_failures > 0:
            self.sync_failures -= 1
            return "HTTP 503"
        proxy.routes = {"/", "hub", *USERS}  # the hub's view: what it does not run goes
        self.routes_synced += 1
        return len(proxy.routes), len(USERS)


class FakeNotifier:
    watchdog_interval_s: float | None = 1.0

    def __init__(self) -> None:
        self.lines: list[tuple[float, str]] = []

    def send(self, *lines: str) -> None:
        t = asyncio.get_running_loop().time()
        self.lines.extend((t, ln) for ln in lines)

    def status(self, text: str) -> None:
        self.send(f"STATUS={text}")

    def ready(self, text: str) -> None:
        self.send("READY=1", f"STATUS={text}")

    def reloading(self, text: str) -> None:
        self.send("RELOADING=1", f"STATUS={text}")

    def stopping(self, text: str = "stopping") -> None:
        self.send("STOPPING=1", f"STATUS={text}")

    def watchdog(self) -> None:
        self.send("WATCHDOG=1")

    def extend_timeout(self, seconds: float) -> None:
        pass

    def count(self, line: str) -> int:
        return sum(1 for _, ln in self.lines if ln == line)


class FakeHubAPI:
    def retarget(self, cfg: Config) -> None:
        pass

    async def servers(self) -> list[Any]:
        return []


def config(**restart: Any) -> Config:
    return Config.model_validate({
        "paths": {"state_dir": "/nonexistent/state", "runtime_dir": "/nonexistent/run"},
        "hub": {"config_file": ""},
        "restart": {"backoff_initial_s": 0.1, "backoff_max_s": 2.0, "max_restarts": 10,
                    "window_s": 60, **restart},
    })


@dataclass
class Sim:
    """One supervisor in one world; `reload_plan` says what the next reloads return."""

    cfg: Config
    world: World
    sup: Supervisor
    notifier: FakeNotifier
    docs: list[dict[str, Any]]
    reload_plan: list[str]


def make(cfg: Config | None = None) -> Sim:
    cfg = cfg or config()
    world = World(cfg)
    notifier = FakeNotifier()
    docs: list[dict[str, Any]] = []
    plan: list[str] = []
    holder: dict[str, Supervisor] = {}

    async def reloader() -> tuple[Config, list[ComponentSpec]]:
        await asyncio.sleep(1.5)  # the admin's file is loaded in a child process
        what = plan.pop(0) if plan else "same"
        cur = {c.name: c.spec.fingerprint.split("-", 1)[1] for c in holder["sup"].components}
        if what == "bad":
            raise ConfigError([Problem("hub.config_file", "jupyterhub_config.py:3: SyntaxError",
                                       "fix it")])
        if what == "hub":
            cur["hub"] = f"v{len(world.starts)}"
        elif what == "proxy":
            cur["proxy"] = f"v{len(world.starts)}"
        elif what == "broken-hub":
            cur["hub"] = "never-ready"
        elif what == "crash-hub":
            cur["hub"] = "crash"
        return cfg, [world.spec("proxy", cur["proxy"]), world.spec("hub", cur["hub"])]

    def rollback(old: Config, admin_text: str | None) -> list[ComponentSpec]:
        return [world.spec("proxy", "v1"), world.spec("hub", "rolled-back")]

    sup = Supervisor(cfg, [world.spec("proxy"), world.spec("hub")], world, notifier,  # type: ignore[arg-type]
                     FakeHubAPI(), "token", keep_user_servers=True,  # type: ignore[arg-type]
                     output_mode="unit", reloader=reloader, rollback=rollback, checks=world,
                     status_writer=lambda _d, doc: docs.append(doc))
    sup.poll_s = 0.25
    holder["sup"] = sup
    return Sim(cfg, world, sup, notifier, docs, plan)
