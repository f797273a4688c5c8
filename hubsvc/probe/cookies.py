"""A cookie jar with a browser's rules (RFC 6265bis as Chromium applies it).

The walk must see what a browser sees: a cookie the browser would refuse to store (a
Secure cookie set over plain http, a Domain that does not cover the host) or would not
send (a Path that does not cover the request, SameSite=Strict after a cross-site
redirect) changes where the next redirect goes. httpx's own jar is not used: it ignores
Secure over http and stores what browsers reject.

One deliberate difference: cookies hubsvc minted for the walk (the login session) and
every cookie the walk gathers are sent only to the public URL's origin, port included
(browsers ignore the port). `Sent.withheld` records where that made the walk differ.
"""

from __future__ import annotations

import ipaddress
import time
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from urllib.parse import urlsplit

from .urls import origin_of, secure_context, site_of


@dataclass
class Cookie:
    name: str
    value: str
    domain: str  # host for host-only cookies, else the Domain attribute without a dot
    host_only: bool
    path: str
    secure: bool = False
    http_only: bool = False
    same_site: str = "lax"  # Chromium's default when the attribute is absent
    expires: float | None = None  # epoch seconds; None: a session cookie
    origin: str = ""  # the origin that set it (where hubsvc lets it go)

    def describe(self) -> str:
        attrs = [f"Path={self.path}"]
        if not self.host_only:
            attrs.append(f"Domain={self.domain}")
        if self.secure:
            attrs.append("Secure")
        if self.same_site != "lax":
            attrs.append(f"SameSite={self.same_site.capitalize()}")
        return f"{self.name} ({'; '.join(attrs)})"


@dataclass
class SetResult:
    """What happened to one Set-Cookie header."""

    name: str
    stored: bool
    cookie: Cookie | None = None
    rejected_because: str | None = None
    deleted: bool = False


@dataclass
class Sent:
    """The cookies that went with one request, and the ones a browser would have sent but
    hubsvc withheld (another origin than the public URL's)."""

    names: list[str] = field(default_factory=list)
    header: str = ""
    withheld: list[str] = field(default_factory=list)
    not_matching: list[str] = field(default_factory=list)  # held, but a browser would not send


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
        return True
    except ValueError:
        return False


def domain_match(host: str, domain: str) -> bool:
    host, domain = host.lower(), domain.lower()
    if host == domain:
        return True
    return (not _is_ip(host)) and host.endswith("." + domain)


def path_match(req_path: str, cookie_path: str) -> bool:
    if req_path == cookie_path:
        return True
    if req_path.startswith(cookie_path):
        return cookie_path.endswith("/") or req_path[len(cookie_path)] == "/"
    return False


def default_path(req_path: str) -> str:
    if not req_path.startswith("/") or req_path.count("/") <= 1:
        return "/"
    return req_path[: req_path.rindex("/")]


def parse_set_cookie(header: str, url: str, now: float | None = None) -> SetResult:
    """Parse one Set-Cookie header as a browser receiving it from `url` would."""
    now = time.time() if now is None else now
    parts = header.split(";")
    name, sep, value = parts[0].partition("=")
    name, value = name.strip(), value.strip()
    if not sep or not name:
        return SetResult(name or "?", False, rejected_because="no name=value pair")
    u = urlsplit(url)
    host = (u.hostname or "").lower()
    c = Cookie(name, value, host, True, default_path(u.path or "/"), origin=origin_of(url))
    max_age: float | None = None
    expires: float | None = None
    for attr in parts[1:]:
        k, _, v = attr.strip().partition("=")
        k, v = k.strip().lower(), v.strip()
        if k == "path":
            c.path = v if v.startswith("/") else default_path(u.path or "/")
        elif k == "domain" and v:
            c.domain, c.host_only = v.lstrip(".").lower(), False
        elif k == "secure":
            c.secure = True
        elif k == "httponly":
            c.http_only = True
        elif k == "samesite":
            c.same_site = v.lower() if v.lower() in ("strict", "lax", "none") else "lax"
        elif k == "max-age":
            try:
                max_age = float(v)
            except ValueError:
                pass
        elif k == "expires":
            try:
                expires = parsedate_to_datetime(v).timestamp()
            except (TypeError, ValueError):
                pass
    if max_age is not None:
        c.expires = now + max_age
    elif expires is not None:
        c.expires = expires
    if not c.host_only and not domain_match(host, c.domain):
        return SetResult(name, False, c, f"its Domain={c.domain} does not cover the host {host}")
    if c.secure and not secure_context(url):
        return SetResult(name, False, c, "it is Secure and was set over plain http "
                         "(browsers refuse Secure cookies from http:// except on localhost)")
    if c.same_site == "none" and not c.secure:
        return SetResult(name, False, c, "SameSite=None without Secure")
    if name.startswith("__Secure-") and not c.secure:
        return SetResult(name, False, c, "a __Secure- cookie without Secure")
    if name.startswith("__Host-") and (not c.secure or not c.host_only or c.path != "/"):
        return SetResult(name, False, c, "a __Host- cookie must be Secure, Path=/, no Domain")
    expired = c.expires is not None and c.expires <= now
    return SetResult(name, not expired, c, deleted=expired)


class CookieJar:
    """Cookies kept and sent by a browser's rules; see the module docstring."""

    def __init__(self, credential_origin: str | None = None) -> None:
        self.cookies: list[Cookie] = []
        # None: every cookie may go where a browser would send it (tests of the rules)
        self.credential_origin = credential_origin

    def _key(self, c: Cookie) -> tuple[str, str, str]:
        return (c.name, c.domain, c.path)

    def add(self, c: Cookie) -> None:
        self.cookies = [x for x in self.cookies if self._key(x) != self._key(c)]
        self.cookies.append(c)

    def receive(self, url: str, set_cookie_headers: list[str]) -> list[SetResult]:
        out = []
        for h in set_cookie_headers:
            res = parse_set_cookie(h, url)
            if res.cookie is not None and (res.stored or res.deleted):
                self.cookies = [x for x in self.cookies if self._key(x) != self._key(res.cookie)]
                if res.stored:
                    self.cookies.append(res.cookie)
            out.append(res)
        return out

    def for_request(self, url: str, *, cross_site_chain: bool = False,
                    method: str = "GET") -> Sent:
        """The Cookie header a browser sends for a top-level navigation to url.
        cross_site_chain: the navigation's redirect chain crossed sites (SameSite=Strict
        cookies stay home; Lax ones only go with GET)."""
        now = time.time()
        self.cookies = [c for c in self.cookies if c.expires is None or c.expires > now]
        u = urlsplit(url)
        host = (u.hostname or "").lower()
        sent = Sent()
        chosen: list[Cookie] = []
        for c in self.cookies:
            if not (c.host_only and host == c.domain) and not (
                    not c.host_only and domain_match(host, c.domain)):
                continue
            why_not = None
            if not path_match(u.path or "/", c.path):
                why_not = f"{c.describe()}: Path does not cover {u.path or '/'}"
            elif c.secure and not secure_context(url):
                why_not = f"{c.describe()}: Secure, not sent over http"
            elif cross_site_chain and c.same_site == "strict":
                why_not = f"{c.describe()}: SameSite=Strict after a cross-site redirect"
            elif cross_site_chain and c.same_site == "lax" and method != "GET":
                why_not = f"{c.describe()}: SameSite=Lax on a cross-site {method}"
            if why_not:
                sent.not_matching.append(why_not)
                continue
            if self.credential_origin is not None and origin_of(url) != self.credential_origin:
                sent.withheld.append(c.name)
                continue
            chosen.append(c)
        chosen.sort(key=lambda c: -len(c.path))
        sent.names = [c.name for c in chosen]
        sent.header = "; ".join(f"{c.name}={c.value}" for c in chosen)
        return sent

    def names(self) -> list[str]:
        return sorted(c.name for c in self.cookies)

    def state(self) -> str:
        """A fingerprint of what is held, for loop detection (a place is URL + cookies).
        Values are left out: the OAuth callback sets a fresh token on every pass of a loop,
        and the random suffix of a second OAuth state cookie is folded the same way."""
        return repr(sorted({(c.name.split("-oauth-state")[0], c.domain, c.path)
                            for c in self.cookies}))


def crosses_site(a: str, b: str) -> bool:
    return site_of(a) != site_of(b)
