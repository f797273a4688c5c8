"""The hub API calls of a probe: who the user is, start the server and follow its progress
(as the spawn-pending page does), and the short-lived, narrowly scoped token of a
token walk."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any
from urllib.parse import quote

import httpx

from .. import hubapi
from .model import ProbeUsageError

TOKEN_NOTE = "hubsvc probe-spawn"


def token_scopes(user: str, server: str = "") -> list[str]:
    """The narrowest scope that lets a token open USER's server: access to that one
    server (JupyterHub's `access:servers!server=USER/NAME`), nothing on the hub."""
    return [f"access:servers!server={user}/{server}"]


def api_message(r: httpx.Response) -> str:
    try:
        return str(r.json().get("message") or r.status_code)
    except ValueError:
        return r.text[:200] or str(r.status_code)


class HubAPI(hubapi.HubAPI):
    """hubsvc's hub API client plus what the probe needs: raw responses, the progress
    event stream, scoped tokens."""

    async def call(self, method: str, rel: str, limit_s: float = 10.0,
                   **kw: Any) -> httpx.Response:
        return await self.client.request(method, self.base + rel, headers=self.headers,
                                         timeout=limit_s, **kw)

    async def mint_token(self, user: str, expires_in: int) -> tuple[str, str]:
        """(token, id) of a token for USER that can only reach USER's default server."""
        r = await self.call("POST", f"users/{quote(user, safe='')}/tokens",
                            json={"expires_in": int(expires_in), "note": TOKEN_NOTE,
                                  "scopes": token_scopes(user)})
        if r.status_code not in (200, 201):
            raise ProbeUsageError(
                f"cannot mint a token for {user}: {r.status_code} {api_message(r)}; hubsvc's "
                "service needs the `tokens` scope")
        tok = r.json()
        return tok["token"], str(tok.get("id"))

    async def delete_token(self, user: str, token_id: str) -> bool:
        try:
            r = await self.call("DELETE", f"users/{quote(user, safe='')}/tokens/{token_id}",
                                limit_s=3.0)
        except httpx.HTTPError:
            return False
        return r.status_code in (204, 404)

    async def progress(self, user: str, deadline: float) -> tuple[str, str | None]:
        """Follow the progress event stream: ('ready'|'failed'|'timeout'|'stopped', message)."""
        last: str | None = None
        url = self.base + f"users/{quote(user, safe='')}/server/progress"
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return "timeout", None
        try:
            async with asyncio.timeout(remaining):
                async with self.client.stream("GET", url, headers=self.headers,
                                              timeout=httpx.Timeout(10.0, read=None)) as r:
                    if r.status_code != 200:
                        return "stopped", f"progress API answered {r.status_code}"
                    async for line in r.aiter_lines():
                        if not line.startswith("data:"):
                            continue
                        try:
                            ev = json.loads(line[5:])
                        except ValueError:
                            continue
                        last = ev.get("message") or last
                        if ev.get("failed"):
                            return "failed", ev.get("message")
                        if ev.get("ready"):
                            return "ready", ev.get("message")
        except TimeoutError:
            return "timeout", last
        except httpx.HTTPError as e:
            return "stopped", f"{type(e).__name__}: {e}"
        return "stopped", last
