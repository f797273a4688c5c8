"""Follow redirects one at a time like a browser: cookie jar with a browser's rules,
credentials only towards the public URL's origin, every hop recorded with who answered
and which cookies went with it, a loop declared before the repeated URL is requested."""

from __future__ import annotations

import re
import time
from typing import Any
from urllib.parse import urljoin

import httpx

from .cookies import CookieJar, crosses_site
from .model import BROWSER_REDIRECT_LIMIT, Facts, Hop, Walk
from .urls import collapse_url, normalize_url, origin_of, path_of


def _hint(r: httpx.Response) -> str | None:
    if r.status_code < 400:
        return None
    text = r.text[:4000]
    m = re.search(r"Redirect loop detected[^<]*", text)
    if m:
        return m.group(0).strip()
    m = re.search(r"<title>([^<]*)</title>", text)
    return m.group(1).strip() if m else text[:120].strip() or None


def step_of(path: str, facts: Facts) -> str:
    """Which step of the user's flow a path belongs to (for the chain and the rules)."""
    hub = facts.public_base + "hub/"
    if path.startswith(hub + "api/oauth2/authorize"):
        return "oauth-authorize"
    if path.endswith("/oauth_callback"):
        return "oauth-callback"
    for name in ("login", "logout", "spawn-pending", "spawn", "home", "user", "api"):
        if path.startswith(hub + name):
            return {"user": "hub-user"}.get(name, name)
    if path.rstrip("/") + "/" == hub or path == facts.public_base:
        return "hub-root"
    if path.startswith(facts.user_prefix):
        return "server"
    if path.startswith(facts.public_base + "user-redirect/"):
        return "user-redirect"
    return "other"


class Walker:
    """One browser tab: a jar, optional token, and the hops it has made."""

    def __init__(self, client: httpx.AsyncClient, facts: Facts, *,
                 jar: CookieJar | None = None, token: str | None = None,
                 max_hops: int = BROWSER_REDIRECT_LIMIT, deadline: float | None = None,
                 hop_timeout_s: float = 10.0, credentials: str = ""):
        self.client = client
        self.facts = facts
        self.jar = jar if jar is not None else CookieJar(facts.public_origin)
        self.token = token
        self.max_hops = max_hops
        self.deadline = deadline
        self.hop_timeout_s = hop_timeout_s
        self.credentials = credentials  # recorded on hops that carried a credential
        self.t0 = time.monotonic()
        self.seen: dict[str, int] = {}  # place -> index of the hop that requested it
        self.folded: dict[str, int] = {}  # the same with repeated path segments folded

    def world_changed(self) -> None:
        """Forget the places seen: a new navigation (or the server became ready, as
        spawn-pending's page notices) may lead elsewhere from a page seen before."""
        self.seen.clear()
        self.folded.clear()

    def _served_by(self, url: str, r: httpx.Response) -> str:
        path = path_of(url)
        hub_prefix = self.facts.public_base + "hub/"
        if origin_of(url) == self.facts.hub_origin:
            return "hub"
        if r.status_code in (404, 503) and (
                "configurable-http-proxy" in r.text[:2000].lower()
                or "No service is registered" in r.text[:2000]):
            return "proxy"
        if path.startswith(hub_prefix):
            return "hub"
        loc = r.headers.get("location")
        if loc and path_of(urljoin(url, loc)).startswith(hub_prefix + "user/"):
            return "hub"  # the hub's catch-all for /user/NAME/...
        if path.startswith(self.facts.user_prefix):
            return "server"
        if origin_of(url) == self.facts.public_origin and (
                path == self.facts.public_base or not path.startswith(self.facts.public_base)):
            return "hub"  # the proxy's default route: the hub's PrefixRedirectHandler
        return "unknown"

    def _auth_for(self, url: str) -> dict[str, str]:
        """The token goes only to the user's server path on the public URL's origin."""
        if (self.token and origin_of(url) == self.facts.public_origin
                and path_of(url).startswith(self.facts.user_prefix)):
            return {"Authorization": f"token {self.token}"}
        return {}

    async def request(self, method: str, url: str, *, cross_site: bool = False,
                      step: str = "", **kw: Any) -> tuple[Hop, httpx.Response | None]:
        t = time.monotonic()
        hop = Hop(method, url, t_ms=(t - self.t0) * 1000,
                  step=step or step_of(path_of(url), self.facts))
        timeout = self.hop_timeout_s
        if self.deadline is not None:
            timeout = max(0.1, min(timeout, self.deadline - t))
        sent = self.jar.for_request(url, cross_site_chain=cross_site, method=method)
        headers = self._auth_for(url)
        if headers:
            hop.credentials = "token"
        if sent.header:
            headers["Cookie"] = sent.header
            if not hop.credentials and self.credentials:
                hop.credentials = self.credentials
        hop.cookies_sent = sent.names
        hop.cookies_not_sent = sent.not_matching
        hop.cookies_withheld = sent.withheld
        try:
            r = await self.client.request(method, url, headers=headers, timeout=timeout, **kw)
            if r.status_code == 503 and method == "GET":
                # CHP answers 503 "socket hang up" when the hub closed a kept-alive
                # connection under it (measured); a browser's next click gets the page.
                # One retry keeps that race out of the verdict; the hop says so.
                await r.aclose()
                hop.retried = True
                r = await self.client.request(method, url, headers=headers,
                                              timeout=timeout, **kw)
        except httpx.TimeoutException:
            hop.error = f"no answer within {timeout:.1f} s"
            hop.elapsed_ms = (time.monotonic() - t) * 1000
            return hop, None
        except httpx.HTTPError as e:
            hop.error = f"{type(e).__name__}: {e}"
            hop.elapsed_ms = (time.monotonic() - t) * 1000
            return hop, None
        finally:
            self.client.cookies.clear()  # the jar above is the only cookie store
        hop.elapsed_ms = (time.monotonic() - t) * 1000
        hop.status = r.status_code
        for res in self.jar.receive(url, r.headers.get_list("set-cookie")):
            if res.stored and res.cookie is not None:
                hop.cookies_set.append(res.cookie.describe())
            elif res.rejected_because:
                hop.cookies_rejected.append(f"{res.name}: {res.rejected_because}")
        loc = r.headers.get("location")
        if loc is not None and r.is_redirect:
            hop.location = urljoin(url, loc)
        hop.jupyterhub_version = r.headers.get("x-jupyterhub-version")
        hop.served_by = self._served_by(url, r)
        hop.body_hint = _hint(r)
        return hop, r

    async def follow(self, url: str, w: Walk, *, method: str = "GET",
                     data: dict[str, str] | None = None,
                     step: str = "") -> httpx.Response | None:
        """Request url and follow its redirects one by one into w.hops. A place is the URL
        (without volatile parameters) *and* the names of the cookies held: the login
        handshake legitimately visits /user/NAME/lab twice, once without the server's
        cookie and once with it. A place seen before in this navigation is a loop,
        declared before the repeated URL is requested (a new navigation, like a browser's,
        starts a fresh redirect chain). Returns the last response, or None when w ended
        otherwise than "ok"."""
        self.world_changed()
        cross = False
        prev: str | None = None
        for count in range(self.max_hops + 1):
            if self.deadline is not None and time.monotonic() >= self.deadline:
                w.ended = "timeout"
                return None
            state = self.jar.state()
            exact, fold = normalize_url(url) + state, collapse_url(url) + state
            if method == "GET" and (exact in self.seen or fold in self.folded):
                w.ended = "loop"
                w.growing = exact not in self.seen
                w.repeat_of = self.seen.get(exact, self.folded.get(fold))
                w.repeat_url = url
                w.t_first_repeat = time.monotonic()
                return None
            if count >= self.max_hops:
                w.ended = "too_many_redirects"
                return None
            if method == "GET":
                self.seen[exact] = len(w.hops)
                self.folded.setdefault(fold, len(w.hops))
            if prev is not None and crosses_site(prev, url):
                cross = True
            hop, r = await self.request(method, url, cross_site=cross, step=step,
                                        **({"data": data} if data else {}))
            step = ""
            method, data = "GET", None  # a 302/303 after a POST is followed with GET
            w.hops.append(hop)
            if hop.error or r is None:
                w.ended = "timeout" if hop.error and "no answer" in hop.error else "error"
                return None
            if hop.location is None:
                w.ended = "ok"
                return r
            prev, url = url, hop.location
        w.ended = "too_many_redirects"
        return None
