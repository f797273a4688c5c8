"""Slurm-specific knowledge: users' servers as Slurm jobs (batchspawner's SlurmSpawner).

Three kinds of helpers, none of which changes anything:
- the head node's view of the scheduler: `commands()`, `controller()` (`scontrol ping`),
  `munge()` (a credential round trip), `job()` (`squeue` for one job);
- the hub's view of users' jobs: `server_jobs()` reads each server's spawner state (its
  job id) through the hub's API with hubsvc's token and asks Slurm what each job is doing,
  so `hubsvc status` and `hubsvc probe-spawn` can say "PENDING in the queue (Resources)"
  instead of calling a queued job a failed spawn (`scheduler_status()`, `pending_verdict()`);
- `doctor_findings(cfg)`: the traps found running a real one-node cluster (FACTS.md),
  each with a fix, as doctor `Finding`s (group "scheduler").
"""

from __future__ import annotations

import asyncio
import json
import os
import pwd
import shutil
import socket
import stat
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from .commands import resolve_command, search_path
from .config import Config, parse_endpoint
from .hubapi import iter_users

if TYPE_CHECKING:
    import httpx

    from .doctor import Finding

COMMANDS = ("sbatch", "squeue", "scancel", "scontrol")
GROUP = "scheduler"
SLURM_SPAWNER = "batchspawner.batchspawner.SlurmSpawner"
BATCH_SPAWNER = "batchspawner.batchspawner.BatchSpawnerBase"
TIMEOUT_S = 10.0

# (argv, timeout) -> (returncode, stdout, stderr); rc 127 when the program is missing.
Runner = Callable[[Sequence[str], float], tuple[int, str, str]]


def run(argv: Sequence[str], timeout: float = TIMEOUT_S) -> tuple[int, str, str]:
    try:
        r = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout,
                           stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        return 127, "", f"{argv[0]}: not found"
    except subprocess.TimeoutExpired:
        return 124, "", f"{argv[0]}: no answer within {timeout:g}s"
    except OSError as e:
        return 126, "", f"{argv[0]}: {e.strerror or e}"
    return r.returncode, r.stdout, r.stderr


# ---- the scheduler, from the head node ------------------------------------------------------
def commands(path: str | None = None) -> dict[str, str | None]:
    """Where each Slurm client command batchspawner runs is found (None: missing)."""
    p = path if path is not None else search_path()
    return {c: shutil.which(c, path=p) for c in COMMANDS}


@dataclass(frozen=True)
class Check:
    ok: bool
    detail: str


def controller(runner: Runner = run) -> Check:
    """`scontrol ping`: "Slurmctld(primary) at HOST is UP"."""
    rc, out, err = runner(["scontrol", "ping"], TIMEOUT_S)
    text = (out.strip() or err.strip() or f"exit status {rc}").replace("\n", "; ")
    return Check(rc == 0 and " is UP" in out and "DOWN" not in out, text)


def munge(runner: Runner = run) -> Check:
    """Encode and decode a credential with the local munged."""
    rc, out, err = runner(["munge", "-n"], TIMEOUT_S)
    if rc != 0 or not out.strip():
        return Check(False, (err.strip() or f"munge -n: exit status {rc}").splitlines()[-1])
    try:
        r = subprocess.run(["unmunge"], input=out, capture_output=True, text=True,
                           timeout=TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as e:
        return Check(False, f"unmunge: {e}")
    if r.returncode != 0:
        return Check(False, (r.stderr.strip() or f"unmunge: exit status {r.returncode}"))
    return Check(True, "munge -n | unmunge: Success")


@dataclass(frozen=True)
class Job:
    id: str
    state: str  # PENDING, RUNNING, COMPLETING, ... ("" when Slurm no longer lists it)
    reason: str  # why it waits: Resources, Priority, ... ("None" while running)
    user: str = ""
    node: str = ""  # the batch host, once it runs

    @property
    def pending(self) -> bool:
        return self.state in ("PENDING", "CONFIGURING", "REQUEUED", "SUSPENDED")

    @property
    def running(self) -> bool:
        return self.state in ("RUNNING", "COMPLETING")


def jobs(job_ids: Sequence[str], runner: Runner = run) -> dict[str, Job] | None:
    """The listed jobs Slurm still knows, by id, in one `squeue` call; None when Slurm
    could not be asked (controller unreachable, commands missing)."""
    ids = sorted({j for j in job_ids if j.isdigit()}, key=int)
    if not ids:
        return {}
    rc, out, err = runner(["squeue", "-h", "-j", ",".join(ids), "-o", "%i|%T|%r|%u|%B"],
                          TIMEOUT_S)
    if rc != 0:
        # one unknown id is an error for squeue; several are simply not listed
        return {} if "Invalid job id" in err else None
    found: dict[str, Job] = {}
    for line in out.splitlines():
        parts = line.strip().split("|")
        if len(parts) == 5 and parts[0] in ids:
            node = parts[4] if parts[4] not in ("n/a", "(null)") else ""
            found[parts[0]] = Job(parts[0], parts[1], parts[2], parts[3], node)
    return found


def job(job_id: str, runner: Runner = run) -> Job | None:
    """One job as `squeue` lists it; None when Slurm does not list it (or cannot say)."""
    return (jobs([job_id], runner) or {}).get(job_id)


# ---- users' jobs, as the hub sees them ------------------------------------------------------
PENDING_STATES = ("PENDING", "CONFIGURING", "REQUEUED")


@dataclass(frozen=True)
class ServerJob:
    user: str
    server: str  # "" for the default server
    job_id: str
    hub_state: str  # ready | pending:<spawn|stop|...> | stopped
    slurm_state: str  # Slurm's state; GONE: not listed any more; UNKNOWN: Slurm not answering
    reason: str

    def to_json(self) -> dict[str, str]:
        return asdict(self)


def _hub_state(s: dict[str, Any]) -> str:
    if s.get("ready"):
        return "ready"
    return f"pending:{s['pending']}" if s.get("pending") else "stopped"


def _job_id(s: dict[str, Any]) -> str:
    return str((s.get("state") or {}).get("job_id") or "")


async def _with_slurm(found: list[tuple[str, str, str, str]],
                      runner: Runner) -> list[ServerJob]:
    """(user, server, job id, hub state) -> ServerJobs; squeue runs in a thread."""
    known = await asyncio.to_thread(jobs, [f[2] for f in found], runner)
    out = []
    for user, server, job_id, hub_state in found:
        j = (known or {}).get(job_id)
        state = j.state if j else ("UNKNOWN" if known is None else "GONE")
        out.append(ServerJob(user, server, job_id, hub_state, state, j.reason if j else ""))
    return out


async def server_jobs(client: httpx.AsyncClient, cfg: Config, hub_token: str,
                      runner: Runner = run) -> list[ServerJob]:
    """Every active server (ready or starting/stopping) that has a job id, and what Slurm
    says about its job. Needs the `admin:server_state` scope (hubsvc's service role has
    `admin:servers`). Raises httpx.HTTPError when the hub does not answer."""
    found, _ = await _active_job_ids(client, cfg, hub_token)
    return await _with_slurm(found, runner)


async def _active_job_ids(client: httpx.AsyncClient, cfg: Config,
                          hub_token: str) -> tuple[list[tuple[str, str, str, str]], int]:
    """(user, server, job id, hub state) of every active server with a job id, and how many
    users have an active server (the hub's own count of them, as listed)."""
    found: list[tuple[str, str, str, str]] = []
    active = 0
    async for u in iter_users(client, cfg, hub_token, "active"):
        active += 1
        for name, s in (u.get("servers") or {}).items():
            if _job_id(s):
                found.append((u["name"], name, _job_id(s), _hub_state(s)))
    return found, active


async def user_job(client: httpx.AsyncClient, cfg: Config, hub_token: str, user: str,
                   server: str = "", runner: Runner = run) -> ServerJob | None:
    """USER's server job (None: no job id in its spawner state)."""
    url = (cfg.hub_bind.connect_origin + cfg.public.path
           + f"hub/api/users/{quote(user, safe='')}")
    r = await client.get(url, headers={"Authorization": f"token {hub_token}"}, timeout=5.0)
    r.raise_for_status()
    s = (r.json().get("servers") or {}).get(server) or {}
    if not _job_id(s):
        return None
    return (await _with_slurm([(user, server, _job_id(s), _hub_state(s))], runner))[0]


def scheduler_status(found: Sequence[ServerJob]) -> dict[str, Any]:
    """The `scheduler` block for status.json: counts, and every job not simply running."""
    pending = [j for j in found if j.slurm_state in PENDING_STATES]
    odd = [j for j in found if j not in pending and j.slurm_state not in ("RUNNING", "COMPLETING")]
    return {
        "kind": "slurm",
        "jobs": len(found),
        "running": sum(1 for j in found if j.slurm_state == "RUNNING"),
        "pending": [j.to_json() for j in pending],
        "other": [j.to_json() for j in odd],
    }


def status_lines(block: dict[str, Any]) -> list[str]:
    """Human lines for `hubsvc status` from the `scheduler` block."""
    lines = [f"slurm jobs: {block.get('jobs', 0)} ({block.get('running', 0)} running, "
             f"{len(block.get('pending', []))} pending)"]
    for j in block.get("pending", []):
        lines.append(f"  {j['user']}: job {j['job_id']} PENDING ({j['reason'] or 'no reason'}) "
                     "- waiting in the Slurm queue, not a hub failure")
    for j in block.get("other", []):
        lines.append(f"  {j['user']}: job {j['job_id']} {j['slurm_state']} (hub: {j['hub_state']})")
    return lines


def pending_verdict(sj: ServerJob | None) -> tuple[str, str] | None:
    """(what, fix) for probe-spawn when a server waits in the queue; None otherwise."""
    if sj is None or sj.slurm_state not in PENDING_STATES:
        return None
    why = {
        "Resources": "the cluster has no free resources for it",
        "Priority": "jobs of higher priority are ahead of it",
        "PartitionDown": "its partition is down",
        "ReqNodeNotAvail": "the nodes it asked for are not available",
    }.get(sj.reason, f"Slurm's reason: {sj.reason or 'none given'}")
    what = (f"{sj.user}'s server is Slurm job {sj.job_id}, PENDING in the queue ({why}); "
            "the hub and the proxy are fine")
    fix = ("wait for it to start, free resources (`squeue`), or lower the request "
           "(c.SlurmSpawner.req_nprocs / req_memory / req_partition); "
           "c.Spawner.start_timeout bounds the wait")
    return what, fix


class SchedulerWatch:
    """A periodic check for the supervisor: puts `scheduler` (scheduler_status) into the
    status dict it is given, at most every `interval_s`, and calls `on_change` (e.g. the
    supervisor's publish) when the block changed. Adds nothing while no active server has a
    job id. Never raises: a failure is recorded as `scheduler.error`.

    Listing every active server costs the hub time in proportion to their number, so the
    next listing waits at least COST_FACTOR times as long as this one took (the hub spends
    at most ~1 % of its time on it). While the last listing found no job id at all (no
    batch spawner, or none of its servers active), the hub is asked only how many users
    have an active server (one row, whatever their number; every QUIET_COUNT_S) and the
    listing is repeated when that count changed — a new batch server is a newly active
    user — or every QUIET_LISTING_S, longer on a hub whose listing takes long
    (QUIET_COST_FACTOR times its duration: ~0.1 % of the hub's time), which finds a
    user's second server."""

    COST_FACTOR = 100.0
    QUIET_COUNT_S = 30.0  # the count, while quiet: a new batch job shows within this
    QUIET_LISTING_S = 60.0
    QUIET_COST_FACTOR = 1000.0

    __name__ = "scheduler_jobs"

    def __init__(self, client: httpx.AsyncClient, cfg: Config, hub_token: str,
                 status: dict[str, object], interval_s: float = 10.0, runner: Runner = run,
                 on_change: Callable[[], object] | None = None):
        self.client, self.cfg, self.token = client, cfg, hub_token
        self.status, self.interval_s, self.runner = status, interval_s, runner
        self.on_change = on_change
        self._next = -1e9
        self._quiet: tuple[int, float] | None = None  # (active users, list again at)

    async def _still_quiet(self, now: float) -> bool:
        """No job id at the last listing, and the hub's count of active users the same."""
        if self._quiet is None or now >= self._quiet[1]:
            return False
        from .routewatch import ready_user_count

        return await ready_user_count(self.client, self.cfg, self.token, "active") == self._quiet[0]

    async def __call__(self) -> None:
        now = time.monotonic()
        if now < self._next:
            return
        self._next = now + self.interval_s
        before = self.status.get("scheduler")
        try:
            if await self._still_quiet(now):
                self._next = now + max(self.interval_s, self.QUIET_COUNT_S)
                return
            ids, active = await _active_job_ids(self.client, self.cfg, self.token)
            took = time.monotonic() - now
            self._next = now + max(self.interval_s, took * self.COST_FACTOR)
            self._quiet = None
            if not ids:
                self._quiet = (active, now + max(self.QUIET_LISTING_S,
                                                 took * self.QUIET_COST_FACTOR))
                self._next = now + max(self.interval_s, self.QUIET_COUNT_S)
            found = await _with_slurm(ids, self.runner)
        except Exception as e:  # the hub restarting, a network error: say so, keep going
            if isinstance(before, dict):
                self.status["scheduler"] = {**before, "error": f"{type(e).__name__}: {e}"}
        else:
            if found or before is not None:
                self.status["scheduler"] = scheduler_status(found)
        if self.status.get("scheduler") != before and self.on_change is not None:
            self.on_change()


# ---- doctor -------------------------------------------------------------------------------
# Runs in the hub's own Python: loads the admin's config and reports the effective spawner
# settings that decide whether a job can start (class defaults, then config by class name).
_PROBE = r'''
import json, os, sys
args = json.loads(sys.argv[1])
out = {"error": None}
try:
    from traitlets.config import Config
    from traitlets.config.loader import PyFileConfigLoader
    cfg = Config()
    path = args["config_file"]
    if path:
        cfg = PyFileConfigLoader(os.path.basename(path), path=os.path.dirname(path)).load_config()
    jh = cfg["JupyterHub"] if "JupyterHub" in cfg else {}
    name = jh.get("spawner_class", "localprocess") if "spawner_class" in jh else "localprocess"
    if isinstance(name, type):
        cls = name
    else:
        from importlib.metadata import entry_points
        eps = [ep for ep in entry_points(group="jupyterhub.spawners") if ep.name == name]
        if eps:
            cls = eps[0].load()
        else:
            from traitlets.utils.importstring import import_item
            cls = import_item(name)
    mro = [k.__module__ + "." + k.__qualname__ for k in cls.__mro__]
    out["spawner"] = mro[0]
    out["mro"] = mro
    sections = [k.__name__ for k in cls.__mro__]
    traits = cls.class_traits()
    def value(key):
        for s in sections:
            if s in cfg and key in cfg[s]:
                return cfg[s][key], s
        t = traits.get(key)
        return (t.default_value if t is not None else None), None
    keys = ["cmd", "batchspawner_singleuser_cmd", "req_prologue", "exec_prefix", "ip",
            "req_srun", "start_timeout"]
    out["values"] = {}
    for k in keys:
        v, where = value(k)
        if k == "cmd" and isinstance(v, str):
            v = [v]
        try:
            json.dumps(v)
        except TypeError:
            v = repr(v)
        out["values"][k] = {"value": v, "set_in": where}
    t = traits.get("ip")
    out["ip_class_default"] = t.default_value if t is not None else None
    users = set()
    for s in ("Authenticator",) + tuple(
            k for k in cfg if k.endswith("Authenticator") and k != "Authenticator"):
        for key in ("allowed_users", "admin_users"):
            if s in cfg and key in cfg[s]:
                try:
                    users.update(str(u) for u in cfg[s][key])
                except TypeError:
                    pass
    out["config_users"] = sorted(users)
except BaseException as e:
    out["error"] = "%s: %s" % (type(e).__name__, str(e)[:400])
print(json.dumps(out))
'''


def _hub_python(cfg: Config) -> Path | None:
    base = cfg.source.parent if cfg.source else None
    prog = resolve_command(cfg.hub.command, base)
    if prog is None:
        return None
    try:
        with open(prog, "rb") as f:
            first = f.readline(300).decode(errors="replace").strip()
    except OSError:
        return None
    if not first.startswith("#!"):
        return None
    interp = first[2:].split()
    if not interp:
        return None
    if Path(interp[0]).name == "env" and len(interp) > 1:
        found = shutil.which(interp[1], path=search_path())
        return Path(found) if found else None
    return Path(interp[0])


def spawner_probe(cfg: Config, py: Path | None = None) -> dict[str, Any]:
    """The admin's effective spawner settings, loaded in the hub's own Python."""
    py = py or _hub_python(cfg)
    if py is None:
        return {"error": f"cannot tell which Python runs {cfg.hub.command!r}"}
    cf = cfg.hub.config_file
    args = {"config_file": str(cf) if cf and cf.is_file() else ""}
    env = {k: v for k, v in os.environ.items()
           if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")}
    try:
        r = subprocess.run([str(py), "-c", _PROBE, json.dumps(args)], capture_output=True,
                           text=True, timeout=30, env=env, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as e:
        return {"error": f"{py}: {e}"}
    try:
        return dict(json.loads(r.stdout.strip().splitlines()[-1]))
    except (ValueError, IndexError):
        return {"error": f"{py} exited {r.returncode}: {(r.stderr or r.stdout)[-400:]}"}


def uses_slurm(probe: dict[str, Any]) -> bool:
    return SLURM_SPAWNER in (probe.get("mro") or [])


def _others_can(path: Path, uid: int | None, gids: set[int], want: int) -> bool:
    """Mode bits only: can a user (uid/gids; None: an arbitrary other user) do `want`?"""
    st = path.stat()
    if uid is not None and st.st_uid == uid:
        bits = (st.st_mode >> 6) & 7
    elif st.st_gid in gids:
        bits = (st.st_mode >> 3) & 7
    else:
        bits = st.st_mode & 7
    return bits & want == want


def unreadable_by(path: Path, user: str | None) -> str | None:
    """Why `user` (None: any unprivileged user) cannot run `path`; None when it can.

    Checks every folder on the way (search), the file (read + execute) and, for a script,
    its interpreter the same way; follows symlinks."""
    uid: int | None = None
    gids: set[int] = set()
    if user is not None:
        try:
            pw = pwd.getpwnam(user)
            uid = pw.pw_uid
            gids = set(os.getgrouplist(user, pw.pw_gid))
        except KeyError:
            pass
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
                if not _others_can(d, uid, gids, 1):
                    mode = stat.filemode(d.stat().st_mode)
                    return f"{d} ({mode}) cannot be entered, so {p} cannot be reached"
            except OSError as e:
                return f"{d}: {e.strerror}"
        if not _others_can(real, uid, gids, 5):
            return f"{real} ({stat.filemode(real.stat().st_mode)}) cannot be read and executed"
        try:
            with open(real, "rb") as f:
                first = f.readline(300)
        except OSError:
            first = b""
        if first.startswith(b"#!"):
            interp = first[2:].decode(errors="replace").split()
            if interp and interp[0].startswith("/"):
                todo.append(Path(interp[0]))
    return None


def _node_names(runner: Runner) -> list[str]:
    rc, out, _ = runner(["sinfo", "-h", "-N", "-o", "%N"], TIMEOUT_S)
    return sorted({n.strip() for n in out.split()} if rc == 0 else set())


def _is_loopback_host(host: str) -> bool:
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    import ipaddress

    addrs = {i[4][0] for i in infos}
    return bool(addrs) and all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addrs)


def doctor_findings(cfg: Config, *, probe: dict[str, Any] | None = None,
                    runner: Runner = run, path: str | None = None) -> list[Finding]:
    """Slurm traps, as doctor findings; [] when the hub does not use SlurmSpawner.

    probe: the spawner settings (default: `spawner_probe(cfg)`); runner and path: how
    commands are run and looked up (tests)."""
    from .doctor import Finding

    def f(id: str, severity: str, what: str, evidence: str = "", fix: str = "") -> Finding:
        return Finding(f"scheduler.{id}", GROUP, severity, what, evidence, fix)  # type: ignore[arg-type]

    probe = probe if probe is not None else spawner_probe(cfg)
    if probe.get("error"):
        return [f("spawner", "skipped", "Slurm checks: the spawner settings could not be read",
                  probe["error"])]
    if not uses_slurm(probe):
        return []
    vals = {k: v.get("value") for k, v in (probe.get("values") or {}).items()}
    where = {k: v.get("set_in") for k, v in (probe.get("values") or {}).items()}
    out: list[Finding] = [f("spawner", "ok", f"users' servers run as Slurm jobs ({probe['spawner']})")]

    # 1. the client commands, munge, the controller
    found = commands(path)
    missing = [c for c, p in found.items() if p is None]
    if missing:
        out.append(f("commands", "error", "Slurm client commands are missing on this host",
                     "not found: " + ", ".join(missing) + f" (searched {path or search_path()})",
                     "install the Slurm client (Debian: `apt install slurm-client`; RHEL: "
                     "`dnf install slurm`) with the cluster's slurm.conf in /etc/slurm"))
    else:
        out.append(f("commands", "ok", "sbatch, squeue, scancel, scontrol found",
                     ", ".join(str(p) for p in found.values())))
    m = munge(runner)
    out.append(f("munge", "ok", "munge works", m.detail) if m.ok else
               f("munge", "error", "munge does not work: Slurm cannot authenticate this host",
                 m.detail, "start munged (`systemctl enable --now munge`) with the cluster's "
                 "/etc/munge/munge.key (mode 0400, owner munge)"))
    if found.get("scontrol"):
        ctl = controller(runner)
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
    from .doctor import db_users  # lazily: hubsvc.doctor imports this module

    users = sorted(set(probe.get("config_users") or []) | set(db_users(cfg.paths.state_dir)))
    existing = []
    missing_users = []
    for u in users:
        try:
            pwd.getpwnam(u)
            existing.append(u)
        except KeyError:
            missing_users.append(u)
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
    ip_default = probe.get("ip_class_default")
    ip_val, ip_where = vals.get("ip"), where.get("ip")
    if ip_where and ip_val != ip_default:
        out.append(f("ip", "warning",
                     f"c.{ip_where}.ip = {ip_val!r} is ignored: batchspawner's start() resets "
                     f"ip to the class default {ip_default!r}",
                     f"spawner class {probe['spawner']}",
                     "subclass the spawner with `ip = Unicode(" + repr(ip_val) + ").tag("
                     "config=True)` and make it c.JupyterHub.spawner_class (see "
                     "etc/hubsvc/examples/slurm/jupyterhub_config.py)"))
    nodes = _node_names(runner) if shutil.which("sinfo", path=path or search_path()) else []
    remote = [n for n in nodes if not _is_loopback_host(n)]
    if remote:
        connect = cfg.hub.connect_url or cfg.hub.bind_url
        host = parse_endpoint(connect).host
        if parse_endpoint(connect).is_loopback or host in ("0.0.0.0", "::"):
            out.append(f("connect_url", "error",
                         "jobs on the compute nodes cannot reach the hub's API",
                         f"nodes {', '.join(remote[:5])}; servers are told to reach the hub "
                         f"at {connect}",
                         "set [hub] bind_url to an address on the cluster network (e.g. "
                         "http://0.0.0.0:8081) and [hub] connect_url to this head node's "
                         "name as the nodes resolve it"))
        eff_ip = str(ip_default if ip_where else ip_val or "")
        if eff_ip and _is_loopback_host(eff_ip):
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
