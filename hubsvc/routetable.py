"""CHP's routing table, in the one shape CHP really sends it.

`GET /api/routes` on CHP 5.3.0 answers a flat JSON object (recorded payloads:
tests/unit/data/chp-5.3.0-*.json):

    {"/base/user/alice": {"user": "alice", "server_name": "", "target": "http://…",
                          "jupyterhub": true, "last_activity": "2026-…Z"}, …}

Keys are routespecs without their trailing slash ("/" stays "/"); each value is the data
its writer posted plus CHP's `last_activity`. The hub marks its own routes with
`"jupyterhub": true` and one of `"hub": true` (its own route, at the base path),
`"user"` + `"server_name"`, or `"service"`. CHP's `--default-target` route carries no data
and stays at "/" even when the hub's route lives under a base path.

Everything in hubsvc that reads CHP's table reads it through `parse`/`fetch` here.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from .config import Config
from .loopback import Client as LoopbackClient
from .loopback import request_errors

if TYPE_CHECKING:
    import httpx


class TableUnavailable(Exception):
    """CHP's table could not be read; the message says why (for a person)."""


@dataclass(frozen=True)
class Route:
    spec: str  # as CHP keys it: no trailing slash, except "/"
    target: str
    jupyterhub: bool = False  # added by the hub
    hub: bool = False  # the hub's own route
    user: str | None = None
    server_name: str | None = None  # "" for a user's default server
    service: str | None = None
    last_activity: str | None = None

    @property
    def is_user_route(self) -> bool:
        return self.jupyterhub and self.user is not None


def normalise_spec(path: str) -> str:
    """A routespec as CHP keys it: "/base/user/a/" -> "/base/user/a", "/" -> "/"."""
    return path.rstrip("/") or "/"


def user_routespec(base_path: str, user: str, server_name: str = "") -> str:
    """Where the hub routes a user's server (JupyterHub escapes the name like this)."""
    spec = f"{base_path.rstrip('/')}/user/{quote(user, safe='@~')}"
    if server_name:
        spec += "/" + quote(server_name, safe="@~")
    return spec


def _route(spec: str, data: Mapping[str, Any]) -> Route | None:
    target = data.get("target")
    if not isinstance(target, str):
        return None

    def text(key: str) -> str | None:
        v = data.get(key)
        return v if isinstance(v, str) else None

    return Route(
        spec=spec,
        target=target,
        jupyterhub=data.get("jupyterhub") is True,
        hub=data.get("hub") is True,
        user=text("user"),
        server_name=text("server_name"),
        service=text("service"),
        last_activity=text("last_activity"),
    )


@dataclass(frozen=True)
class RouteTable:
    routes: Mapping[str, Route]

    def __len__(self) -> int:
        return len(self.routes)

    def __iter__(self) -> Iterator[Route]:
        return iter(self.routes.values())

    def __contains__(self, path: object) -> bool:
        return isinstance(path, str) and normalise_spec(path) in self.routes

    def get(self, path: str) -> Route | None:
        """The route CHP keys at `path` (trailing slash or not)."""
        return self.routes.get(normalise_spec(path))

    def hub_route(self) -> Route | None:
        """The route the hub added for itself ("hub": true) — not CHP's default route."""
        for r in self.routes.values():
            if r.hub:
                return r
        return None

    def user_routes(self) -> dict[str, Route]:
        """Routes the hub added for users' servers, by routespec."""
        return {s: r for s, r in self.routes.items() if r.is_user_route}


def parse(payload: Any) -> RouteTable:
    """CHP's decoded payload -> RouteTable. Entries that are not route objects with a
    string target are left out (CHP never sends one)."""
    if not isinstance(payload, dict):
        raise TableUnavailable(f"CHP's table is not a JSON object ({type(payload).__name__})")
    out: dict[str, Route] = {}
    for spec, data in payload.items():
        if isinstance(spec, str) and isinstance(data, dict):
            r = _route(spec, data)
            if r is not None:
                out[spec] = r
    return RouteTable(out)


def parse_bytes(body: bytes) -> RouteTable:
    try:
        return parse(json.loads(body))
    except ValueError as e:
        raise TableUnavailable(f"CHP's table is not JSON: {e}") from None


async def fetch_bytes(client: httpx.AsyncClient | LoopbackClient, cfg: Config, token: str,
                      timeout: float) -> bytes:
    """CHP's table exactly as sent (callers may compare it with the last one before
    parsing). Raises TableUnavailable. `client`: httpx's, or hubsvc's loopback client."""
    try:
        r = await client.get(cfg.api.url("api/routes"), timeout=timeout,
                             headers={"Authorization": f"token {token}"})
    except request_errors() as e:
        raise TableUnavailable(f"GET {cfg.api.url('api/routes')}: {type(e).__name__}: {e}") \
            from None
    if r.status_code == 403:
        raise TableUnavailable("CHP rejected hubsvc's proxy token (HTTP 403)")
    if r.status_code != 200:
        raise TableUnavailable(f"CHP's API answered HTTP {r.status_code}")
    return r.content


async def fetch(client: httpx.AsyncClient | LoopbackClient, cfg: Config, token: str,
                timeout: float) -> RouteTable:
    """CHP's table, parsed. Raises TableUnavailable."""
    return parse_bytes(await fetch_bytes(client, cfg, token, timeout))
