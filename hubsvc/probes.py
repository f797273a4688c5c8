"""HTTP checks of CHP and the hub. Each makes one bounded request and says what it saw;
none loops or sleeps (the supervisor decides how often).

Each takes an httpx client or, for the checks made every health interval, hubsvc's own
loopback client (loopback.py: a fraction of httpx's CPU per request)."""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import routetable
from .config import Config
from .hubapi import hub_url
from .loopback import Client as LoopbackClient
from .loopback import LoopbackConnectError, LoopbackError, LoopbackTimeout, request_errors
from .routetable import RouteTable


@dataclass(frozen=True)
class Result:
    ok: bool
    detail: str  # "200", "timed out after 1.0s", "connection refused", …

    def __bool__(self) -> bool:
        return self.ok


if TYPE_CHECKING:
    import httpx

    AnyClient = httpx.AsyncClient | LoopbackClient


def new_client() -> httpx.AsyncClient:
    import httpx  # here, not with this module: see loopback.request_errors

    # trust_env=False: an admin's http_proxy must never capture loopback probes.
    # verify=False: probes reach our own listeners on loopback, by address.
    return httpx.AsyncClient(trust_env=False, verify=False, follow_redirects=False)


class LazyClient:
    """`new_client()` made at its first request. Making one imports httpcore and builds an
    SSL context (0.1-0.2 s on a small VM): `hubsvc run` needs its clients only once the hub
    is up, and would otherwise spend that time before CHP is even executed."""

    def __init__(self) -> None:
        self._client: httpx.AsyncClient | None = None

    @property
    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = new_client()
        return self._client

    async def get(self, url: str, **kw: Any) -> httpx.Response:
        return await self.client.get(url, **kw)

    async def post(self, url: str, **kw: Any) -> httpx.Response:
        return await self.client.post(url, **kw)

    async def request(self, method: str, url: str, **kw: Any) -> httpx.Response:
        return await self.client.request(method, url, **kw)

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()

    async def __aenter__(self) -> LazyClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()



def failure_text(e: Exception, timeout: float) -> str:
    """A failed request in a few words: "timed out after 1.5s", "connection refused" …"""
    if isinstance(e, LoopbackTimeout):
        return f"timed out after {timeout:g}s"
    if isinstance(e, LoopbackConnectError):
        return str(e) if str(e) == "connection refused" else f"cannot connect ({e})"
    if isinstance(e, LoopbackError):
        return str(e)
    httpx = sys.modules.get("httpx")  # loaded if an httpx client made the request
    if httpx is not None and isinstance(e, httpx.TimeoutException):
        return f"timed out after {timeout:g}s"
    if httpx is not None and isinstance(e, httpx.ConnectError):
        return "connection refused" if "refused" in str(e).lower() else f"cannot connect ({e})"
    return f"{type(e).__name__}: {e}"


def _failure(e: Exception, timeout: float) -> Result:
    return Result(False, failure_text(e, timeout))


async def get(client: AnyClient, url: str, timeout: float,
              headers: dict[str, str] | None = None) -> tuple[Result, Any]:
    try:
        r = await client.get(url, timeout=timeout, headers=headers)
    except request_errors() as e:
        return _failure(e, timeout), None
    return Result(r.status_code == 200, f"HTTP {r.status_code}"), r


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"token {token}"}


# CHP answers `inactive_since` with only the routes idle since then: none since 1970. The
# probe still needs the token (403 without) and the API's answer, but not a table that
# grows with every user's server (~0.2 MB at 1,000): the drift watch reads that already.
_NO_ROUTES = "api/routes?inactive_since=1970-01-01T00:00:00.000Z"


async def proxy_api(client: AnyClient, cfg: Config, token: str, timeout: float) -> Result:
    res, r = await get(client, cfg.api.url(_NO_ROUTES), timeout, _auth(token))
    if r is not None and r.status_code == 403:
        return Result(False, "HTTP 403: CHP rejected hubsvc's token (another CHP on this port?)")
    return res


class ApiAnswers:
    """When CHP's API last answered hubsvc's token with 200 within the liveness timeout,
    by origin. While hubsvc is ready the drift watch reads CHP's table every health
    interval; the proxy's liveness check then needs no request of its own to CHP's API
    (it still asks CHP's public port every interval, which a hung CHP fails), so the API
    is asked once per interval. Each answer stands for one liveness check only."""

    def __init__(self) -> None:
        self._at: tuple[str, float] = ("", -math.inf)

    def seen(self, origin: str) -> None:
        self._at = (origin, time.monotonic())

    def take(self, origin: str, seconds: float) -> bool:
        """Was there an answer from `origin` within `seconds`? It is used up either way."""
        at, self._at = self._at, ("", -math.inf)
        return at[0] == origin and time.monotonic() - at[1] <= seconds


async def proxy_public(client: AnyClient, cfg: Config, timeout: float) -> Result:
    res, _ = await get(client, cfg.public.connect_origin + "/_chp_healthz", timeout)
    return res


async def hub_health(client: AnyClient, cfg: Config, timeout: float) -> Result:
    res, _ = await get(client, hub_url(cfg, "hub/health"), timeout)
    return res


async def routes(client: AnyClient, cfg: Config, token: str,
                 timeout: float) -> RouteTable | None:
    """CHP's table through the one reader of its payload (None: unreadable)."""
    try:
        return await routetable.fetch(client, cfg, token, timeout)
    except routetable.TableUnavailable:
        return None


async def chain(client: AnyClient, cfg: Config, token: str, timeout: float) -> Result:
    """A request through the public URL reaches the hub, and CHP holds the hub's route."""
    res, _ = await get(client, cfg.public.url("hub/health"), timeout)
    if not res:
        return Result(False, f"hub health through the proxy: {res.detail}")
    table = await routes(client, cfg, token, timeout)
    if table is None:
        return Result(False, "could not read CHP's routing table")
    if table.hub_route() is None:
        return Result(False, "CHP's table has no route from the hub yet")
    return Result(True, "ok")


async def route_table(client: httpx.AsyncClient, cfg: Config,
                      timeout: float = 3.0) -> RouteTable | None:
    """CHP's routing table with the proxy token hubsvc owns (None: unreadable)."""
    from .secrets import SecretFiles, read

    try:
        token = read(SecretFiles.in_dir(cfg.paths.state_dir).proxy_token)
    except OSError:
        return None
    return await routes(client, cfg, token, timeout)
