"""The data of a probe: hops, walks, facts, diagnoses and the verdict (with its exit code
and JSON shape, both stable contracts of `hubsvc probe-spawn`)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from ..routetable import Route, RouteTable

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
    t_ms: float = 0.0  # when the request was sent, from the start of the walk
    step: str = ""  # login | landing | spawn | spawn-pending | progress | server | oauth …
    cookies_sent: list[str] = field(default_factory=list)
    cookies_set: list[str] = field(default_factory=list)  # "name (Path=…)" stored
    cookies_rejected: list[str] = field(default_factory=list)  # "name: why"
    cookies_not_sent: list[str] = field(default_factory=list)  # held, a browser keeps home
    cookies_withheld: list[str] = field(default_factory=list)  # hubsvc kept on its origin
    credentials: str = ""  # "session" | "token" | "" (none)
    retried: bool = False  # a 503 was asked again once (see Walker.request)

    def line(self) -> str:
        st = str(self.status) if self.status is not None else "ERR"
        tail = f" -> {self.location}" if self.location else ""
        if self.error:
            tail += f" ({self.error})"
        elif self.body_hint and (self.status or 0) >= 400:
            tail += f" ({self.body_hint})"
        where = f"[{self.served_by}, {self.elapsed_ms:.0f} ms"
        if self.cookies_sent:
            where += ", sent " + ",".join(self.cookies_sent)
        if self.cookies_set:
            where += ", set " + ",".join(c.split(" ")[0] for c in self.cookies_set)
        return f"{st:>3} {self.method:4} {self.url}{tail}  {where}]"


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
    not_walked: list[str] = field(default_factory=list)  # steps a browser takes, we did not

    @property
    def final(self) -> Hop | None:
        return self.hops[-1] if self.hops else None


@dataclass
class FlowSettings:
    """The parts of the effective JupyterHub config that decide where a browser goes."""

    default_url: str | None = None  # c.JupyterHub.default_url (a string; callables: None)
    public_url: str | None = None  # c.JupyterHub.public_url
    cookie_options: dict[str, Any] = field(default_factory=dict)  # tornado_settings
    spawner_default_url: str | None = None  # c.Spawner.default_url
    redirect_to_server: bool = True
    cookie_host_prefix: bool = False  # c.JupyterHub.cookie_host_prefix_enabled
    cookie_max_age_days: float | None = None  # c.JupyterHub.cookie_max_age_days, if set
    source: str = ""  # the file they came from


@dataclass
class Facts:
    """What the probe learned besides the chain; input of the diagnosis rules."""

    user: str
    public_origin: str
    public_base: str  # "/" or "/jhub/"
    hub_origin: str  # the hub's private listener, as a client connects to it
    hub_version: str | None = None
    server_path: str | None = None  # "/jhub/user/NAME/" as the hub reports it
    server_ready: bool = False
    routes: RouteTable | None = None  # CHP's table, None when unknown
    hub_target: str | None = None  # target of the hub's own route
    server_version: str | None = None  # X-JupyterHub-Version from the route's target
    target_answers: bool | None = None  # the route's target answered the server's API
    direct_walk: str | None = None  # how the same path ends on the public URL itself
    server_pid: int | None = None  # from the spawner's state, when it has one
    server_url: str | None = None  # where the server listens (its JUPYTERHUB_SERVICE_URL)
    server_hub_api: str | None = None  # the hub API URL the server was given
    server_hub_api_ok: bool | None = None  # does that URL answer from here
    settings: FlowSettings | None = None  # the effective hub config, when it could be read
    public_url: str = ""  # proxy.public_url as written (for messages)

    @property
    def route(self) -> Route | None:
        if self.routes is None or not self.server_path:
            return None
        return self.routes.get(self.server_path)

    @property
    def user_prefix(self) -> str:
        return self.server_path or f"{self.public_base}user/{self.user}/"


@dataclass
class Diagnosis:
    cause: str  # a rule's id (docs/redirect-loops.md lists them)
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
    walk_mode: str = "session"  # session | password | token
    credentials: str = ""  # what the walk carried and where it went
    not_walked: list[str] = field(default_factory=list)  # browser steps this walk skipped

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
            "healthy": "OK" if not self.not_walked else "NO LOOP IN THE STEPS WALKED",
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
        if self.credentials:
            out.append(f"walked with: {self.credentials}")
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
        if self.not_walked:
            out.append("not walked (a browser takes these steps; this probe could not):")
            out += [f"  - {s}" for s in self.not_walked]
        for w in self.warnings:
            out.append(f"warning: {w}")
        if self.timings_ms:
            t = ", ".join(f"{k} {v:.0f} ms" for k, v in self.timings_ms.items())
            out.append(f"timings: {t}")
        return "\n".join(out)
