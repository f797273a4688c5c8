"""Walk the login → spawn → server flow hop by hop, find redirect loops, name the cause.

Entry point: `probe_spawn(cfg, user, start=..., timeout_s=...) -> Verdict`.

How it works (docs/redirect-loops.md has the long form):
1. Ask the hub (its private bind_url, hubsvc's service token) about USER; start the server
   if asked to and watch the hub's progress stream (spawn failed / timed out → exit 2).
2. Mint a short-lived token for USER (scope `tokens`) and walk the public URL like a
   browser: cookie jar, every redirect followed by us, every hop recorded.
3. A loop is declared the moment we are about to request a URL we already requested,
   once the `redirects` counter and other volatile query parameters are ignored. The hub
   sleeps 2, 4, 8 s on its counted hops; the repeated URL is never requested, so the
   verdict does not wait for those sleeps.
4. Evidence is gathered (CHP's route table, the server's X-JupyterHub-Version, where each
   hop landed) and `diagnose()` — a pure function — names the cause and the fix.
5. A missing or wrong route is repaired (`POST /hub/api/proxy`) and the flow re-walked.

Nothing here depends on the supervisor.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urljoin, urlsplit, urlunsplit

import httpx

from . import hubapi, probes
from .config import Config
from .secrets import SecretFiles, read

# Query parameters that change on every pass through a loop without making it a new place.
VOLATILE_PARAMS = frozenset({"redirects", "state", "code", "_xsrf", "_", "token", "iss"})
# Chromium and Firefox give up after 20 redirects (net::ERR_TOO_MANY_REDIRECTS).
BROWSER_REDIRECT_LIMIT = 20
EX_OK, EX_LOOP, EX_SPAWN, EX_CONFIG = 0, 1, 2, 78

# Outcomes and their exit codes.
EXIT_CODES = {
    "healthy": EX_OK,
    "repaired": EX_OK,
    "loop": EX_LOOP,
    "too_many_redirects": EX_LOOP,
    "broken": EX_LOOP,
    "spawn_failed": EX_SPAWN,
    "spawn_timeout": EX_SPAWN,
    "not_running": EX_SPAWN,
    "hub_unreachable": EX_SPAWN,
    "pending": EX_SPAWN,  # queued in a batch system: not ready, not a failure of the hub
}


class ProbeUsageError(Exception):
    """The probe cannot run as asked (no such user, missing token file...): exit 78."""


# --------------------------------------------------------------------------- data


@dataclass
class Hop:
    """One request of the walk and what came back."""

    method: str
    url: str
    status: int | None = None
    location: str | None = None  # absolute, resolved against url
    elapsed_ms: float = 0.0
    jupyterhub_version: str | None = None  # X-JupyterHub-Version
    served_by: str = "unknown"  # hub | server | proxy | unknown
    error: str | None = None
    body_hint: str | None = None  # first words of an error page

    def line(self) -> str:
        st = str(self.status) if self.status is not None else "ERR"
        tail = f" -> {self.location}" if self.location else ""
        if self.error:
            tail += f" ({self.error})"
        elif self.body_hint and (self.status or 0) >= 400:
            tail += f" ({self.body_hint})"
        where = f"[{self.served_by}, {self.elapsed_ms:.0f} ms]"
        return f"{st:>3} {self.method:4} {self.url}{tail}  {where}"


@dataclass
class Walk:
    """The hops of one walk and how it ended."""

    hops: list[Hop] = field(default_factory=list)
    ended: str = "ok"  # ok | loop | too_many_redirects | error | timeout
    growing: bool = False  # the repeat was found only after folding repeated segments
    repeat_of: int | None = None  # index of the hop whose URL came back
    repeat_url: str | None = None  # the URL we refused to request again
    t_start: float = 0.0
    t_first_repeat: float | None = None  # monotonic: when the repeat became known

    @property
    def final(self) -> Hop | None:
        return self.hops[-1] if self.hops else None


@dataclass
class Facts:
    """What the probe learned besides the chain; input of `diagnose`."""

    user: str
    public_origin: str
    public_base: str  # "/" or "/jhub/"
    hub_origin: str  # the hub's private listener, as a client connects to it
    hub_version: str | None = None
    server_path: str | None = None  # "/jhub/user/NAME/" as the hub reports it
    server_ready: bool = False
    routes: dict[str, Any] | None = None  # CHP's table, None when unknown
    hub_target: str | None = None  # target of the hub's own route
    server_version: str | None = None  # X-JupyterHub-Version from the route's target
    target_answers: bool | None = None  # the route's target answered the server's API
    direct_walk: str | None = None  # how the same path ends on the public URL itself
    server_pid: int | None = None  # from the spawner's state, when it has one
    server_url: str | None = None  # where the server listens (its JUPYTERHUB_SERVICE_URL)
    server_hub_api: str | None = None  # the hub API URL the server was given
    server_hub_api_ok: bool | None = None  # does that URL answer from here

    @property
    def route(self) -> dict[str, Any] | None:
        if self.routes is None or not self.server_path:
            return None
        return self.routes.get(self.server_path.rstrip("/") or "/") or self.routes.get(
            self.server_path
        )


@dataclass
class Diagnosis:
    cause: str  # missing_route | wrong_target | private_address | version_skew |
    # prefix_mismatch | self_redirect | hub_unreachable | oauth_cycle | unknown | none
    summary: str
    evidence: list[str]
    fix: str
    repairable: bool = False


@dataclass
class Verdict:
    user: str
    outcome: str  # a key of EXIT_CODES
    cause: str
    summary: str
    evidence: list[str] = field(default_factory=list)
    fix: str = ""
    warnings: list[str] = field(default_factory=list)
    chain: list[Hop] = field(default_factory=list)
    first_chain: list[Hop] | None = None  # the chain before a repair
    repaired: bool = False
    repair: str | None = None
    spawn_message: str | None = None
    timings_ms: dict[str, float] = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        return EXIT_CODES.get(self.outcome, EX_LOOP)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["exit_code"] = self.exit_code
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def render_text(self) -> str:
        out: list[str] = []
        head = {
            "healthy": "OK",
            "repaired": "LOOP FOUND AND REPAIRED",
            "loop": "REDIRECT LOOP",
            "too_many_redirects": "TOO MANY REDIRECTS",
            "broken": "FLOW BROKEN",
            "spawn_failed": "SPAWN FAILED",
            "spawn_timeout": "SPAWN TIMED OUT",
            "pending": "SERVER QUEUED",
            "not_running": "SERVER NOT RUNNING",
            "hub_unreachable": "HUB UNREACHABLE",
        }.get(self.outcome, self.outcome.upper())
        out.append(f"{head}: {self.user}: {self.summary}")
        if self.first_chain:
            out.append("chain before repair:")
            out += [f"  {i:2} {h.line()}" for i, h in enumerate(self.first_chain)]
        if self.chain:
            out.append("chain:" if not self.first_chain else "chain after repair:")
            out += [f"  {i:2} {h.line()}" for i, h in enumerate(self.chain)]
        if self.cause not in ("none", ""):
            out.append(f"cause: {self.cause}")
        if self.evidence:
            out.append("evidence:")
            out += [f"  - {e}" for e in self.evidence]
        if self.repair:
            out.append(f"repair: {self.repair}")
        if self.fix:
            out.append(f"fix: {self.fix}")
        for w in self.warnings:
            out.append(f"warning: {w}")
        if self.timings_ms:
            t = ", ".join(f"{k} {v:.0f} ms" for k, v in self.timings_ms.items())
            out.append(f"timings: {t}")
        return "\n".join(out)


# --------------------------------------------------------------------------- pure helpers


def normalize_url(url: str) -> str:
    """The place a URL names, without the loop counter and other per-pass parameters."""
    p = urlsplit(url)
    host = (p.hostname or "").lower()
    port = p.port or (443 if p.scheme == "https" else 80)
    q = sorted((k, v) for k, v in parse_qsl(p.query, keep_blank_values=True)
               if k not in VOLATILE_PARAMS)
    return urlunsplit((p.scheme.lower(), f"{host}:{port}", p.path or "/", urlencode(q), ""))


def collapse_url(url: str) -> str:
    """normalize_url with runs of a repeated path segment folded to one: a URL that grows
    by the same segment on every pass (/jhub/hub/hub/user/x/) is the same place again."""
    n = urlsplit(normalize_url(url))
    segs: list[str] = []
    for seg in n.path.split("/"):
        if seg and segs and segs[-1] == seg:
            continue
        segs.append(seg)
    return urlunsplit((n.scheme, n.netloc, "/".join(segs) or "/", n.query, ""))


def origin_of(url: str) -> str:
    p = urlsplit(url)
    port = p.port or (443 if p.scheme == "https" else 80)
    return f"{p.scheme}://{(p.hostname or '').lower()}:{port}"


def redirects_param(url: str) -> int | None:
    for k, v in parse_qsl(urlsplit(url).query):
        if k == "redirects":
            try:
                return int(v)
            except ValueError:
                return None
    return None


def _path(url: str) -> str:
    return urlsplit(url).path or "/"


def cycle_of(walk: Walk) -> list[Hop]:
    """The hops that form the cycle (from the repeated hop to the end)."""
    if walk.repeat_of is None:
        return []
    return walk.hops[walk.repeat_of :]


def diagnose(walk: Walk, facts: Facts) -> Diagnosis:
    """Name the most likely cause of a walk that did not end well. Pure: no I/O."""
    hops = walk.hops
    user_prefix = (facts.server_path or f"{facts.public_base}user/{facts.user}/")
    hub_prefix = facts.public_base + "hub/"
    ev: list[str] = []
    if walk.repeat_url is not None and walk.repeat_of is not None:
        how = ("once the repeated path segments are folded: the path grows by the same "
               "segment on every pass, so a browser would follow it until its limit of "
               f"{BROWSER_REDIRECT_LIMIT}" if walk.growing
               else "once the redirects counter is ignored")
        ev.append(
            f"hop {len(hops) - 1} redirects to {walk.repeat_url}, the same place as hop "
            f"{walk.repeat_of} ({hops[walk.repeat_of].url}) {how}"
        )
    skew = (
        facts.server_version is not None
        and facts.hub_version is not None
        and facts.server_version != facts.hub_version
    )
    skew_line = (
        f"the server answers with X-JupyterHub-Version {facts.server_version}, "
        f"the hub is {facts.hub_version}"
    )

    # 1. Entered through the hub's private listener.
    private = [i for i, h in enumerate(hops) if origin_of(h.url) == facts.hub_origin]
    if private and facts.hub_origin != facts.public_origin:
        i = private[0]
        return Diagnosis(
            "private_address",
            "the flow went to the hub's private address (hub.bind_url) instead of the "
            "public URL, so the proxy was bypassed and the hub keeps sending the user back "
            "to itself",
            [*ev, f"hop {i} ({hops[i].url}) is on {facts.hub_origin}, the hub's own listener; "
             f"the public URL is {facts.public_origin}{facts.public_base}"],
            f"open {facts.public_origin}{facts.public_base}user/{quote(facts.user)}/ (the "
            f"proxy's public URL); never link to or bookmark {facts.hub_origin}",
        )

    # 2. Paths outside the public base URL.
    outside = [
        i for i, h in enumerate(hops)
        if origin_of(h.url) == facts.public_origin
        and not _path(h.url).startswith(facts.public_base)
    ]
    if outside and facts.public_base != "/":
        i = outside[0]
        return Diagnosis(
            "prefix_mismatch",
            f"a URL left the hub's base URL {facts.public_base}: hub, proxy and server do not "
            "agree on the prefix",
            [*ev, f"hop {i} requests {_path(hops[i].url)}, outside {facts.public_base}"
             + (f" (sent there by hop {i - 1}, {hops[i - 1].served_by})" if i else "")],
            f"make every link and the server's base_url start with {facts.public_base} "
            "(proxy.public_url's path); if another proxy is in front, it must pass the "
            "prefix through unchanged",
        )

    foreign = [i for i, h in enumerate(hops)
               if origin_of(h.url) not in (facts.public_origin, facts.hub_origin)]
    if foreign and walk.ended in ("loop", "too_many_redirects"):
        i = foreign[0]
        extra = [f"hop {i} ({hops[i].url}) is not on hubsvc's public URL "
                 f"{facts.public_origin}{facts.public_base}: another proxy is in front"]
        if facts.direct_walk:
            extra.append(facts.direct_walk)
        return Diagnosis(
            "prefix_mismatch",
            "the loop happens only through the proxy in front of hubsvc: it changes the "
            f"path (prefix {facts.public_base}) on the way in, so the hub never sees the URL "
            "it sent",
            [*ev, *extra],
            f"make the front proxy pass {facts.public_base} through unchanged (no prefix "
            "stripping), or set proxy.public_url to the URL users really open, path included",
        )

    # Did a request for the user's server reach the hub instead (the hub's catch-all)?
    fell_to_hub = [
        i for i, h in enumerate(hops)
        if _path(h.url).startswith(user_prefix) and h.location
        and _path(h.location).startswith(hub_prefix + "user/")
    ]
    hub_counted = [h for h in hops if h.location and redirects_param(h.location)]
    route = facts.route
    if fell_to_hub and facts.server_ready:
        i = fell_to_hub[0]
        ev.append(
            f"hop {i}: {_path(hops[i].url)} was answered by the hub "
            f"(redirect to {_path(hops[i].location or '')}), not by {facts.user}'s server"
        )
        if hub_counted:
            ev.append("the hub started counting redirects (?redirects=N): it believes the "
                      "server is ready and keeps sending the browser back to it")
        if facts.routes is not None and route is None:
            ev.append(
                f"CHP's route table has no route for {facts.server_path} "
                f"(routes: {', '.join(sorted(facts.routes)) or 'none'}) while the hub reports "
                "the server ready"
            )
            if skew:
                ev.append(skew_line + " (the hub gives up after 2 redirects instead of 4)")
            return Diagnosis(
                "missing_route",
                f"the proxy has no route for {facts.user}'s running server, so its URL falls "
                "through to the hub, which redirects back: a loop",
                ev,
                "re-sync the proxy's routes from the hub (POST /hub/api/proxy with a "
                "`proxy`-scoped token; `hubsvc probe-spawn` does it unless --no-repair). "
                "Routes vanish when CHP restarts or someone deletes them",
                repairable=True,
            )
        if route is not None:
            tgt = route.get("target")
            if tgt and facts.hub_target and tgt.rstrip("/") == facts.hub_target.rstrip("/"):
                why = f"points at the hub ({tgt}), not at the server"
            elif facts.target_answers is False:
                why = f"points at {tgt}, where no Jupyter server answers"
            elif tgt and facts.server_url and origin_of(tgt) != origin_of(facts.server_url):
                why = f"points at {tgt}, but the server listens at {origin_of(facts.server_url)}"
            else:
                why = None
            if why:
                ev.append(f"CHP's route {facts.server_path} {why}")
                return Diagnosis(
                    "wrong_target",
                    f"the proxy's route for {facts.user} has the wrong target, so requests "
                    "never reach the server",
                    ev,
                    "re-sync the proxy's routes from the hub (POST /hub/api/proxy; "
                    "`hubsvc probe-spawn` does it unless --no-repair)",
                    repairable=True,
                )
        if skew:
            ev.append(skew_line)
            return Diagnosis(
                "version_skew",
                "jupyterhub-singleuser in the server's environment is another version than "
                "the hub; the server does not accept the hub's login",
                ev,
                f"install jupyterhub=={facts.hub_version} in the user environment (the one "
                "that provides jupyterhub-singleuser), then restart the user's server",
            )

    # 3. The server redirecting to itself.
    for i, h in enumerate(hops):
        if (h.location and h.served_by == "server"
                and normalize_url(h.location) == normalize_url(h.url)):
            return Diagnosis(
                "self_redirect",
                f"{facts.user}'s server redirects {_path(h.url)} to itself",
                [*ev, f"hop {i}: {h.url} answered {h.status} with Location {h.location}"],
                "check the server's default_url (c.Spawner.default_url) and any redirect "
                "configured in the single-user environment; it must name a page below "
                "the server's URL, not the server's URL itself",
            )
    cyc = cycle_of(walk)
    if cyc and all(h.served_by == "server" for h in cyc):
        return Diagnosis(
            "self_redirect",
            f"{facts.user}'s server keeps redirecting between its own pages",
            [*ev, "every hop of the cycle was answered by the server: "
             + " -> ".join(_path(h.url) for h in cyc)],
            "check the server's default_url (c.Spawner.default_url) and redirects "
            "configured in the single-user environment",
        )

    # 4. OAuth / cookie cycles.
    if cyc and any("/oauth2/authorize" in _path(h.url) for h in cyc) and any(
        "oauth_callback" in _path(h.url) for h in cyc
    ):
        return Diagnosis(
            "oauth_cycle",
            "the login handshake between the server and the hub repeats: the server does "
            "not keep the cookie the hub gives it",
            [*ev, "cycle: " + " -> ".join(_path(h.url) for h in cyc)],
            "check that the browser reaches hub and server on one origin (the public URL), "
            "that no proxy in front strips Set-Cookie or rewrites the path, and that the "
            "server can reach the hub's API (hub_connect_url)",
        )

    # 5. The proxy cannot reach the route's target (502/503 for the user's URL).
    final = walk.final
    route = facts.route
    if (final is not None and final.status in (502, 503, 504) and route is not None
            and facts.target_answers is False
            and _path(final.url).startswith(user_prefix)):
        tgt = route.get("target")
        where = (f"; the server listens at {origin_of(facts.server_url)}"
                 if facts.server_url else "")
        return Diagnosis(
            "wrong_target",
            f"the proxy's route for {facts.user} points where no server answers, so the "
            f"proxy answers {final.status}",
            [*ev, f"CHP's route {facts.server_path} points at {tgt}, where no Jupyter "
             f"server answers{where}", f"final hop: {final.line()}"],
            "re-sync the proxy's routes from the hub (POST /hub/api/proxy; "
            "`hubsvc probe-spawn` does it unless --no-repair); if it comes back, the server "
            "died: restart it",
            repairable=True,
        )

    # 6. Hub unreachable from the server: the server answers errors about the hub.
    if facts.server_hub_api_ok is False and final is not None and (final.status or 0) >= 400:
        return Diagnosis(
            "hub_unreachable",
            f"{facts.user}'s server cannot reach the hub's API, so it cannot check any login",
            [*ev, f"the server was given JUPYTERHUB_API_URL={facts.server_hub_api}, which "
             "does not answer from this machine", f"final hop: {final.line()}"],
            "make the hub's API reachable from where the server runs: set "
            "c.JupyterHub.hub_connect_url (or Spawner.hub_connect_url) to an address the "
            "server can connect to, then restart the server",
        )
    if final is not None and final.served_by == "server" and (final.status or 0) >= 500:
        return Diagnosis(
            "hub_unreachable",
            f"{facts.user}'s server answers {final.status}: it most likely cannot reach the "
            "hub's API to check the login",
            [*ev, f"final hop: {final.line()}"],
            "make the hub's API reachable from where the server runs: set "
            "c.JupyterHub.hub_connect_url (or Spawner.hub_connect_url) to an address the "
            "server can connect to",
        )
    if skew:
        return Diagnosis(
            "version_skew",
            "jupyterhub-singleuser in the server's environment is another version than the hub",
            [*ev, skew_line],
            f"install jupyterhub=={facts.hub_version} in the user environment",
        )
    shape = " -> ".join(f"{h.status} {_path(h.url)}" for h in hops[-8:])
    return Diagnosis(
        "unknown",
        "a redirect pattern hubsvc does not recognise",
        [*ev, f"last hops: {shape}"],
        "read the chain above; report it with `hubsvc probe-spawn --json` output",
    )


_SPAWN_RULES: list[tuple[re.Pattern[str], str, str]] = [
    (re.compile(r"Failed to connect to my Hub|hub_connect_url|JUPYTERHUB_API_URL", re.I),
     "hub_unreachable",
     "make the hub's API reachable from the server: set c.JupyterHub.hub_connect_url "
     "(or Spawner.hub_connect_url) to an address the server can reach"),
    (re.compile(r"didn't respond in \d+", re.I),
     "server_unresponsive",
     "the server started but never answered on its URL. Most often it cannot reach the "
     "hub's API (check c.JupyterHub.hub_connect_url / Spawner.hub_connect_url and the "
     "hub's own log for 'Failed to connect to my Hub'); otherwise raise "
     "c.Spawner.http_timeout"),
    (re.compile(r"exited with exit code|exit status|No such file|not found", re.I),
     "server_crashed",
     "run the spawner's command by hand as the user to see its error; check that "
     "jupyterhub-singleuser and jupyterlab are installed in the user environment"),
    (re.compile(r"timeout|timed out", re.I),
     "spawn_timeout",
     "raise c.Spawner.start_timeout, or find out why the spawner is slow"),
]


def classify_spawn_failure(message: str) -> tuple[str, str]:
    """(cause, fix) for a spawn failure message from the hub's progress API."""
    for pat, cause, fix in _SPAWN_RULES:
        if pat.search(message):
            return cause, fix
    return "unknown", "read the hub's log around the spawn for the spawner's error"


# --------------------------------------------------------------------------- I/O


class _FormParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.xsrf: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "input" and a.get("name") == "_xsrf":
            self.xsrf = a.get("value")


def _hint(r: httpx.Response) -> str | None:
    if r.status_code < 400:
        return None
    text = r.text[:4000]
    m = re.search(r"Redirect loop detected[^<]*", text)
    if m:
        return m.group(0).strip()
    m = re.search(r"<title>([^<]*)</title>", text)
    return m.group(1).strip() if m else text[:120].strip() or None


class Walker:
    """Follows redirects one by one with a cookie jar and records each hop."""

    def __init__(self, client: httpx.AsyncClient, facts: Facts, *, headers: Mapping[str, str],
                 max_hops: int = BROWSER_REDIRECT_LIMIT, deadline: float | None = None,
                 hop_timeout_s: float = 10.0):
        self.client = client
        self.facts = facts
        self.headers = dict(headers)
        self.max_hops = max_hops
        self.deadline = deadline
        self.hop_timeout_s = hop_timeout_s
        self.trusted_origins: tuple[str, ...] = ()  # e.g. the origin of --url

    def _served_by(self, url: str, r: httpx.Response) -> str:
        path = _path(url)
        hub_prefix = self.facts.public_base + "hub/"
        if path.startswith(hub_prefix) or origin_of(url) == self.facts.hub_origin:
            return "hub"
        loc = r.headers.get("location")
        if loc and _path(urljoin(url, loc)).startswith(hub_prefix + "user/"):
            return "hub"  # the hub's catch-all for /user/NAME/...
        if r.status_code in (404, 503) and "configurable-http-proxy" in r.text[:2000].lower():
            return "proxy"
        if r.status_code == 404 and "No service is registered" in r.text[:2000]:
            return "proxy"
        user_prefix = self.facts.server_path or f"{self.facts.public_base}user/"
        if path.startswith(user_prefix):
            return "server"
        return "unknown"

    async def request(self, method: str, url: str, **kw: Any) -> tuple[Hop, httpx.Response | None]:
        hop = Hop(method, url)
        t = time.monotonic()
        timeout = self.hop_timeout_s
        if self.deadline is not None:
            timeout = max(0.1, min(timeout, self.deadline - t))
        send_auth = origin_of(url) in (self.facts.public_origin, self.facts.hub_origin,
                                       *self.trusted_origins)
        headers = self.headers if send_auth else {}
        try:
            r = await self.client.request(method, url, headers=headers, timeout=timeout, **kw)
        except httpx.TimeoutException:
            hop.error = f"no answer within {timeout:.1f} s"
            hop.elapsed_ms = (time.monotonic() - t) * 1000
            return hop, None
        except httpx.HTTPError as e:
            hop.error = f"{type(e).__name__}: {e}"
            hop.elapsed_ms = (time.monotonic() - t) * 1000
            return hop, None
        hop.elapsed_ms = (time.monotonic() - t) * 1000
        hop.status = r.status_code
        loc = r.headers.get("location")
        if loc is not None and r.is_redirect:
            hop.location = urljoin(url, loc)
        hop.jupyterhub_version = r.headers.get("x-jupyterhub-version")
        hop.served_by = self._served_by(url, r)
        hop.body_hint = _hint(r)
        return hop, r

    async def walk(self, url: str, walk: Walk | None = None) -> Walk:
        w = walk or Walk(t_start=time.monotonic())
        # A place is the URL (without volatile parameters) *and* the cookies the browser
        # holds: the login handshake legitimately visits /user/NAME/lab twice, once
        # without the server's cookie and once with it.
        seen: dict[str, int] = {}
        folded: dict[str, int] = {}
        for _ in range(self.max_hops + 1):
            if self.deadline is not None and time.monotonic() >= self.deadline:
                w.ended = "timeout"
                return w
            jar = self._jar()
            key, fkey = normalize_url(url) + jar, collapse_url(url) + jar
            if key in seen or fkey in folded:
                w.ended = "loop"
                w.growing = key not in seen
                w.repeat_of = seen[key] if key in seen else folded[fkey]
                w.repeat_url = url
                w.t_first_repeat = time.monotonic()
                return w
            if len(w.hops) >= self.max_hops:
                w.ended = "too_many_redirects"
                return w
            seen[key] = len(w.hops)
            folded.setdefault(fkey, len(w.hops))
            hop, _r = await self.request("GET", url)
            w.hops.append(hop)
            if hop.error:
                w.ended = "timeout" if "no answer" in hop.error else "error"
                return w
            if hop.location is None:
                w.ended = "ok"
                return w
            url = hop.location
        w.ended = "too_many_redirects"
        return w

    def _jar(self) -> str:
        items = sorted((c.name, c.value or "", c.domain, c.path) for c in self.client.cookies.jar)
        return " cookies:" + repr(items)

    async def login(self, user: str, password: str) -> Walk:
        """The dummy authenticator's form: GET /hub/login, POST with _xsrf."""
        w = Walk(t_start=time.monotonic())
        login_url = f"{self.facts.public_origin}{self.facts.public_base}hub/login"
        hop, r = await self.request("GET", login_url)
        w.hops.append(hop)
        if r is None or r.status_code != 200:
            w.ended = "error"
            return w
        p = _FormParser()
        p.feed(r.text)
        data = {"username": user, "password": password}
        if p.xsrf:
            data["_xsrf"] = p.xsrf
        hop, r = await self.request("POST", login_url, data=data)
        w.hops.append(hop)
        if r is None or hop.location is None:
            w.ended = "error"
            return w
        w.ended = "ok"
        return w


class HubAPI(hubapi.HubAPI):
    """hubsvc's hub API client plus what the probe needs: raw responses and the progress
    event stream."""

    async def call(self, method: str, rel: str, limit_s: float = 10.0,
                   **kw: Any) -> httpx.Response:
        return await self.client.request(method, self.base + rel, headers=self.headers,
                                         timeout=limit_s, **kw)

    async def progress(self, user: str, deadline: float) -> tuple[str, str | None]:
        """Follow the progress event stream: ('ready'|'failed'|'timeout'|'stopped', message)."""
        last: str | None = None
        url = self.base + f"users/{quote(user)}/server/progress"
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


async def chp_routes(client: httpx.AsyncClient, cfg: Config) -> dict[str, Any] | None:
    """CHP's routing table through its API, with the proxy token hubsvc owns."""
    try:
        token = read(SecretFiles.in_dir(cfg.paths.state_dir).proxy_token)
    except OSError:
        return None
    return await probes.routes(client, cfg, token, 3.0)


async def resync_routes(client: httpx.AsyncClient, cfg: Config, hub_token: str) -> tuple[bool, str]:
    """Ask the hub to re-sync CHP's table (POST /hub/api/proxy): (ok, what happened)."""
    url = cfg.hub_bind.connect_origin + cfg.public.path + "hub/api/proxy"
    t = time.monotonic()
    try:
        r = await client.post(url, headers={"Authorization": f"token {hub_token}"}, timeout=10.0)
    except httpx.HTTPError as e:
        return False, f"POST /hub/api/proxy failed: {type(e).__name__}: {e}"
    ms = (time.monotonic() - t) * 1000
    if r.status_code != 200:
        return False, f"POST /hub/api/proxy answered {r.status_code}"
    return True, f"re-synced the proxy's routes from the hub (POST /hub/api/proxy, {ms:.0f} ms)"


async def _server_api(client: httpx.AsyncClient, url: str) -> tuple[bool, str | None]:
    """(answers like a Jupyter server, its X-JupyterHub-Version) for GET url."""
    try:
        r = await client.get(url, timeout=2.0)
    except httpx.HTTPError:
        return False, None
    ok = r.status_code == 200 and "version" in r.text
    return ok, (r.headers.get("x-jupyterhub-version") if ok else None)


async def _gather_facts(client: httpx.AsyncClient, cfg: Config, facts: Facts) -> None:
    facts.routes = await chp_routes(client, cfg)
    if facts.routes is not None:
        for r in facts.routes.values():
            if isinstance(r, dict) and (r.get("data") or {}).get("hub"):
                facts.hub_target = r.get("target")
                break
        else:
            root = facts.routes.get("/")
            if isinstance(root, dict):
                facts.hub_target = root.get("target")
    if facts.server_pid and not facts.server_url:
        env = _environ_of(facts.server_pid)
        facts.server_url = env.get("JUPYTERHUB_SERVICE_URL")
        facts.server_hub_api = env.get("JUPYTERHUB_API_URL")
    if facts.server_hub_api:
        try:
            await client.get(facts.server_hub_api.rstrip("/") + "/", timeout=2.0)
            facts.server_hub_api_ok = True
        except httpx.HTTPError:
            facts.server_hub_api_ok = False
    route = facts.route
    if route and route.get("target") and facts.server_path:
        url = route["target"].rstrip("/") + facts.server_path + "api"
        facts.target_answers, facts.server_version = await _server_api(client, url)
    if facts.server_version is None and facts.server_url:
        # no usable route: ask the server where its own environment says it listens
        _ok, facts.server_version = await _server_api(
            client, facts.server_url.rstrip("/") + "/api")


def _make_facts(cfg: Config, user: str) -> Facts:
    return Facts(
        user=user,
        public_origin=origin_of(cfg.public.connect_origin),
        public_base=cfg.public.path,
        hub_origin=origin_of(cfg.hub_bind.connect_origin),
    )


async def probe_spawn(
    cfg: Config,
    user: str,
    *,
    start: bool = True,
    timeout_s: float = 120.0,
    repair: bool = True,
    entry_url: str | None = None,
    password: str | None = None,
    hub_token: str | None = None,
) -> Verdict:
    """Walk USER's flow and return the verdict. Raises ProbeUsageError (exit 78).

    entry_url: where the walk starts (default: the public URL of USER's server); give
    the URL a user reported to reproduce what they saw (e.g. the hub's private address).
    password: log in through the hub's form first (dummy/PAM authenticators) and walk
    with cookies only, like a browser; without it, a 5-minute token for USER is used.
    """
    t0 = time.monotonic()
    deadline = t0 + timeout_s
    timings: dict[str, float] = {}
    if hub_token is None:
        try:
            hub_token = read(SecretFiles.in_dir(cfg.paths.state_dir).hub_api_token)
        except OSError as e:
            raise ProbeUsageError(
                f"cannot read hubsvc's hub API token ({e}); run as root or the service "
                "account, with the same --config as `hubsvc run`"
            ) from None
    facts = _make_facts(cfg, user)

    async with httpx.AsyncClient(trust_env=False, follow_redirects=False) as client:
        hub = HubAPI(client, cfg, hub_token)
        try:
            r = await hub.call("GET", "", limit_s=5.0)
            facts.hub_version = r.json().get("version")
        except (httpx.HTTPError, ValueError) as e:
            return Verdict(user, "hub_unreachable", "hub_down",
                           f"the hub's API at {hub.base} does not answer ({type(e).__name__})",
                           fix="check `hubsvc status` and the hub's log")
        r = await hub.call("GET", f"users/{quote(user)}")
        if r.status_code == 404:
            raise ProbeUsageError(f"the hub has no user {user!r}; they must log in once first")
        if r.status_code == 403:
            raise ProbeUsageError(
                "hubsvc's token may not read users (403); is the hub running with hubsvc's "
                "generated config?"
            )
        model = r.json()
        server = (model.get("servers") or {}).get("")
        spawn_message: str | None = None
        post_msg: str | None = None
        watcher: asyncio.Task[list[str]] | None = None
        if not server or not (server.get("ready") or server.get("pending")):
            if not start:
                return Verdict(user, "not_running", "none",
                               f"{user} has no running server (--no-start: not starting one)",
                               fix="start it, or run without --no-start")
            ts = time.monotonic()
            watcher = asyncio.create_task(_watch_server_env(hub, client, user, deadline))
            try:
                # the hub answers 201 when ready, 202 after its slow_spawn_timeout (10 s)
                r = await hub.call("POST", f"users/{quote(user)}/server", json={},
                                   limit_s=max(1.0, min(30.0, deadline - time.monotonic())))
                if r.status_code not in (201, 202, 400):
                    post_msg = f"the hub answered {r.status_code}: {_api_message(r)}"
            except httpx.TimeoutException:
                pass  # still starting: the progress stream tells the rest
            timings["spawn_request"] = (time.monotonic() - ts) * 1000
        if not (server or {}).get("ready"):
            ts = time.monotonic()
            if watcher is None:
                watcher = asyncio.create_task(_watch_server_env(hub, client, user, deadline))
            try:
                state, spawn_message = await hub.progress(user, deadline)
            finally:
                watcher.cancel()
                env_ev = await asyncio.gather(watcher, return_exceptions=True)
            hub_ev = env_ev[0] if isinstance(env_ev[0], list) else []
            timings["spawn_wait"] = (time.monotonic() - ts) * 1000
            if state == "failed" or state == "stopped":
                msg = spawn_message or post_msg or "the server stopped while starting"
                cause, fix = classify_spawn_failure(msg)
                evidence = [f"the hub's progress API: {msg}"]
                if hub_ev:
                    cause = "hub_unreachable"
                    fix = ("make the hub's API reachable from the server: set "
                           "c.JupyterHub.hub_connect_url (or Spawner.hub_connect_url) to an "
                           "address the server can connect to")
                    evidence += hub_ev
                return Verdict(user, "spawn_failed", cause, msg, evidence=evidence, fix=fix,
                               spawn_message=msg, timings_ms=timings)
            if state == "timeout":
                # a server waiting in a batch queue is not a failed spawn
                from . import slurm

                try:
                    sj = await slurm.user_job(client, cfg, hub_token, user)
                except httpx.HTTPError:
                    sj = None
                pend = slurm.pending_verdict(sj)
                if sj is not None and pend is not None:
                    return Verdict(
                        user, "pending", "scheduler_pending", pend[0], fix=pend[1],
                        evidence=[f"squeue: job {sj.job_id} {sj.slurm_state} ({sj.reason})",
                                  f"the hub's progress API: {spawn_message or 'none'}"],
                        spawn_message=spawn_message, timings_ms=timings)
                return Verdict(
                    user, "spawn_timeout", "spawn_timeout",
                    f"the server was not ready within {timeout_s:.0f} s "
                    f"(last progress message: {spawn_message or 'none'})",
                    fix="raise --timeout or c.Spawner.start_timeout; check the hub's log",
                    spawn_message=spawn_message, timings_ms=timings)
            r = await hub.call("GET", f"users/{quote(user)}")
            server = (r.json().get("servers") or {}).get("")
        facts.server_ready = bool(server and server.get("ready"))
        pid = ((server or {}).get("state") or {}).get("pid")
        facts.server_pid = pid if isinstance(pid, int) else None
        facts.server_path = (server or {}).get("url") or f"{cfg.public.path}user/{quote(user)}/"

        # credentials for the walk
        headers: dict[str, str] = {}
        token_id: str | None = None
        if password is None:
            r = await hub.call("POST", f"users/{quote(user)}/tokens",
                               json={"expires_in": 300, "note": "hubsvc probe-spawn"})
            if r.status_code != 201:
                raise ProbeUsageError(
                    f"cannot mint a token for {user}: {r.status_code} {_api_message(r)}; "
                    "hubsvc's service needs the `tokens` scope"
                )
            tok = r.json()
            headers["Authorization"] = f"token {tok['token']}"
            token_id = tok.get("id")
        try:
            verdict = await _walk_and_judge(
                client, cfg, hub, hub_token, facts, headers, password, entry_url,
                deadline, repair,
            )
        finally:
            if token_id:
                try:
                    await hub.call("DELETE", f"users/{quote(user)}/tokens/{token_id}",
                                   limit_s=3.0)
                except httpx.HTTPError:
                    pass
    verdict.spawn_message = verdict.spawn_message or spawn_message
    verdict.timings_ms = {**timings, **verdict.timings_ms,
                          "total": (time.monotonic() - t0) * 1000}
    return verdict


async def _watch_server_env(hub: HubAPI, client: httpx.AsyncClient, user: str,
                            deadline: float) -> list[str]:
    """While a server starts: if the spawner runs it on this machine (its state has a pid
    we can read), check that the hub API URL it was given answers. Evidence, or []."""
    checked: set[str] = set()
    for _ in range(600):  # bounded: 0.5 s steps, and by the deadline
        if time.monotonic() >= deadline:
            return []
        try:
            r = await hub.call("GET", f"users/{quote(user)}", limit_s=3.0)
            srv = (r.json().get("servers") or {}).get("") or {}
        except (httpx.HTTPError, ValueError):
            srv = {}
        pid = (srv.get("state") or {}).get("pid")
        api_url = _environ_of(pid).get("JUPYTERHUB_API_URL") if pid else None
        if api_url and api_url not in checked:
            checked.add(api_url)
            try:
                await client.get(api_url.rstrip("/") + "/", timeout=2.0)
            except httpx.HTTPError as e:
                return [
                    f"the server (pid {pid}) was given JUPYTERHUB_API_URL={api_url}, and "
                    f"that address does not answer from this machine ({type(e).__name__})"
                ]
        await asyncio.sleep(0.5)
    return []


def _environ_of(pid: int) -> dict[str, str]:
    try:
        raw = open(f"/proc/{int(pid)}/environ", "rb").read()
    except (OSError, ValueError, TypeError):
        return {}
    out = {}
    for item in raw.split(b"\0"):
        k, sep, v = item.partition(b"=")
        if sep:
            out[k.decode(errors="replace")] = v.decode(errors="replace")
    return out


def _api_message(r: httpx.Response) -> str:
    try:
        return str(r.json().get("message") or r.status_code)
    except ValueError:
        return r.text[:200] or str(r.status_code)


async def _walk_once(client: httpx.AsyncClient, cfg: Config, facts: Facts,
                     headers: dict[str, str], password: str | None, entry: str,
                     deadline: float) -> Walk:
    async with httpx.AsyncClient(trust_env=False, follow_redirects=False) as browser:
        walker = Walker(browser, facts, headers=headers, deadline=deadline)
        walker.trusted_origins = (origin_of(entry),)  # the admin chose it (--url)
        if password is not None:
            lw = await walker.login(facts.user, password)
            if lw.ended != "ok":
                return lw
        return await walker.walk(entry)


async def _walk_and_judge(client: httpx.AsyncClient, cfg: Config, hub: HubAPI,
                          hub_token: str, facts: Facts, headers: dict[str, str],
                          password: str | None, entry_url: str | None, deadline: float,
                          repair: bool) -> Verdict:
    entry = entry_url or (facts.public_origin + (facts.server_path or "/"))
    w = await _walk_once(client, cfg, facts, headers, password, entry, deadline)
    timings: dict[str, float] = {}
    if w.ended in ("loop", "too_many_redirects") and w.hops and origin_of(w.hops[0].url) not in (
            facts.public_origin, facts.hub_origin):
        p = urlsplit(w.hops[0].url)
        same = facts.public_origin + p.path + (f"?{p.query}" if p.query else "")
        w2 = await _walk_once(client, cfg, facts, headers, password, same, deadline)
        end = w2.final.status if w2.final else None
        facts.direct_walk = (f"the same path on the public URL ({same}) ends {w2.ended} "
                             f"with {end} after {len(w2.hops)} hops")
    if w.t_first_repeat is not None:
        timings["walk_to_repeat"] = (w.t_first_repeat - w.t_start) * 1000
    if w.ended == "ok" and w.final is not None and (w.final.status or 0) < 400:
        await _gather_facts(client, cfg, facts)
        v = Verdict(facts.user, "healthy", "none",
                    f"{len(w.hops)} hops, ended {w.final.status} at {_path(w.final.url)}",
                    chain=w.hops, timings_ms=timings)
        _add_warnings(v, facts)
        return v
    await _gather_facts(client, cfg, facts)
    d = diagnose(w, facts)
    if w.t_first_repeat is not None:
        timings["verdict_after_repeat"] = (time.monotonic() - w.t_first_repeat) * 1000
    outcome = {"loop": "loop", "too_many_redirects": "too_many_redirects"}.get(w.ended, "broken")
    v = Verdict(facts.user, outcome, d.cause, d.summary, evidence=d.evidence, fix=d.fix,
                chain=w.hops, timings_ms=timings)
    if d.repairable and repair:
        ok, what = await resync_routes(client, cfg, hub_token)
        v.repair = what
        if ok:
            facts2 = _make_facts(cfg, facts.user)
            facts2.hub_version, facts2.server_path = facts.hub_version, facts.server_path
            facts2.server_ready = facts.server_ready
            facts2.server_pid, facts2.server_url = facts.server_pid, facts.server_url
            w2 = await _walk_once(client, cfg, facts2, headers, password, entry, deadline)
            if w2.ended == "ok" and w2.final is not None and (w2.final.status or 0) < 400:
                v.first_chain, v.chain = v.chain, w2.hops
                v.outcome, v.repaired = "repaired", True
                v.repair = what + f"; re-probe healthy ({len(w2.hops)} hops, ended "\
                    f"{w2.final.status} at {_path(w2.final.url)})"
            else:
                v.first_chain, v.chain = v.chain, w2.hops
                v.repair = what + "; the re-probe still fails"
    _add_warnings(v, facts)
    return v


def _add_warnings(v: Verdict, facts: Facts) -> None:
    if (facts.server_version and facts.hub_version and facts.server_version != facts.hub_version
            and v.cause != "version_skew"):
        v.warnings.append(
            f"version skew: the server runs jupyterhub-singleuser {facts.server_version}, the "
            f"hub {facts.hub_version}; install jupyterhub=={facts.hub_version} in the user "
            "environment (a loop would end after 2 redirects instead of 4)"
        )


# --------------------------------------------------------------------------- CLI glue


def add_arguments(p: Any) -> None:
    """Options of `hubsvc probe-spawn` (argparse)."""
    p.add_argument("--user", required=True, help="the hub user whose flow to walk")
    p.add_argument("--no-start", action="store_true",
                   help="only inspect: do not start the server if it is not running")
    p.add_argument("--no-repair", action="store_true",
                   help="diagnose only: do not re-sync the proxy's routes")
    p.add_argument("--timeout", type=float, default=120.0, metavar="S",
                   help="give up after S seconds in all (default 120)")
    p.add_argument("--url", default=None, metavar="URL",
                   help="start the walk at URL (e.g. the address a user reported) instead "
                        "of the user's server on the public URL")
    p.add_argument("--password-file", default=None, metavar="PATH",
                   help="log in through the hub's form with the password in PATH and walk "
                        "with cookies only, like a browser (default: a 5-minute token)")
    p.add_argument("--json", action="store_true", help="print the verdict as JSON")


async def run_cli(cfg: Config, args: Any) -> int:
    """`hubsvc probe-spawn`: print the verdict, return the exit code (0/1/2/78)."""
    import sys

    if args.timeout <= 0 or args.timeout > 3600:
        print("hubsvc probe-spawn: --timeout must be in (0, 3600]", file=sys.stderr)
        return EX_CONFIG
    password = None
    if args.password_file:
        try:
            password = read(Path(args.password_file))
        except OSError as e:
            print(f"hubsvc probe-spawn: --password-file: {e}", file=sys.stderr)
            return EX_CONFIG
    try:
        v = await probe_spawn(cfg, args.user, start=not args.no_start, timeout_s=args.timeout,
                              repair=not args.no_repair, entry_url=args.url, password=password)
    except ProbeUsageError as e:
        print(f"hubsvc probe-spawn: {e}", file=sys.stderr)
        return EX_CONFIG
    print(v.to_json() if args.json else v.render_text())
    return v.exit_code
