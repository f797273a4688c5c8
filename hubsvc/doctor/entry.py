"""The doctor's "entry point" group: is a URL users open the public entry point or the
hub's private port, and who talks to the hub's port without the proxy."""

from __future__ import annotations

import os

from .. import host, ports
from ..config import parse_endpoint
from . import http
from .context import Ctx, endpoints
from .finding import Finding


def check_entry_url(ctx: Ctx, url: str) -> list[Finding]:
    """Is `url` (what a user opened) the public entry point, or the hub's private port?"""
    cfg = ctx.cfg
    try:
        ep = parse_endpoint(url)
    except ValueError as e:
        return [Finding("entry.url", "entry point", "error", f"{url!r} is not a URL", str(e),
                        "pass --url http://HOST:PORT/")]
    origin = ep.connect_origin
    with http.client() as client:
        chp = http.get(client, origin + "/_chp_healthz")
        page = http.get(client, ep.url(""))
    local = host.is_local_host(ep.host)
    served_by_chp = (not isinstance(chp, Exception) and chp.status_code == 200
                     and b"OK" in chp.content)
    hub_port = local and ep.port == cfg.hub_bind.port
    if isinstance(page, Exception) and isinstance(chp, Exception):
        evidence = f"GET {url} → {http.describe(page)}"
        if hub_port:
            return [Finding("entry.url", "entry point", "error",
                            f"{url} is the hub's private address (hub.bind_url), not the entry "
                            "point", evidence,
                            f"open {ctx.users_url} instead (proxy.public_url)")]
        return [Finding("entry.url", "entry point", "error", f"{url} does not answer", evidence,
                        f"users should open {ctx.users_url} (proxy.public_url)")]
    if served_by_chp:
        if local and ep.port == cfg.public.port:
            return [Finding("entry.url", "entry point", "ok",
                            f"{url} is hubsvc's public entry point (served by the proxy)")]
        return [Finding("entry.url", "entry point", "warning",
                        f"{url} is served by a configurable-http-proxy, but not the one on "
                        "proxy.public_url", f"GET {origin}/_chp_healthz → 200",
                        f"users should open {ctx.users_url}")]
    ev = f"GET {origin}/_chp_healthz → {http.describe(chp)}"
    if not isinstance(page, Exception):
        ev += f"; GET {url} → {http.describe(page)}"
        if page.headers.get("location"):
            ev += f" Location: {page.headers['location']}"
    if hub_port or (not isinstance(page, Exception) and "x-jupyterhub-version" in page.headers):
        return [Finding("entry.url", "entry point", "error",
                        f"{url} reaches the hub directly, without the proxy: the classic wrong "
                        "entry point (login works, then 302 to a 404 or a redirect loop)", ev,
                        f"open {ctx.users_url} instead (proxy.public_url); update bookmarks and "
                        "links, and keep hub.bind_url on 127.0.0.1")]
    return [Finding("entry.url", "entry point", "warning", f"{url} is not hubsvc's entry point", ev,
                    f"users should open {ctx.users_url}")]


def _is_user_server(pid: int) -> bool:
    """A single-user server talks to the hub's API legitimately."""
    cmd = host.cmdline(pid) or ""
    if "jupyterhub-singleuser" in cmd or "jupyterhub.singleuser" in cmd:
        return True
    return "JUPYTERHUB_API_URL" in (host.environ(pid) or {})


def direct_hub_clients(ctx: Ctx) -> list[Finding]:
    """Open connections to the hub's port from something other than CHP or hubsvc.

    Browsers keep connections open; a client talking to the hub's port directly that is
    neither the proxy, hubsvc, nor a process started by the hub (users' servers) is a
    person or tool using the wrong entry point.
    """
    hub = ctx.cfg.hub_bind
    conns = ports.connections_to(hub.port)
    if not conns:
        return []
    proxy_pids: set[int] = set()
    for key in ("public", "api"):
        ep = endpoints(ctx.cfg)[key]
        h = ports.port_holder(ep.host, ep.port)
        if h is not None and h.pid is not None:
            proxy_pids.add(h.pid)
    hub_holder = ports.port_holder(hub.host, hub.port)
    hub_tree: set[int] = set()
    if hub_holder is not None and hub_holder.pid is not None:
        hub_tree = set(host.pids_of_tree(hub_holder.pid))
    me = os.getpid()  # the doctor's own probes
    strangers: list[str] = []
    for c in conns:
        if c.peer_pid is not None and (c.peer_pid in proxy_pids or c.peer_pid in hub_tree
                                       or c.peer_pid in ctx.our_pids or c.peer_pid == me):
            continue
        if c.peer_pid is None and c.peer_local:
            continue  # a local peer we cannot identify: not enough to accuse anyone
        if c.peer_pid is not None and _is_user_server(c.peer_pid):
            continue  # a user's server started elsewhere (SystemdSpawner …) calling the API
        who = (f"pid {c.peer_pid} ({' '.join((host.cmdline(c.peer_pid) or '?').split())[:80]})"
               if c.peer_pid is not None else f"{c.peer} (another host)")
        strangers.append(who)
    if not strangers:
        return [Finding("entry.direct_clients", "entry point", "ok",
                        "no one but the proxy and hubsvc talks to the hub's port")]
    return [Finding("entry.direct_clients", "entry point", "warning",
                    f"{len(strangers)} connection(s) reach the hub's private port "
                    f"{hub.port} directly, not through the proxy",
                    "; ".join(sorted(set(strangers))[:10]),
                    f"users must open {ctx.users_url} (proxy.public_url), not "
                    f"{hub.origin}/ — the hub's own port answers the login page but then "
                    "redirects to a 404 or a redirect loop (single-user servers on other hosts "
                    "also connect here; those are fine)")]
