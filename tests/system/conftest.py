"""A real systemd 252 for the system tests: a Debian 12 root booted with systemd-nspawn.

The root is built once by tests/system/mkroot.sh and cached outside git
(/var/cache/hubsvc-test/bookworm); each test session boots it with --volatile=overlay,
so every session starts from the same clean root and leaves it untouched. The container
has a private network (only its own loopback); the tests reach inside with nsenter.

Inputs (the Makefile's test-system target sets them; without them the fixture runs
`make -f Makefile.system rpm-pair system-root` itself):
  HUBSVC_RPM            the RPM to install (release N)
  HUBSVC_RPM_UPGRADE    the same tree as release N+1, for the upgrade test
  HUBSVC_SYSTEM_ROOT    the Debian 12 root
`machine` is one container for the session; `booted(name, launcher)` boots more (the
admin scenario in test_service.py runs once per launcher, each in a fresh container).
Tests skip only when this cannot work at all here (not root, no nspawn) — under CI=true
that is a failure instead.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
OUT = REPO / "test-output" / "system"
DEFAULT_ROOT = "/var/cache/hubsvc-test/bookworm"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
BUILD_TIMEOUT_S = 1200
BOOT_TIMEOUT_S = 60
INSIDE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.system)


def _impossible(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"system tests cannot run: {reason}", pytrace=False)
    pytest.skip(reason)


def wait_until(check: Callable[[], Any], timeout: float, what: str, interval: float = 0.5) -> Any:
    """Call check() until it returns something truthy; fail after timeout seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = check()
        except Exception as e:  # a probe may fail while things restart
            last = e
        if last and not isinstance(last, Exception):
            return last
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}; last: {last!r}")
        time.sleep(interval)


@dataclass
class Proc:
    pid: int
    ppid: int
    user: str
    args: str


class Machine:
    """The booted container: run commands inside, talk HTTP on its loopback."""

    def __init__(self, nspawn: subprocess.Popen, leader: int, log: Path, launcher: str | None, name: str):
        # how hubsvc runs CHP and the hub: "process", "systemd", or None (the default)
        self.launcher = launcher
        self.name = name
        self.nspawn = nspawn
        self.leader = leader
        self.log = log
        self.cookies = OUT / f"cookies-{name}.txt"
        self.public = "http://127.0.0.1:8000"
        self.rpm = ""  # paths inside the container
        self.rpm_upgrade = ""

    # -- commands ------------------------------------------------------------------------
    def run(self, cmd: str, timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess:
        """Run a shell command inside the container (all its namespaces), as root."""
        argv = [
            "nsenter",
            "-t",
            str(self.leader),
            "-a",
            "env",
            "-i",
            f"PATH={INSIDE_PATH}",
            "LANG=C.UTF-8",
            "HOME=/root",
            "/bin/sh",
            "-c",
            cmd,
        ]
        p = _run_bounded(argv, timeout, what=f"inside: {cmd!r}")
        if check and p.returncode != 0:
            raise AssertionError(
                f"inside: {cmd!r} exited {p.returncode}\nstdout: {p.stdout[-3000:]}\n"
                f"stderr: {p.stderr[-3000:]}"
            )
        return p

    def out(self, cmd: str, timeout: float = 60) -> str:
        return self.run(cmd, timeout=timeout).stdout.strip()

    def client(self, *args: str, timeout: float = 120) -> dict:
        """tests/system/hubclient.py in the container's network namespace."""
        argv = ["nsenter", "-t", str(self.leader), "-n", sys.executable, str(HERE / "hubclient.py"), *args]
        env = {"PATH": os.environ.get("PATH", INSIDE_PATH), "HUBCLIENT_COOKIES": str(self.cookies)}
        p = _run_bounded(argv, timeout, what=f"hubclient {args}", env=env)
        assert p.returncode == 0, p.stderr
        return json.loads(p.stdout)

    # -- what systemd and hubsvc say -----------------------------------------------------
    def prop(self, unit: str, name: str) -> str:
        return self.out(f"systemctl show -p {name} --value {shlex.quote(unit)}")

    def main_pid(self, unit: str) -> int:
        return int(self.prop(unit, "MainPID") or 0)

    def status(self) -> dict:
        p = self.run("hubsvc status --json", check=False, timeout=30)
        return json.loads(p.stdout) if p.stdout.strip().startswith("{") else {}

    def health_through_proxy(self) -> int:
        return self.client("get", f"{self.public}/hub/health", timeout=30)["status"]

    def user_status(self, user: str) -> int:
        return self.client("user-status", self.public, user, timeout=30)["status"]

    def procs(self) -> list[Proc]:
        text = self.out("ps -e -o pid=,ppid=,user:20=,args=")
        res = []
        for line in text.splitlines():
            parts = line.split(None, 3)
            if len(parts) == 4:
                res.append(Proc(int(parts[0]), int(parts[1]), parts[2], parts[3]))
        return res

    def chp_procs(self) -> list[Proc]:
        return [p for p in self.procs() if "configurable-http-proxy" in p.args and "node" in p.args]

    def hub_procs(self) -> list[Proc]:
        return [
            p
            for p in self.procs()
            if "/opt/hubsvc/bin/jupyterhub " in p.args + " " and "singleuser" not in p.args
        ]

    def supervisor_procs(self) -> list[Proc]:
        return [p for p in self.procs() if "hubsvc run" in p.args]

    @property
    def units(self) -> list[str]:
        """The units hubsvc's own processes run in (with the launcher the tests chose)."""
        if self.launcher == "systemd":
            return ["hubsvc.service", "hubsvc-proxy.service", "hubsvc-hub.service"]
        return ["hubsvc.service"]

    def component_unit(self, component: str) -> str:
        return f"hubsvc-{component}.service" if self.launcher == "systemd" else "hubsvc.service"

    def journal(self, unit: str | None = None, since_cursor: str | None = None) -> list[dict]:
        """journalctl -o json for one unit, or for all of hubsvc's units (after a cursor)."""
        cur = f"--after-cursor={shlex.quote(since_cursor)}" if since_cursor else ""
        units = " ".join(f"-u {u}" for u in ([unit] if unit else self.units))
        text = self.out(f"journalctl {units} -o json --no-pager {cur}", timeout=60)
        entries = [json.loads(line) for line in text.splitlines() if line.strip()]
        for e in entries:
            # journalctl gives a message with control characters (colour codes) as bytes.
            if isinstance(e.get("MESSAGE"), list):
                e["MESSAGE"] = bytes(e["MESSAGE"]).decode("utf-8", "replace")
        return entries

    def cursor(self) -> str:
        text = self.out("journalctl -n 1 -o json --no-pager")
        return json.loads(text.splitlines()[-1])["__CURSOR"] if text else ""


def _run_bounded(
    argv: list[str], timeout: float, what: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """Run argv in a session of its own (a `kill 0` or a stop signal inside cannot reach
    pytest) and, past timeout, kill its whole process group and fail."""
    proc = subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
        stdin=subprocess.DEVNULL,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        raise AssertionError(f"{what} did not finish in {timeout} s") from None
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


def _find_leader(nspawn_pid: int, timeout: float) -> int:
    """The container's PID 1: the child of the nspawn process that runs systemd."""

    def child() -> int | None:
        for d in Path("/proc").iterdir():
            if not d.name.isdigit():
                continue
            try:
                stat = (d / "stat").read_text()
            except OSError:
                continue
            comm = stat[stat.index("(") + 1 : stat.rindex(")")]
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            # nspawn's helper children come and go; PID 1 is the one running systemd.
            if ppid == nspawn_pid and comm == "systemd":
                return int(d.name)
        return None

    return wait_until(child, timeout, "the container's init process", interval=0.1)


def _ensure_inputs() -> tuple[Path, Path, Path]:
    rpm = os.environ.get("HUBSVC_RPM")
    upgrade = os.environ.get("HUBSVC_RPM_UPGRADE")
    root = os.environ.get("HUBSVC_SYSTEM_ROOT", DEFAULT_ROOT)
    if not (rpm and upgrade):
        # Build them the way the Makefile does (a no-op when up to date).
        t0 = time.monotonic()
        p = subprocess.run(
            [
                "make",
                "--no-print-directory",
                "-f",
                "Makefile.system",
                "rpm-pair",
                "system-root",
                f"SYSTEM_ROOT={root}",
            ],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=BUILD_TIMEOUT_S,
        )
        (OUT / "build.log").write_text(p.stdout + p.stderr)
        if p.returncode != 0:
            pytest.fail(
                f"building the RPMs / system root failed (see {OUT / 'build.log'}):\n{p.stderr[-2000:]}",
                pytrace=False,
            )
        print(f"built RPMs and system root in {time.monotonic() - t0:.0f} s")
        version = subprocess.run(
            ["sed", "-n", r's/^version *= *"\(.*\)"/\1/p', "pyproject.toml"],
            cwd=REPO,
            capture_output=True,
            text=True,
        ).stdout.split()[0]
        arch = os.uname().machine
        rpm = str(REPO / "dist" / f"hubsvc-{version}-1.{arch}.rpm")
        upgrade = str(REPO / "dist" / f"hubsvc-{version}-2.{arch}.rpm")
    for f in (rpm, upgrade):
        if not Path(f).is_file():
            pytest.fail(f"no RPM at {f}", pytrace=False)
    if not Path(root, "usr/lib/systemd/systemd").exists():
        pytest.fail(f"no system root at {root}: run `make system-root`", pytrace=False)
    return Path(rpm).resolve(), Path(upgrade).resolve(), Path(root)


_INPUTS: tuple[Path, Path, Path] | None = None


def _inputs() -> tuple[Path, Path, Path]:
    """The RPMs and the root, checked (and built if not given) once per session."""
    global _INPUTS
    if sys.platform != "linux" or os.geteuid() != 0:
        _impossible("system tests need Linux and root (systemd-nspawn, nsenter)")
    for tool in ("systemd-nspawn", "nsenter", "debootstrap"):
        if shutil.which(tool) is None and not IN_CI:
            pytest.skip(f"{tool} is not installed (make system-deps installs it)")
    if _INPUTS is None:
        OUT.mkdir(parents=True, exist_ok=True)
        rpm, upgrade, root = _ensure_inputs()
        if rpm.parent != upgrade.parent:
            pytest.fail("both RPMs must be in one folder", pytrace=False)
        _INPUTS = (rpm, upgrade, root)
    return _INPUTS


def package_has(rpm: Path, path: str) -> bool:
    p = subprocess.run(["rpm", "-qpl", str(rpm)], capture_output=True, text=True, timeout=120)
    return path in p.stdout.split()


@contextlib.contextmanager
def booted(name: str, launcher: str | None = None) -> Iterator[Machine]:
    """Boot a fresh container (its own overlay on the cached root) and power it off after.

    name labels its logs in test-output/system/; launcher is the [supervisor] launcher the
    tests set after installing ("process" / "systemd"), None for the package's default.
    """
    rpm, upgrade, root = _inputs()
    log = OUT / f"nspawn-{name}.log"
    t0 = time.monotonic()
    nspawn = subprocess.Popen(
        [
            "systemd-nspawn",
            "--quiet",
            "-D",
            str(root),
            "--volatile=overlay",
            "--boot",
            "--private-network",
            "--register=no",
            "--keep-unit",
            f"--bind-ro={rpm.parent}:/mnt/dist",
            "--console=pipe",
        ],
        stdin=subprocess.DEVNULL,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    m: Machine | None = None
    try:
        leader = _find_leader(nspawn.pid, 20)
        m = Machine(nspawn, leader, log, launcher, name)
        m.rpm = f"/mnt/dist/{rpm.name}"
        m.rpm_upgrade = f"/mnt/dist/{upgrade.name}"

        # Until systemd listens on its socket, systemctl fails at once: ask again, bounded.
        def is_up() -> str | None:
            p = m.run("timeout 10 systemctl is-system-running --wait", check=False, timeout=20)
            state = p.stdout.strip()
            return state if state in ("running", "degraded") else None

        try:
            state = wait_until(is_up, BOOT_TIMEOUT_S, "the container to boot", interval=0.2)
        except AssertionError:
            state = "not booted"
        if state not in ("running", "degraded"):
            pytest.fail(
                f"the container's systemd did not finish booting: {state!r} (see {log})", pytrace=False
            )
        print(f"[{name}] booted {m.out('systemctl --version | head -1')} in {time.monotonic() - t0:.1f} s")
        if m.cookies.exists():
            m.cookies.unlink()
        yield m
    finally:
        if m is not None:
            # Keep the evidence for a failed run.
            with contextlib.suppress(Exception):
                (OUT / f"journal-{name}.txt").write_text(
                    m.run("journalctl -b --no-pager -o short-precise", check=False, timeout=60).stdout
                )
        _stop(nspawn)


@pytest.fixture(scope="session")
def machine() -> Iterator[Machine]:
    """One booted container for the session, the package's default launcher."""
    with booted("session") as m:
        yield m


def _stop(nspawn: subprocess.Popen) -> None:
    """Power the container off (nspawn turns SIGTERM into a clean shutdown), bounded."""
    if nspawn.poll() is not None:
        return
    nspawn.send_signal(signal.SIGTERM)
    try:
        nspawn.wait(timeout=30)
        return
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(nspawn.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    nspawn.wait(timeout=10)
