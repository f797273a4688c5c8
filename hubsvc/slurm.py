"""Slurm-specific knowledge: users' servers as Slurm jobs (batchspawner's SlurmSpawner).

Two kinds of helpers, none of which changes anything (the doctor's checks of a Slurm
setup are hubsvc.doctor.scheduler):
- the head node's view of the scheduler: `commands()`, `controller()` (`scontrol ping`),
  `munge()` (a credential round trip), `job()` (`squeue` for one job);
- the hub's view of users' jobs: `server_jobs()` reads each server's spawner state (its
  job id) through the hub's API with hubsvc's token and asks Slurm what each job is doing,
  so `hubsvc status` and `hubsvc probe-spawn` can say "PENDING in the queue (Resources)"
  instead of calling a queued job a failed spawn (`scheduler_status()`, `pending_verdict()`).
"""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from . import host
from .commands import search_path
from .config import Config
from .hubapi import api_url, count_users, iter_users
from .loopback import Client as LoopbackClient
from .probes import Result

if TYPE_CHECKING:
    import httpx


COMMANDS = ("sbatch", "squeue", "scancel", "scontrol")
TIMEOUT_S = 10.0

# How Slurm's commands are run: (argv, timeout) -> what the command did (tests pass
# canned answers).
Runner = Callable[[Sequence[str], float], host.Completed]


def run(argv: Sequence[str], timeout: float = TIMEOUT_S) -> host.Completed:
    return host.run(argv, timeout)


# ---- the scheduler, from the head node ------------------------------------------------------
def commands(path: str | None = None) -> dict[str, str | None]:
    """Where each Slurm client command batchspawner runs is found (None: missing)."""
    p = path if path is not None else search_path()
    return {c: shutil.which(c, path=p) for c in COMMANDS}


def controller(runner: Runner = run) -> Result:
    """`scontrol ping`: "Slurmctld(primary) at HOST is UP"."""
    r = runner(["scontrol", "ping"], TIMEOUT_S)
    text = (r.out.strip() or r.err.strip() or f"exit status {r.rc}").replace("\n", "; ")
    return Result(r.ok and " is UP" in r.out and "DOWN" not in r.out, text)


def munge(runner: Runner = run) -> Result:
    """Encode and decode a credential with the local munged."""
    cred = runner(["munge", "-n"], TIMEOUT_S)
    if not cred.ok or not cred.out.strip():
        return Result(False, (cred.err.strip() or f"munge -n: exit status {cred.rc}").splitlines()[-1])
    r = host.run(["unmunge"], TIMEOUT_S, input=cred.out)
    if not r.ok:
        return Result(False, (r.err.strip() or f"unmunge: exit status {r.rc}"))
    return Result(True, "munge -n | unmunge: Success")


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
    r = runner(["squeue", "-h", "-j", ",".join(ids), "-o", "%i|%T|%r|%u|%B"], TIMEOUT_S)
    out = r.out
    if not r.ok:
        # one unknown id is an error for squeue; several are simply not listed
        return {} if "Invalid job id" in r.err else None
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
    url = api_url(cfg, f"users/{quote(user, safe='')}")
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
    (QUIET_COST_FACTOR times its duration: ~0.03 % of the hub's time), which finds a
    user's second server, and a batch server started as another stopped between two counts
    (the count unchanged). Worst case for a new job to show in `hubsvc status` while quiet:
    the next listing, 60 s, or ~15 min on a hub of 1,000 active users. Only the status view
    waits; no decision hubsvc takes depends on it."""

    COST_FACTOR = 100.0
    QUIET_COUNT_S = 30.0  # the count, while quiet: a newly active batch user shows within this
    QUIET_LISTING_S = 60.0
    QUIET_COST_FACTOR = 3000.0

    __name__ = "scheduler_jobs"

    def __init__(self, client: httpx.AsyncClient, cfg: Config, hub_token: str,
                 status: dict[str, object], interval_s: float = 10.0, runner: Runner = run,
                 on_change: Callable[[], object] | None = None,
                 count_client: LoopbackClient | None = None):
        """`count_client`: a kept-open loopback client for the quiet count (asked for as
        long as hubsvc runs); `client` otherwise."""
        self.client, self.cfg, self.token = client, cfg, hub_token
        self.count_client = count_client
        self.status, self.interval_s, self.runner = status, interval_s, runner
        self.on_change = on_change
        self._next = -1e9
        self._quiet: tuple[int, float] | None = None  # (active users, list again at)

    async def _still_quiet(self, now: float) -> bool:
        """No job id at the last listing, and the hub's count of active users the same."""
        if self._quiet is None or now >= self._quiet[1]:
            return False
        return await count_users(self.count_client or self.client, self.cfg, self.token,
                                 "active") == self._quiet[0]

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
