"""The doctor's "scheduler" group, when the hub's spawner is batchspawner's SlurmSpawner:
the traps met running a real one-node cluster (tests/slurm), each with a fix. The spawner
settings come from the hub probe doctor runs anyway; the scheduler's own answers from
hubsvc.slurm."""

from __future__ import annotations

import shutil
import stat
from pathlib import Path

from .. import host, hubdb, slurm
from ..commands import search_path
from ..config import Config, parse_endpoint
from . import hubprobe
from .finding import Finding, for_group

SLURM_SPAWNER = "batchspawner.batchspawner.SlurmSpawner"

f = for_group("scheduler")


def unreadable_by(path: Path, user: str | None) -> str | None:
    """Why `user` (None: any unprivileged user) cannot run `path`; None when it can.

    Checks every folder on the way (search), the file (read + execute) and, for a script,
    its interpreter the same way; follows symlinks."""
    acct = (host.Account.from_name(user, "the job's user") if user is not None else None) \
        or host.Account.anyone()
    seen: set[Path] = set()
    todo = [path]
    for _ in range(8):  # file, interpreter, symlink targets: bounded
        if not todo:
            return None
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        try:
            real = p.resolve(strict=True)
        except (OSError, RuntimeError):
            return f"{p} does not exist"
        for d in [*reversed(real.parents)]:
            try:
                if not host.mode_allows(d.stat(), acct, 1):
                    mode = stat.filemode(d.stat().st_mode)
                    return f"{d} ({mode}) cannot be entered, so {p} cannot be reached"
            except OSError as e:
                return f"{d}: {e.strerror}"
        if not host.mode_allows(real.stat(), acct, 5):
            return f"{real} ({stat.filemode(real.stat().st_mode)}) cannot be read and executed"
        interp = host.shebang(real)
        if interp and interp[0].startswith("/"):
            todo.append(Path(interp[0]))
    return None



def _node_names(runner: slurm.Runner) -> list[str]:
    r = runner(["sinfo", "-h", "-N", "-o", "%N"], slurm.TIMEOUT_S)
    return sorted({n.strip() for n in r.out.split()} if r.ok else set())



def findings(cfg: Config, probe: hubprobe.Probe | None = None, *,
             runner: slurm.Runner = slurm.run, path: str | None = None) -> list[Finding]:
    """Slurm traps, as doctor findings; [] when the hub does not use SlurmSpawner.

    probe: the hub probe's answer (default: run it); runner and path: how Slurm's
    commands are run and looked up (tests)."""
    if probe is None:
        py = hubprobe.python_of(cfg)
        probe = (hubprobe.run(cfg, py) if py is not None
                 else f"cannot tell which Python runs {cfg.hub.command!r}")
    if SLURM_SPAWNER not in hubprobe.spawner_mro(probe):
        return []
    assert not isinstance(probe, str)
    settings = probe.get("spawner_settings") or {}
    if settings.get("error"):
        return [f("spawner", "skipped", "Slurm checks: the spawner settings could not be read",
                  settings["error"])]
    spawner = probe["spawner"]["class"]
    vals = {k: v.get("value") for k, v in (settings.get("values") or {}).items()}
    where = {k: v.get("set_in") for k, v in (settings.get("values") or {}).items()}
    out: list[Finding] = [f("spawner", "ok", f"users' servers run as Slurm jobs ({spawner})")]

    # 1. the client commands, munge, the controller
    found = slurm.commands(path)
    missing = [c for c, p in found.items() if p is None]
    if missing:
        out.append(f("commands", "error", "Slurm client commands are missing on this host",
                     "not found: " + ", ".join(missing) + f" (searched {path or search_path()})",
                     "install the Slurm client (Debian: `apt install slurm-client`; RHEL: "
                     "`dnf install slurm`) with the cluster's slurm.conf in /etc/slurm"))
    else:
        out.append(f("commands", "ok", "sbatch, squeue, scancel, scontrol found",
                     ", ".join(str(p) for p in found.values())))
    m = slurm.munge(runner)
    out.append(f("munge", "ok", "munge works", m.detail) if m.ok else
               f("munge", "error", "munge does not work: Slurm cannot authenticate this host",
                 m.detail, "start munged (`systemctl enable --now munge`) with the cluster's "
                 "/etc/munge/munge.key (mode 0400, owner munge)"))
    if found.get("scontrol"):
        ctl = slurm.controller(runner)
        out.append(f("controller", "ok", "the Slurm controller answers", ctl.detail) if ctl.ok
                   else f("controller", "error", "the Slurm controller does not answer: "
                          "servers cannot be submitted or polled", ctl.detail,
                          "check `scontrol ping`, slurmctld on the controller host, "
                          "SlurmctldHost in /etc/slurm/slurm.conf and munge"))

    # 2. how the job is submitted and what it runs
    prefix = str(vals.get("exec_prefix") or "")
    if prefix.split()[:1] == ["sudo"] and shutil.which("sudo", path=path or search_path()) is None:
        out.append(f("sudo", "error", "batchspawner submits with sudo, which is not installed",
                     f"exec_prefix = {prefix!r}", "install sudo (the hub runs as root: no "
                     "sudoers rule is needed), or set c.SlurmSpawner.exec_prefix"))
    cmd = vals.get("cmd") or ["jupyterhub-singleuser"]
    wrapper = str(vals.get("batchspawner_singleuser_cmd") or "batchspawner-singleuser")
    progs = {"c.SlurmSpawner.batchspawner_singleuser_cmd": wrapper,
             "c.Spawner.cmd[0]": str(cmd[0])}
    relative = {k: v for k, v in progs.items() if not v.startswith("/")}
    for key, v in relative.items():
        out.append(f(f"cmd.{key.rsplit('.', 1)[-1].replace('[0]', '')}", "error",
                     f"{key} is not an absolute path: the job may not find it",
                     f"{key} = {v!r}; sudo's secure_path and the job's login environment "
                     "drop the hub's PATH",
                     f"set {key} to the absolute path in the users' environment, e.g. "
                     f"/opt/jupyterhub-user/bin/{Path(v).name}"))
    users = sorted(set(probe.get("config_users") or [])
                   | set(hubdb.user_names(cfg.paths.state_dir)))
    existing = []
    missing_users = []
    for u in users:
        (existing if host.local_user(u) is not None else missing_users).append(u)
    if missing_users:
        out.append(f("users", "error",
                     f"{len(missing_users)} hub user(s) have no Unix account: their jobs "
                     "cannot be submitted", "no account for: " + ", ".join(missing_users[:20]),
                     "create the accounts on the head node and every compute node (or in the "
                     "directory service they share), or remove those users from the hub"))
    elif users:
        out.append(f("users", "ok", f"{len(users)} hub user(s) have Unix accounts"))
    job_user = existing[0] if existing else None
    for key, v in progs.items():
        if key in relative:
            continue
        why = unreadable_by(Path(v), job_user)
        if why:
            out.append(f(f"env.{key.rsplit('.', 1)[-1].replace('[0]', '')}", "error",
                         f"{key} cannot be run by the job's user "
                         f"({job_user or 'an unprivileged user'})", why,
                         "install the users' environment under a world-readable prefix "
                         "(e.g. /opt/jupyterhub-user, directories 0755, files 0644/0755) "
                         "built from a system Python, not a Python under /root"))
        else:
            out.append(f(f"env.{key.rsplit('.', 1)[-1].replace('[0]', '')}", "ok",
                         f"{v} can be run by {job_user or 'any user'}"))
    prologue = str(vals.get("req_prologue") or "")
    bindir = str(Path(str(cmd[0])).parent) if str(cmd[0]).startswith("/") else ""
    if bindir and bindir not in prologue and bindir not in ("/usr/bin", "/bin", "/usr/local/bin"):
        out.append(f("prologue", "warning",
                     "the job's PATH does not include the users' environment",
                     f"req_prologue = {prologue!r}; {bindir} is not on it",
                     f"c.SlurmSpawner.req_prologue = 'export PATH=\"{bindir}:$PATH\"'"))

    # 3. addresses: the spawner's ip and the hub's connect URL
    ip_default = settings.get("ip_class_default")
    ip_val, ip_where = vals.get("ip"), where.get("ip")
    if ip_where and ip_val != ip_default:
        out.append(f("ip", "warning",
                     f"c.{ip_where}.ip = {ip_val!r} is ignored: batchspawner's start() resets "
                     f"ip to the class default {ip_default!r}",
                     f"spawner class {spawner}",
                     "subclass the spawner with `ip = Unicode(" + repr(ip_val) + ").tag("
                     "config=True)` and make it c.JupyterHub.spawner_class (see "
                     "etc/hubsvc/examples/slurm/jupyterhub_config.py)"))
    nodes = _node_names(runner) if shutil.which("sinfo", path=path or search_path()) else []
    remote = [n for n in nodes if not host.is_loopback_host(n)]
    if remote:
        connect = cfg.hub.connect_url or cfg.hub.bind_url
        hub_host = parse_endpoint(connect).host
        if parse_endpoint(connect).is_loopback or hub_host in ("0.0.0.0", "::"):
            out.append(f("connect_url", "error",
                         "jobs on the compute nodes cannot reach the hub's API",
                         f"nodes {', '.join(remote[:5])}; servers are told to reach the hub "
                         f"at {connect}",
                         "set [hub] bind_url to an address on the cluster network (e.g. "
                         "http://0.0.0.0:8081) and [hub] connect_url to this head node's "
                         "name as the nodes resolve it"))
        eff_ip = str(ip_default if ip_where else ip_val or "")
        if eff_ip and host.is_loopback_host(eff_ip):
            out.append(f("server_ip", "error",
                         "servers on the compute nodes listen on loopback: the proxy on this "
                         "host cannot reach them", f"effective spawner ip = {eff_ip!r}",
                         "listen on 0.0.0.0 or the nodes' cluster address (class default of "
                         "the spawner, see etc/hubsvc/examples/slurm/jupyterhub_config.py)"))
    st = vals.get("start_timeout")
    if isinstance(st, int | float) and st < 60:
        out.append(f("start_timeout", "warning",
                     f"c.Spawner.start_timeout = {st:g}s: a job that waits in the queue "
                     "is given up early", "Slurm starts a job at its next scheduling pass",
                     "c.Spawner.start_timeout = 300 (or more on a busy cluster)"))
    return out
