"""The passive side of loop detection, for the supervisor's watch loop.

- `compare(servers, table)` (pure): running servers vs CHP's table -> `Drift`s.
- `DriftWatch`: route drift at a cost that does not grow with the number of users (below).
- `check_routes` / `check_and_repair(client, cfg, hub_token)`: one health interval of it.

What the drift watch asks, and how often:
- every health interval, CHP's table (one local request). When its bytes equal the last
  table's (last_activity stamps aside), nothing changed and nothing else happens: no
  parsing, no request to the hub.
- the servers it expects are those the hub listed at its last full listing plus every
  route the hub added since (a route the hub writes names its user and server, so a new
  server is learned from CHP's table alone). A route that vanished, or now points at the
  hub or at someone else, is a candidate drift, seen from CHP's table alone.
- the hub is asked about a candidate's user only (`GET /hub/api/users/NAME`): a server the
  hub stopped is forgotten, a server still running is drift. CHP's table is read once more
  to rule out a route that was being replaced, then the hub re-syncs (`POST /hub/api/proxy`).
- the hub's own log says when it adds a user's route ("Adding user NAME to proxy SPEC",
  read from its log stream by the supervisor's watch, `hint()`): that route is expected
  in CHP's table from then on, so a route that came and went before the next check is
  found at that check like any other missing route (a question about that user only).
- when a route in the table changed (users' activity alone is not a change), and at
  least every `COUNT_EVERY_S` (a full listing counts as one), the hub's count of users with
  a ready server (one row of one page, whatever the number of users): a route that came
  and went between two checks left nothing in CHP's table to compare with; the count
  shows it.
- the two requests made for as long as hubsvc runs (CHP's table every interval, the
  hub's count every minute) go through the kept-open loopback client the watch is given
  (loopback.py); a successful read of CHP's table is also the proxy's proof that its API
  answers hubsvc's token (probes.ApiAnswers), so CHP's API is asked once per interval.
- the full listing of ready servers (paged) only at the first check, every
  `FULL_LISTING_S` (longer on a hub where the listing itself takes long, so that its cost
  stays a fixed small share of the hub's time), and when many users' routes change at
  once: it catches a server whose route never reached CHP, which leaves no trace in CHP's
  table.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote

from . import routetable
from .config import Config
from .hubapi import api_url, count_users, iter_users, resync_routes
from .loopback import Client as LoopbackClient
from .probes import ApiAnswers
from .routetable import RouteTable, normalise_spec, user_routespec
from .secrets import SecretFiles, read

if TYPE_CHECKING:
    import httpx

# A server whose route never reached CHP is found by the hub's count of ready users (once a
# minute) unless the count happens to match, and by the full listing this late at worst
# (JupyterHub 6.1 itself checks its routes only at its start, and, managing CHP itself,
# when CHP died: its periodic update_last_activity only reads the table) …
FULL_LISTING_S = 60.0
# … or later on a large hub: the listing's own duration times this, so that listing every
# user keeps the hub busy at most ~0.03 % of the time whatever the number of users (at
# 1,000 users a listing costs the hub ~0.3 s of CPU: one every ~15 min)
FULL_LISTING_COST_FACTOR = 3000.0
MAX_USER_QUESTIONS = 8  # more candidate users than this in one check: one full listing
CHP_TIMEOUT_S = 3.0
# CHP stamps a route's last_activity whenever a request goes through it, hubsvc's own
# probe of the public port included: the hub's route changes every interval. Routes are
# compared without it (~0.2 ms for 1,000 routes), so activity alone asks nothing of the hub.
_ACTIVITY = re.compile(rb'"last_activity":\s*"[^"]*"')
COUNT_MIN_GAP_S = 1.0  # the hub's count of ready users is asked at most this often …
COUNT_EVERY_S = 60.0  # … and at least this often
RECOUNT_MIN_INTERVALS = 5  # a count that differs lists every user at most this often …
RECOUNT_COST_FACTOR = 100.0  # listings for a differing count: ~1 % of the hub's time at most
# JupyterHub logs this (proxy.add_user) just before it writes a user's route into CHP
_ADDING = re.compile(r"JupyterHub proxy:\d+\] Adding user (\S+) to proxy (/\S*) => ")
HINT_S = 30.0  # a route the hub's log announced is expected this long, until seen in CHP


@dataclass(frozen=True)
class Server:
    """A server the hub says is running (ready)."""

    user: str
    name: str  # "" for the default server
    path: str  # "/user/NAME/" (with the base URL), as the hub reports it


@dataclass(frozen=True)
class Drift:
    """A difference between the hub's running servers and CHP's routes."""

    kind: str  # missing | points_to_hub | wrong_user
    user: str  # "" for the hub's own route
    server_name: str
    routespec: str
    expected: str  # what the route should be
    found: str | None  # what CHP has (target), None when absent

    def event(self) -> dict[str, Any]:
        """Keys for the structured `route_drift` log event."""
        return {"event": "route_drift", **asdict(self)}

    @property
    def key(self) -> tuple[str, str, str, str]:
        return (self.kind, self.user, self.server_name, self.routespec)


def _same_target(a: str, b: str) -> bool:
    return a.rstrip("/") == b.rstrip("/")


def compare(servers: Iterable[Server], table: RouteTable | dict[str, Any]) -> list[Drift]:
    """Running servers without a route, or whose route cannot reach them. Pure.

    `table` is CHP's table (a RouteTable, or the payload as CHP sent it)."""
    if not isinstance(table, RouteTable):
        table = routetable.parse(table)
    out: list[Drift] = []
    hub = table.hub_route()
    for s in servers:
        spec = normalise_spec(s.path)
        r = table.get(spec)
        expected = f"route {spec} to {s.user}'s server"
        if r is None:
            out.append(Drift("missing", s.user, s.name, spec, expected, None))
        elif hub is not None and not r.hub and _same_target(r.target, hub.target):
            out.append(Drift("points_to_hub", s.user, s.name, spec, expected, r.target))
        elif not r.jupyterhub or r.user is None:
            out.append(Drift("wrong_user", s.user, s.name, spec, expected,
                             f"{r.target} (a route the hub did not add)"))
        elif r.user != s.user or r.server_name not in (None, s.name):
            owner = r.user + (f"'s server {r.server_name!r}" if r.server_name else "")
            out.append(Drift("wrong_user", s.user, s.name, spec, expected,
                             f"{r.target} (route of user {owner})"))
    return out


def hub_route_drift(table: RouteTable, cfg: Config) -> list[Drift]:
    """The hub's own route is gone: every page of the hub answers CHP's 404 or its default."""
    if table.hub_route() is not None:
        return []
    spec = normalise_spec(cfg.public.path)
    found = table.get(spec)
    return [Drift("missing", "", "", spec, f"the hub's own route {spec}",
                  found.target if found else None)]


def _servers_of(model: dict[str, Any]) -> list[Server]:
    return [Server(model["name"], name, s["url"])
            for name, s in (model.get("servers") or {}).items()
            if s.get("ready") and not s.get("pending") and s.get("url")]


async def running_servers(client: httpx.AsyncClient, cfg: Config,
                          hub_token: str) -> list[Server]:
    """Every ready server, from the hub's API on its private listener (paginated)."""
    out: list[Server] = []
    async for u in iter_users(client, cfg, hub_token, "ready"):
        out.extend(_servers_of(u))
    return out


async def user_servers(client: httpx.AsyncClient, cfg: Config, hub_token: str,
                       user: str) -> list[Server]:
    """One user's ready servers (one request, whatever the number of users). Raises
    httpx.HTTPError when the hub does not answer."""
    url = api_url(cfg, "users/" + quote(user, safe="@~"))
    r = await client.get(url, headers={"Authorization": f"token {hub_token}"}, timeout=5.0)
    if r.status_code == 404:
        return []
    r.raise_for_status()
    return _servers_of(r.json())


REPLAY_CONNECTIONS = 8  # requests in flight at once when a table is written back


async def replay(client: LoopbackClient, cfg: Config, proxy_token: str, body: bytes,
                 timeout: float) -> int:
    """Write the routes the hub had added (`"jupyterhub": true`) in a table read from CHP
    earlier back into CHP, as they were: a CHP that was replaced serves every user again
    at once instead of after the hub re-adds each route (~1 ms of the hub's CPU per route,
    10 at a time). The hub's re-sync that must follow removes what has gone since and adds
    what came. Returns the number of routes written; raises LoopbackError / ValueError."""
    payload = json.loads(body)
    if not isinstance(payload, dict):
        raise ValueError("CHP's table is not a JSON object")
    items = [(spec, {k: v for k, v in data.items() if k != "last_activity"})
             for spec, data in payload.items()
             if isinstance(spec, str) and isinstance(data, dict)
             and data.get("jupyterhub") is True and isinstance(data.get("target"), str)]
    headers = {"Authorization": f"token {proxy_token}", "Content-Type": "application/json"}
    todo = iter(items)
    written = 0
    failed: list[Exception] = []

    async def writer() -> None:
        nonlocal written
        for spec, data in todo:  # shared: each route is written by one writer
            if failed:  # one failure stops every writer before replay() returns
                return
            # CHP's table holds keys unescaped; the hub escapes them like this when it posts
            url = cfg.api.url("api/routes" + quote(spec, safe="@/~"))
            try:
                r = await client.request("POST", url, headers=headers, timeout=timeout,
                                         body=json.dumps(data).encode())
                if r.status_code != 201:
                    raise ValueError(f"CHP answered HTTP {r.status_code} for {spec}")
            except Exception as e:
                failed.append(e)
                return
            written += 1

    # every writer has finished when this returns: nothing is written into CHP after it,
    # while the hub's re-sync runs
    await asyncio.gather(*(writer() for _ in range(min(REPLAY_CONNECTIONS, len(items)))))
    if failed:
        raise failed[0]
    return written


@dataclass
class WatchResult:
    drifts: list[Drift]
    repaired: bool | None  # None: nothing to repair
    detail: str = ""
    remaining: list[Drift] = field(default_factory=list)  # still drifting after repair


class DriftWatch:
    """Route drift for one hub and one CHP; keeps what it learned between checks."""

    def __init__(self, cfg: Config, full_listing_s: float = FULL_LISTING_S,
                 clock: Callable[[], float] = time.monotonic):
        self.cfg = cfg
        self.full_listing_s = full_listing_s
        self.clock = clock
        self.known: dict[str, Server] = {}  # routespec -> a server the hub runs
        self._last_body: bytes | None = None
        self.last_table: bytes | None = None  # CHP's table as last read (replayed into a new CHP)
        self._next_full = -math.inf
        self._next_count = -math.inf
        self._count_by = -math.inf
        self._recount_at = -math.inf  # a listing for a count that differs: not before
        self._proxy_token: str | None = None
        self.hub_questions = 0  # requests to the hub so far (for tests and benchmarks)
        # CHP's table every interval and the hub's count every minute: the supervisor's
        # watch gives kept-open connections of hubsvc's loopback client (a fraction of
        # httpx's CPU per request); without one, the client each check is given serves
        self.local_client: LoopbackClient | None = None
        self.answers: ApiAnswers | None = None  # told of each table read that succeeded
        # routes the hub's log announced and CHP's table did not show yet: spec -> (the
        # server, announced at, expected until)
        self._hints: dict[str, tuple[Server, float, float]] = {}

    # ---- reading the two sides ---------------------------------------------------------
    async def _table_bytes(self, client: httpx.AsyncClient) -> bytes:
        if self._proxy_token is None:
            try:
                self._proxy_token = read(SecretFiles.in_dir(self.cfg.paths.state_dir).proxy_token)
            except OSError as e:
                raise routetable.TableUnavailable(f"proxy token unreadable: {e}") from None
        t0 = time.monotonic()
        try:
            body = await routetable.fetch_bytes(self.local_client or client, self.cfg,
                                                self._proxy_token, CHP_TIMEOUT_S)
        except routetable.TableUnavailable:
            self._proxy_token = None  # re-read: the token file may have been replaced
            raise
        # it stands for the proxy's liveness check of the API only if it was as quick as
        # that check must be
        if self.answers is not None and time.monotonic() - t0 <= self.cfg.health.timeout_s:
            self.answers.seen(self.cfg.api.origin)
        return body

    async def _full_listing(self, client: httpx.AsyncClient, hub_token: str) -> None:
        # a hub too busy to answer is not asked again at the next interval, but a period
        # later: what was learned so far (and from CHP's table meanwhile) stays in use
        self._next_full = self.clock() + self.full_listing_s
        t0 = time.monotonic()
        servers = await running_servers(client, self.cfg, hub_token)
        took = time.monotonic() - t0
        self.hub_questions += 1
        self.known = {normalise_spec(s.path): s for s in servers}
        self._count_by = self.clock() + COUNT_EVERY_S
        self._next_full = self.clock() + max(self.full_listing_s,
                                             took * FULL_LISTING_COST_FACTOR)

    def _learn(self, table: RouteTable) -> None:
        """A route the hub added for a user's server at that server's own routespec says
        the hub runs that server."""
        base = self.cfg.public.path
        for spec, r in table.user_routes().items():
            if spec in self.known or r.user is None:
                continue
            name = r.server_name or ""
            if normalise_spec(user_routespec(base, r.user, name)) == spec:
                self.known[spec] = Server(r.user, name, spec)

    def hint(self, line: str) -> bool:
        """A line of the hub's own log: if it announces a user's route ("Adding user NAME
        to proxy SPEC => TARGET"), expect that route in CHP's table from now on. True
        when the line was such an announcement."""
        m = _ADDING.search(line)
        if m is None:
            return False
        user, spec = m.group(1), normalise_spec(m.group(2))
        own = normalise_spec(user_routespec(self.cfg.public.path, user))
        if spec == own:
            name = ""
        elif spec.startswith(own + "/"):
            name = unquote(spec[len(own) + 1:])
        else:
            return False  # not where the hub routes that user's servers
        now = self.clock()
        self._hints[spec] = (Server(user, name, spec), now, now + HINT_S)
        return True

    def _take_hints(self, table: RouteTable) -> None:
        """Announced routes become servers to expect once the hub has had half an interval
        to write them (it logs just before), a few per check (each missing one costs a
        question); a route in CHP's table (learned from it) or an old announcement is done
        with."""
        now = self.clock()
        taken = 0
        for spec, (server, at, until) in sorted(self._hints.items(), key=lambda kv: kv[1][1]):
            if table.get(spec) is not None or now > until:
                del self._hints[spec]
            elif (now - at >= self.cfg.health.interval_s / 2 and spec not in self.known
                    and taken < MAX_USER_QUESTIONS // 2):
                self.known[spec] = server
                taken += 1

    def _compare(self, table: RouteTable) -> list[Drift]:
        return hub_route_drift(table, self.cfg) + compare(self.known.values(), table)

    async def _confirm(self, client: httpx.AsyncClient, hub_token: str,
                       drifts: list[Drift], table: RouteTable) -> list[Drift]:
        """Keep the candidates whose server the hub still runs."""
        users = sorted({d.user for d in drifts if d.user})
        if len(users) > MAX_USER_QUESTIONS:
            await self._full_listing(client, hub_token)
            self._learn(table)
            return self._compare(table)
        for user in users:
            running = {normalise_spec(s.path) for s in
                       await user_servers(client, self.cfg, hub_token, user)}
            self.hub_questions += 1
            for spec in [k for k, s in self.known.items() if s.user == user]:
                if spec not in running:
                    del self.known[spec]  # the hub stopped it: its route went with it
                    if spec in self._hints:  # announced, not ready yet: a little longer
                        server, at, until = self._hints[spec]
                        self._hints[spec] = (server, at, min(
                            until, self.clock() + 2 * self.cfg.health.interval_s))
        return [d for d in drifts if not d.user or d.routespec in self.known]

    # ---- one health interval ----------------------------------------------------------
    async def check(self, client: httpx.AsyncClient, hub_token: str) -> list[Drift]:
        """Confirmed drifts. Raises httpx.HTTPError / HubAPIError / TableUnavailable when
        the hub or CHP does not answer (what was learned is kept)."""
        body = await self._table_bytes(client)
        self.last_table = body
        now = self.clock()
        full = now >= self._next_full
        routes = _ACTIVITY.sub(b"", body)
        changed = routes != self._last_body
        count_due = now >= self._count_by
        if not (changed or full or count_due or self._hints):
            return []
        table = routetable.parse_bytes(body)
        if full:
            await self._full_listing(client, hub_token)
        self._learn(table)
        self._take_hints(table)
        if not full and (changed or count_due) and now >= self._next_count:
            # A route the hub added and that vanished before this watch saw it leaves no
            # trace in CHP's table, but the hub's count of users with a ready server then
            # differs from ours: asked when the table changed, and once a minute.
            self._next_count = now + COUNT_MIN_GAP_S
            self._count_by = now + COUNT_EVERY_S
            self.hub_questions += 1
            if await count_users(self.local_client or client, self.cfg, hub_token, "ready") != \
                    len({s.user for s in self.known.values()}) and now >= self._recount_at:
                # while hundreds of servers start, the count differs at nearly every
                # check: list at most every few intervals (longer on a hub whose listing
                # takes long) instead of keeping the busy hub busier
                full = True
                t0 = time.monotonic()
                await self._full_listing(client, hub_token)
                self._recount_at = now + max(RECOUNT_MIN_INTERVALS * self.cfg.health.interval_s,
                                             (time.monotonic() - t0) * RECOUNT_COST_FACTOR)
                self._learn(table)
        drifts = self._compare(table)
        if drifts and not full:
            drifts = await self._confirm(client, hub_token, drifts, table)
        if drifts:
            # seen twice: a route being replaced (a server restarting) is not drift
            again = self._compare(routetable.parse_bytes(await self._table_bytes(client)))
            keys = {d.key for d in again}
            drifts = [d for d in drifts if d.key in keys]
        # unchanged bytes may be skipped next time only once they hold no drift
        self._last_body = None if drifts else routes
        return drifts

    async def check_and_repair(self, client: httpx.AsyncClient, hub_token: str) -> WatchResult:
        """One health interval: find drift, repair at once, verify."""
        drifts = await self.check(client, hub_token)
        if not drifts:
            return WatchResult([], None)
        ok, detail = await resync_routes(client, self.cfg, hub_token)
        self.hub_questions += 1
        remaining = drifts
        if ok:
            table = routetable.parse_bytes(await self._table_bytes(client))
            keys = {d.key for d in drifts}
            remaining = [d for d in self._compare(table) if d.key in keys]
        return WatchResult(drifts, ok and not remaining, detail, remaining)


# One watch per (CHP, hub, base path) for the module-level calls below, so that what a
# watch learned survives from one health interval to the next.
_watches: dict[tuple[str, str, str], DriftWatch] = {}


def watch_for(cfg: Config) -> DriftWatch:
    key = (cfg.api.url("api/routes"), cfg.hub_bind.connect_origin, cfg.public.path)
    w = _watches.get(key)
    if w is None or w.cfg.paths != cfg.paths:
        # one watch at a time: a reload back to an earlier key must not find that key's
        # old table (a route replay would write it into a new CHP)
        _watches.clear()
        w = _watches[key] = DriftWatch(cfg)
    w.cfg = cfg
    return w


async def check_routes(client: httpx.AsyncClient, cfg: Config, hub_token: str) -> list[Drift]:
    """Confirmed drifts for this hub and CHP (see DriftWatch.check)."""
    return await watch_for(cfg).check(client, hub_token)


async def check_and_repair(client: httpx.AsyncClient, cfg: Config, hub_token: str,
                           local_client: LoopbackClient | None = None,
                           answers: ApiAnswers | None = None) -> WatchResult:
    """One health interval: find drift, repair at once, verify (see DriftWatch).
    `local_client`: reads CHP's table and the hub's count instead of `client` (hubsvc's
    loopback client); `answers`: told of each successful read of CHP's table."""
    w = watch_for(cfg)
    if local_client is not None:
        w.local_client = local_client
    w.answers = answers
    return await w.check_and_repair(client, hub_token)
