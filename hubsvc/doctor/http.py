"""The doctor's HTTP requests: httpx, one bounded request each, no redirects followed, no
proxy from the environment (an admin's http_proxy must not capture loopback checks)."""

from __future__ import annotations

import httpx

from .. import host
from ..probes import failure_text

TIMEOUT_S = 1.5

# What a request gave: the response, or the error that replaced it (RuntimeError: not
# asked, e.g. for want of a token this account cannot read).
Answer = httpx.Response | Exception


def client() -> httpx.Client:
    return httpx.Client(trust_env=False, follow_redirects=False, timeout=TIMEOUT_S)


def get(c: httpx.Client, url: str, headers: dict[str, str] | None = None) -> Answer:
    """GET url; certificates are not verified for this host's own addresses (hubsvc's
    listeners, reached by address), and are verified everywhere else."""
    try:
        if url.startswith("https:") and host.is_local_host(httpx.URL(url).host):
            with httpx.Client(trust_env=False, verify=False, timeout=TIMEOUT_S) as local:
                return local.get(url, headers=headers)
        return c.get(url, headers=headers)
    except httpx.HTTPError as e:
        return e


def describe(a: Answer) -> str:
    if isinstance(a, httpx.Response):
        return f"HTTP {a.status_code}"
    if isinstance(a, httpx.TimeoutException):
        return "timed out"  # the doctor's words since before httpx (TIMEOUT_S each)
    if isinstance(a, httpx.HTTPError):
        return failure_text(a, TIMEOUT_S)
    return str(a)
