"""The few JupyterHub REST calls hubsvc makes with its own service token, straight to
the hub's bind_url (so they work while CHP is down)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx

from .config import Config


class HubAPIError(Exception):
    pass


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
        self.headers = {"Authorization": f"token {token}"}
        self.timeout = timeout
        self.retarget(cfg)

    def retarget(self, cfg: Config) -> None:
        """Follow a reloaded config's hub address."""
        self.base = cfg.hub_bind.connect_origin + cfg.public.path + "hub/api/"

    async def _call(self, method: str, path: str, **kw: Any) -> httpx.Response:
        try:
            r = await self.client.request(
                method, self.base + path, headers=self.headers, timeout=self.timeout, **kw
            )
        except httpx.HTTPError as e:
            raise HubAPIError(f"{method} {path}: {type(e).__name__}: {e}") from None
        if r.status_code >= 400:
            raise HubAPIError(f"{method} {path}: HTTP {r.status_code} {r.text[:200]}")
        return r

    async def sync_proxy(self) -> None:
        """Ask the hub to push its whole routing table to CHP now."""
        await self._call("POST", "proxy")

    async def servers(self) -> list[Server]:
        """Every server the hub considers active (running or pending)."""
        r = await self._call("GET", "users", params={"state": "active", "limit": "10000"})
        users = r.json()
        if isinstance(users, dict):  # paginated form
            users = users.get("items", [])
        out: list[Server] = []
        for u in users:
            for name, s in (u.get("servers") or {}).items():
                out.append(Server(u["name"], name, s.get("url", ""), bool(s.get("ready")),
                                  s.get("pending")))
        return out

    async def stop_server(self, user: str, name: str = "") -> None:
        path = f"users/{user}/servers/{name}" if name else f"users/{user}/server"
        await self._call("DELETE", path)
