"""What each component is, as data: how to launch it, how to tell it is ready and alive,
and what must happen after it restarts. Built once from the validated config; knows
nothing about how processes are started. Loads neither the probes nor an event loop
until a spec is built: CHP's command line is needed before them (cli.cmd_run)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from . import host
from .commands import resolve_command
from .config import Config
from .secrets import SecretFiles, read

if TYPE_CHECKING:
    from . import probes

Probe = Callable[[], Awaitable["probes.Result"]]


@dataclass(frozen=True)
class ComponentSpec:
    name: str
    argv: list[str]
    env: dict[str, str] = field(repr=False)
    cwd: Path
    start_timeout_s: float
    stop_timeout_s: float
    ready: Probe = field(repr=False)  # answers once the component serves
    alive: Probe = field(repr=False)  # liveness, every health interval
    clean_exit_codes: frozenset[int] = frozenset({0})
    # Changes when anything that needs a restart to take effect changes (reload compares it)
    fingerprint: str = ""


def fingerprint(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def _both(first: Probe, second: Probe) -> Probe:
    async def check() -> probes.Result:
        res = await first()
        return await second() if res else res

    return check


def proxy_spec(cfg: Config, secrets: SecretFiles, client: probes.AnyClient,
               answers: probes.ApiAnswers | None = None) -> ComponentSpec:
    """`answers`: CHP's API answers seen by others (the drift watch's table reads); the
    liveness check asks the API itself only when none came within the last interval."""
    from . import probes

    token = read(secrets.proxy_token)
    argv, tls_digest = proxy_command(cfg)
    t = cfg.health.timeout_s

    async def api_ok() -> probes.Result:
        res = await probes.proxy_api(client, cfg, token, t)
        return res if res else probes.Result(False, f"API: {res.detail}")

    async def public_ok() -> probes.Result:
        res = await probes.proxy_public(client, cfg, t)
        return res if res else probes.Result(False, f"public port: {res.detail}")

    async def api_alive() -> probes.Result:
        # the drift watch's read comes once per interval, right after this check: a
        # little more than one interval old when this check runs again
        if answers is not None and answers.take(cfg.api.origin, 1.5 * cfg.health.interval_s):
            return probes.Result(True, "CHP's API answered the drift watch")
        return await api_ok()

    return ComponentSpec(
        name="proxy",
        argv=argv,
        env=proxy_env(token),
        cwd=PROXY_CWD,
        start_timeout_s=cfg.proxy.start_timeout_s,
        stop_timeout_s=cfg.proxy.stop_timeout_s,
        ready=api_ok,
        alive=_both(public_ok, api_alive),
        clean_exit_codes=frozenset({0, 2}),  # CHP exits 2 on SIGTERM
        fingerprint=fingerprint(argv, cfg.paths.state_dir, tls_digest),
    )


PROXY_CWD = Path("/")  # CHP writes no files; its unit runs as an unprivileged user


def proxy_env(token: str) -> dict[str, str]:
    return host.child_env(extra={"CONFIGPROXY_AUTH_TOKEN": token})


def proxy_command(cfg: Config) -> tuple[list[str], str]:
    """CHP's command line, and the digest of the certificate it serves ("" without TLS).
    Writes the private copy of the certificate and key CHP reads (hubsvc.tls)."""
    pub, api, hub = cfg.public, cfg.api, cfg.hub_bind
    command = resolve_command(cfg.proxy.command, cfg.source.parent if cfg.source else None)
    tls_args, tls_digest = _proxy_tls(cfg)
    argv = [
        str(command or cfg.proxy.command),
        "--ip", pub.host,
        "--port", str(pub.port),
        "--api-ip", api.host,
        "--api-port", str(api.port),
        "--default-target", hub.origin,
        "--error-target", hub.origin + pub.path + "hub/error",
        # CHP logs every API request at info level: with a liveness check of its API every
        # interval that is a journal line every 2 s. Route changes are logged by the hub.
        "--log-level", "warn",
        *tls_args,
        *cfg.proxy.extra_args,
    ]
    return argv, tls_digest


def _proxy_tls(cfg: Config) -> tuple[list[str], str]:
    """CHP's TLS flags and a digest of the certificate and key: a new certificate changes
    the proxy's fingerprint, so a reload restarts CHP with it (and restores its routes).
    Writes the private copy CHP reads (see hubsvc.tls)."""
    from . import tls
    from .config import ConfigError

    try:
        installed = tls.install(cfg)
    except tls.TlsError as e:
        raise ConfigError([e.problem]) from None
    return tls.chp_args(cfg, installed), installed.digest if installed else ""


def hub_spec(cfg: Config, generated_config: Path, client: probes.AnyClient) -> ComponentSpec:
    """`generated_config` must already hold what this config renders: its content and the
    admin's file are part of the fingerprint."""
    from . import probes

    argv = hub_command(cfg, generated_config)
    t = cfg.health.timeout_s

    async def health() -> probes.Result:
        return await probes.hub_health(client, cfg, t)

    return ComponentSpec(
        name="hub",
        argv=argv,
        env=host.child_env(),
        cwd=cfg.paths.state_dir,
        start_timeout_s=cfg.hub.start_timeout_s,
        stop_timeout_s=cfg.hub.stop_timeout_s,
        ready=health,
        alive=health,
        fingerprint=fingerprint(argv, _read_or_none(generated_config),
                                _read_or_none(cfg.hub.config_file)),
    )


def hub_command(cfg: Config, generated_config: Path) -> list[str]:
    command = resolve_command(cfg.hub.command, cfg.source.parent if cfg.source else None)
    return [str(command or cfg.hub.command), "--config", str(generated_config),
            *cfg.hub.extra_args]


def _read_or_none(path: Path | None) -> str | None:
    if path is None:
        return None
    try:
        return path.read_text(errors="replace")
    except OSError:
        return None
