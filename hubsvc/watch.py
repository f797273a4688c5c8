"""The supervisor's passive watch, run while everything is ready (issue 4 §2):

- route drift: every health interval, the hub's running servers vs CHP's table (neither
  program logs these reads: CHP runs at warn level, and the generated hub config filters
  hubsvc's successful GETs out of the hub's log); drift is repaired at once (the hub
  re-syncs) and logged as one `route_drift` event per drift;
- redirect loops: the hub's "Redirect loop detected" lines become one `redirect_loop`
  warning per user and episode (routewatch.LoopWatch), shown in `hubsvc status`;
- the optional synthetic probe ([probe] in hubsvc.toml), its last verdict in status.

Under systemd the hub writes to journald directly, so its lines are read back with
`journalctl --follow` (a child of hubsvc whose pipe hubsvc alone reads).
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import time
from collections import deque
from typing import Any

import httpx
import structlog

from . import probes, routewatch
from .config import Config
from .supervisor import Supervisor

log = structlog.get_logger("hubsvc")
KEEP_EPISODES = 10


class Watch:
    def __init__(self, sup: Supervisor, client: httpx.AsyncClient, hub_token: str):
        self.sup = sup
        self.client = client
        self.hub_token = hub_token
        self.loops = routewatch.LoopWatch()
        self.episodes: deque[dict[str, Any]] = deque(maxlen=KEEP_EPISODES)
        # the first probe one interval (at most 30 s) after start: let a fresh start settle
        self._next_probe = time.monotonic() + min(sup.cfg.probe.interval_s, 30.0)
        self._journal: asyncio.subprocess.Process | None = None

    @property
    def cfg(self) -> Config:
        return self.sup.cfg

    def attach(self) -> None:
        self.sup.periodic.append(self.check_routes)
        self.sup.periodic.append(self.tick)
        self.sup.on_start.append(self._on_start)
        self.sup.on_stop.append(self.stop)
        hub = self.sup.by_name["hub"]
        hub.sink.consumers.append(lambda _component, line: self.feed(line))

    async def _on_start(self) -> None:
        if self.sup.by_name["hub"].sink.kind in ("journal", "unit"):
            await self.start_journal_reader()

    # ---- redirect loops from the hub's log -----------------------------------------
    def feed(self, line: str) -> None:
        ep = self.loops.feed(line)
        if ep is not None:
            self._episode_ended(ep)

    def _episode_ended(self, ep: routewatch.Episode) -> None:
        if ep.cause == "missing_route":
            # The hub saw /user/NAME/ requests. If CHP does route that user, they did not
            # come through CHP at all: someone uses the hub's private address.
            asyncio.get_running_loop().create_task(self._refine_and_report(ep))
            return
        self._report(ep)

    async def _refine_and_report(self, ep: routewatch.Episode) -> None:
        table = await probes.routes(self.client, self.cfg, self.sup.proxy_token,
                                    self.cfg.health.timeout_s)
        spec = f"{self.cfg.public.path}user/{ep.user}"
        route = (table or {}).get(spec)
        if isinstance(route, dict) and route.get("user") == ep.user:
            ep.cause = "private_address"
            ep.detail = (f"the proxy routes {spec} to {ep.user}'s server, yet the hub received "
                         f"the requests: they bypassed the proxy. Users must open "
                         f"{self.cfg.public.origin}{self.cfg.public.path}, not the hub's "
                         f"private address {self.cfg.hub.bind_url}")
        self._report(ep)

    def _report(self, ep: routewatch.Episode) -> None:
        ev = ep.event()
        event = ev.pop("event")
        log.warning(event, **ev)
        self.episodes.append(ev)
        self._publish_loops()

    def _publish_loops(self) -> None:
        self.sup.extra_status["redirect_loops"] = list(self.episodes) + self.loops.snapshot()
        self.sup.publish()

    async def start_journal_reader(self) -> None:
        """Under systemd the hub's output goes to journald: follow it from now on."""
        journalctl = shutil.which("journalctl")
        if journalctl is None:
            log.warning("loop_watch_unavailable", reason="journalctl not found")
            return
        self._journal = await asyncio.create_subprocess_exec(
            journalctl, "--follow", "--lines=0", "--output=cat", "--quiet",
            "SYSLOG_IDENTIFIER=hubsvc-hub",
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL, start_new_session=True,
        )
        asyncio.get_running_loop().create_task(self._read_journal(self._journal))

    async def _read_journal(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        while True:
            raw = await proc.stdout.readline()
            if not raw:
                return
            self.feed(raw.decode("utf-8", "replace").rstrip("\n"))

    def stop(self) -> None:
        if self._journal is not None and self._journal.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self._journal.kill()

    # ---- every health interval --------------------------------------------------------
    async def check_routes(self) -> None:
        if self.sup.by_name["hub"].state != "ready" or self.sup.by_name["proxy"].state != "ready":
            return
        result = await routewatch.check_and_repair(self.client, self.cfg, self.hub_token)
        for d in result.drifts:
            ev = d.event()
            ev.pop("event")
            log.warning("route_drift", repaired=result.repaired, **ev)
        if result.drifts and not result.repaired:
            log.error("route_repair_failed", detail=result.detail,
                      remaining=len(result.remaining))

    async def tick(self) -> None:
        ended = self.loops.expire()
        for ep in ended:
            self._episode_ended(ep)
        p = self.cfg.probe
        if p.enabled and time.monotonic() >= self._next_probe:
            self._next_probe = time.monotonic() + p.interval_s
            await self._probe()

    async def _probe(self) -> None:
        from . import probe as walk

        p = self.cfg.probe
        try:
            v = await walk.probe_spawn(self.cfg, p.user, start=p.start, timeout_s=p.timeout_s,
                                       hub_token=self.hub_token)
        except walk.ProbeUsageError as e:
            log.error("probe_failed", user=p.user, reason=str(e))
            return
        summary = {"at": time.time(), "user": p.user, "outcome": v.outcome, "cause": v.cause,
                   "summary": v.summary, "exit_code": v.exit_code}
        self.sup.extra_status["probe"] = summary
        self.sup.publish()
        level = "info" if v.exit_code == 0 else "warning"
        getattr(log, level)("probe_verdict", user=p.user, outcome=v.outcome, cause=v.cause,
                            summary=v.summary)

