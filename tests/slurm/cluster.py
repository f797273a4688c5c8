"""A one-node Slurm cluster on loopback for tests and benchmarks (Debian 12 packages).

`Cluster.up()` installs what is missing (apt: slurm-wlm, munge, sudo), makes the host name
resolve to 127.0.0.1 (a marked /etc/hosts line, removed again), writes /etc/slurm/slurm.conf
(an existing one is moved aside and put back), starts munged, slurmctld and slurmd in the
foreground as our own children, creates test Unix users, and waits until the node is idle.
`Cluster.down()` ends exactly the daemons it started, by pid, and undoes every change.

Traps this avoids, measured by hand (docs/scaling-out.md): no cgroups here
(proctrack/linuxproc, task/none), no accounting, CommunicationParameters keep every
daemon off the network, and the package scripts start nothing without systemd.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.integration.hubsvc_harness import free_port

APT_PACKAGES = ("slurm-wlm", "munge", "sudo")
SLURM_CONF = Path("/etc/slurm/slurm.conf")
HOSTS = Path("/etc/hosts")
HOSTS_MARK = "# hubsvc slurm tests (removed at the end of the session)"
MUNGE_SOCKET = Path("/run/munge/munge.socket.2")
WORK = Path("/var/lib/hubsvc-test/slurm")
CONF_MARK = "# hubsvc slurm test cluster"

CONF_TEMPLATE = """{mark}
ClusterName=hubsvctest
SlurmctldHost={host}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CommunicationParameters=NoCtldInAddrAny,NoInAddrAny
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
StateSaveLocation={work}/ctld
SlurmdSpoolDir={work}/spool
SlurmctldPidFile={work}/slurmctld.pid
SlurmdPidFile={work}/slurmd.pid
SlurmctldLogFile={work}/slurmctld.log
SlurmdLogFile={work}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
ReturnToService=2
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerParameters=sched_interval=2
MessageTimeout=10
SlurmctldTimeout=30
SlurmdTimeout=60
KillWait=5
InactiveLimit=0
MinJobAge=30
{node_line} State=UNKNOWN
PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP
"""


def run(argv: list[str], timeout: float = 30, check: bool = True,
        **kw: object) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kw)  # type: ignore[call-overload]
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} -> {r.returncode}: {r.stderr.strip() or r.stdout.strip()}")
    return r


def _installed(pkg: str) -> bool:
    r = run(["dpkg-query", "-W", "-f=${Status}", pkg], check=False)
    return "install ok installed" in r.stdout


def _wait(pred: object, timeout: float, what: str, step: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():  # type: ignore[operator]
            return
        time.sleep(step)
    raise RuntimeError(f"{what}: not within {timeout:g}s")


@dataclass
class Cluster:
    users: tuple[str, ...] = ("hsvcs1", "hsvcs2", "hsvcs3")
    host: str = field(default_factory=lambda: socket.gethostname().split(".")[0])
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    created_users: list[str] = field(default_factory=list)
    hosts_edited: bool = False
    conf_backup: Path | None = None
    conf_written: bool = False
    munge_dir_created: bool = False
    logs: list[object] = field(default_factory=list)

    # ---- bring-up -----------------------------------------------------------------
    def up(self) -> Cluster:
        if os.geteuid() != 0:
            raise PermissionError("the Slurm test cluster needs root")
        try:
            self._install()
            self._hosts()
            self._munge()
            self._conf()
            self._users()
            self._slurm()
        except BaseException:
            self.down()
            raise
        return self

    def _install(self) -> None:
        missing = [p for p in APT_PACKAGES if not _installed(p)]
        if not missing:
            return
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        r = run(["apt-get", "install", "-y", "-q", *missing], timeout=600, check=False, env=env)
        if r.returncode != 0:
            run(["apt-get", "update", "-q"], timeout=300, env=env)
            run(["apt-get", "install", "-y", "-q", *missing], timeout=600, env=env)

    def _hosts(self) -> None:
        """NoCtldInAddrAny binds to what the host name resolves to: make that loopback."""
        try:
            addr = socket.gethostbyname(self.host)
        except OSError:
            addr = ""
        if addr == "127.0.0.1":
            return
        text = HOSTS.read_text()
        HOSTS.write_text(text.rstrip("\n") + f"\n127.0.0.1 {self.host} {HOSTS_MARK}\n")
        self.hosts_edited = True

    def _munge(self) -> None:
        if self._munge_ok():
            return  # a munged already runs: use it, do not own it
        pw = pwd.getpwnam("munge")
        if not Path("/etc/munge/munge.key").exists():
            run(["/usr/sbin/mungekey", "--create"], check=False)
            with contextlib.suppress(OSError):
                os.chown("/etc/munge/munge.key", pw.pw_uid, pw.pw_gid)
        if not MUNGE_SOCKET.parent.exists():
            MUNGE_SOCKET.parent.mkdir(mode=0o755, parents=True)
            self.munge_dir_created = True
        os.chown(MUNGE_SOCKET.parent, pw.pw_uid, pw.pw_gid)
        for d in ("/var/log/munge", "/var/lib/munge"):
            Path(d).mkdir(parents=True, exist_ok=True)
            os.chown(d, pw.pw_uid, pw.pw_gid)
        self._spawn("munged", ["/usr/sbin/munged", "--foreground"], user="munge", group="munge")
        _wait(self._munge_ok, 15, "munged answering")

    @staticmethod
    def _munge_ok() -> bool:
        if not MUNGE_SOCKET.exists():
            return False
        try:
            cred = run(["munge", "-n"], timeout=5, check=False)
            if cred.returncode != 0:
                return False
            return run(["unmunge"], timeout=5, check=False, input=cred.stdout).returncode == 0
        except (OSError, subprocess.TimeoutExpired):
            return False

    def _conf(self) -> None:
        if shutil.which("scontrol") and run(["scontrol", "ping"], check=False,
                                            timeout=10).stdout.count("UP"):
            raise RuntimeError("a Slurm controller is already running here; not touching it")
        WORK.mkdir(parents=True, exist_ok=True)
        for sub in ("ctld", "spool"):
            shutil.rmtree(WORK / sub, ignore_errors=True)
            (WORK / sub).mkdir()
        node_line = run(["slurmd", "-C"]).stdout.splitlines()[0].strip()
        text = CONF_TEMPLATE.format(mark=CONF_MARK, host=self.host, work=WORK,
                                    ctld_port=free_port(), slurmd_port=free_port(),
                                    node_line=node_line)
        if SLURM_CONF.exists() and CONF_MARK not in SLURM_CONF.read_text():
            self.conf_backup = SLURM_CONF.with_name("slurm.conf.hubsvc-test-saved")
            SLURM_CONF.rename(self.conf_backup)
        SLURM_CONF.parent.mkdir(parents=True, exist_ok=True)
        SLURM_CONF.write_text(text)
        self.conf_written = True

    def _users(self) -> None:
        for u in self.users:
            try:
                pwd.getpwnam(u)
            except KeyError:
                run(["useradd", "--create-home", "--shell", "/bin/bash", "--comment",
                     "hubsvc slurm test user", u])
                self.created_users.append(u)

    def _slurm(self) -> None:
        self._spawn("slurmctld", ["/usr/sbin/slurmctld", "-D", "-i"])
        _wait(lambda: "UP" in run(["scontrol", "ping"], check=False, timeout=10).stdout, 30,
              "slurmctld answering scontrol ping")
        self._spawn("slurmd", ["/usr/sbin/slurmd", "-D"])
        _wait(lambda: self.node_state() in ("idle", "mix", "alloc"), 45, "node idle")

    def _spawn(self, name: str, argv: list[str], user: str | None = None,
               group: str | None = None) -> None:
        WORK.mkdir(parents=True, exist_ok=True)
        log = open(WORK / f"{name}.out", "ab")  # closed in down()
        self.logs.append(log)
        self.procs[name] = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log,
                                            stderr=subprocess.STDOUT, start_new_session=True,
                                            user=user, group=group, extra_groups=[] if user else None)

    def _undo_hosts(self) -> None:
        if self.hosts_edited:
            lines = HOSTS.read_text().splitlines(keepends=True)
            HOSTS.write_text("".join(ln for ln in lines if HOSTS_MARK not in ln))
            self.hosts_edited = False

    # ---- queries ------------------------------------------------------------------
    def node_state(self) -> str:
        r = run(["sinfo", "-h", "-N", "-o", "%t"], check=False, timeout=10)
        return r.stdout.strip().rstrip("*~#")

    def jobs(self, user: str | None = None) -> list[dict[str, str]]:
        """squeue rows: id, state, user, name, reason."""
        argv = ["squeue", "-h", "-o", "%i|%T|%u|%j|%r"]
        if user:
            argv += ["-u", user]
        r = run(argv, check=False, timeout=10)
        out = []
        for line in r.stdout.splitlines():
            parts = line.split("|")
            if len(parts) == 5:
                out.append(dict(zip(("id", "state", "user", "name", "reason"), parts, strict=True)))
        return out

    def cancel_all(self) -> None:
        for u in self.users:
            run(["scancel", "-u", u], check=False, timeout=10)
        _wait(lambda: not any(j["user"] in self.users for j in self.jobs()), 30,
              "test users' jobs gone", step=0.5)

    def job_pids(self) -> list[int]:
        """Processes of the test users (their jobs), for a last-resort cleanup."""
        uids = set()
        for u in self.users:
            with contextlib.suppress(KeyError):
                uids.add(pwd.getpwnam(u).pw_uid)
        out = []
        for p in Path("/proc").iterdir():
            if p.name.isdigit():
                with contextlib.suppress(OSError):
                    if p.stat().st_uid in uids:
                        out.append(int(p.name))
        return out

    # ---- teardown -----------------------------------------------------------------
    def down(self) -> None:
        started_slurmd = "slurmd" in self.procs
        if "slurmctld" in self.procs:
            with contextlib.suppress(Exception):
                self.cancel_all()
        for name in ("slurmd", "slurmctld", "munged"):
            p = self.procs.pop(name, None)
            if p is None or p.poll() is not None:
                continue
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
        # job steps our slurmd left behind when it had to be killed: the test users' processes
        for pid in self.job_pids() if started_slurmd else []:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for log in self.logs:
            with contextlib.suppress(Exception):
                log.close()  # type: ignore[attr-defined]
        for u in self.created_users:
            run(["userdel", "--remove", u], check=False)
        self.created_users.clear()
        if self.conf_written:
            SLURM_CONF.unlink(missing_ok=True)
            self.conf_written = False
        if self.conf_backup is not None:
            self.conf_backup.rename(SLURM_CONF)
            self.conf_backup = None
        self._undo_hosts()
        if self.munge_dir_created:
            shutil.rmtree(MUNGE_SOCKET.parent, ignore_errors=True)
            self.munge_dir_created = False
