"""hubsvc.toml: the validated settings every other module reads.

`load(path)` returns a `Config` or raises `ConfigError` whose `problems` each name the
field path, what is wrong and how to fix it. Nothing here starts or changes anything;
checks that need the machine (binaries, writable dirs, free ports) live in preflight.py.
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from .doctor.finding import describe  # the one what/evidence/fix layout

DEFAULT_PATH = Path("/etc/hubsvc/hubsvc.toml")
ENV_VAR = "HUBSVC_CONFIG"


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the configuration or the machine, for a person to fix."""

    field: str  # dotted field path ("proxy.api_url"), a check's id, or a file path
    message: str  # what is wrong
    fix: str  # what to do about it
    evidence: str = ""  # what was observed, when that helps

    def __str__(self) -> str:
        return describe(self.field, self.message, self.evidence, self.fix, indent="",
                        detail="    ")


class ConfigError(Exception):
    """The configuration cannot be used. `problems` lists every reason found."""

    def __init__(self, problems: list[Problem]):
        super().__init__("\n".join(str(p) for p in problems))
        self.problems = problems


@dataclass(frozen=True)
class Endpoint:
    """A parsed http(s) URL: what to bind and what to connect to."""

    scheme: str
    host: str  # as written (may be 0.0.0.0 or ::)
    port: int
    path: str  # always starts and ends with "/"

    @property
    def connect_host(self) -> str:
        """Where a local client connects: a wildcard bind is reached on loopback."""
        if self.host in ("0.0.0.0", ""):
            return "127.0.0.1"
        if self.host == "::":
            return "::1"
        return self.host

    @property
    def is_loopback(self) -> bool:
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False

    def _fmt(self, host: str) -> str:
        h = f"[{host}]" if ":" in host else host
        return f"{self.scheme}://{h}:{self.port}"

    @property
    def origin(self) -> str:
        """scheme://host:port as written, no path."""
        return self._fmt(self.host)

    @property
    def connect_origin(self) -> str:
        """scheme://host:port that a local client can connect to."""
        return self._fmt(self.connect_host)

    def url(self, rel: str = "") -> str:
        """A URL below this endpoint's path, reachable from this machine."""
        return self.connect_origin + self.path + rel.lstrip("/")


def parse_endpoint(url: str) -> Endpoint:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"{url!r} is not an http:// or https:// URL")
    if parts.hostname is None:
        raise ValueError(f"{url!r} has no host")
    try:
        port = parts.port
    except ValueError as e:
        raise ValueError(f"{url!r} has an invalid port ({e})") from None
    if port is None:
        port = 443 if parts.scheme == "https" else 80
    if parts.query or parts.fragment:
        raise ValueError(f"{url!r} must not carry a query or fragment")
    path = parts.path or "/"
    if not path.endswith("/"):
        path += "/"
    return Endpoint(parts.scheme, parts.hostname, port, path)


# pydantic looks for plugins when it builds the first model: an entry-point scan of every
# package installed, ~8 ms of each start of hubsvc. These models use none. The variable is
# set only while they are built (restored after Config), so no child process sees it.
_PLUGINS_VAR = "PYDANTIC_DISABLE_PLUGINS"
_plugins_before = os.environ.get(_PLUGINS_VAR)
os.environ[_PLUGINS_VAR] = "__all__"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


def _url_field(v: str) -> str:
    parse_endpoint(v)
    return v


PositiveSeconds = Annotated[float, Field(gt=0, le=3600)]


def _empty_is_none(v: Any) -> Any:
    """An optional path written as "" in TOML (which has no null) means none."""
    return None if v in ("", None) else v


class Paths(_Section):
    state_dir: Path = Path("/var/lib/hubsvc")
    runtime_dir: Path = Path("/run/hubsvc")


def _reject_owned_flags(args: list[str], owned: tuple[str, ...], where: str) -> list[str]:
    """CHP's command line (commander: `--x=y` and `--x y`, no abbreviations)."""
    for a in args:
        flag = a.split("=", 1)[0]
        if flag in owned:
            raise ValueError(
                f"{flag} is set by hubsvc from hubsvc.toml; set {where} there instead of "
                "passing it in extra_args"
            )
    return args


# CHP: its addresses, its API (plain http on loopback, hubsvc's token) and its targets.
_PROXY_OWNED_FLAGS = ("--ip", "--port", "--api-ip", "--api-port", "--api-ssl-key",
                      "--api-ssl-cert", "--api-ssl-ca", "--api-ssl-request-cert",
                      "--api-ssl-reject-unauthorized", "--default-target", "--error-target",
                      "--error-path", "--auth-token")

# JupyterHub 6.1.1's command line is traitlets': `--Class.trait=value` or `--Class.trait
# value` for any configurable class (exact case, no dashes in the trait name, no
# abbreviations), and configuring a class configures its subclasses — `--Application.
# bind_url` sets JupyterHub.bind_url. Plus the app's aliases and flags below.
# tests/security/test_owned_settings.py checks these tables against JupyterHub itself.
HUB_CLASS_PARENTS: dict[str, tuple[str, ...]] = {
    "JupyterHub": ("JupyterHub", "Application", "SingletonConfigurable",
                   "LoggingConfigurable", "Configurable"),
    "ConfigurableHTTPProxy": ("ConfigurableHTTPProxy", "Proxy", "LoggingConfigurable",
                              "Configurable"),
    "Proxy": ("Proxy", "LoggingConfigurable", "Configurable"),
}
HUB_ALIASES: dict[str, tuple[str, str]] = {  # JupyterHub 6.1.1 `aliases` and `flags`
    "base-url": ("JupyterHub", "base_url"),
    "url": ("JupyterHub", "bind_url"),
    "ip": ("JupyterHub", "ip"),
    "port": ("JupyterHub", "port"),
    "f": ("JupyterHub", "config_file"),
    "config": ("JupyterHub", "config_file"),
    "db": ("JupyterHub", "db_url"),
    "no-db": ("JupyterHub", "db_url"),
    "ssl-key": ("JupyterHub", "ssl_key"),
    "ssl-cert": ("JupyterHub", "ssl_cert"),
    "pid-file": ("JupyterHub", "pid_file"),
    "log-file": ("JupyterHub", "extra_log_file"),
    "log-level": ("Application", "log_level"),
    "y": ("JupyterHub", "answer_yes"),
    "debug": ("Application", "log_level"),
    "show-config": ("Application", "show_config"),
    "show-config-json": ("Application", "show_config_json"),
    "generate-config": ("JupyterHub", "generate_config"),
    "generate-certs": ("JupyterHub", "generate_certs"),
    "upgrade-db": ("JupyterHub", "upgrade_db"),
    "no-ssl": ("JupyterHub", "confirm_no_ssl"),
}

# (traitlets section, key) pairs hubsvc sets and the admin's file must not.
OWNED: list[tuple[str, str]] = [
    ("JupyterHub", "bind_url"),
    ("JupyterHub", "ip"),
    ("JupyterHub", "port"),
    ("JupyterHub", "base_url"),
    ("JupyterHub", "hub_bind_url"),
    ("JupyterHub", "hub_ip"),
    ("JupyterHub", "hub_port"),
    ("JupyterHub", "db_url"),
    ("JupyterHub", "cookie_secret"),
    ("JupyterHub", "cookie_secret_file"),
    ("JupyterHub", "cleanup_servers"),
    ("JupyterHub", "cleanup_proxy"),
    ("JupyterHub", "proxy_class"),
    ("ConfigurableHTTPProxy", "should_start"),
    ("ConfigurableHTTPProxy", "api_url"),
    ("ConfigurableHTTPProxy", "auth_token"),
    ("ConfigurableHTTPProxy", "command"),
    ("Proxy", "should_start"),
]

# Settings the hub's command line must not carry besides those in the generated config
# (OWNED): the generated config itself, and flags that make the hub print
# something and exit instead of serving.
_HUB_ARGV_ONLY_OWNED = {("JupyterHub", "config_file"), ("JupyterHub", "hub_connect_url"),
                        ("Application", "show_config"), ("Application", "show_config_json"),
                        ("JupyterHub", "generate_config"), ("JupyterHub", "generate_certs")}


def hub_owned_settings() -> set[tuple[str, str]]:
    """(section, trait) pairs that set an owned setting, every section that reaches it."""
    out: set[tuple[str, str]] = set()
    for cls, trait in {*OWNED, *_HUB_ARGV_ONLY_OWNED}:
        for section in HUB_CLASS_PARENTS.get(cls, (cls,)):
            out.add((section, trait))
    return out


def owned_hub_arg(arg: str, owned: set[tuple[str, str]] | None = None) -> str | None:
    """The owned setting `arg` (one command-line word) would set, or None."""
    if not arg.startswith("-"):
        return None  # a value (`--x y`) or a positional word
    owned = hub_owned_settings() if owned is None else owned
    name = arg.lstrip("-").split("=", 1)[0]
    if "." in name:
        section, _, trait = name.rpartition(".")
        return f"{section}.{trait}" if (section, trait) in owned else None
    # argparse also takes any unambiguous prefix of an alias (`--base-u` is --base-url):
    # an argument that is the prefix of an owned alias is refused as that alias
    for alias, key in HUB_ALIASES.items():
        if alias.startswith(name) and name and key in owned:
            return f"{key[0]}.{key[1]}"
    return None


def _reject_owned_hub_args(args: list[str]) -> list[str]:
    owned = hub_owned_settings()
    for a in args:
        hit = owned_hub_arg(a, owned)
        if hit:
            raise ValueError(
                f"{a.split('=', 1)[0]} is set by hubsvc: it sets {hit}, which hubsvc owns "
                "(hubsvc.toml or its generated JupyterHub config); remove it from extra_args. "
                "Addresses and "
                "the base URL: proxy.public_url and hub.bind_url; the hub's config file: "
                "hub.config_file"
            )
    return args


class Proxy(_Section):
    command: str = "configurable-http-proxy"
    public_url: str = "http://0.0.0.0:8000"
    api_url: str = "http://127.0.0.1:8001"
    extra_args: list[str] = []
    start_timeout_s: PositiveSeconds = 15.0
    stop_timeout_s: PositiveSeconds = 5.0

    _public = field_validator("public_url")(_url_field)

    @field_validator("extra_args")
    @classmethod
    def _extra(cls, v: list[str]) -> list[str]:
        return _reject_owned_flags(v, _PROXY_OWNED_FLAGS, "proxy.public_url / proxy.api_url")

    @field_validator("api_url")
    @classmethod
    def _api_loopback(cls, v: str) -> str:
        ep = parse_endpoint(v)
        if ep.scheme != "http":
            raise ValueError("CHP's API is served over plain http; use http://127.0.0.1:PORT")
        if not ep.is_loopback or ep.host == "localhost":
            raise ValueError(
                f"{ep.host!r} is not a loopback address; the proxy API must not be reachable "
                "from the network: use http://127.0.0.1:PORT"
            )
        if ep.path != "/":
            raise ValueError("the proxy API URL takes no path")
        return v


class Hub(_Section):
    command: str = "jupyterhub"
    bind_url: str = "http://127.0.0.1:8081"
    # Where users' servers reach the hub's API when that is not bind_url (servers on other
    # machines, e.g. cluster jobs): JupyterHub's hub_connect_url. Empty: bind_url.
    connect_url: str | None = None
    config_file: Path | None = Path("/etc/hubsvc/jupyterhub_config.py")
    extra_args: list[str] = []
    start_timeout_s: PositiveSeconds = 60.0
    stop_timeout_s: PositiveSeconds = 30.0
    # What a full stop of hubsvc does with users' running servers:
    # "stop" asks the hub to stop them first, "keep" leaves them running for the next
    # start to re-adopt, "auto" keeps them under systemd and stops them in the foreground.
    user_servers_on_stop: Literal["auto", "stop", "keep"] = "auto"

    _bind = field_validator("bind_url")(_url_field)

    @field_validator("extra_args")
    @classmethod
    def _extra(cls, v: list[str]) -> list[str]:
        return _reject_owned_hub_args(v)

    @field_validator("bind_url")
    @classmethod
    def _bind_shape(cls, v: str) -> str:
        ep = parse_endpoint(v)
        if ep.path != "/":
            raise ValueError(
                "the hub's bind URL takes no path; put a base URL in proxy.public_url"
            )
        if ep.host in ("localhost",):
            raise ValueError("use 127.0.0.1 (or ::1), not 'localhost', which may resolve to either")
        return v

    @field_validator("config_file", "connect_url", mode="before")
    @classmethod
    def _empty_is_none(cls, v: Any) -> Any:
        return None if v in ("", None) else v

    @field_validator("connect_url")
    @classmethod
    def _connect_shape(cls, v: str | None) -> str | None:
        if v is None:
            return v
        ep = parse_endpoint(v)
        if ep.host in ("0.0.0.0", "::"):
            raise ValueError(
                f"{ep.host} is a listening address, not one to connect to; use the host name "
                "or address users' servers reach the hub at"
            )
        return v

    @model_validator(mode="after")
    def _connect_reachable(self) -> Hub:
        if self.connect_url is None:
            return self
        bind, conn = parse_endpoint(self.bind_url), parse_endpoint(self.connect_url)
        if bind.is_loopback and not conn.is_loopback:
            raise ValueError(
                f"the hub listens on loopback only ({self.bind_url}), so servers connecting to "
                f"{conn.host} cannot reach it; set hub.bind_url to an address they can reach "
                "(e.g. http://0.0.0.0:8081)"
            )
        return self



class Health(_Section):
    interval_s: PositiveSeconds = 2.0
    timeout_s: PositiveSeconds = 1.0
    failures_before_restart: int = Field(3, ge=1, le=100)

    @model_validator(mode="after")
    def _timeout_fits(self) -> Health:
        if self.timeout_s > self.interval_s:
            raise ValueError(
                f"timeout_s ({self.timeout_s}) is longer than interval_s ({self.interval_s}); "
                "make timeout_s at most interval_s"
            )
        return self


class Restart(_Section):
    backoff_initial_s: float = Field(0.1, ge=0, le=600)
    backoff_max_s: float = Field(10.0, ge=0, le=3600)
    max_restarts: int = Field(5, ge=0, le=1000)
    # Restarts of proxy and hub together within window_s; unset: twice max_restarts.
    max_restarts_total: int | None = Field(None, ge=0, le=2000)
    window_s: PositiveSeconds = 60.0

    @property
    def total_budget(self) -> int:
        return self.max_restarts_total if self.max_restarts_total is not None else 2 * self.max_restarts

    @model_validator(mode="after")
    def _order(self) -> Restart:
        if self.backoff_max_s < self.backoff_initial_s:
            raise ValueError(
                f"backoff_max_s ({self.backoff_max_s}) is below backoff_initial_s "
                f"({self.backoff_initial_s}); raise backoff_max_s"
            )
        if self.max_restarts_total is not None and self.max_restarts_total < self.max_restarts:
            raise ValueError(
                f"max_restarts_total ({self.max_restarts_total}) is below max_restarts "
                f"({self.max_restarts}): one component could never use its own budget; "
                "raise max_restarts_total or leave it unset (twice max_restarts)"
            )
        return self


class ProbeSettings(_Section):
    """The optional periodic synthetic probe (`hubsvc probe-spawn` run by the supervisor)."""

    enabled: bool = False
    interval_s: float = Field(300.0, ge=10, le=86400)
    user: str = ""
    start: bool = False  # start the user's server if it is not running
    timeout_s: float = Field(60.0, gt=0, le=600)

    @model_validator(mode="after")
    def _user_needed(self) -> ProbeSettings:
        if self.enabled and not self.user:
            raise ValueError("enabled without a user; set probe.user to a hub user to probe as")
        return self


class SupervisorSettings(_Section):
    # How components run: "process" (children of hubsvc), "systemd" (the units
    # hubsvc-proxy.service and hubsvc-hub.service, over D-Bus), or "auto": systemd when
    # hubsvc runs as root under systemd with the shipped units installed, else process.
    launcher: Literal["auto", "process", "systemd"] = "auto"


# Ciphers for TLS 1.2 (TLS 1.3's suites are all strong and set by node itself): forward
# secret AEAD only, as in Mozilla's "intermediate" profile. Every suite here needs TLS 1.2,
# so a TLS 1.0/1.1 client finds nothing in common and the handshake fails.
DEFAULT_TLS_CIPHERS = ":".join((
    "ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384", "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305", "ECDHE-RSA-CHACHA20-POLY1305",
))
LETSENCRYPT_DIRECTORY = "https://acme-v02.api.letsencrypt.org/directory"


class Acme(_Section):
    """Certificates from an ACME CA (http-01 challenge on tls.http_port)."""

    directory_url: str = LETSENCRYPT_DIRECTORY
    email: str = ""  # the account's contact; the CA mails expiry warnings there
    # Names on the certificate; empty: the host of proxy.public_url.
    domains: list[str] = []
    # A CA bundle to trust the ACME server's own https with (a private CA); empty: the system's.
    ca_bundle: Path | None = None
    # Renew once this share of the certificate's lifetime has passed (Let's Encrypt: 90 days,
    # so at 60 days: a month of retries before it expires).
    renew_after: float = Field(2 / 3, gt=0, lt=1)
    # After a failed attempt, wait this long before the next one (doubling up to a day).
    retry_s: float = Field(600.0, ge=1, le=86400)

    _dir = field_validator("directory_url")(_url_field)

    _no_bundle = field_validator("ca_bundle", mode="before")(_empty_is_none)

    @field_validator("email")
    @classmethod
    def _email(cls, v: str) -> str:
        if v and not re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", v):
            raise ValueError(f"{v!r} is not an e-mail address; write it as name@example.org")
        return v

    @field_validator("domains")
    @classmethod
    def _domains(cls, v: list[str]) -> list[str]:
        for d in v:
            if not re.fullmatch(r"(?=.{1,253}$)([A-Za-z0-9-]{1,63}\.)*[A-Za-z0-9-]{1,63}", d):
                raise ValueError(f"{d!r} is not a DNS name; list host names like hub.example.org")
        return v


class Tls(_Section):
    """HTTPS terminated by CHP."""

    # "off": plain http (or TLS set up by hand); "files": a certificate and key from files
    # (certbot, certmonger/IPA, a corporate CA); "acme": hubsvc obtains and renews them.
    mode: Literal["off", "files", "acme"] = "off"
    # PEM: the server certificate, optionally followed by the intermediates (a full chain)
    cert_file: Path | None = None
    # PEM: intermediates, when they come in a file of their own (certmonger, many CAs)
    chain_file: Path | None = None
    key_file: Path | None = None  # PEM private key, unencrypted; may stay root-only
    # A plain-http port that only redirects to https (and answers ACME http-01
    # challenges); 0: none.
    http_port: int = Field(0, ge=0, le=65535)
    # Strict-Transport-Security max-age for the hub's pages; 0: no HSTS header.
    hsts_max_age_s: int = Field(0, ge=0, le=63072000)
    ciphers: str = DEFAULT_TLS_CIPHERS
    acme: Acme = Acme()

    _no_file = field_validator("cert_file", "chain_file", "key_file", mode="before")(_empty_is_none)

    @field_validator("ciphers")
    @classmethod
    def _ciphers(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9_+!:@.=-]+", v):
            raise ValueError("not an OpenSSL cipher list; use ':'-separated names, "
                             "or leave it out for the default")
        return v

    @model_validator(mode="after")
    def _files_needed(self) -> Tls:
        if self.mode == "files":
            missing = [k for k in ("cert_file", "key_file") if getattr(self, k) is None]
            if missing:
                raise ValueError(f"mode = \"files\" needs {' and '.join(missing)}; set them to "
                                 "the PEM files (e.g. certbot's fullchain.pem and privkey.pem)")
        return self


class Config(_Section):
    supervisor: SupervisorSettings = SupervisorSettings()
    paths: Paths = Paths()
    proxy: Proxy = Proxy()
    hub: Hub = Hub()
    health: Health = Health()
    restart: Restart = Restart()
    probe: ProbeSettings = ProbeSettings()
    tls: Tls = Tls()

    # where this config was read from (not a TOML key)
    source: Path | None = Field(default=None, exclude=True)

    @property
    def public(self) -> Endpoint:
        return parse_endpoint(self.proxy.public_url)

    @property
    def api(self) -> Endpoint:
        return parse_endpoint(self.proxy.api_url)

    @property
    def hub_bind(self) -> Endpoint:
        return parse_endpoint(self.hub.bind_url)

    @model_validator(mode="after")
    def _no_clash(self) -> Config:
        named = [
            ("proxy.public_url", self.public),
            ("proxy.api_url", self.api),
            ("hub.bind_url", self.hub_bind),
        ]
        for i, (na, a) in enumerate(named):
            for nb, b in named[i + 1 :]:
                if a.port == b.port and _hosts_overlap(a.host, b.host):
                    raise ValueError(
                        f"{na} and {nb} both use port {a.port} on overlapping addresses; "
                        "give each its own port"
                    )
        return self


if _plugins_before is None:
    del os.environ[_PLUGINS_VAR]
else:
    os.environ[_PLUGINS_VAR] = _plugins_before

# CHP flags hubsvc sets itself when [tls] is on
_TLS_OWNED_FLAGS = ("--ssl-key", "--ssl-cert", "--ssl-ca", "--ssl-ciphers", "--ssl-protocol",
                    "--ssl-allow-rc4", "--redirect-port", "--redirect-to")


def tls_problems(cfg: Config) -> list[Problem]:
    """[tls] checks that involve other sections, each reported at the field to change."""
    t = cfg.tls
    if t.mode == "off":
        return []
    out: list[Problem] = []
    if cfg.public.scheme != "https":
        out.append(Problem(
            "proxy.public_url",
            f"is {cfg.proxy.public_url!r}, but tls.mode = {t.mode!r}: users would be sent to "
            "plain http", "make it an https:// URL (e.g. \"https://hub.example.org/\")"))
    for a in cfg.proxy.extra_args:
        flag = a.split("=", 1)[0]
        if flag in _TLS_OWNED_FLAGS:
            out.append(Problem("proxy.extra_args", f"sets {flag}, which hubsvc sets from [tls]",
                               f"remove {flag} (and its value) from proxy.extra_args"))
    if t.http_port:
        for name, ep in (("proxy.public_url", cfg.public), ("proxy.api_url", cfg.api),
                         ("hub.bind_url", cfg.hub_bind)):
            if ep.port == t.http_port:
                out.append(Problem("tls.http_port", f"{t.http_port} is the port of {name}",
                                   "give tls.http_port a port of its own (80 on a server)"))
    if t.mode == "acme":
        for n in t.acme.domains or [cfg.public.host]:
            try:
                ipaddress.ip_address(n)
            except ValueError:
                continue
            where = "tls.acme.domains" if t.acme.domains else "proxy.public_url"
            out.append(Problem(where, f"{n!r} is an IP address; ACME CAs certify DNS names only",
                               "put the DNS name users open in proxy.public_url (or list it "
                               "in tls.acme.domains)"))
        if not t.http_port:
            out.append(Problem("tls.http_port", "is 0, but tls.mode = \"acme\" answers the "
                               "CA's http-01 challenge on it", "set tls.http_port = 80"))
    return out


def _hosts_overlap(a: str, b: str) -> bool:
    wild = {"0.0.0.0", "::", ""}
    if a in wild or b in wild:
        return True
    return a == b


_FIXES = {
    "extra_forbidden": "remove it, or check its spelling and section against "
    "/etc/hubsvc/hubsvc.toml",
    "missing": "add it",
}


def _problem_from_pydantic(err: dict[str, Any]) -> Problem:
    loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
    typ = err["type"]
    msg = err["msg"]
    if typ == "extra_forbidden":
        return Problem(loc, "unknown key", _FIXES[typ])
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    if typ == "value_error":
        # our own messages carry the fix after the last ';'
        head, sep, tail = msg.rpartition("; ")
        if sep:
            return Problem(loc, head, tail)
        return Problem(loc, msg, "correct the value")
    got = err.get("input")
    got_txt = f" (got {got!r})" if not isinstance(got, dict) else ""
    return Problem(loc, f"{msg}{got_txt}", _FIXES.get(typ, "correct the value"))


# Path keys: a relative value is taken relative to the config file's own folder.
_PATH_KEYS = (("paths", "state_dir"), ("paths", "runtime_dir"), ("hub", "config_file"),
              ("tls", "cert_file"), ("tls", "chain_file"), ("tls", "key_file"),
              ("tls.acme", "ca_bundle"))


def _anchor_paths(data: dict[str, Any], base: Path) -> None:
    for section, key in _PATH_KEYS:
        sec: Any = data
        for part in section.split("."):
            sec = sec.get(part) if isinstance(sec, dict) else None
        if isinstance(sec, dict) and isinstance(sec.get(key), str) and sec[key]:
            p = Path(sec[key])
            if not p.is_absolute():
                sec[key] = str((base / p).resolve())


def parse(data: dict[str, Any], source: Path | None = None) -> Config:
    try:
        cfg = Config.model_validate(data)
    except ValidationError as e:
        raise ConfigError([_problem_from_pydantic(err) for err in e.errors()]) from None
    problems = tls_problems(cfg)
    if problems:
        raise ConfigError(problems)
    return cfg.model_copy(update={"source": source})


def resolve_path(explicit: str | os.PathLike[str] | None) -> Path:
    """--config, else $HUBSVC_CONFIG, else /etc/hubsvc/hubsvc.toml."""
    if explicit:
        return Path(explicit)
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env)
    return DEFAULT_PATH


def runtime_dir_hint(path: str | os.PathLike[str] | None) -> Path:
    """paths.runtime_dir from a config file that may not validate (for `hubsvc status`)."""
    p = resolve_path(path)
    value: object = None
    try:
        text = p.read_text()
    except (OSError, ValueError):
        return Paths().runtime_dir
    try:
        value = tomllib.loads(text).get("paths", {}).get("runtime_dir")
    except (ValueError, AttributeError):  # not TOML at all: look for the line itself
        m = re.search(r'^\s*runtime_dir\s*=\s*"([^"]+)"', text, re.MULTILINE)
        value = m.group(1) if m else None
    if isinstance(value, str) and value:
        return Path(value) if Path(value).is_absolute() else p.resolve().parent / value
    return Paths().runtime_dir


def load(path: str | os.PathLike[str] | None = None) -> Config:
    p = resolve_path(path)
    try:
        raw = p.read_bytes()
    except FileNotFoundError:
        raise ConfigError(
            [Problem(str(p), "no such file", f"create it (see {DEFAULT_PATH}) or pass --config PATH")]
        ) from None
    except PermissionError:
        raise ConfigError(
            [Problem(str(p), "cannot be read by this user", "run as the service account or root")]
        ) from None
    except IsADirectoryError:
        raise ConfigError([Problem(str(p), "is a directory", "point --config at the TOML file")]) from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise ConfigError([Problem(str(p), f"is not UTF-8 text ({e.reason})", "save it as UTF-8")]) from None
    except tomllib.TOMLDecodeError as e:
        problem = Problem(str(p), f"is not valid TOML: {e}", "fix the syntax at that line")
        raise ConfigError([problem]) from None
    source = p.resolve()
    _anchor_paths(data, source.parent)
    return parse(data, source=source)
