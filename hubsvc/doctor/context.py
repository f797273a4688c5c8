"""What every check of the doctor reads: the config, the account that runs the hub, the
PATH the service finds programs on, the running supervisor (status.json, its processes)
and hubsvc's tokens."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import host
from .. import status as status_mod
from ..commands import search_path
from ..config import Config, Endpoint
from ..host import Account
from ..secrets import SecretFiles


@dataclass
class Ctx:
    cfg: Config
    acct: Account
    files: SecretFiles
    status: dict[str, Any] | None = None
    supervisor_alive: bool = False
    our_pids: set[int] = field(default_factory=set)
    proxy_token: str | None = None
    hub_token: str | None = None
    token_error: str | None = None
    search: str = field(default_factory=search_path)  # where the service finds programs
    path_source: str = "the PATH of this process"
    status_error: str | None = None  # status.json exists but cannot be read here

    @property
    def hub_prefix(self) -> str:
        return self.cfg.public.path  # the hub's base_url

    def hub_url(self, rel: str) -> str:
        from ..hubapi import hub_url  # httpx: not for the preflight's import

        return hub_url(self.cfg, rel)

    @property
    def users_url(self) -> str:
        ep = self.cfg.public
        if ep.host in ("0.0.0.0", "::", ""):
            host = socket.getfqdn() or "THIS-HOST"
            return f"{ep.scheme}://{host}:{ep.port}{ep.path}"
        return ep.origin + ep.path


def _read_token(path: Path) -> tuple[str | None, str | None]:
    try:
        return path.read_text().strip() or None, None
    except FileNotFoundError:
        return None, f"{path} does not exist yet"
    except OSError as e:
        return None, f"{path}: {e.strerror}"


def make_ctx(cfg: Config, acct: Account | None = None, service_env: bool = False) -> Ctx:
    ctx = Ctx(cfg, acct or service_account(cfg), SecretFiles.in_dir(cfg.paths.state_dir))
    if service_env:
        path, ctx.path_source = service_search_path()
        ctx.search = search_path(path)
    ctx.status = status_mod.read(cfg.paths.runtime_dir)
    if ctx.status is None:
        try:
            (cfg.paths.runtime_dir / status_mod.FILE).stat()
            open(cfg.paths.runtime_dir / status_mod.FILE).close()
        except PermissionError as e:
            ctx.status_error = f"{e.filename}: {e.strerror} for uid {os.geteuid()}"
        except OSError:
            pass
    if ctx.status and isinstance(ctx.status.get("pid"), int):
        spid = ctx.status["pid"]
        ctx.supervisor_alive = status_mod.supervisor_running(ctx.status)
        if ctx.supervisor_alive:
            ctx.our_pids = set(host.pids_of_tree(spid))
    ctx.proxy_token, err1 = _read_token(ctx.files.proxy_token)
    ctx.hub_token, err2 = _read_token(ctx.files.hub_api_token)
    ctx.token_error = err1 or err2
    return ctx


def service_account(cfg: Config) -> Account:
    """Who runs the hub: the unit's User= (systemd), else the state dir's owner, else me."""
    if host.systemd_running():
        props = host.systemctl_show("hubsvc.service", ["User", "LoadState"])
        if props and props.get("LoadState") == "loaded":
            user = props.get("User") or "root"
            acct = Account.from_name(user, "User= of hubsvc.service")
            if acct is not None:
                return acct
    try:
        st = cfg.paths.state_dir.stat()
        return Account.from_uid(st.st_uid, f"owner of {cfg.paths.state_dir}")
    except OSError:
        pass
    return Account.from_uid(os.geteuid(), "the account running this check")


def service_search_path() -> tuple[str, str]:
    """The PATH the service's programs are looked up on, and where it comes from.

    Under systemd that is the unit's Environment=PATH=…, else the manager's own PATH,
    never the admin's shell PATH: a node installed in a custom prefix is on the shell's
    PATH and not on the service's.
    """
    return (host.unit_path("hubsvc.service")
            or (os.environ.get("PATH", "/usr/bin:/bin"), "the PATH of this shell"))


def endpoints(cfg: Config) -> dict[str, Endpoint]:
    return {"public": cfg.public, "api": cfg.api, "hub": cfg.hub_bind}
