"""Redirect loops seen in the hub's own log, one `Episode` per user and episode.

Two patterns, both read only from the hub's own log stream (hublog.py), never from the
output users' servers share:

- `LoopWatch`: the hub's "Redirect loop detected on /hub/user/NAME/..." lines and its
  final 500, for loops that pass through /hub/user/ (the hub counts those itself);
- `AccessLoops`: loops that never pass through /hub/user/ never reach the hub's own
  counter (a `default_url` leading back to itself, a login cookie the browser does not
  send back ...). The hub's access log shows them: the same client following redirects
  back to the same hub URL again and again within seconds.

Every table here is bounded (a flood of log lines costs memory and CPU once, not per
entry kept), and nothing here does I/O.
"""

from __future__ import annotations

import re
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

MAX_OPEN = 64  # open episodes kept at once; beyond this the oldest is closed
MAX_CLIENTS = 1024  # clients whose redirect chains are followed at once

_LOOP_HOP = re.compile(r"Redirect loop detected on (\S+)")
_LOOP_500 = re.compile(r"500 GET (\S+) \([^)]*\): Redirect loop detected\.(.*)$")
_PRIVATE = re.compile(
    r"Detected possible direct connection to Hub's private ip: (\S+?),? bypassing"
)
_SKEW = re.compile(r"Notebook has jupyterhub version (\S+), but the Hub expects (\S+?)\.(?:\s|$)")
_USER_IN_PATH = re.compile(r"/user/([^/?#]+)")
# JupyterHub's log_request: "{status} {method} {uri}{location} ({user}@{ip}) {time}ms",
# location " -> URL" for 301/302 only.
_ACCESS = re.compile(
    r"\] (30[12]) ([A-Z]+) (\S+) -> (\S+) \(([^@()\s]*)@([^()\s]*)\) [0-9.]+ms\s*$"
)


def probe_hint(user: str) -> str:
    who = user or "NAME"
    return f"walk the flow as a browser does: hubsvc probe-spawn --user {who}"


@dataclass
class Episode:
    """One user's redirect loop, as the hub's log told it."""

    user: str
    url: str  # the last looping URL
    count: int  # highest `redirects` value the hub reported, or hops seen
    lines: int  # how many log lines belonged to it
    cause: str  # suspected: missing_route | private_address | version_skew | hub_redirect_cycle
    detail: str
    first_seen: float
    last_seen: float
    ended_by: str = ""  # "hub_500" | "quiet" | "detected" (reported while it goes on)
    client: str = ""  # the client address, for loops seen in the access log
    hops: list[str] = field(default_factory=list)

    def event(self) -> dict[str, Any]:
        """Keys for the structured `redirect_loop` warning."""
        ev = {"event": "redirect_loop", "user": self.user, "url": self.url,
              "count": self.count, "cause": self.cause, "detail": self.detail,
              "duration_s": round(self.last_seen - self.first_seen, 3),
              "ended_by": self.ended_by, "hint": probe_hint(self.user)}
        if self.client:
            ev["client"] = self.client
            ev["hops"] = list(self.hops)
        return ev


def _user_of(path: str) -> str | None:
    m = _USER_IN_PATH.search(urlsplit(path).path)
    return unquote(m.group(1)) if m else None


def _redirects_of(url: str) -> int:
    m = re.search(r"[?&]redirects=(\d+)", url)
    return int(m.group(1)) if m else 0


class LoopWatch:
    """Feed it the hub's log lines; it returns each loop episode once, when it ends.

    An episode ends with the hub's own 500 "Redirect loop detected." for that user, or
    after `quiet_s` without a new hop (call `expire()` every health interval). A new
    episode for the same user starts with the next loop line after that.
    """

    def __init__(self, quiet_s: float = 30.0, clock: Any = time.monotonic,
                 max_open: int = MAX_OPEN):
        self.quiet_s = quiet_s
        self.clock = clock
        self.max_open = max_open
        self.open: OrderedDict[str, Episode] = OrderedDict()
        self._private: OrderedDict[str, tuple[float, str]] = OrderedDict()  # user -> (when, url)
        self.closed_total = 0
        self.evicted = 0

    def _episode(self, user: str, url: str, now: float) -> Episode:
        ep = self.open.get(user)
        if ep is None:
            ep = Episode(user, url, 0, 0, "missing_route",
                         "the hub keeps redirecting to a server it believes is ready: the "
                         "proxy most likely has no route for it", now, now)
            self.open[user] = ep
            while len(self.open) > self.max_open:  # bounded: the oldest goes unreported
                self.open.popitem(last=False)
                self.evicted += 1
        ep.url, ep.last_seen = url, now
        ep.lines += 1
        ep.count = max(ep.count, _redirects_of(url))
        seen = self._private.get(user)
        if seen and now - seen[0] <= self.quiet_s:
            ep.cause = "private_address"
            ep.detail = (f"requests came to the hub's private address ({seen[1]}), "
                         "bypassing the proxy: users must use the public URL")
        return ep

    def feed(self, line: str) -> Episode | None:
        """Consume one log line; return an Episode when one ends with this line."""
        if "Redirect loop" not in line and "private ip" not in line:
            return None  # the common case, without a regex
        now = self.clock()
        m = _PRIVATE.search(line)
        if m:
            user = _user_of(m.group(1))
            if user:
                self._private[user] = (now, m.group(1))
                self._private.move_to_end(user)
                while len(self._private) > self.max_open:
                    self._private.popitem(last=False)
                if user in self.open:
                    self._episode(user, self.open[user].url, now).lines -= 1
            return None
        m = _LOOP_500.search(line)
        if m:
            url = m.group(1)
            user = _user_of(url)
            if user is None:
                return None
            ep = self._episode(user, url, now)
            sk = _SKEW.search(m.group(2))
            if sk:
                ep.cause = "version_skew"
                ep.detail = (f"the server runs jupyterhub-singleuser {sk.group(1)}, the hub "
                             f"{sk.group(2)}: install jupyterhub=={sk.group(2)} in the user "
                             "environment")
            ep.ended_by = "hub_500"
            return self._close(user)
        m = _LOOP_HOP.search(line)
        if m:
            user = _user_of(m.group(1))
            if user is not None:
                self._episode(user, m.group(1), now)
        return None

    def expire(self) -> list[Episode]:
        """Close and return episodes that went quiet (the browser stopped following)."""
        now = self.clock()
        done = [u for u, ep in self.open.items() if now - ep.last_seen > self.quiet_s]
        out = []
        for u in done:
            self.open[u].ended_by = "quiet"
            out.append(self._close(u))
        for u, (t, _url) in list(self._private.items()):
            if now - t > self.quiet_s:
                del self._private[u]
        return out

    def _close(self, user: str) -> Episode:
        self.closed_total += 1
        self._private.pop(user, None)
        return self.open.pop(user)

    def snapshot(self) -> list[dict[str, Any]]:
        """Open episodes, for `hubsvc status`."""
        return [ep.event() | {"open": True} for ep in self.open.values()]


def _norm(url: str) -> str:
    """A URL as the hub logs a request's uri: path and query, no scheme or host."""
    p = urlsplit(url)
    return p.path + (f"?{p.query}" if p.query else "")


@dataclass
class _Chain:
    location: str  # where the last redirect sent this client
    last_seen: float
    first_seen: float
    seen: dict[str, int] = field(default_factory=dict)  # uri -> times requested in this chain
    order: list[str] = field(default_factory=list)  # distinct uris, first 8
    reported: bool = False


class AccessLoops:
    """The same client sent round a cycle of hub redirects: one episode per user (or
    anonymous client) and episode, reported as soon as it is certain.

    A hop belongs to a client's chain when the client requests exactly where the previous
    redirect sent it, within `gap_s`. When one hub URL comes round `repeats` times in
    one chain, the chain is a loop: no page a user clicks through is requested again
    without the user doing it. Loops through /hub/user/ are left to `LoopWatch` (the hub
    counts those itself and ends them with its own 500).
    """

    def __init__(self, base_path: str = "/", repeats: int = 4, gap_s: float = 5.0,
                 quiet_s: float = 30.0, clock: Any = time.monotonic,
                 max_clients: int = MAX_CLIENTS):
        self.hub_prefix = base_path.rstrip("/") + "/hub/"
        self.user_prefix = self.hub_prefix + "user/"
        self.repeats = repeats
        self.gap_s = gap_s
        self.quiet_s = quiet_s
        self.clock = clock
        self.max_clients = max_clients
        self.chains: OrderedDict[tuple[str, str], _Chain] = OrderedDict()

    def feed(self, line: str) -> Episode | None:
        """Consume one log line; return an Episode the moment a loop is certain."""
        if " -> " not in line:
            return None
        m = _ACCESS.search(line)
        if m is None:
            return None
        _status, _method, uri, location, user, ip = m.groups()
        uri, location = _norm(uri), _norm(location)
        if not uri.startswith(self.hub_prefix) or uri.startswith(self.user_prefix):
            return None
        now = self.clock()
        key = (user, ip)
        ch = self.chains.get(key)
        if ch is None or ch.location != uri or now - ch.last_seen > self.gap_s:
            if ch is not None and ch.reported and now - ch.last_seen <= self.quiet_s:
                # the same episode resumes after a pause (a browser retrying): no new event
                ch.location, ch.last_seen = location, now
                return None
            ch = _Chain(location, now, now)
            self.chains[key] = ch
        self.chains.move_to_end(key)
        while len(self.chains) > self.max_clients:
            self.chains.popitem(last=False)
        ch.location, ch.last_seen = location, now
        ch.seen[uri] = ch.seen.get(uri, 0) + 1
        if uri not in ch.order and len(ch.order) < 8:
            ch.order.append(uri)
        if ch.reported or ch.seen[uri] < self.repeats:
            return None
        ch.reported = True
        who = user or f"an anonymous client at {ip}"
        return Episode(
            user=user, url=uri, count=sum(ch.seen.values()), lines=sum(ch.seen.values()),
            cause="hub_redirect_cycle",
            detail=(f"{who} was sent round the hub's own redirects "
                    f"({' -> '.join([*ch.order, ch.order[0]])}) {ch.seen[uri]} times; this "
                    "loop never reaches /hub/user/, so the hub's own loop check cannot "
                    "end it. Look at JupyterHub.default_url and the cookie settings"),
            first_seen=ch.first_seen, last_seen=now, ended_by="detected", client=ip,
            hops=list(ch.order),
        )

    def expire(self) -> None:
        """Forget chains that went quiet (their episodes are over)."""
        now = self.clock()
        for key in [k for k, ch in self.chains.items()
                    if now - ch.last_seen > max(self.quiet_s, self.gap_s)]:
            del self.chains[key]
