"""Questions about this host, each answered once: processes (/proc), local accounts,
permission bits, whether an address is this host's, what systemd says, running a
command with a timeout, the environment children get, a script's interpreter.

Nothing here changes the system, and nothing imports more than the standard library:
`hubsvc run` reaches this module before it starts anything.
"""

from __future__ import annotations

import errno
import grp
import ipaddress
import os
import pwd
import shlex
import shutil
import signal
import socket
import stat
import subprocess
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")

# Variables a child must not inherit from hubsvc's own environment: systemd's notify and
# socket-activation handles (they name hubsvc, not the child) and hubsvc's own secrets.
PRIVATE_ENV = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS", "LISTEN_PID",
               "LISTEN_FDNAMES", "CONFIGPROXY_AUTH_TOKEN", "HUBSVC_CONFIG")


# ---- running a command ----------------------------------------------------------------------
@dataclass(frozen=True)
class Completed:
    """What a command did. `rc` is its real exit status, None when it did not run to the
    end (not found, not executable, timed out: `err` says which)."""

    argv: tuple[str, ...]
    rc: int | None
    out: str
    err: str

    @property
    def ok(self) -> bool:
        return self.rc == 0

    def why(self, limit: int = 400) -> str:
        """The command's own words about a failure (stderr, else stdout), shortened."""
        return (self.err or self.out).strip()[-limit:]


def run(argv: Sequence[str], timeout: float, env: Mapping[str, str] | None = None,
        input: str | None = None, cwd: Path | None = None) -> Completed:
    """Run `argv` with no stdin (or `input`), capture its output, kill it after `timeout`;
    in `cwd` (default: this process's working directory).

    Output that is not UTF-8 is decoded with replacement characters, never raised on.
    The command runs in a process group of its own, killed as a whole when it times out:
    a child that ends but leaves a process holding its output open keeps its own exit
    status and output, and the process it left is not left running.
    """
    args = tuple(str(a) for a in argv)
    try:
        p = subprocess.Popen(args, stdin=subprocess.DEVNULL if input is None else subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             errors="replace",
                             env=dict(env) if env is not None else None, cwd=cwd,
                             process_group=0)
    except OSError as e:
        return Completed(args, None, "", f"{args[0]}: {e.strerror or e}")
    try:
        out, err = p.communicate(input, timeout=timeout)
    except subprocess.TimeoutExpired:
        # Did the command itself end (a process it left holds the output open)? Asked
        # without reaping it, so that its pid still names the group killed next.
        ended = os.waitid(os.P_PID, p.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
        _kill_group(p)
        try:
            out, err = p.communicate(timeout=1)
        except subprocess.TimeoutExpired:  # a process that left the group holds the output
            out, err = "", ""
            for pipe in (p.stdout, p.stderr):
                if pipe is not None:
                    pipe.close()
        rc = p.wait()
        if not ended:
            return Completed(args, None, out, f"{args[0]}: no answer within {timeout:g} s")
        return Completed(args, rc, out, err)
    except BaseException:
        _kill_group(p)
        p.wait()
        raise
    return Completed(args, p.returncode, out, err)


def _kill_group(p: subprocess.Popen[str]) -> None:
    """SIGKILL the process group `p` leads. Only called before p is reaped: its pid, still
    taken, cannot name anybody else's group."""
    try:
        os.killpg(p.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def child_env(search: str | None = None, base: Mapping[str, str] | None = None,
              extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """`base` (default: this process's environment) without PRIVATE_ENV, PATH set to
    `search` (default: commands.search_path()), then `extra`."""
    from .commands import search_path

    src = os.environ if base is None else base
    env = {k: v for k, v in src.items() if k not in PRIVATE_ENV}
    env["PATH"] = search if search is not None else search_path()
    env.update(extra or {})
    return env


# ---- scripts -----------------------------------------------------------------------------
def first_line(path: Path) -> str:
    try:
        with open(path, "rb") as f:
            return f.readline(300).decode(errors="replace").strip()
    except OSError:
        return "?"


def shebang(path: Path) -> list[str] | None:
    """The '#!' line of a script as words, `/usr/bin/env [-S] NAME` reduced to NAME."""
    line = first_line(path)
    if not line.startswith("#!"):
        return None
    parts = line[2:].split()
    if parts and os.path.basename(parts[0]) == "env":
        parts = [p for p in parts[1:] if not p.startswith("-")]
    return parts or None


def interpreter(path: Path, search: str) -> Path | None:
    """The program that runs the script `path` ('#!' line; a bare name looked up on
    `search`), or None for a binary or an interpreter that cannot be found."""
    sb = shebang(path)
    if not sb:
        return None
    if "/" in sb[0]:
        return Path(sb[0])
    found = shutil.which(sb[0], path=search)
    return Path(found) if found else None


# ---- processes ---------------------------------------------------------------------------
def _stat_fields(pid: int) -> list[str] | None:
    """/proc/PID/stat from field 3 (state) on; the command name (field 2) may hold spaces
    and parentheses, so the split is after the last ')'."""
    try:
        raw = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    return raw.rsplit(")", 1)[1].split()


def start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (field 22): with the pid, it
    names one process for the life of the machine, as a pid alone does not."""
    f = _stat_fields(pid)
    try:
        return int(f[19]) if f else None
    except (IndexError, ValueError):
        return None


def is_stopped(pid: int) -> bool:
    """True when the process is stopped (SIGSTOP/SIGTSTP) and cannot act on SIGTERM."""
    f = _stat_fields(pid)
    return bool(f) and f[0] in ("T", "t")  # type: ignore[index]


def cpu_ticks(pid: int) -> int | None:
    """utime + stime of the process, in clock ticks (None when it is gone)."""
    f = _stat_fields(pid)
    return int(f[11]) + int(f[12]) if f else None  # fields 14 and 15 of proc(5)


def cmdline(pid: int, proc: Path = PROC) -> str | None:
    try:
        raw = (proc / str(pid) / "cmdline").read_bytes()
    except OSError:
        return None
    parts = [p.decode(errors="replace") for p in raw.split(b"\0") if p]
    return " ".join(parts) if parts else None


def environ(pid: int) -> dict[str, str] | None:
    """/proc/PID/environ as a dict; None when it cannot be read (gone, or not ours)."""
    try:
        raw = (PROC / str(int(pid)) / "environ").read_bytes()
    except (OSError, ValueError, TypeError):
        return None
    out: dict[str, str] = {}
    for item in raw.split(b"\0"):
        k, sep, v = item.partition(b"=")
        if sep:
            out[k.decode(errors="replace")] = v.decode(errors="replace")
    return out


def pids_of_tree(root: int, proc: Path = PROC) -> Iterator[int]:
    """root and its descendants (via /proc/PID/task/*/children), bounded to 10000."""
    seen: set[int] = set()
    stack = [root]
    while stack and len(seen) < 10000:
        pid = stack.pop()
        if pid in seen:
            continue
        seen.add(pid)
        yield pid
        tasks = proc / str(pid) / "task"
        try:
            tids = os.listdir(tasks)
        except OSError:
            continue
        for tid in tids:
            try:
                kids = (tasks / tid / "children").read_text().split()
            except OSError:
                continue
            stack.extend(int(k) for k in kids if k.isdigit())


# ---- accounts and permission bits --------------------------------------------------------
def user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def local_user(name: str) -> pwd.struct_passwd | None:
    """The local (or directory service's) account of that name, or None."""
    try:
        return pwd.getpwnam(name)
    except KeyError:
        return None


@dataclass(frozen=True)
class Account:
    name: str
    uid: int
    gid: int
    groups: frozenset[int]
    source: str  # how it was determined

    @classmethod
    def from_uid(cls, uid: int, source: str) -> Account:
        try:
            pw = pwd.getpwuid(uid)
        except KeyError:
            return cls(str(uid), uid, uid, frozenset({uid}), source)
        try:
            groups = frozenset(os.getgrouplist(pw.pw_name, pw.pw_gid))
        except OSError:
            groups = frozenset({pw.pw_gid})
        return cls(pw.pw_name, uid, pw.pw_gid, groups, source)

    @classmethod
    def from_name(cls, name: str, source: str) -> Account | None:
        pw = local_user(name)
        return cls.from_uid(pw.pw_uid, source) if pw is not None else None

    @classmethod
    def anyone(cls) -> Account:
        """An arbitrary unprivileged account: neither owner nor group member of anything."""
        return cls("any other account", -1, -1, frozenset(), "any unprivileged account")

    @property
    def is_me(self) -> bool:
        return self.uid == os.geteuid()


def mode_allows(st: os.stat_result, acct: Account, want: int) -> bool:
    """want: 4 read, 2 write, 1 exec/search (or their sum), by mode bits (ACLs are not
    evaluated); root may do anything but execute a file with no exec bit."""
    if acct.uid == 0:
        return want & 1 == 0 or stat.S_ISDIR(st.st_mode) or bool(st.st_mode & 0o111)
    if st.st_uid == acct.uid:
        bits = (st.st_mode >> 6) & 7
    elif st.st_gid in acct.groups:
        bits = (st.st_mode >> 3) & 7
    else:
        bits = st.st_mode & 7
    return bits & want == want


def describe_mode(st: os.stat_result) -> str:
    return (f"mode {stat.S_IMODE(st.st_mode):04o}, owner "
            f"{user_name(st.st_uid)}:{group_name(st.st_gid)}")


def access_as(path: Path, acct: Account, want: int) -> str | None:
    """Why `acct` cannot open `path` for `want` (4/2/1, or 6); None when it can.

    The account running this is checked by trying; another account by the mode bits of
    the file and of every folder on the way (root can evaluate them all).
    """
    if acct.is_me:
        mode = {4: os.R_OK, 2: os.W_OK, 1: os.X_OK, 6: os.R_OK | os.W_OK}[want]
        if not os.access(path, mode):
            return f"permission denied for {acct.name} (uid {acct.uid})"
        if want & 4 and path.is_file():
            try:
                with open(path, "rb"):
                    pass
            except OSError as e:
                return e.strerror or str(e)
        return None
    p = Path(os.path.abspath(path))
    for d in reversed(p.parents):
        try:
            st = d.stat()
        except OSError as e:
            return f"{d}: {e.strerror}"
        if not mode_allows(st, acct, 1):
            return f"{acct.name} cannot enter {d} ({describe_mode(st)})"
    try:
        st = p.stat()
    except OSError as e:
        return e.strerror or str(e)
    return None if mode_allows(st, acct, want) else describe_mode(st)


def stat_error(p: Path) -> str | None:
    """Why `p` cannot even be looked at (a folder above it is closed), or None."""
    try:
        p.stat()
    except FileNotFoundError:
        return None
    except OSError as e:
        return f"{p}: {e.strerror} for uid {os.geteuid()}"
    return None


def is_file(p: Path) -> bool:
    try:
        return p.is_file()
    except OSError:
        return False


# ---- addresses ---------------------------------------------------------------------------
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def resolve(host: str) -> list[IPAddress]:
    """An IP literal as itself ("" is 0.0.0.0); a name through the resolver (all its
    addresses; [] when it does not resolve)."""
    h = host.strip("[]")
    if h == "":
        return [ipaddress.IPv4Address("0.0.0.0")]
    try:
        return [ipaddress.ip_address(h)]
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(h, None, type=socket.SOCK_STREAM)
    except OSError:
        return []
    out: list[IPAddress] = []
    for info in infos:
        a = ipaddress.ip_address(str(info[4][0]).split("%")[0])
        if a not in out:
            out.append(a)
    return out


def is_loopback_host(host: str) -> bool:
    """Every address `host` resolves to is a loopback address (and there is one)."""
    addrs = resolve(host) if host.strip("[]") else []
    return bool(addrs) and all(a.is_loopback for a in addrs)


def bind_error(host: str, port: int) -> OSError | None:
    """Try to bind host:port the way a server does (SO_REUSEADDR); the error, if any.

    EADDRINUSE: somebody listens there. EADDRNOTAVAIL: the address is not on this host.
    EACCES: a port below 1024 without the privilege to bind it.
    """
    addrs = resolve(host)
    if not addrs:
        return OSError(errno.EADDRNOTAVAIL, f"cannot resolve {host!r}")
    for a in addrs:
        fam = socket.AF_INET6 if a.version == 6 else socket.AF_INET
        try:
            s = socket.socket(fam, socket.SOCK_STREAM)
        except OSError as e:
            return e
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((str(a), port))
        except OSError as e:
            return e
        finally:
            s.close()
    return None


def is_local_host(host: str) -> bool:
    """`host` names this machine: loopback, a wildcard, or an address it can listen on."""
    addrs = resolve(host)
    if any(a.is_loopback or a.is_unspecified for a in addrs):
        return True
    return any(bind_error(str(a), 0) is None for a in addrs)


# ---- the service manager -----------------------------------------------------------------
def systemd_running() -> bool:
    """systemd is this machine's service manager."""
    return os.path.isdir("/run/systemd/system")


def die_with_parent() -> Callable[[], None]:
    """A preexec_fn: the child is sent SIGTERM when this process dies (PR_SET_PDEATHSIG),
    so a supervisor killed with -9 leaves no component behind to hold the ports."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)  # loaded here: the child only calls it

    def preexec() -> None:
        libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # 1: PR_SET_PDEATHSIG

    return preexec


def started_by_systemd() -> bool:
    """This process is (part of) a unit systemd started: systemd sets INVOCATION_ID."""
    return "INVOCATION_ID" in os.environ


def parse_systemctl_show(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in text.splitlines():
        k, sep, v = line.partition("=")
        if sep:
            out[k] = v
    return out


def systemctl_show(unit: str, props: Iterable[str]) -> dict[str, str] | None:
    """`systemctl show UNIT -p …` as a dict; None when systemctl is missing or fails."""
    exe = shutil.which("systemctl")
    if exe is None:
        return None
    r = run([exe, "show", unit, "-p", ",".join(props)], timeout=5)
    return parse_systemctl_show(r.out) if r.ok else None


def unit_path(unit: str) -> tuple[str, str] | None:
    """The PATH a unit's programs get, and where it comes from: its Environment=PATH=…,
    else the manager's own (`systemctl show-environment`); None without systemd."""
    if not systemd_running():
        return None
    props = systemctl_show(unit, ["LoadState", "Environment"])
    if props and props.get("LoadState") == "loaded":
        try:
            items = shlex.split(props.get("Environment", ""))
        except ValueError:
            items = []
        for item in items:
            if item.startswith("PATH="):
                return item[5:], f"Environment=PATH of {unit}"
    r = run(["systemctl", "show-environment"], timeout=5)
    for line in r.out.splitlines() if r.ok else []:
        if line.startswith("PATH="):
            return line[5:], f"systemd's default PATH ({unit} sets none)"
    return None
