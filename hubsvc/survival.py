"""Do users' servers outlive what hubsvc does to the hub under systemd?

hubsvc restarts the hub when it fails, stops it on `systemctl stop/restart hubsvc` and on
upgrades. A spawner that runs each server as a child of the hub (LocalProcessSpawner,
SudoSpawner) leaves the server in the hub's cgroup, and systemd kills what is left in a
unit's cgroup when the unit stops unless its KillMode= is "process". The hub runs in
hubsvc.service with the process launcher (KillMode=mixed: the supervisor gets SIGTERM, the
rest SIGKILL) and in hubsvc-hub.service with the systemd launcher (KillMode=process).
Spawners whose servers are units, jobs or containers of their own are not affected.

`hubsvc run` (started by systemd) logs a warning at start; `hubsvc doctor` reports a
finding. Both load the spawner class the way the doctor does (the hub's Python reading
the admin's JupyterHub config).
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from . import host
from .doctor import hubprobe
from .doctor.finding import Finding

if TYPE_CHECKING:
    from .config import Config

# spawners that start servers as the hub's child processes (their subclasses included)
CHILD_SPAWNERS = ("jupyterhub.spawner.LocalProcessSpawner", "sudospawner.spawner.SudoSpawner")
FIX_SPAWNER = ("or give each server a unit of its own: c.JupyterHub.spawner_class = "
               "\"systemd\" (jupyterhub-systemdspawner, shipped in the package)")


def hub_unit(launcher: str) -> str:
    return "hubsvc-hub.service" if launcher == "systemd" else "hubsvc.service"


def assess(spawner_mro: list[str], launcher: str, kill_mode: str | None) -> Finding:
    """The verdict for one configuration: the spawner class's MRO (dotted names), the
    launcher the service uses under systemd, the KillMode= of the hub's unit (None when
    unknown)."""
    spawner = spawner_mro[0] if spawner_mro else "?"
    children = next((c for c in CHILD_SPAWNERS if c in spawner_mro), None)
    unit = hub_unit(launcher)
    if children is None:
        return Finding("systemd.user_servers", "systemd", "ok",
                       "users' servers run outside hubsvc's units: restarts and upgrades of "
                       "hubsvc leave them running", f"spawner: {spawner}")
    evidence = f"spawner: {spawner} (a {children.rsplit('.', 1)[-1]}); the hub runs in {unit}"
    if kill_mode is None:
        return Finding("systemd.user_servers", "systemd", "skipped",
                       f"cannot tell whether users' servers outlive a stop of {unit}",
                       evidence + "; its KillMode= is unknown")
    if kill_mode == "process":
        return Finding("systemd.user_servers", "systemd", "ok",
                       f"users' servers run in {unit}'s cgroup with KillMode=process: they "
                       "outlive restarts of the hub and of hubsvc", evidence)
    if launcher == "systemd":
        fix = (f"restore the package's KillMode=process for the hub: remove the drop-in that "
               f"sets it (`systemctl revert {unit}`); " + FIX_SPAWNER)
        when = "every restart of the hub (a failure, a reload that changes it, a restart "
        when += "of hubsvc, an upgrade)"
    else:
        fix = ("use the package's hub unit, whose KillMode=process keeps them: "
               "[supervisor] launcher = \"systemd\" in hubsvc.toml (or \"auto\", the "
               "default); " + FIX_SPAWNER)
        when = "`systemctl restart hubsvc`, `systemctl stop hubsvc` and every upgrade"
    return Finding("systemd.user_servers", "systemd", "warning",
                   f"users' servers are killed by systemd on {when}",
                   f"{evidence} with KillMode={kill_mode}: systemd kills every process left in "
                   "that cgroup when the unit stops", fix)


def _kill_mode(unit: str) -> str | None:
    props = host.systemctl_show(unit, ["LoadState", "KillMode"])
    if not props or props.get("LoadState") != "loaded":
        return None
    return props.get("KillMode") or None


def findings(cfg: Config, probe: hubprobe.Probe,
             status: dict[str, object] | None = None) -> list[Finding]:
    """The doctor's finding for the service as systemd runs it (none without systemd, or
    when the hub's probe failed: the doctor reports that already). status: the running
    supervisor's, which names the launcher in use."""
    mro = hubprobe.spawner_mro(probe)
    if not mro or not host.systemd_running():
        return []
    launcher = (status or {}).get("launcher")
    if launcher is None:
        launcher = cfg.supervisor.launcher
        if launcher == "auto":
            hub = host.systemctl_show("hubsvc-hub.service", ["LoadState"]) or {}
            launcher = "systemd" if hub.get("LoadState") == "loaded" else "process"
    return [assess(mro, str(launcher), _kill_mode(hub_unit(str(launcher))))]


def _warn(cfg: Config, launcher: str) -> None:
    import structlog

    log = structlog.get_logger("hubsvc")
    try:
        py = hubprobe.python_of(cfg)
        if py is None:
            return
        for f in findings(cfg, hubprobe.run(cfg, py), {"launcher": launcher}):
            if f.severity == "warning":
                log.warning("user_servers_at_risk", reason=f.what, evidence=f.evidence, fix=f.fix)
    except Exception as e:  # a check must never take the supervisor down
        log.debug("user_servers_unchecked", error=str(e))


def warn_in_background(cfg: Config, launcher: str) -> None:
    """`hubsvc run` under systemd: say so when users' servers cannot survive hubsvc's
    actions. In a thread (loading the admin's config takes a second or two of another
    Python): the start does not wait for it."""
    if not host.started_by_systemd():
        return  # not run by systemd: nothing kills a cgroup
    threading.Thread(target=_warn, args=(cfg, launcher), name="survival", daemon=True).start()
