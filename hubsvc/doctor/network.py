"""The doctor's "ports" group: each address hubsvc listens on free (or held by hubsvc
itself), who holds it otherwise (pid, command line), and what the network can reach."""

from __future__ import annotations

import errno
import ipaddress

from .. import ports
from ..config import Endpoint, parse_endpoint
from .context import Ctx, endpoints
from .finding import Finding

_PORT_FIELDS = (("public", "proxy.public_url", "the public port"),
                ("api", "proxy.api_url", "the proxy API port"),
                ("hub", "hub.bind_url", "the hub's port"))


def check_ports(ctx: Ctx, preflight: bool = False) -> list[Finding]:
    out: list[Finding] = []
    eps = endpoints(ctx.cfg)
    table = ports.listeners()  # once for the three ports
    for key, field_, label in _PORT_FIELDS:
        ep = eps[key]
        id = f"ports.{key}"
        holder = ports.port_holder(ep.host, ep.port, table)
        if holder is None:
            err = ports.bind_error(ep.host, ep.port)
            if err is not None and err.errno == errno.EADDRNOTAVAIL:
                out.append(Finding(id, "ports", "error", f"{ep.host} is not an address of this host",
                                   f"{field_} = {ep.origin}",
                                   "use an address this host has (`ip -br addr`), 0.0.0.0 or "
                                   "127.0.0.1", True))
            elif err is not None and err.errno == errno.EACCES and ctx.acct.uid != 0:
                out.append(Finding(id, "ports", "error",
                                   f"port {ep.port} needs privileges {ctx.acct.name} lacks",
                                   f"{field_} = {ep.origin}",
                                   "use a port >= 1024 (or grant CAP_NET_BIND_SERVICE in the unit)",
                                   True))
            elif preflight or not ctx.supervisor_alive:
                out.append(Finding(id, "ports", "ok", f"{label} {ep.host}:{ep.port} is free"))
            else:
                out.append(Finding(id, "ports", "error",
                                   f"nothing listens on {label} {ep.host}:{ep.port}, yet hubsvc "
                                   "is running", f"status.json pid {ctx.status and ctx.status['pid']}",
                                   "look at `hubsvc status` and the journal "
                                   "(`journalctl -u hubsvc`)"))
            continue
        if not preflight and holder.pid is not None and holder.pid in ctx.our_pids:
            out.append(Finding(id, "ports", "ok",
                               f"{label} {ep.host}:{ep.port} is held by hubsvc ({holder.describe()})"))
            out += _exposure_findings(ctx, key, ep, holder)
            continue
        if not preflight and holder.pid is None and (ctx.supervisor_alive
                                                     or ctx.status_error):
            out.append(Finding(id, "ports", "skipped",
                               f"{label} is held by a process this account cannot identify",
                               holder.describe(), "run the doctor as root to see which"))
            continue
        note = ""
        if ctx.supervisor_alive is False and holder.cmdline and (
                "configurable-http-proxy" in holder.cmdline or "jupyterhub" in holder.cmdline):
            note = (" (a proxy or hub left behind by a stopped hubsvc? it is not supervised)")
        who = holder.describe()
        kill = f"`kill {holder.pid}`" if holder.pid else "stop that process"
        out.append(Finding(id, "ports", "error",
                           f"{label} {ep.host}:{ep.port} is taken by another process{note}",
                           f"{who} (socket inode {holder.inode})",
                           f"stop that process ({kill}; `systemctl status {holder.pid or 'PID'}` "
                           f"names its unit) or give {field_} a free port", True))
    # what the network can reach
    hub = eps["hub"]
    conn = getattr(ctx.cfg.hub, "connect_url", None)
    if not hub.is_loopback and conn and not parse_endpoint(conn).is_loopback:
        out.append(Finding("ports.hub_exposure", "ports", "ok",
                           "the hub's own port is reachable from the network, for users' servers "
                           f"at hub.connect_url {conn}",
                           "keep it firewalled from users' browsers: their entry point is "
                           "proxy.public_url"))
    elif not hub.is_loopback:
        out.append(Finding("ports.hub_exposure", "ports", "warning",
                           "the hub's own port is reachable from the network",
                           f"hub.bind_url = {hub.origin}: users can bypass the proxy and get "
                           "a 302 then 404 or a redirect loop after login",
                           "bind the hub to 127.0.0.1 (hub.bind_url = \"http://127.0.0.1:8081\") "
                           "unless single-user servers on other hosts must reach it; then "
                           "firewall it from users"))
    return out


def _exposure_findings(ctx: Ctx, key: str, ep: Endpoint, holder: ports.Holder) -> list[Finding]:
    """hubsvc's own listener bound wider than its config says (extra_args overriding it)."""
    try:
        actual = ipaddress.ip_address(holder.address)
    except ValueError:
        return []
    if key not in ("api", "hub") or not ep.is_loopback or actual.is_loopback:
        return []
    if key == "api":
        return [Finding("ports.api_exposure", "ports", "error",
                        f"the proxy API listens on {holder.address}, reachable from the network, "
                        f"although proxy.api_url is {ep.origin}",
                        holder.describe(),
                        "remove --api-ip (or the address given to it) from proxy.extra_args in "
                        "hubsvc.toml, then restart hubsvc; whoever holds the token controls every "
                        "route")]
    return [Finding("ports.hub_exposure", "ports", "error",
                    f"the hub listens on {holder.address}, reachable from the network, although "
                    f"hub.bind_url is {ep.origin}: users can bypass the proxy",
                    holder.describe(),
                    "remove the address override from hub.extra_args (or the admin's JupyterHub "
                    "config), then restart hubsvc")]
