"""The passive side of loop detection, for the supervisor's watch loop.

- `compare(servers, routes)` (pure): running servers vs CHP's table -> `Drift`s.
- `check_routes(client, cfg, hub_token)`: reads both, compares, re-reads to rule out a
  server that was just starting or stopping, and returns the confirmed drifts.
- `repair(client, cfg, hub_token)`: `POST /hub/api/proxy` (the hub re-syncs the table).
- `check_and_repair(...)`: both, for one health interval.

The hub's log side of loop detection lives in loopwatch.py.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

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
