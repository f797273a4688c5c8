"""The supervisor's passive watch, run while everything is ready:

- route drift: every health interval, the hub's running servers vs CHP's table, routes
  the hub's own log announces included (routewatch.DriftWatch.hint) (neither
  program logs these reads: CHP runs at warn level, and the generated hub config filters
  hubsvc's successful GETs out of the hub's log); drift is repaired at once (the hub
  re-syncs) and logged as one `route_drift` event per drift;
- redirect loops: read from the hub's own log stream (hublog.HubLog: a FIFO only the hub
  process writes, never the output users' servers share) — the hub's "Redirect loop
  detected" lines (loopwatch.LoopWatch) and cycles of hub redirects in its access log
  (loopwatch.AccessLoops) become one `redirect_loop` warning per user and episode, shown
  in `hubsvc status`;
- the optional synthetic probe ([probe] in hubsvc.toml), its last verdict in status.

The watch has its own HTTP connection pool: nothing it does can queue in front of the
supervisor's liveness probes.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import TYPE_CHECKING, Any

import structlog

from . import loopback, loopwatch, probes, routetable, routewatch
from .config import Config
from .hublog import HubLog
from .supervisor import Supervisor

if TYPE_CHECKING:
    import httpx

log = structlog.get_logger("hubsvc")
KEEP_EPISODES = 10


class Watch:
    def __init__(self, sup: Supervisor, client: httpx.AsyncClient | None, hub_token: str,
                 answers: probes.ApiAnswers | None = None):
        self.sup = sup
        # `client` is accepted for callers that pass one; the watch uses a pool of its own
        self.client = probes.LazyClient()  # made at its first use, once the hub is up
        # CHP's table every interval, the hub's count every minute: kept open, cheap
        self.local_client = loopback.Client()
        self.answers = answers  # told of each table read (the proxy's API answered)
        self.hub_token = hub_token
        self.loops = loopwatch.LoopWatch()
        self.access = loopwatch.AccessLoops(base_path=sup.cfg.public.path)
        self.episodes: deque[dict[str, Any]] = deque(maxlen=KEEP_EPISODES)
        self.hub_log = HubLog(sup.cfg.paths.runtime_dir, relay=False)
        self._refining = False
        self._silence_reported = False
        # the first probe one interval (at most 30 s) after start: let a fresh start settle
        self._next_probe = time.monotonic() + min(sup.cfg.probe.interval_s, 30.0)

    @property
    def cfg(self) -> Config:
        return self.sup.cfg

    def attach(self) -> None:
        self.sup.periodic.append(self.check_routes)
        self.sup.periodic.append(self.tick)
        self.sup.on_start.append(self._on_start)
        self.sup.on_stop.append(self.stop)
        self.hub_log.consumers.append(self.feed)

    async def _on_start(self) -> None:
        hub = self.sup.by_name["hub"]
        # relay the hub's log as hubsvc's own only where its copy goes to a file nobody
        # watches (the foreground); the journal already holds it otherwise
        self.hub_log.relay = hub.sink.kind in ("file", "pipe", "none")
        try:
            self.hub_log.open(asyncio.get_running_loop())
        except OSError as e:
            log.warning("loop_watch_unavailable", reason=f"cannot create the hub's log stream "
                        f"{self.hub_log.path}: {e}")

    # ---- redirect loops from the hub's own log -------------------------------------
    def feed(self, line: str) -> None:
        # a route the hub announces is expected in CHP's table from now on (routewatch)
        if routewatch.watch_for(self.cfg).hint(line):
            return
        ep = self.loops.feed(line)
        if ep is not None:
            self._episode_ended(ep)
        ep = self.access.feed(line)
        if ep is not None:
            self._report(ep)

    def _episode_ended(self, ep: loopwatch.Episode) -> None:
        if ep.cause == "missing_route" and not self._refining:
            # The hub saw /user/NAME/ requests. If CHP does route that user, they did not
            # come through CHP at all: someone uses the hub's private address. One check
            # at a time: a burst of episodes must not become a burst of requests.
            self._refining = True
            asyncio.get_running_loop().create_task(self._refine_and_report(ep))
            return
        self._report(ep)

    async def _refine_and_report(self, ep: loopwatch.Episode) -> None:
        try:
            table = await probes.routes(self.client, self.cfg, self.sup.proxy_token,
                                        self.cfg.health.timeout_s)
        finally:
            self._refining = False
        spec = routetable.user_routespec(self.cfg.public.path, ep.user)
        route = table.get(spec) if table is not None else None
        if route is not None and route.user == ep.user:
            ep.cause = "private_address"
            ep.detail = (f"the proxy routes {spec} to {ep.user}'s server, yet the hub received "
                         f"the requests: they bypassed the proxy. Users must open "
                         f"{self.cfg.public.origin}{self.cfg.public.path}, not the hub's "
                         f"private address {self.cfg.hub.bind_url}")
        self._report(ep)

    def _report(self, ep: loopwatch.Episode) -> None:
        ev = ep.event()
        event = ev.pop("event")
        log.warning(event, **ev)
        self.episodes.append(ev)
        self._publish_loops()

    def _publish_loops(self) -> None:
        self.sup.extra_status["redirect_loops"] = list(self.episodes) + self.loops.snapshot()
        self.sup.publish()

    def stop(self) -> None:
        self.hub_log.close()
        self.local_client.close()
        try:
            asyncio.get_running_loop().create_task(self.client.aclose())
        except RuntimeError:
            pass

    # ---- every health interval --------------------------------------------------------
    async def check_routes(self) -> None:
        if self.sup.by_name["hub"].state != "ready" or self.sup.by_name["proxy"].state != "ready":
            return
        result = await routewatch.check_and_repair(self.client, self.cfg, self.hub_token,
                                                   local_client=self.local_client,
                                                   answers=self.answers)
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
        self.access.expire()
        self.hub_log.report_drops()
        self._check_hub_log_alive()
        p = self.cfg.probe
        if p.enabled and time.monotonic() >= self._next_probe:
            self._next_probe = time.monotonic() + p.interval_s
            await self._probe()

    def _check_hub_log_alive(self) -> None:
        """A ready hub has written its start-up lines: none on the stream means the hub
        could not open it (an admin's JupyterHub config replacing sys.stderr, a unit
        sandbox hiding runtime_dir) and the loop watch is blind. Say so once."""
        if self._silence_reported or self.hub_log.lines:
            return
        if self.sup.by_name["hub"].state == "ready":
            self._silence_reported = True
            log.warning("loop_watch_unavailable", path=str(self.hub_log.path),
                        reason="the hub wrote nothing to its log stream since it became "
                               "ready: redirect loops will not be reported")

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

