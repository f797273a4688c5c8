"""The hub's URLs and the few JupyterHub REST calls hubsvc makes with its own service
token, straight to the hub's bind_url (so they work while CHP is down). Every hub URL
hubsvc builds comes from `hub_url`/`api_url`. The token's scopes are listed, each with the
call that needs it, in hubconfig.SERVICE_SCOPE_USES; user and server names are always
quoted whole into paths."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from .config import Config
from .loopback import Client as LoopbackClient
from .loopback import request_errors

if TYPE_CHECKING:
    import httpx


class HubAPIError(Exception):
    pass


def hub_url(cfg: Config, rel: str = "") -> str:
    """`rel` (e.g. "hub/health") under the hub's base URL, on its private listener."""
    return cfg.hub_bind.connect_origin + cfg.public.path + rel


def api_url(cfg: Config, path: str = "") -> str:
    """The hub's REST API path `path` (e.g. "users", "proxy")."""
    return hub_url(cfg, "hub/api/" + path)


PAGE = 200


async def iter_users(client: httpx.AsyncClient, cfg: Config, token: str, state: str,
                     timeout: float = 5.0) -> AsyncIterator[dict[str, Any]]:
    """Every user model with servers in `state` ("active" or "ready"), all pages, from the
    hub's private listener. Raises httpx.HTTPError when the hub does not answer."""
    base = api_url(cfg, "users")
    headers = {"Authorization": f"token {token}",
               "Accept": "application/jupyterhub-pagination+json"}
    offset = 0
    for _ in range(1000):  # bounded: 200 000 users
        r = await client.get(base, params={"state": state, "offset": offset, "limit": PAGE},
                             headers=headers, timeout=timeout)
        r.raise_for_status()
        body = r.json()
        items = body.get("items", []) if isinstance(body, dict) else body
        for u in items:
            yield u
        nxt = (body.get("_pagination") or {}).get("next") if isinstance(body, dict) else None
        if not nxt:
            return
        offset = nxt.get("offset", offset + len(items))


async def count_users(client: httpx.AsyncClient | LoopbackClient, cfg: Config, token: str,
                      state: str) -> int:
    """How many users have a server in `state` ("ready" or "active"): one page of one
    user, whatever the number of users (the hub counts in its database). `client`: httpx's,
    or hubsvc's loopback client (the watches ask this for as long as hubsvc runs). Raises
    HubAPIError, also when the hub does not answer."""
    url = api_url(cfg, "users") + f"?state={quote(state, safe='')}&limit=1"
    try:
        r = await client.get(url, timeout=5.0,
                             headers={"Authorization": f"token {token}",
                                      "Accept": "application/jupyterhub-pagination+json"})
    except request_errors() as e:
        raise HubAPIError(f"GET {url}: {type(e).__name__}: {e}") from None
    if r.status_code != 200:
        raise HubAPIError(f"GET {url}: HTTP {r.status_code}")
    try:
        return int(r.json()["_pagination"]["total"])
    except (ValueError, KeyError, TypeError) as e:
        raise HubAPIError(f"GET {url}: no count in the answer ({type(e).__name__}: {e})") \
            from None


@dataclass(frozen=True)
class Server:
    user: str
    name: str  # "" for the default server
    url: str  # the server's path prefix, e.g. /user/NAME/
    ready: bool
    pending: str | None


class HubAPI:
    def __init__(self, client: httpx.AsyncClient, cfg: Config, token: str, timeout: float = 5.0):
        self.client = client
        self.token = token
        self.headers = {"Authorization": f"token {token}"}
        self.timeout = timeout
        self.retarget(cfg)

    def retarget(self, cfg: Config) -> None:
        """Follow a reloaded config's hub address."""
        self.cfg = cfg
        self.base = api_url(cfg)

    async def _call(self, method: str, path: str, **kw: Any) -> httpx.Response:
        try:
            r = await self.client.request(
                method, self.base + path, headers=self.headers, timeout=self.timeout, **kw
            )
        except request_errors() as e:
            raise HubAPIError(f"{method} {path}: {type(e).__name__}: {e}") from None
        if r.status_code >= 400:
            raise HubAPIError(f"{method} {path}: HTTP {r.status_code} {r.text[:200]}")
        return r

    async def sync_proxy(self) -> None:
        """Ask the hub to push its whole routing table to CHP now."""
        await self._call("POST", "proxy")

    async def servers(self) -> list[Server]:
        """Every server the hub considers active (running or pending)."""
        out: list[Server] = []
        try:
            async for u in iter_users(self.client, self.cfg, self.token, "active", self.timeout):
                for name, s in (u.get("servers") or {}).items():
                    out.append(Server(u["name"], name, s.get("url", ""), bool(s.get("ready")),
                                      s.get("pending")))
        except (*request_errors(), ValueError) as e:
            raise HubAPIError(f"GET users: {type(e).__name__}: {e}") from None
        return out

    async def stop_server(self, user: str, name: str = "") -> None:
        await self._call("DELETE", server_path(user, name))


def server_path(user: str, name: str = "") -> str:
    """The API path of USER's server NAME, each name quoted whole: a name holding "/",
    "?", "#" or ".." cannot reach another user's server or another endpoint."""
    u = quote(user, safe="")
    return f"users/{u}/servers/{quote(name, safe='')}" if name else f"users/{u}/server"


async def resync_routes(client: httpx.AsyncClient, cfg: Config, hub_token: str) -> tuple[bool, str]:
    """Ask the hub to re-sync CHP's table (POST /hub/api/proxy): (ok, what happened), for
    callers that report rather than raise."""
    t = time.monotonic()
    try:
        await HubAPI(client, cfg, hub_token, timeout=10.0).sync_proxy()
    except HubAPIError as e:
        return False, f"re-sync of the proxy's routes failed: {e}"
    ms = (time.monotonic() - t) * 1000
    return True, f"re-synced the proxy's routes from the hub (POST /hub/api/proxy, {ms:.0f} ms)"
