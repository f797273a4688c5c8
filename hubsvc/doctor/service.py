"""The doctor's "service" group, when hubsvc runs: the components in status.json, the
proxy's API with hubsvc's token, the hub's health, the chain through the public URL, every
running server's route in the proxy, and the redirect loops the supervisor saw."""

from __future__ import annotations

import concurrent.futures as cf
import json
from collections.abc import Callable
from typing import Any

import httpx

from .. import ports, routetable
from .. import status as status_mod
from ..config import parse_endpoint, resolve_path
from . import http
from .context import Ctx, endpoints
from .finding import Finding, Severity


def check_service(ctx: Ctx) -> list[Finding]:
    """The running service: components, chain, routes vs running servers."""
    cfg = ctx.cfg
    out: list[Finding] = []
    st = ctx.status
    if st is None and ctx.status_error:
        out.append(Finding("service.status", "service", "skipped",
                           "hubsvc's status cannot be read by this account", ctx.status_error,
                           "run the doctor as root or as the service account"))
    elif st is None:
        out.append(Finding("service.status", "service", "skipped",
                           "hubsvc is not running (no status.json)",
                           f"{cfg.paths.runtime_dir / status_mod.FILE} absent"))
    elif not ctx.supervisor_alive:
        out.append(Finding("service.status", "service", "skipped",
                           f"hubsvc is not running (status.json names pid {st.get('pid')}, "
                           "which is gone)"))
    else:
        out.append(Finding("service.status", "service", "ok" if st.get("ready") else "error",
                           f"hubsvc pid {st.get('pid')}: " + ("ready" if st.get("ready") else
                                                              f"not ready ({st.get('state')})"),
                           json.dumps({k: v for k, v in st.items() if k != "components"})[:300],
                           "" if st.get("ready") else "see `hubsvc status` and the journal"))
        for name, comp in (st.get("components") or {}).items():
            state = comp.get("state")
            restarts = int(comp.get("restarts") or 0)
            lf = comp.get("last_failure")
            ev = f"pid {comp.get('pid')}, state {state}, {restarts} restart(s)" + (
                f", last failure: {lf}" if lf else "")
            if state != "ready":
                out.append(Finding(f"service.{name}", "service", "error", f"{name} is {state}", ev,
                                   f"see `journalctl -u hubsvc` (or hubsvc's output) for {name}"))
            elif restarts:
                out.append(Finding(f"service.{name}", "service", "warning",
                                   f"{name} is ready but was restarted {restarts} time(s)", ev,
                                   f"find why in the logs around the last failure: {lf}"))
            else:
                out.append(Finding(f"service.{name}", "service", "ok", f"{name} ready", ev))
    # live probes: only when something listens where hubsvc's components would
    eps = endpoints(cfg)
    live = any(ports.port_holder(eps[k].host, eps[k].port) for k in ("api", "hub", "public"))
    if not live:
        return out
    tok = {"Authorization": f"token {ctx.proxy_token}"} if ctx.proxy_token else None
    no_token = RuntimeError(ctx.token_error or "no token")
    jobs: dict[str, Callable[[httpx.Client], http.Answer]] = {
        "routes": lambda c: http.get(c, cfg.api.url("api/routes"), tok) if tok else no_token,
        "hub_health": lambda c: http.get(c, ctx.hub_url("hub/health")),
        "public_health": lambda c: http.get(c, cfg.public.url("hub/health")),
        "chp_healthz": lambda c: http.get(c, cfg.public.connect_origin + "/_chp_healthz"),
        "servers": lambda c: (http.get(c, ctx.hub_url("hub/api/users?state=active&limit=10000"),
                                       {"Authorization": f"token {ctx.hub_token}"})
                              if ctx.hub_token else no_token),
    }
    conn = getattr(cfg.hub, "connect_url", None)
    if conn:
        conn_url = parse_endpoint(conn).url(ctx.hub_prefix.lstrip("/") + "hub/api/")
        jobs["connect"] = lambda c: http.get(c, conn_url)
    with http.client() as client, cf.ThreadPoolExecutor(len(jobs)) as ex:
        futs = {k: ex.submit(fn, client) for k, fn in jobs.items()}
        r = {k: f.result() for k, f in futs.items()}
    desc = http.describe

    routes: dict[str, Any] | None = None
    rr = r["routes"]
    if isinstance(rr, RuntimeError):
        out.append(Finding("service.proxy_api", "service", "skipped",
                           "the proxy's routes were not read: the token cannot be read here",
                           str(rr), "run the doctor as root or as the service account"))
    elif _status(rr) == 200:
        routes = rr.json()  # type: ignore[union-attr]
        out.append(Finding("service.proxy_api", "service", "ok",
                           f"proxy API answers with hubsvc's token ({len(routes)} routes)"))
    elif _status(rr) == 403:
        out.append(Finding("service.proxy_api", "service", "error",
                           "the proxy on proxy.api_url refuses hubsvc's token",
                           f"GET {cfg.api.url('api/routes')} → 403",
                           "another configurable-http-proxy holds the API port, or the token "
                           f"file {ctx.files.proxy_token} changed since it started: restart hubsvc"))
    else:
        out.append(Finding("service.proxy_api", "service", "error", "the proxy API does not answer",
                           f"GET {cfg.api.url('api/routes')} → {desc(rr)}",
                           "restart hubsvc (`systemctl restart hubsvc`) and read the journal"))
    hh = r["hub_health"]
    if _status(hh) == 200:
        out.append(Finding("service.hub_health", "service", "ok",
                           f"the hub answers on {cfg.hub_bind.origin}"))
    else:
        out.append(Finding("service.hub_health", "service", "error", "the hub does not answer",
                           f"GET {ctx.hub_url('hub/health')} → {desc(hh)}",
                           "read the hub's log (`journalctl -u hubsvc -t hubsvc-hub`)"))
    ph, cz = r["public_health"], r["chp_healthz"]
    if _status(ph) == 200:
        out.append(Finding("entry.public", "entry point", "ok",
                           f"{ctx.users_url} reaches the hub through the proxy"))
    else:
        out.append(Finding("entry.public", "entry point", "error",
                           "the public URL does not reach the hub through the proxy",
                           f"GET {cfg.public.url('hub/health')} → {desc(ph)}; "
                           f"GET /_chp_healthz → {desc(cz)}",
                           "the hub's route may be missing from the proxy: restart hubsvc, or ask "
                           "the hub to re-sync (see service.routes)"))
    if "connect" in r:
        cr = r["connect"]
        if _status(cr) == 200:
            out.append(Finding("service.connect_url", "service", "ok",
                               f"users' servers can reach the hub at {conn}"))
        else:
            out.append(Finding("service.connect_url", "service", "error",
                               f"the hub does not answer at hub.connect_url {conn}: users' "
                               "servers cannot reach it (spawns time out)",
                               f"GET {conn_url} → {desc(cr)} (from this host)",
                               "make hub.bind_url listen on an address that connect_url reaches, "
                               "and open that port to the machines servers run on"))
    if routes is not None:
        out += route_findings(ctx, routes, r["servers"])
    if st is not None and ctx.supervisor_alive:
        out += loop_findings(ctx, st.get("redirect_loops") or [], routes)
    return out


def loop_findings(ctx: Ctx, loops: list[Any],
                   routes: dict[str, Any] | None = None) -> list[Finding]:
    """Redirect-loop episodes the supervisor saw in the hub's log (status.json).

    An episode still open is an error; one that ended is a warning (it happened since
    hubsvc started). A "missing route" loop whose route is in the proxy's table now is most
    often a browser on the hub's private port: the hub logs both the same way.
    """
    out: list[Finding] = []
    table = {_norm(k) for k in routes} if routes is not None else None
    hub_origin = ctx.cfg.hub_bind.origin
    for ep in loops:
        if not isinstance(ep, dict):
            continue
        user, cause = str(ep.get("user", "?")), ep.get("cause", "")
        sev: Severity = "error" if ep.get("open") else "warning"
        when = "now" if ep.get("open") else f"ended ({ep.get('ended_by') or 'over'})"
        ev = (f"user {user}: {ep.get('url', '')} ({ep.get('count', '?')} redirects, {when}); "
              f"{ep.get('detail', '')}")
        wrong_door = (f"users open {ctx.users_url} (proxy.public_url), never {hub_origin}/ "
                      "(the hub's private address)")
        if cause == "private_address":
            out.append(Finding(f"entry.private_address.{user}", "entry point", "error",
                               f"{user} reached the hub's private address instead of the proxy "
                               "(the classic wrong entry point): a redirect loop", ev,
                               f"open {ctx.users_url} instead (proxy.public_url), not "
                               f"{hub_origin}/"))
        elif cause == "version_skew":
            out.append(Finding(f"service.loop.{user}", "service", sev,
                               f"{user}'s server runs another JupyterHub version: a redirect loop",
                               ev, "install jupyterhub of the hub's version in the users' "
                               "environment (see jupyterhub.singleuser)"))
        elif cause == "missing_route" and table is not None and _norm(
                f"{ctx.hub_prefix}user/{user}") in table:
            out.append(Finding(f"service.loop.{user}", "entry point", sev,
                               f"{user} was in a redirect loop although the proxy has a route for "
                               f"the server: most likely the browser used the hub's private address "
                               f"{hub_origin}/ (the classic wrong entry point), or the route was "
                               "missing then and has been restored since", ev,
                               f"{wrong_door}; if it happens through the public URL: "
                               + _resync_fix(ctx)))
        else:
            out.append(Finding(f"service.loop.{user}", "service", sev,
                               f"{user} was in a redirect loop ({cause or 'cause unknown'})", ev,
                               _resync_fix(ctx)))
    return out


def _norm(spec: str) -> str:
    return spec if spec.endswith("/") else spec + "/"


def _resync_fix(ctx: Ctx) -> str:
    # no token on a command line (argv is world-readable in /proc): probe-spawn reads
    # hubsvc's own token file and re-syncs through the hub's API
    return ("hubsvc re-syncs the routes itself within one health interval; to do it now run "
            f"`hubsvc probe-spawn --config {ctx.cfg.source or resolve_path(None)} --user NAME` "
            "for one of the users listed (it asks the hub to push every route, "
            "POST /hub/api/proxy); the hub alone waits up to 5 minutes")


def route_findings(ctx: Ctx, routes: dict[str, Any],
                    servers: http.Answer) -> list[Finding]:
    out: list[Finding] = []
    table = routetable.parse(routes)
    hub = table.hub_route()
    if hub is not None:
        out.append(Finding("service.hub_route", "service", "ok",
                           f"the hub's route {_norm(hub.spec)} is in the proxy's table"))
    else:
        out.append(Finding("service.hub_route", "service", "error",
                           "the proxy's table has no route marked as the hub's",
                           f"routes: {sorted(_norm(r.spec) for r in table)[:10]}", _resync_fix(ctx)))
    if isinstance(servers, RuntimeError):
        out.append(Finding("service.routes", "service", "skipped",
                           "running servers were not compared with routes", str(servers)))
        return out
    if _status(servers) != 200:
        ev = (f"HTTP {servers.status_code} {servers.content[:200]!r}"
              if isinstance(servers, httpx.Response) else http.describe(servers))
        out.append(Finding("service.routes", "service", "warning",
                           "the hub's list of running servers could not be read", ev,
                           "check that the hubsvc service and role exist in the hub "
                           "(restart hubsvc to regenerate its JupyterHub config)"))
        return out
    users = servers.json()  # type: ignore[union-attr]
    if isinstance(users, dict):
        users = users.get("items", [])
    missing: list[str] = []
    count = 0
    for u in users:
        for sname, s in (u.get("servers") or {}).items():
            if not s.get("ready"):
                continue
            count += 1
            url = s.get("url") or ""
            if url not in table:
                label = u["name"] + (f"/{sname}" if sname else "")
                missing.append(f"{label} ({url})")
    if missing:
        out.append(Finding("service.routes", "service", "error",
                           f"{len(missing)} running server(s) have no route in the proxy: their "
                           "users get a redirect loop (\"Redirect loop detected\")",
                           "missing: " + ", ".join(missing[:20]), _resync_fix(ctx)))
    else:
        out.append(Finding("service.routes", "service", "ok",
                           f"every running server ({count}) has its route in the proxy"))
    return out


def _status(a: http.Answer) -> int | None:
    return a.status_code if isinstance(a, httpx.Response) else None
