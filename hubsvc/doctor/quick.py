"""The doctor's cheap checks, for `hubsvc run`'s preflight and a reload: no program is
run and nothing is asked over the network (programs and node found, files, secrets,
ports), checked for the account running hubsvc."""

from __future__ import annotations

import os

from ..config import Config
from ..host import Account
from .context import make_ctx
from .files import check_files
from .finding import Finding
from .network import check_ports
from .programs import check_hub_program, check_proxy_program


def preflight_findings(cfg: Config) -> list[Finding]:
    """Cheap checks for `hubsvc run` (no programs run, no network): binaries, node,
    files readable, state dir and secrets, ports. Checked for the account running it."""
    ctx = make_ctx(cfg, Account.from_uid(os.geteuid(), "the account running hubsvc"))
    out = check_proxy_program(ctx, run_version=False)
    out += check_hub_program(ctx)[0]
    out += check_files(ctx, preflight=True)
    out += check_ports(ctx, preflight=True)
    return out


def port_findings(cfg: Config) -> list[Finding]:
    """The port checks of `preflight_findings` alone (a reload checks changed ports)."""
    ctx = make_ctx(cfg, Account.from_uid(os.geteuid(), "the account running hubsvc"))
    return check_ports(ctx, preflight=True)
