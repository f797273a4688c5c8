"""The passive side of loop detection, for the supervisor's watch loop.

- `compare(servers, routes)` (pure): running servers vs CHP's table -> `Drift`s.
- `check_routes(client, cfg, hub_token)`: reads both, compares, re-reads to rule out a
  server that was just starting or stopping, and returns the confirmed drifts.
- `repair(client, cfg, hub_token)`: `POST /hub/api/proxy` (the hub re-syncs the table).
- `check_and_repair(...)`: both, for one health interval.
- `LoopWatch`: turns the hub's log lines "Redirect loop detected on /hub/user/NAME/..."
  into one `Episode` per user and episode instead of one line per hop.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

import httpx

from .config import Config
from .hubapi import iter_users, resync_routes
from .probes import route_table


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
    user: str
    server_name: str
    routespec: str
    expected: str  # what the route should be
    found: str | None  # what CHP has (target), None when absent

    def event(self) -> dict[str, Any]:
        """Keys for the structured `route_drift` log event."""
        return {"event": "route_drift", **asdict(self)}


def _routespec(path: str) -> str:
    return path.rstrip("/") or "/"


def _lookup(routes: dict[str, Any], path: str) -> dict[str, Any] | None:
    r = routes.get(_routespec(path)) or routes.get(path)
    return r if isinstance(r, dict) else None


def hub_target(routes: dict[str, Any]) -> str | None:
    """Target of the hub's own route ("hub": true), else of "/"."""
    for r in routes.values():
        if isinstance(r, dict) and (r.get("data") or {}).get("hub"):
            return r.get("target")
    root = routes.get("/")
    return root.get("target") if isinstance(root, dict) else None


def compare(servers: Iterable[Server], routes: dict[str, Any]) -> list[Drift]:
    """Running servers without a route, or whose route cannot reach them. Pure."""
    out: list[Drift] = []
    hub = hub_target(routes)
    for s in servers:
        spec = _routespec(s.path)
        r = _lookup(routes, s.path)
        expected = f"route {spec} to {s.user}'s server"
        if r is None:
            out.append(Drift("missing", s.user, s.name, spec, expected, None))
            continue
        tgt = r.get("target")
        data = r.get("data") or {}
        if hub and tgt and tgt.rstrip("/") == hub.rstrip("/") and not data.get("hub"):
            out.append(Drift("points_to_hub", s.user, s.name, spec, expected, tgt))
        elif data.get("user") not in (None, s.user):
            out.append(Drift("wrong_user", s.user, s.name, spec, expected,
                             f"{tgt} (route of user {data.get('user')})"))
    return out


async def running_servers(client: httpx.AsyncClient, cfg: Config,
                          hub_token: str) -> list[Server]:
    """Every ready server, from the hub's API on its private listener (paginated)."""
    out: list[Server] = []
    async for u in iter_users(client, cfg, hub_token, "ready"):
        for name, s in (u.get("servers") or {}).items():
            if s.get("ready") and not s.get("pending") and s.get("url"):
                out.append(Server(u["name"], name, s["url"]))
    return out


async def check_routes(client: httpx.AsyncClient, cfg: Config, hub_token: str) -> list[Drift]:
    """Confirmed drifts: seen twice in a row, so a server starting or stopping in between
    is not reported. Raises httpx.HTTPError when the hub or CHP does not answer."""
    first = await _once(client, cfg, hub_token)
    if not first:
        return []
    second = await _once(client, cfg, hub_token)
    keep = {(d.user, d.server_name, d.kind) for d in first}
    return [d for d in second if (d.user, d.server_name, d.kind) in keep]


async def _once(client: httpx.AsyncClient, cfg: Config, hub_token: str) -> list[Drift]:
    servers = await running_servers(client, cfg, hub_token)
    routes = await route_table(client, cfg)
    if routes is None:
        raise httpx.HTTPError("CHP's API did not return its routes")
    return compare(servers, routes)


async def repair(client: httpx.AsyncClient, cfg: Config, hub_token: str) -> tuple[bool, str]:
    """Ask the hub to re-sync every route (POST /hub/api/proxy)."""
    return await resync_routes(client, cfg, hub_token)


@dataclass
class WatchResult:
    drifts: list[Drift]
    repaired: bool | None  # None: nothing to repair
    detail: str = ""
    remaining: list[Drift] = field(default_factory=list)  # still drifting after repair


async def check_and_repair(client: httpx.AsyncClient, cfg: Config,
                           hub_token: str) -> WatchResult:
    """One health interval: find drift, repair at once, verify."""
    drifts = await check_routes(client, cfg, hub_token)
    if not drifts:
        return WatchResult([], None)
    ok, detail = await repair(client, cfg, hub_token)
    remaining = await _once(client, cfg, hub_token) if ok else drifts
    return WatchResult(drifts, ok and not remaining, detail, remaining)


# --------------------------------------------------------------------------- log watch

_LOOP_HOP = re.compile(r"Redirect loop detected on (\S+)")
_LOOP_500 = re.compile(r"500 GET (\S+) \([^)]*\): Redirect loop detected\.(.*)$")
_PRIVATE = re.compile(
    r"Detected possible direct connection to Hub's private ip: (\S+?),? bypassing"
)
_SKEW = re.compile(r"Notebook has jupyterhub version (\S+), but the Hub expects (\S+?)\.(?:\s|$)")
_USER_IN_PATH = re.compile(r"/user/([^/?#]+)")


@dataclass
class Episode:
    """One user's redirect loop, as the hub's log told it."""

    user: str
    url: str  # the last looping URL
    count: int  # highest `redirects` value the hub reported
    lines: int  # how many log lines belonged to it
    cause: str  # suspected: missing_route | private_address | version_skew
    detail: str
    first_seen: float
    last_seen: float
    ended_by: str = ""  # "hub_500" | "quiet"

    def event(self) -> dict[str, Any]:
        """Keys for the structured `redirect_loop` warning."""
        return {"event": "redirect_loop", "user": self.user, "url": self.url,
                "count": self.count, "cause": self.cause, "detail": self.detail,
                "duration_s": round(self.last_seen - self.first_seen, 3),
                "ended_by": self.ended_by}


def _user_of(path: str) -> str | None:
    m = _USER_IN_PATH.search(urlsplit(path).path)
    return unquote(m.group(1)) if m else None


def _redirects_of(url: str) -> int:
    m = re.search(r"[?&]redirects=(\d+)", url)
    return int(m.group(1)) if m else 0


class LoopWatch:
    """Feed it the hub's log lines; it returns each loop episode once, when it ends.

    An episode ends with the hub's own 500 "Redirect loop detected." for that user, or
    after `quiet_s` without a new hop (call `expire()` every health interval). A new
    episode for the same user starts with the next loop line after that.
    """

    def __init__(self, quiet_s: float = 30.0, clock: Any = time.monotonic):
        self.quiet_s = quiet_s
        self.clock = clock
        self.open: dict[str, Episode] = {}
        self._private: dict[str, tuple[float, str]] = {}  # user -> (when, url)
        self.closed_total = 0

    def _episode(self, user: str, url: str, now: float) -> Episode:
        ep = self.open.get(user)
        if ep is None:
            ep = Episode(user, url, 0, 0, "missing_route",
                         "the hub keeps redirecting to a server it believes is ready: the "
                         "proxy most likely has no route for it", now, now)
            self.open[user] = ep
        ep.url, ep.last_seen = url, now
        ep.lines += 1
        ep.count = max(ep.count, _redirects_of(url))
        seen = self._private.get(user)
        if seen and now - seen[0] <= self.quiet_s:
            ep.cause = "private_address"
            ep.detail = (f"requests came to the hub's private address ({seen[1]}), "
                         "bypassing the proxy: users must use the public URL")
        return ep

    def feed(self, line: str) -> Episode | None:
        """Consume one log line; return an Episode when one ends with this line."""
        now = self.clock()
        m = _PRIVATE.search(line)
        if m:
            user = _user_of(m.group(1))
            if user:
                self._private[user] = (now, m.group(1))
                if user in self.open:
                    self._episode(user, self.open[user].url, now).lines -= 1
            return None
        m = _LOOP_500.search(line)
        if m:
            url = m.group(1)
            user = _user_of(url)
            if user is None:
                return None
            ep = self._episode(user, url, now)
            sk = _SKEW.search(m.group(2))
            if sk:
                ep.cause = "version_skew"
                ep.detail = (f"the server runs jupyterhub-singleuser {sk.group(1)}, the hub "
                             f"{sk.group(2)}: install jupyterhub=={sk.group(2)} in the user "
                             "environment")
            ep.ended_by = "hub_500"
            return self._close(user)
        m = _LOOP_HOP.search(line)
        if m:
            user = _user_of(m.group(1))
            if user is not None:
                self._episode(user, m.group(1), now)
        return None

    def expire(self) -> list[Episode]:
        """Close and return episodes that went quiet (the browser stopped following)."""
        now = self.clock()
        done = [u for u, ep in self.open.items() if now - ep.last_seen > self.quiet_s]
        out = []
        for u in done:
            self.open[u].ended_by = "quiet"
            out.append(self._close(u))
        for u, (t, _url) in list(self._private.items()):
            if now - t > self.quiet_s:
                del self._private[u]
        return out

    def _close(self, user: str) -> Episode:
        self.closed_total += 1
        self._private.pop(user, None)
        return self.open.pop(user)

    def snapshot(self) -> list[dict[str, Any]]:
        """Open episodes, for `hubsvc status`."""
        return [ep.event() | {"open": True} for ep in self.open.values()]
