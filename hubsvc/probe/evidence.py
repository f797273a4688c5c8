"""Evidence besides the chain: CHP's table, where the server listens and which hub address
it was given (its /proc environment), the server's X-JupyterHub-Version. Every request is
bounded to ~1 s so a verdict follows a loop within 2 s."""

from __future__ import annotations

import asyncio
import time
from urllib.parse import quote

import httpx

from .. import host, probes
from ..config import Config
from .model import Facts
from .spawn import HubAPI


async def _server_api(client: httpx.AsyncClient, url: str) -> tuple[bool, str | None]:
    """(answers like a Jupyter server, its X-JupyterHub-Version) for GET url."""
    try:
        r = await client.get(url, timeout=1.0)
    except httpx.HTTPError:
        return False, None
    ok = r.status_code == 200 and "version" in r.text
    return ok, (r.headers.get("x-jupyterhub-version") if ok else None)


async def gather_facts(client: httpx.AsyncClient, cfg: Config, facts: Facts) -> None:
    """CHP's table, the server's environment and version: evidence for the rules. Every
    request is bounded to ~1 s so a verdict follows a loop within 2 s."""
    facts.routes = await probes.route_table(client, cfg, 1.0)
    if facts.routes is not None:
        # the hub's own route; before the hub's first sync only CHP's default route "/"
        root = facts.routes.hub_route() or facts.routes.get("/")
        if root is not None:
            facts.hub_target = root.target
    if facts.server_pid and not facts.server_url:
        env = host.environ(facts.server_pid) or {}
        facts.server_url = env.get("JUPYTERHUB_SERVICE_URL")
        facts.server_hub_api = env.get("JUPYTERHUB_API_URL")
    if facts.server_hub_api:
        try:
            await client.get(facts.server_hub_api.rstrip("/") + "/", timeout=1.0)
            facts.server_hub_api_ok = True
        except httpx.HTTPError:
            facts.server_hub_api_ok = False
    route = facts.route
    if route is not None and route.target and facts.server_path:
        url = route.target.rstrip("/") + facts.server_path + "api"
        facts.target_answers, facts.server_version = await _server_api(client, url)
    if facts.server_version is None and facts.server_url:
        _ok, facts.server_version = await _server_api(
            client, facts.server_url.rstrip("/") + "/api")


async def watch_server_env(hub: HubAPI, client: httpx.AsyncClient, user: str,
                            deadline: float) -> list[str]:
    """While a server starts: if the spawner runs it on this machine (its state has a pid
    we can read), check that the hub API URL it was given answers. Evidence, or []."""
    checked: set[str] = set()
    for _ in range(600):  # bounded: 0.5 s steps, and by the deadline
        if time.monotonic() >= deadline:
            return []
        try:
            r = await hub.call("GET", f"users/{quote(user, safe='')}", limit_s=3.0)
            srv = (r.json().get("servers") or {}).get("") or {}
        except (httpx.HTTPError, ValueError):
            srv = {}
        pid = (srv.get("state") or {}).get("pid")
        api_url = (host.environ(pid) or {}).get("JUPYTERHUB_API_URL") if pid else None
        if api_url and api_url not in checked:
            checked.add(api_url)
            try:
                await client.get(api_url.rstrip("/") + "/", timeout=2.0)
            except httpx.HTTPError as e:
                return [f"the server (pid {pid}) was given JUPYTERHUB_API_URL={api_url}, and "
                        f"that address does not answer from this machine ({type(e).__name__})"]
        await asyncio.sleep(0.5)
    return []
