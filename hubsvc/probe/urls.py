"""URL helpers of the walk: what counts as the same place, origins, paths."""

from __future__ import annotations

import ipaddress
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

# Query parameters that change on every pass through a loop without making it a new place.
VOLATILE_PARAMS = frozenset({"redirects", "state", "code", "_xsrf", "_", "token", "iss"})


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


def path_of(url: str) -> str:
    return urlsplit(url).path or "/"


def host_of(url: str) -> str:
    return (urlsplit(url).hostname or "").lower()


def redirects_param(url: str) -> int | None:
    for k, v in parse_qsl(urlsplit(url).query):
        if k == "redirects":
            try:
                return int(v)
            except ValueError:
                return None
    return None


def is_loopback_host(host: str) -> bool:
    """Browsers treat these as secure contexts even over http (Secure cookies work)."""
    host = host.strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def secure_context(url: str) -> bool:
    p = urlsplit(url)
    return p.scheme == "https" or is_loopback_host(p.hostname or "")


def site_of(url: str) -> str:
    """scheme + registrable-ish host: SameSite compares sites, not origins (ports ignored).
    Without a public-suffix list the last two labels stand in for the registrable domain."""
    p = urlsplit(url)
    host = (p.hostname or "").lower()
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        host = ".".join(host.split(".")[-2:])
    return f"{p.scheme}://{host}"
