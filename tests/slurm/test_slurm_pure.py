"""hubsvc.slurm's parsing and reporting, with canned scheduler answers (no cluster)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hubsvc import host, slurm
from hubsvc.doctor import scheduler


def canned(answers: dict[str, tuple[int, str, str]]) -> slurm.Runner:
    def runner(argv: Sequence[str], timeout: float) -> host.Completed:
        rc, out, err = answers.get(argv[0], (127, "", f"{argv[0]}: not found"))
        return host.Completed(tuple(argv), rc, out, err)
    return runner


def test_jobs_parses_and_tells_gone_from_unknown() -> None:
    out = "7|PENDING|Resources|ann|n/a\n8|RUNNING|None|bob|node1\n"
    got = slurm.jobs(["7", "8", "9"], canned({"squeue": (0, out, "")}))
    assert got is not None and set(got) == {"7", "8"}
    assert got["7"].pending and got["7"].reason == "Resources" and got["7"].node == ""
    assert got["8"].running and got["8"].node == "node1"
    gone = canned({"squeue": (1, "", "slurm_load_jobs error: Invalid job id specified\n")})
    assert slurm.jobs(["9"], gone) == {}
    down = canned({"squeue": (1, "", "slurm_load_jobs error: Unable to contact slurm controller")})
    assert slurm.jobs(["9"], down) is None
    assert slurm.jobs(["x; rm -rf /"], canned({})) == {}  # ids are digits only


def test_controller_up_and_down() -> None:
    up = canned({"scontrol": (0, "Slurmctld(primary) at vm is UP\n", "")})
    assert slurm.controller(up).ok
    down = canned({"scontrol": (1, "Slurmctld(primary) at vm is DOWN\n", "")})
    assert not slurm.controller(down).ok and "DOWN" in slurm.controller(down).detail
    assert not slurm.controller(canned({})).ok


def sj(state: str, reason: str = "None", user: str = "ann") -> slurm.ServerJob:
    return slurm.ServerJob(user, "", "7", "pending:spawn", state, reason)


def test_status_block_and_lines() -> None:
    block = slurm.scheduler_status([sj("PENDING", "Resources"), sj("RUNNING", user="bob"),
                                    sj("GONE", "", user="cy")])
    assert block["jobs"] == 3 and block["running"] == 1
    assert [p["user"] for p in block["pending"]] == ["ann"]
    assert [o["user"] for o in block["other"]] == ["cy"]
    text = "\n".join(slurm.status_lines(block))
    assert "ann: job 7 PENDING (Resources)" in text and "not a hub failure" in text
    assert "cy: job 7 GONE" in text


def test_pending_verdict() -> None:
    assert slurm.pending_verdict(None) is None
    assert slurm.pending_verdict(sj("RUNNING")) is None
    what, fix = slurm.pending_verdict(sj("PENDING", "Priority")) or ("", "")
    assert "higher priority" in what and "start_timeout" in fix


def test_unreadable_by(open_tmp: Path) -> None:
    d = open_tmp / "env"
    (d / "bin").mkdir(parents=True)
    prog = d / "bin" / "tool"
    prog.write_text("#!/bin/sh\n")
    prog.chmod(0o755)
    for p in (d, d / "bin"):
        p.chmod(0o755)
    assert scheduler.unreadable_by(prog, None) is None
    d.chmod(0o700)
    why = scheduler.unreadable_by(prog, None)
    assert why is not None and str(d) in why and "drwx------" in why
    d.chmod(0o755)
    prog.chmod(0o700)
    assert "cannot be read and executed" in (scheduler.unreadable_by(prog, None) or "")
    assert "does not exist" in (scheduler.unreadable_by(d / "nope", None) or "")


class FakeClient:
    """Stands in for httpx.AsyncClient: the hub's /users answer."""

    def __init__(self, users: list[dict[str, Any]]):
        self.users = users

    async def get(self, url: str, **kw: Any) -> Any:
        users = self.users

        class R:
            def raise_for_status(self) -> None:
                pass

            def json(self) -> Any:
                return {"items": users, "_pagination": {"next": None}}
        return R()


def test_scheduler_watch_publishes_only_with_jobs() -> None:
    from hubsvc.config import parse

    cfg = parse({})
    published: dict[str, object] = {}
    changes: list[int] = []
    runner = canned({"squeue": (0, "7|PENDING|Resources|ann|n/a\n", "")})
    none = slurm.SchedulerWatch(FakeClient([{"name": "ann", "servers": {}}]), cfg, "t",  # type: ignore[arg-type]
                                published, runner=runner, on_change=lambda: changes.append(1))
    asyncio.run(none())
    assert published == {} and changes == []
    users = [{"name": "ann", "servers": {"": {"pending": "spawn", "ready": False,
                                              "state": {"job_id": "7"}}}}]
    w = slurm.SchedulerWatch(FakeClient(users), cfg, "t", published, runner=runner,  # type: ignore[arg-type]
                             on_change=lambda: changes.append(1))
    asyncio.run(w())
    assert published["scheduler"]["pending"][0]["reason"] == "Resources"  # type: ignore[index]
    assert changes == [1]
    asyncio.run(w())  # within interval_s: nothing asked, nothing changed
    assert changes == [1]


def probe_of(ip_default: str, ip_set: str | None = None) -> dict[str, Any]:
    values = {
        "cmd": {"value": ["/usr/bin/true"], "set_in": "Spawner"},
        "batchspawner_singleuser_cmd": {"value": "/usr/bin/true", "set_in": "SlurmSpawner"},
        "req_prologue": {"value": "", "set_in": None},
        "exec_prefix": {"value": "", "set_in": "SlurmSpawner"},
        "ip": {"value": ip_set or ip_default, "set_in": "SlurmSpawner" if ip_set else None},
        "start_timeout": {"value": 300, "set_in": "Spawner"},
    }
    return {"error": None, "spawner": {"class": "site.Spawner", "mro": [scheduler.SLURM_SPAWNER]},
            "spawner_settings": {"values": values, "ip_class_default": ip_default},
            "config_users": []}


def test_doctor_remote_nodes_need_reachable_addresses(monkeypatch: Any) -> None:
    from hubsvc.config import parse

    # the canned runner answers for sinfo: it need not be installed on this machine
    monkeypatch.setattr(slurm.shutil, "which", lambda name, path=None: f"/usr/bin/{name}")

    runner = canned({"sinfo": (0, "node-a.invalid\nnode-b.invalid\n", ""),
                     "scontrol": (0, "Slurmctld(primary) at ctl is UP\n", ""),
                     "munge": (1, "", "munge: Error: Failed to access socket")})
    loopback = parse({})  # hub on 127.0.0.1, no connect_url
    found = {f.id: f for f in scheduler.findings(loopback, probe_of("127.0.0.1"),
                                                     runner=runner)}
    assert found["scheduler.connect_url"].severity == "error"
    assert "node-a.invalid" in found["scheduler.connect_url"].evidence
    assert found["scheduler.server_ip"].severity == "error"
    reachable = parse({"hub": {"bind_url": "http://0.0.0.0:8081",
                               "connect_url": "http://head.invalid:8081"}})
    found = {f.id: f for f in scheduler.findings(reachable, probe_of("0.0.0.0"),
                                                     runner=runner)}
    assert "scheduler.connect_url" not in found and "scheduler.server_ip" not in found
    # c.SlurmSpawner.ip set but the class default wins: warned, and judged by the default
    found = {f.id: f for f in scheduler.findings(
        reachable, probe_of("0.0.0.0", ip_set="10.0.0.5"), runner=runner)}
    assert found["scheduler.ip"].severity == "warning"
    assert "scheduler.server_ip" not in found


def test_cluster_hosts_line_is_reversible(tmp_path: Path, monkeypatch: Any) -> None:
    from . import cluster as cluster_mod

    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.1 localhost\n10.0.0.9 other\n")
    monkeypatch.setattr(cluster_mod, "HOSTS", hosts)
    c = cluster_mod.Cluster(host="hubsvc-no-such-host-7")
    c._hosts()
    assert hosts.read_text().splitlines()[-1].startswith("127.0.0.1 hubsvc-no-such-host-7 #")
    c._undo_hosts()
    assert hosts.read_text() == "127.0.0.1 localhost\n10.0.0.9 other\n"


class CountingClient:
    """The hub's /users answer, and its count of active users (one row) when asked."""

    def __init__(self, users: list[dict[str, Any]]):
        self.users = users
        self.asked: list[str] = []

    async def get(self, url: str, **kw: Any) -> Any:
        params = kw.get("params") or {}
        counting = params.get("limit") == 1 or url.endswith("&limit=1")
        self.asked.append("count" if counting else "list")
        users = self.users

        class R:
            status_code = 200

            def raise_for_status(self) -> None:
                pass

            def json(self) -> Any:
                if counting:
                    return {"items": users[:1], "_pagination": {"total": len(users)}}
                return {"items": users, "_pagination": {"next": None}}
        return R()


def test_scheduler_watch_without_job_ids_asks_only_for_a_count_until_it_changes() -> None:
    from hubsvc.config import parse

    users = [{"name": f"u{i}", "servers": {"": {"ready": True, "state": {}}}} for i in range(3)]
    client = CountingClient(users)
    w = slurm.SchedulerWatch(client, parse({}), "t", {}, interval_s=0,  # type: ignore[arg-type]
                             runner=canned({}))
    w.QUIET_COUNT_S = 0
    for _ in range(4):
        asyncio.run(w())
    assert client.asked == ["list", "count", "count", "count"]
    users.append({"name": "batch", "servers": {"": {"pending": "spawn", "ready": False,
                                                    "state": {"job_id": "9"}}}})
    asyncio.run(w())  # one more active user: listed again, and its job found
    assert client.asked[4:] == ["count", "list"]
    assert w._quiet is None  # with a job id, the next check lists again (no count)
