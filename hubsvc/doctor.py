"""`hubsvc doctor`: find the install-day failures before users meet them.

Each check yields `Finding`s (id, group, severity, what, evidence, fix). Nothing here
changes the system: the doctor reads files, the kernel's socket tables, runs programs
with `--version`, loads the admin's JupyterHub config in a child of the hub's own
Python, and (when hubsvc is running) asks CHP's API and the hub's API.

Entry points:
- `run_doctor(cfg_path, as_json=..., out=...) -> int` for `hubsvc doctor`
  (0: no error, 1: errors, 78: unusable config or arguments).
- `preflight_findings(cfg) -> list[Finding]` for `hubsvc run`: the cheap checks only;
  a finding with `blocks_start` and severity "error" makes starting pointless.
"""

from __future__ import annotations

import ast
import concurrent.futures as cf
import errno
import grp
import http.client
import ipaddress
import json
import os
import pwd
import re
import shlex
import shutil
import socket
import sqlite3
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, TextIO
from urllib.parse import urlsplit

from . import doctor_tls, hubconfig, ports, routetable, survival
from . import status as status_mod
from .commands import bundled_dirs, search_path
from .config import Config, ConfigError, Endpoint, load, parse_endpoint, resolve_path
from .secrets import SecretFiles

Severity = Literal["error", "warning", "ok", "skipped"]
SEVERITIES: tuple[Severity, ...] = ("error", "warning", "ok", "skipped")
GROUPS = ("config", "programs", "files", "ports", "tls", "jupyterhub", "scheduler",
          "entry point", "service", "systemd")

EX_OK = 0
EX_ERRORS = 1
EX_CONFIG = 78

# Versions hubsvc is built and tested against.
CHP_SUPPORTED_MAJORS = (4, 5)
NODE_MIN_MAJOR = 18  # CHP 5.x declares node >= 20, measured to work on 18.20 and 20
HUB_SUPPORTED_MAJORS = (6,)
SPACE_ERROR_BYTES = 50 * 2**20
SPACE_WARN_BYTES = 500 * 2**20
HTTP_TIMEOUT_S = 1.5
PROC_TIMEOUT_S = 8.0


@dataclass
class Finding:
    id: str  # stable, dotted: "proxy.command", "ports.public", "service.routes" …
    group: str  # one of GROUPS
    severity: Severity
    what: str  # one line for a person
    evidence: str = ""  # what was observed (paths, pids, modes, responses)
    fix: str = ""  # what to do; empty for ok/skipped
    blocks_start: bool = False  # an error here makes `hubsvc run` pointless

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _f(id: str, group: str, severity: Severity, what: str, evidence: str = "", fix: str = "",
       blocks: bool = False) -> Finding:
    return Finding(id, group, severity, what, evidence, fix, blocks)


# ---- the account the service runs as ----------------------------------------------------
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
        try:
            return cls.from_uid(pwd.getpwnam(name).pw_uid, source)
        except KeyError:
            return None

    @property
    def is_me(self) -> bool:
        return self.uid == os.geteuid()


def _group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def systemd_running() -> bool:
    return os.path.isdir("/run/systemd/system")


def _systemctl_show(unit: str, props: Iterable[str]) -> dict[str, str] | None:
    exe = shutil.which("systemctl")
    if exe is None:
        return None
    try:
        r = subprocess.run([exe, "show", unit, "-p", ",".join(props)], capture_output=True,
                           text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if r.returncode != 0:
        return None
    return parse_systemctl_show(r.stdout)


def parse_systemctl_show(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in text.splitlines():
        k, sep, v = line.partition("=")
        if sep:
            out[k] = v
    return out


def service_account(cfg: Config) -> Account:
    """Who runs the hub: the unit's User= (systemd), else the state dir's owner, else me."""
    if systemd_running():
        props = _systemctl_show("hubsvc.service", ["User", "LoadState"])
        if props and props.get("LoadState") == "loaded":
            user = props.get("User") or "root"
            acct = Account.from_name(user, "User= of hubsvc.service")
            if acct is not None:
                return acct
    try:
        st = cfg.paths.state_dir.stat()
        return Account.from_uid(st.st_uid, f"owner of {cfg.paths.state_dir}")
    except OSError:
        pass
    return Account.from_uid(os.geteuid(), "the account running this check")


def _perm_ok(st: os.stat_result, acct: Account, want: int) -> bool:
    """want: 4 read, 2 write, 1 exec/search, by mode bits (ACLs are not evaluated)."""
    if acct.uid == 0:
        return want != 1 or stat.S_ISDIR(st.st_mode) or bool(st.st_mode & 0o111)
    if st.st_uid == acct.uid:
        bits = (st.st_mode >> 6) & 7
    elif st.st_gid in acct.groups:
        bits = (st.st_mode >> 3) & 7
    else:
        bits = st.st_mode & 7
    return bits & want == want


def access_as(path: Path, acct: Account, want: int) -> tuple[bool, str]:
    """Can `acct` open `path` for `want` (4/2/1)? Returns (ok, the reason when not).

    The account itself is checked by trying; another account by mode bits of the file and
    of every folder on the way (root can evaluate them all).
    """
    if acct.is_me:
        mode = {4: os.R_OK, 2: os.W_OK, 1: os.X_OK, 6: os.R_OK | os.W_OK}[want]
        if os.access(path, mode):
            if want & 4 and path.is_file():
                try:
                    with open(path, "rb"):
                        pass
                except OSError as e:
                    return False, e.strerror or str(e)
            return True, ""
        return False, f"permission denied for {acct.name} (uid {acct.uid})"
    p = Path(os.path.abspath(path))
    parents = list(reversed(p.parents))
    for d in parents:
        try:
            st = d.stat()
        except OSError as e:
            return False, f"{d}: {e.strerror}"
        if not _perm_ok(st, acct, 1):
            return False, (f"{acct.name} cannot enter {d} (mode {stat.S_IMODE(st.st_mode):04o}, "
                           f"owner {_user_name(st.st_uid)}:{_group_name(st.st_gid)})")
    try:
        st = p.stat()
    except OSError as e:
        return False, e.strerror or str(e)
    if not _perm_ok(st, acct, want):
        return False, (f"mode {stat.S_IMODE(st.st_mode):04o}, owner "
                       f"{_user_name(st.st_uid)}:{_group_name(st.st_gid)}")
    return True, ""


def _readable_fix(path: Path, acct: Account) -> str:
    return (f"let {acct.name} read it without opening it to everyone: "
            f"`chgrp {_group_name(acct.gid)} {path} && chmod 0640 {path}` (and make sure "
            f"every folder above it can be entered by {acct.name}); never chmod 777, "
            "never sudoers")


# ---- programs -----------------------------------------------------------------------------
def _shebang(path: Path) -> list[str] | None:
    try:
        with open(path, "rb") as f:
            first = f.readline(300)
    except OSError:
        return None
    if not first.startswith(b"#!"):
        return None
    parts = first[2:].decode(errors="replace").split()
    if parts and os.path.basename(parts[0]) == "env":
        parts = [p for p in parts[1:] if not p.startswith("-")]
    return parts or None


def service_search_path() -> tuple[str, str]:
    """The PATH the service's programs are looked up on, and where it comes from.

    Under systemd that is the unit's Environment=PATH=…, else the manager's own PATH
    (`systemctl show-environment`), never the admin's shell PATH: a node installed in a
    custom prefix is on the shell's PATH and not on the service's.
    """
    if systemd_running():
        props = _systemctl_show("hubsvc.service", ["LoadState", "Environment"])
        if props and props.get("LoadState") == "loaded":
            try:
                items = shlex.split(props.get("Environment", ""))
            except ValueError:
                items = []
            for item in items:
                if item.startswith("PATH="):
                    return item[5:], "Environment=PATH of hubsvc.service"
        rc, so, _ = _run(["systemctl", "show-environment"], timeout=5)
        for line in so.splitlines() if rc == 0 else []:
            if line.startswith("PATH="):
                return line[5:], "systemd's default PATH (hubsvc.service sets none)"
    return os.environ.get("PATH", "/usr/bin:/bin"), "the PATH of this shell"


def with_bundled(path: str) -> str:
    """PATH, then hubsvc's own bin/ and node_modules/.bin (as commands.search_path)."""
    parts = [p for p in path.split(os.pathsep) if p]
    for d in bundled_dirs():
        if str(d) not in parts:
            parts.append(str(d))
    return os.pathsep.join(parts)


def _which(name: str, search: str, base: Path | None = None) -> Path | None:
    """commands.resolve_command, on an explicit search path."""
    if "/" in name:
        p = Path(name)
        if not p.is_absolute() and base is not None:
            p = base / p
        return p if p.is_file() and os.access(p, os.X_OK) else None
    found = shutil.which(name, path=search)
    return Path(found) if found else None


def _first_line(path: Path) -> str:
    try:
        with open(path, "rb") as f:
            return f.readline(300).decode(errors="replace").strip()
    except OSError:
        return "?"


def _not_executable_candidates(name: str, base: Path | None, search: str) -> list[Path]:
    """Files named `name` that exist but lack the exec bit (what "not found" hides)."""
    if "/" in name:
        p = Path(name)
        if not p.is_absolute() and base is not None:
            p = base / p
        return [p] if p.exists() else []
    out = []
    for d in search.split(os.pathsep):
        p = Path(d) / name
        if p.exists() and not os.access(p, os.X_OK):
            out.append(p)
    return out


def _command_findings(id: str, field: str, name: str, base: Path | None, label: str,
                      install: str, search: str) -> tuple[list[Finding], Path | None]:
    path = _which(name, search, base)
    if path is not None:
        return [_f(id, "programs", "ok", f"{label} found: {path}")], path
    bad = _not_executable_candidates(name, base, search)
    if bad:
        p = bad[0]
        try:
            mode = f"{stat.S_IMODE(p.stat().st_mode):04o}"
        except OSError as e:
            mode = f"? ({e.strerror})"
        if p.is_dir():
            return [_f(id, "programs", "error", f"{label}: {p} is a directory, not a program",
                       f"{field} = {name!r}", f"set {field} to the program's path", True)], None
        return [_f(id, "programs", "error", f"{label} is not executable: {p}",
                   f"{field} = {name!r}; {p} has mode {mode}",
                   f"`chmod 0755 {p}` (or reinstall {label}: {install})", True)], None
    where = search
    if "/" in name:
        return [_f(id, "programs", "error", f"{label} not found at {name}",
                   f"{field} = {name!r}: no such file",
                   f"install it ({install}) or set {field} to the right absolute path",
                   True)], None
    return [_f(id, "programs", "error", f"{label} not found: {name!r} is not on PATH",
               f"searched {where}",
               f"install it ({install}), or set {field} in hubsvc.toml to its absolute path "
               "(a node installed in a custom prefix is not on the service's PATH)",
               True)], None


def _interpreter_findings(id: str, prog: Path, label: str, install: str,
                          search: str) -> tuple[list[Finding], Path | None]:
    """The '#!' interpreter of a script (node for CHP): found and executable?"""
    sb = _shebang(prog)
    if not sb:
        return [], None
    interp = sb[0]
    found = _which(interp, search)
    if found is None:
        return [_f(id, "programs", "error",
                   f"{label} needs {interp!r}, which is not on PATH",
                   f"{prog} starts with {_first_line(prog)}; searched {search}",
                   f"install it ({install}) or put it on the PATH the service gets "
                   "(a drop-in with Environment=PATH=... for systemd)", True)], None
    return [_f(id, "programs", "ok", f"{label}: {found}")], found


def _version_tuple(text: str) -> tuple[int, ...] | None:
    m = re.search(r"(\d+)\.(\d+)(?:\.(\d+))?", text)
    if not m:
        return None
    return tuple(int(x) for x in m.groups() if x is not None)


def _run(argv: list[str], timeout: float = PROC_TIMEOUT_S,
         env: dict[str, str] | None = None) -> tuple[int | None, str, str]:
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env,
                           stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return None, "", f"timed out after {timeout:.0f} s"
    except OSError as e:
        return None, "", f"{e.strerror or e}"
    return r.returncode, r.stdout, r.stderr


def _child_env(search: str | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = search if search is not None else search_path()
    for k in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
        env.pop(k, None)
    return env


# ---- the hub-side probe: runs in the hub's own Python ------------------------------------
_HUB_PROBE = r'''
import ast, json, os, sys, traceback
args = json.loads(sys.argv[1])
out = {"python": sys.executable, "version": None, "error": None}
try:
    from jupyterhub._version import __version__
    out["version"] = __version__
except Exception as e:
    out["error"] = "cannot import jupyterhub: %s: %s" % (type(e).__name__, e)
    print(json.dumps(out)); sys.exit(0)
from traitlets.config import Config
cfg = Config()
path = args["config_file"]
if path:
    try:
        from traitlets.config.loader import PyFileConfigLoader
        loader = PyFileConfigLoader(os.path.basename(path), path=os.path.dirname(path))
        cfg = loader.load_config()
    except BaseException as e:
        line = None
        for fr in traceback.extract_tb(e.__traceback__):
            if os.path.abspath(fr.filename) == os.path.abspath(path):
                line = fr.lineno
        cause = e.__cause__ or e.__context__ if type(e).__name__ == "ConfigFileNotFound" else None
        if isinstance(e, SyntaxError):
            line = e.lineno
        out["load_error"] = {"type": type(e).__name__, "message": str(e)[:500], "line": line,
                              "cause": repr(cause)[:300] if cause else None}
out["owned_set"] = [[s, k, repr(cfg[s][k])[:200]] for s, k in args["owned"]
                    if s in cfg and k in cfg[s]]

def resolve(value, group, default):
    name = value if value is not None else default
    if isinstance(name, type):
        return {"name": name.__module__ + "." + name.__qualname__, "cls": name}
    from importlib.metadata import entry_points
    try:
        eps = [ep for ep in entry_points(group=group) if ep.name == name]
        if eps:
            return {"name": name, "cls": eps[0].load()}
        from traitlets.utils.importstring import import_item
        return {"name": name, "cls": import_item(name)}
    except BaseException as e:
        return {"name": str(name), "cls": None, "error": "%s: %s" % (type(e).__name__, e)}

jh = cfg["JupyterHub"] if "JupyterHub" in cfg else {}
result = {}
for key, group, default in (("authenticator_class", "jupyterhub.authenticators", "pam"),
                            ("spawner_class", "jupyterhub.spawners", "localprocess")):
    r = resolve(jh.get(key) if key in jh else None, group, default)
    cls = r.pop("cls")
    if cls is not None:
        r["class"] = cls.__module__ + "." + cls.__qualname__
        r["mro"] = [c.__module__ + "." + c.__qualname__ for c in cls.__mro__]
    result[key] = r
out["authenticator"] = result["authenticator_class"]
out["spawner"] = result["spawner_class"]

def trait(names, key, default):
    for n in names:
        if n in cfg and key in cfg[n]:
            return cfg[n][key]
    return default

spawner_sections = [c.rsplit(".", 1)[-1] for c in out["spawner"].get("mro", [])] or ["Spawner"]
cmd = trait(spawner_sections, "cmd", ["jupyterhub-singleuser"])
if isinstance(cmd, str):
    cmd = [cmd]
out["spawner_cmd"] = list(cmd) if cmd else ["jupyterhub-singleuser"]
auth_mro = out["authenticator"].get("mro", [])
auth_sections = [c.rsplit(".", 1)[-1] for c in auth_mro] or ["Authenticator"]
users = set()
for key in ("allowed_users", "admin_users"):
    v = trait(auth_sections, key, set())
    try:
        users.update(str(u) for u in v)
    except TypeError:
        pass
out["config_users"] = sorted(users)
print(json.dumps(out))
'''


def _owned_lines(path: Path) -> dict[tuple[str, str], int]:
    """Line numbers of `c.Section.key = ...` (and augmented/annotated) in the admin's file."""
    try:
        tree = ast.parse(path.read_text(), str(path))
    except (OSError, SyntaxError, ValueError):
        return {}
    found: dict[tuple[str, str], int] = {}
    for node in ast.walk(tree):
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets = list(node.targets)
        elif isinstance(node, ast.AugAssign | ast.AnnAssign):
            targets = [node.target]
        for t in targets:
            if (isinstance(t, ast.Attribute) and isinstance(t.value, ast.Attribute)
                    and isinstance(t.value.value, ast.Name) and t.value.value.id == "c"):
                found.setdefault((t.value.attr, t.attr), node.lineno)
    return found


# ---- HTTP ---------------------------------------------------------------------------------
@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body.decode() or "null")


def http_get(url: str, headers: dict[str, str] | None = None,
             timeout: float = HTTP_TIMEOUT_S, method: str = "GET") -> Reply | Exception:
    """One request, no redirects followed, no proxy from the environment."""
    parts = urlsplit(url)
    cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    host = parts.hostname or "127.0.0.1"
    kw: dict[str, Any] = {}
    if parts.scheme == "https":
        import ssl

        ctx = ssl.create_default_context()
        if _is_local_host(host):
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        kw["context"] = ctx
    conn = cls(host, parts.port or (443 if parts.scheme == "https" else 80), timeout=timeout,
               **kw)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    try:
        conn.request(method, path, headers=headers or {})
        r = conn.getresponse()
        body = r.read(1 << 20)
        return Reply(r.status, {k.lower(): v for k, v in r.getheaders()}, body)
    except (OSError, http.client.HTTPException) as e:
        return e
    finally:
        conn.close()


def _err_text(e: Exception) -> str:
    if isinstance(e, ConnectionRefusedError):
        return "connection refused"
    if isinstance(e, TimeoutError | socket.timeout):
        return "timed out"
    return f"{type(e).__name__}: {e}"


# ---- context shared by the checks -----------------------------------------------------------
@dataclass
class Ctx:
    cfg: Config
    acct: Account
    files: SecretFiles
    status: dict[str, Any] | None = None
    supervisor_alive: bool = False
    our_pids: set[int] = field(default_factory=set)
    proxy_token: str | None = None
    hub_token: str | None = None
    token_error: str | None = None
    routes: dict[str, Any] | None = None
    routes_error: str | None = None
    hub_probe: dict[str, Any] | None = None
    search: str = field(default_factory=search_path)  # where the service finds programs
    path_source: str = "the PATH of this process"
    status_error: str | None = None  # status.json exists but cannot be read here

    @property
    def hub_prefix(self) -> str:
        return self.cfg.public.path  # the hub's base_url

    def hub_url(self, rel: str) -> str:
        return self.cfg.hub_bind.connect_origin + self.hub_prefix + rel

    @property
    def users_url(self) -> str:
        ep = self.cfg.public
        if ep.host in ("0.0.0.0", "::", ""):
            host = socket.getfqdn() or "THIS-HOST"
            return f"{ep.scheme}://{host}:{ep.port}{ep.path}"
        return ep.origin + ep.path


def _read_token(path: Path) -> tuple[str | None, str | None]:
    try:
        return path.read_text().strip() or None, None
    except FileNotFoundError:
        return None, f"{path} does not exist yet"
    except OSError as e:
        return None, f"{path}: {e.strerror}"


def _make_ctx(cfg: Config, acct: Account | None = None, service_env: bool = False) -> Ctx:
    ctx = Ctx(cfg, acct or service_account(cfg), SecretFiles.in_dir(cfg.paths.state_dir))
    if service_env:
        path, ctx.path_source = service_search_path()
        ctx.search = with_bundled(path)
    ctx.status = status_mod.read(cfg.paths.runtime_dir)
    if ctx.status is None:
        try:
            (cfg.paths.runtime_dir / status_mod.FILE).stat()
            open(cfg.paths.runtime_dir / status_mod.FILE).close()
        except PermissionError as e:
            ctx.status_error = f"{e.filename}: {e.strerror} for uid {os.geteuid()}"
        except OSError:
            pass
    if ctx.status and isinstance(ctx.status.get("pid"), int):
        spid = ctx.status["pid"]
        ctx.supervisor_alive = status_mod.supervisor_running(ctx.status)
        if ctx.supervisor_alive:
            ctx.our_pids = set(ports.iter_pids_of_tree(spid))
    ctx.proxy_token, err1 = _read_token(ctx.files.proxy_token)
    ctx.hub_token, err2 = _read_token(ctx.files.hub_api_token)
    ctx.token_error = err1 or err2
    return ctx


# ---- checks ---------------------------------------------------------------------------------
def check_proxy_program(ctx: Ctx, run_version: bool = True) -> list[Finding]:
    cfg = ctx.cfg
    base = cfg.source.parent if cfg.source else None
    out, prog = _command_findings("proxy.command", "proxy.command", cfg.proxy.command, base,
                                  "configurable-http-proxy",
                                  "`npm install -g configurable-http-proxy@5`, or the "
                                  "hubsvc package that bundles it", ctx.search)
    if prog is None:
        return out
    node_f, node = _interpreter_findings("proxy.node", prog, "configurable-http-proxy's node",
                                         "`dnf install nodejs` (node >= 18)", ctx.search)
    out += node_f
    if any(f.severity == "error" for f in node_f) or not run_version:
        return out
    jobs = {"chp": [str(prog), "--version"]}
    if node is not None:
        jobs["node"] = [str(node), "--version"]
    with cf.ThreadPoolExecutor(len(jobs)) as ex:
        res = {k: ex.submit(_run, v, env=_child_env(ctx.search)) for k, v in jobs.items()}
        got = {k: r.result() for k, r in res.items()}
    rc, so, se = got["chp"]
    ver = _version_tuple(so) if rc == 0 else None
    if ver is None:
        out.append(_f("proxy.version", "programs", "error",
                      "configurable-http-proxy does not run",
                      f"`{prog} --version` → exit {rc}: {(se or so).strip()[-400:]}",
                      "reinstall configurable-http-proxy and check that node starts "
                      f"(`{node or 'node'} --version`)", True))
    elif ver[0] not in CHP_SUPPORTED_MAJORS:
        out.append(_f("proxy.version", "programs", "warning",
                      f"configurable-http-proxy {'.'.join(map(str, ver))} is not a supported "
                      "version", f"{prog} --version → {so.strip()}",
                      "install configurable-http-proxy 5.x (hubsvc is tested with 5.3.0)"))
    else:
        out.append(_f("proxy.version", "programs", "ok",
                      f"configurable-http-proxy {'.'.join(map(str, ver))}"))
    if "node" in got:
        rc, so, se = got["node"]
        nver = _version_tuple(so) if rc == 0 else None
        if nver is None:
            out.append(_f("proxy.node_version", "programs", "error", "node does not run",
                          f"`{node} --version` → exit {rc}: {(se or so).strip()[-300:]}",
                          "reinstall nodejs (`dnf install nodejs`)", True))
        elif nver[0] < NODE_MIN_MAJOR:
            out.append(_f("proxy.node_version", "programs", "warning",
                          f"node {so.strip()} is older than configurable-http-proxy 5 asks for",
                          f"{node} --version → {so.strip()}",
                          f"install node >= {NODE_MIN_MAJOR} (`dnf module install nodejs:20` "
                          "on RHEL 9)"))
        else:
            out.append(_f("proxy.node_version", "programs", "ok", f"node {so.strip()}"))
    return out


def _hub_python(prog: Path, search: str) -> Path | None:
    sb = _shebang(prog)
    if not sb:
        return None
    interp = sb[0]
    p = Path(interp) if "/" in interp else _which(interp, search)
    if p is None or "python" not in p.name:
        return None
    return p


def check_hub_program(ctx: Ctx) -> tuple[list[Finding], Path | None]:
    cfg = ctx.cfg
    base = cfg.source.parent if cfg.source else None
    out, prog = _command_findings("hub.command", "hub.command", cfg.hub.command, base,
                                  "JupyterHub", "`pip install 'jupyterhub>=6,<7'` in hubsvc's "
                                  "environment", ctx.search)
    if prog is None:
        return out, None
    py = _hub_python(prog, ctx.search)
    if py is None:
        out.append(_f("hub.python", "programs", "warning",
                      f"cannot tell which Python runs {prog}",
                      f"{prog} has no '#!…python' first line",
                      "point hub.command at the jupyterhub script of a Python environment"))
        return out, None
    return out, py


def run_hub_probe(ctx: Ctx, py: Path) -> dict[str, Any] | str:
    cf_ = ctx.cfg.hub.config_file
    args = {"config_file": str(cf_) if cf_ and cf_.is_file() else "",
            "owned": hubconfig.OWNED}
    rc, so, se = _run([str(py), "-c", _HUB_PROBE, json.dumps(args)], env=_child_env(ctx.search),
                      timeout=20)
    if rc != 0:
        return f"{py} exited {rc}: {(se or so).strip()[-500:]}"
    try:
        return json.loads(so.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return f"unexpected output from {py}: {so[-300:]!r} {se[-300:]!r}"


def hub_findings(ctx: Ctx, py: Path, probe: dict[str, Any] | str) -> list[Finding]:
    out: list[Finding] = []
    cfg = ctx.cfg
    if isinstance(probe, str):
        return [_f("hub.import", "programs", "error", "JupyterHub's Python does not start",
                   probe, "reinstall hubsvc's environment", True)]
    if probe.get("error"):
        return [_f("hub.import", "programs", "error",
                   "JupyterHub cannot be imported in the hub's environment",
                   f"{py}: {probe['error']}",
                   f"`{py} -m pip install 'jupyterhub>=6,<7'`", True)]
    hv = probe["version"]
    vt = _version_tuple(hv) or (0,)
    if vt[0] not in HUB_SUPPORTED_MAJORS:
        out.append(_f("hub.version", "programs", "warning",
                      f"JupyterHub {hv} is not a supported version",
                      f"{py}: jupyterhub {hv}", "install jupyterhub 6.x"))
    else:
        out.append(_f("hub.version", "programs", "ok", f"JupyterHub {hv} ({py})"))

    # the admin's config
    cfile = cfg.hub.config_file
    le = probe.get("load_error")
    if le:
        where = f"{cfile}, line {le['line']}" if le.get("line") else str(cfile)
        out.append(_f("jupyterhub.config_load", "jupyterhub", "error",
                      "the JupyterHub config file fails to load",
                      f"{where}: {le['type']}: {le['message']}"
                      + (f" (caused by {le['cause']})" if le.get("cause") else ""),
                      f"fix {where}; try it with `{py} -c \"from traitlets.config.loader import "
                      f"PyFileConfigLoader as L; L('{cfile.name if cfile else ''}', "
                      f"path='{cfile.parent if cfile else ''}').load_config()\"`", True))
    elif cfile is not None and cfile.is_file():
        out.append(_f("jupyterhub.config_load", "jupyterhub", "ok", f"{cfile} loads"))
    lines = _owned_lines(cfile) if cfile else {}
    for section, key, value in probe.get("owned_set", []):
        ln = lines.get((section, key))
        at = f"{cfile}, line {ln}" if ln else str(cfile)
        out.append(_f(f"jupyterhub.owned.{section}.{key}", "jupyterhub", "warning",
                      f"the JupyterHub config sets c.{section}.{key}, which hubsvc owns: "
                      "it is ignored", f"{at}: c.{section}.{key} = {value}",
                      f"remove that line from {cfile}; {_owned_fix(section, key)}"))
    for kind, trait in (("authenticator", "authenticator_class"), ("spawner", "spawner_class")):
        info = probe.get(kind) or {}
        if info.get("error"):
            out.append(_f(f"jupyterhub.{kind}", "jupyterhub", "error",
                          f"the {kind} class {info.get('name')!r} cannot be imported",
                          f"c.JupyterHub.{trait} = {info.get('name')!r}: {info['error']}",
                          f"install the package that provides it into {py.parent.parent}, or "
                          f"fix c.JupyterHub.{trait}", True))
        elif info.get("class"):
            out.append(_f(f"jupyterhub.{kind}", "jupyterhub", "ok",
                          f"{kind}: {info['class']}"))
    out += _pam_findings(ctx, probe)
    out += _local_users_findings(ctx, probe)
    out += _singleuser_findings(ctx, py, probe)
    return out


def _owned_fix(section: str, key: str) -> str:
    where = {
        "bind_url": "set proxy.public_url in hubsvc.toml",
        "ip": "set proxy.public_url in hubsvc.toml",
        "port": "set proxy.public_url in hubsvc.toml",
        "base_url": "put the base path in proxy.public_url in hubsvc.toml",
        "hub_bind_url": "set hub.bind_url in hubsvc.toml",
        "hub_ip": "set hub.bind_url in hubsvc.toml",
        "hub_port": "set hub.bind_url in hubsvc.toml",
        "db_url": "hubsvc keeps the database in paths.state_dir",
        "cookie_secret": "hubsvc keeps the cookie secret in paths.state_dir",
        "cookie_secret_file": "hubsvc keeps the cookie secret in paths.state_dir",
        "api_url": "set proxy.api_url in hubsvc.toml",
        "command": "set proxy.command in hubsvc.toml",
    }
    return where.get(key, "hubsvc sets it itself from hubsvc.toml")


def _pam_findings(ctx: Ctx, probe: dict[str, Any]) -> list[Finding]:
    mro = (probe.get("authenticator") or {}).get("mro", [])
    if "jupyterhub.auth.PAMAuthenticator" not in mro:
        return []
    if ctx.acct.uid == 0:
        return [_f("jupyterhub.pam", "jupyterhub", "ok",
                   "PAM authentication: the hub runs as root")]
    shadow = Path("/etc/shadow")
    ok, why = access_as(shadow, ctx.acct, 4)
    if ok:
        return [_f("jupyterhub.pam", "jupyterhub", "ok",
                   f"PAM authentication: {ctx.acct.name} can read {shadow}")]
    return [_f("jupyterhub.pam", "jupyterhub", "error",
               f"PAM authentication cannot check other users' passwords as {ctx.acct.name}",
               f"the hub runs as {ctx.acct.name} ({ctx.acct.source}); {shadow}: {why}",
               "run hubsvc as root (the packaged hubsvc.service does), or use another "
               "authenticator; do not add the account to sudoers")]


def db_users(state_dir: Path) -> list[str]:
    """User names in the hub's database (read-only; [] when there is none yet)."""
    db = state_dir / "jupyterhub.sqlite"
    if not _is_file(db):
        return []
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=0.5)
        try:
            return [r[0] for r in con.execute("SELECT name FROM users")]
        finally:
            con.close()
    except sqlite3.Error:
        return []


def _local_users_findings(ctx: Ctx, probe: dict[str, Any]) -> list[Finding]:
    mro = (probe.get("spawner") or {}).get("mro", [])
    if ("jupyterhub.spawner.LocalProcessSpawner" not in mro
            or "jupyterhub.spawner.SimpleLocalProcessSpawner" in mro):
        return []
    names = sorted(set(probe.get("config_users", [])) | set(db_users(ctx.cfg.paths.state_dir)))
    missing, homeless = [], []
    for n in names:
        try:
            pw = pwd.getpwnam(n)
        except KeyError:
            missing.append(n)
            continue
        if not pw.pw_dir or not os.path.isdir(pw.pw_dir):
            homeless.append(f"{n} ({pw.pw_dir or 'no home set'})")
    out: list[Finding] = []
    if missing:
        out.append(_f("jupyterhub.users", "jupyterhub", "error",
                      "LocalProcessSpawner runs each server as the Unix user of the same name; "
                      f"{len(missing)} hub user(s) have no Unix account",
                      "no account for: " + ", ".join(missing[:20]),
                      "create the accounts (`useradd -m NAME`), or remove those users from "
                      "the hub, or use a spawner that does not need local accounts"))
    if homeless:
        out.append(_f("jupyterhub.homes", "jupyterhub", "error",
                      "hub users whose home directory is missing: their servers cannot start",
                      ", ".join(homeless[:20]),
                      "create each home (`mkhomedir_helper NAME`, or `mkdir` + `chown NAME:`)"))
    if names and not out:
        out.append(_f("jupyterhub.users", "jupyterhub", "ok",
                      f"{len(names)} hub user(s) have Unix accounts and homes"))
    if ctx.acct.uid != 0 and names:
        out.append(_f("jupyterhub.spawn_as", "jupyterhub", "error",
                      f"LocalProcessSpawner switches to each user, which {ctx.acct.name} "
                      "cannot do",
                      f"the hub runs as {ctx.acct.name} ({ctx.acct.source})",
                      "run hubsvc as root (the packaged unit does) — not sudoers"))
    return out


def _singleuser_findings(ctx: Ctx, hub_py: Path, probe: dict[str, Any]) -> list[Finding]:
    cmd = probe.get("spawner_cmd") or ["jupyterhub-singleuser"]
    mro = (probe.get("spawner") or {}).get("mro", [])
    on_this_host = ("jupyterhub.spawner.LocalProcessSpawner" in mro
                    or any(c.startswith("systemdspawner.") for c in mro))
    if not on_this_host:
        return [_f("jupyterhub.singleuser", "jupyterhub", "skipped",
                   "jupyterhub-singleuser: not checked for "
                   f"{(probe.get('spawner') or {}).get('class', 'this spawner')}",
                   "its servers may run in an environment this host does not see")]
    first = cmd[0]
    exe = Path(first) if first.startswith("/") else _which(first, ctx.search)
    if exe is None:
        return [_f("jupyterhub.singleuser", "jupyterhub", "error",
                   f"the single-user server command {first!r} is not found",
                   f"Spawner.cmd = {cmd!r}; searched {ctx.search}",
                   "install jupyterhub (same version as the hub) and jupyterlab into the "
                   "users' environment, or set c.Spawner.cmd to the absolute path of its "
                   "jupyterhub-singleuser", True)]
    if not os.access(exe, os.X_OK):
        return [_f("jupyterhub.singleuser", "jupyterhub", "error",
                   f"{exe} is not executable", f"Spawner.cmd = {cmd!r}",
                   f"`chmod 0755 {exe}`", True)]
    su_py = exe if "python" in exe.name else _hub_python(exe, ctx.search)
    if su_py is None:
        return [_f("jupyterhub.singleuser", "jupyterhub", "warning",
                   f"cannot tell the JupyterHub version behind {exe}",
                   f"{exe} is not a Python script",
                   "make sure it runs jupyterhub-singleuser of the hub's version")]
    hub_v = probe["version"]
    try:
        same = su_py.resolve() == hub_py.resolve() or os.path.samefile(su_py, hub_py)
    except OSError:
        same = False
    if same and su_py.parent == hub_py.parent:
        return [_f("jupyterhub.singleuser", "jupyterhub", "ok",
                   f"jupyterhub-singleuser {hub_v}: {exe} (the hub's environment)")]
    rc, so, se = _run([str(su_py), "-c",
                       "from jupyterhub._version import __version__ as v; print(v)"],
                      env=_child_env(ctx.search), timeout=10)
    if rc != 0:
        return [_f("jupyterhub.singleuser", "jupyterhub", "error",
                   f"jupyterhub is not importable where {exe} runs",
                   f"{su_py}: {(se or so).strip()[-300:]}",
                   f"`{su_py} -m pip install 'jupyterhub=={hub_v}' jupyterlab`", True)]
    su_v = so.strip()
    if su_v != hub_v:
        return [_f("jupyterhub.singleuser", "jupyterhub", "error",
                   f"jupyterhub-singleuser {su_v} does not match the hub's JupyterHub {hub_v}",
                   f"Spawner.cmd {exe} runs {su_py} with jupyterhub {su_v}; the hub "
                   f"({hub_py}) has {hub_v}",
                   f"`{su_py} -m pip install 'jupyterhub=={hub_v}'` (a mismatch causes "
                   "redirect loops and failed spawns)")]
    return [_f("jupyterhub.singleuser", "jupyterhub", "ok",
               f"jupyterhub-singleuser {su_v}: {exe}")]


def check_files(ctx: Ctx, preflight: bool = False) -> list[Finding]:
    cfg, acct = ctx.cfg, ctx.acct
    out: list[Finding] = []
    if not preflight:
        out.append(_f("files.account", "files", "ok",
                      f"file checks are made for {acct.name} (uid {acct.uid}), {acct.source}"))
    # hubsvc.toml and the admin's JupyterHub config
    if cfg.source is not None:
        ok, why = access_as(cfg.source, acct, 4)
        out.append(_f("files.hubsvc_toml", "files", "ok", f"{cfg.source} readable")
                   if ok else
                   _f("files.hubsvc_toml", "files", "error",
                      f"{cfg.source} cannot be read by {acct.name}", why,
                      _readable_fix(cfg.source, acct), True))
    cfile = cfg.hub.config_file
    cfile_err = _stat_error(cfile) if cfile is not None else None
    if cfile is not None and cfile_err is not None:
        ok, why = access_as(cfile, acct, 4)
        if acct.is_me or not ok:
            out.append(_f("files.hub_config", "files", "error",
                          f"the JupyterHub config {cfile} cannot be read by {acct.name}, "
                          "who runs the hub", why or cfile_err, _readable_fix(cfile, acct), True))
        else:
            out.append(_f("files.hub_config", "files", "skipped",
                          f"{cfile} cannot be examined by uid {os.geteuid()}", cfile_err,
                          "run the doctor as root or as the service account"))
    elif cfile is not None:
        if not cfile.exists():
            out.append(_f("files.hub_config", "files", "error",
                          f"the JupyterHub config {cfile} does not exist",
                          f"hub.config_file = {str(cfile)!r}",
                          "create it (it may be empty) or set hub.config_file = \"\"", True))
        elif not cfile.is_file():
            out.append(_f("files.hub_config", "files", "error", f"{cfile} is not a file",
                          "", "point hub.config_file at a Python file", True))
        else:
            ok, why = access_as(cfile, acct, 4)
            if ok:
                out.append(_f("files.hub_config", "files", "ok", f"{cfile} readable"))
            else:
                out.append(_f("files.hub_config", "files", "error",
                              f"the JupyterHub config {cfile} cannot be read by {acct.name}, "
                              "who runs the hub", why, _readable_fix(cfile, acct), True))
            st = cfile.stat()
            if st.st_mode & 0o002:
                out.append(_f("files.hub_config_mode", "files", "error",
                              f"{cfile} is writable by everyone: any user can run code as "
                              "the hub", f"mode {stat.S_IMODE(st.st_mode):04o}",
                              f"`chmod o-w {cfile}`"))
    out += _state_dir_findings(ctx, preflight)
    out += _runtime_dir_findings(ctx)
    return out


def _dir_create_check(path: Path, acct: Account) -> tuple[bool, str]:
    parent = path
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    ok, why = access_as(parent, acct, 2)
    if not ok:
        return False, f"{parent}: {why}"
    ok, why = access_as(parent, acct, 1)
    return ok, why


def _state_dir_findings(ctx: Ctx, preflight: bool) -> list[Finding]:
    acct = ctx.acct
    sd = ctx.cfg.paths.state_dir
    out: list[Finding] = []
    err = _stat_error(sd)
    if err is not None:
        return [_f("files.state_dir", "files", "error" if acct.is_me else "skipped",
                   f"{sd} cannot be examined by uid {os.geteuid()}", err,
                   f"`install -d -m 0700 -o {acct.name} {sd}`" if acct.is_me else
                   "run the doctor as root or as the service account", acct.is_me)]
    if not sd.exists():
        ok, why = _dir_create_check(sd, acct)
        if ok:
            return [_f("files.state_dir", "files", "ok",
                       f"{sd} does not exist yet; hubsvc creates it at first start")]
        return [_f("files.state_dir", "files", "error", f"{sd} cannot be created by {acct.name}",
                   why, f"`install -d -m 0700 -o {acct.name} {sd}`", True)]
    if not sd.is_dir():
        return [_f("files.state_dir", "files", "error", f"{sd} is not a directory", "",
                   "remove it or choose another paths.state_dir", True)]
    st = sd.stat()
    mode = stat.S_IMODE(st.st_mode)
    ok, why = access_as(sd, acct, 2)
    ok2, why2 = access_as(sd, acct, 1)
    if not (ok and ok2):
        out.append(_f("files.state_dir", "files", "error",
                      f"{sd} is not writable by {acct.name}", why or why2,
                      f"`chown {acct.name}: {sd} && chmod 0700 {sd}` (never chmod 777)", True))
    elif mode & 0o002:
        out.append(_f("files.state_dir", "files", "error",
                      f"{sd} is writable by everyone", f"mode {mode:04o}",
                      f"`chmod 0700 {sd}`"))
    elif mode & 0o007:
        out.append(_f("files.state_dir", "files", "warning",
                      f"{sd} is open to every user (it holds the hub's database)",
                      f"mode {mode:04o}", f"`chmod 0700 {sd}`"))
    else:
        out.append(_f("files.state_dir", "files", "ok",
                      f"{sd} ({mode:04o}, {_user_name(st.st_uid)})"))
    if not os.access(sd, os.X_OK):
        out.append(_f("files.secrets", "files", "skipped",
                      f"the secrets in {sd} cannot be examined by uid {os.geteuid()}",
                      f"{sd}: mode {mode:04o}, owner {_user_name(st.st_uid)}",
                      "run the doctor as root or as the service account"))
        return out + _space_findings(sd, preflight)
    for path in ctx.files.all():
        out += _secret_findings(path, acct)
    db = sd / "jupyterhub.sqlite"
    if _is_file(db) and mode & 0o001:  # others can enter the state dir
        dmode = stat.S_IMODE(db.stat().st_mode)
        if dmode & 0o006:
            out.append(_f("files.db", "files", "warning",
                          f"the hub's database {db} is readable by every user",
                          f"mode {dmode:04o}", f"`chmod 0600 {db}`"))
    return out + _space_findings(sd, preflight)


def _stat_error(p: Path) -> str | None:
    """Why `p` cannot even be looked at (a folder above it is closed), or None."""
    try:
        p.stat()
    except FileNotFoundError:
        return None
    except OSError as e:
        return f"{p}: {e.strerror} for uid {os.geteuid()}"
    return None


def _is_file(p: Path) -> bool:
    try:
        return p.is_file()
    except OSError:
        return False


def _space_findings(sd: Path, preflight: bool) -> list[Finding]:
    out: list[Finding] = []
    if not preflight:
        try:
            vfs = os.statvfs(sd)
            free = vfs.f_bavail * vfs.f_frsize
        except OSError:
            free = -1
        mib = free // 2**20
        if 0 <= free < SPACE_ERROR_BYTES:
            out.append(_f("files.space", "files", "error", f"only {mib} MiB free for {sd}",
                          f"statvfs({sd})", "free disk space (the hub's database and logs grow)"))
        elif 0 <= free < SPACE_WARN_BYTES:
            out.append(_f("files.space", "files", "warning", f"only {mib} MiB free for {sd}",
                          f"statvfs({sd})", "free disk space"))
        elif free >= 0:
            out.append(_f("files.space", "files", "ok", f"{mib} MiB free for {sd}"))
    return out


def _secret_findings(path: Path, acct: Account) -> list[Finding]:
    id = f"files.secret.{path.name}"
    try:
        st = path.lstat()
    except FileNotFoundError:
        return [_f(id, "files", "ok", f"{path.name}: created at first start")]
    except OSError as e:
        return [_f(id, "files", "error", f"{path} cannot be examined", e.strerror or str(e),
                   f"make {path.parent} searchable by {acct.name}", True)]
    if not stat.S_ISREG(st.st_mode):
        return [_f(id, "files", "error", f"{path} is not a regular file",
                   f"mode {stat.filemode(st.st_mode)}",
                   "remove it; hubsvc creates a fresh one at the next start", True)]
    out: list[Finding] = []
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o077:
        out.append(_f(id, "files", "error",
                      f"the secret {path} is readable by other accounts",
                      f"mode {mode:04o}, owner {_user_name(st.st_uid)}:"
                      f"{_group_name(st.st_gid)}",
                      f"`chmod 0600 {path}`, then treat it as exposed: stop hubsvc, delete "
                      "the file and start hubsvc to get a new one (for the cookie secret "
                      "this logs every user out)"))
    if st.st_uid != acct.uid:
        out.append(_f(id, "files", "error",
                      f"the secret {path} is owned by {_user_name(st.st_uid)}, not "
                      f"{acct.name}", f"owner uid {st.st_uid}",
                      f"`chown {acct.name}: {path}`", True))
    if not out:
        out.append(_f(id, "files", "ok", f"{path.name} (0600, {acct.name})"))
    return out


def _runtime_dir_findings(ctx: Ctx) -> list[Finding]:
    rd = ctx.cfg.paths.runtime_dir
    if not rd.exists():
        ok, why = _dir_create_check(rd, ctx.acct)
        if ok or systemd_running():  # RuntimeDirectory= creates it under systemd
            return [_f("files.runtime_dir", "files", "ok", f"{rd}: created at start")]
        return [_f("files.runtime_dir", "files", "error",
                   f"{rd} cannot be created by {ctx.acct.name}", why,
                   f"`install -d -m 0755 -o {ctx.acct.name} {rd}`", True)]
    ok, why = access_as(rd, ctx.acct, 2)
    if not ok:
        return [_f("files.runtime_dir", "files", "error", f"{rd} is not writable by "
                   f"{ctx.acct.name}", why, f"`chown {ctx.acct.name}: {rd}`", True)]
    return [_f("files.runtime_dir", "files", "ok", f"{rd} writable")]


_PORT_FIELDS = (("public", "proxy.public_url", "the public port"),
                ("api", "proxy.api_url", "the proxy API port"),
                ("hub", "hub.bind_url", "the hub's port"))


def _endpoints(cfg: Config) -> dict[str, Endpoint]:
    return {"public": cfg.public, "api": cfg.api, "hub": cfg.hub_bind}


def check_ports(ctx: Ctx, preflight: bool = False) -> list[Finding]:
    out: list[Finding] = []
    eps = _endpoints(ctx.cfg)
    for key, field_, label in _PORT_FIELDS:
        ep = eps[key]
        id = f"ports.{key}"
        holder = ports.port_holder(ep.host, ep.port)
        if holder is None:
            err = ports.bind_error(ep.host, ep.port)
            if err is not None and err.errno == errno.EADDRNOTAVAIL:
                out.append(_f(id, "ports", "error", f"{ep.host} is not an address of this host",
                              f"{field_} = {ep.origin}",
                              "use an address this host has (`ip -br addr`), 0.0.0.0 or "
                              "127.0.0.1", True))
            elif err is not None and err.errno == errno.EACCES and ctx.acct.uid != 0:
                out.append(_f(id, "ports", "error",
                              f"port {ep.port} needs privileges {ctx.acct.name} lacks",
                              f"{field_} = {ep.origin}",
                              "use a port >= 1024 (or grant CAP_NET_BIND_SERVICE in the unit)",
                              True))
            elif preflight or not ctx.supervisor_alive:
                out.append(_f(id, "ports", "ok", f"{label} {ep.host}:{ep.port} is free"))
            else:
                out.append(_f(id, "ports", "error",
                              f"nothing listens on {label} {ep.host}:{ep.port}, yet hubsvc "
                              "is running", f"status.json pid {ctx.status and ctx.status['pid']}",
                              "look at `hubsvc status` and the journal "
                              "(`journalctl -u hubsvc`)"))
            continue
        if not preflight and holder.pid is not None and holder.pid in ctx.our_pids:
            out.append(_f(id, "ports", "ok",
                          f"{label} {ep.host}:{ep.port} is held by hubsvc ({holder.describe()})"))
            out += _exposure_findings(ctx, key, ep, holder)
            continue
        if not preflight and holder.pid is None and (ctx.supervisor_alive
                                                     or ctx.status_error):
            out.append(_f(id, "ports", "skipped",
                          f"{label} is held by a process this account cannot identify",
                          holder.describe(), "run the doctor as root to see which"))
            continue
        note = ""
        if ctx.supervisor_alive is False and holder.cmdline and (
                "configurable-http-proxy" in holder.cmdline or "jupyterhub" in holder.cmdline):
            note = (" (a proxy or hub left behind by a stopped hubsvc? it is not supervised)")
        who = holder.describe()
        kill = f"`kill {holder.pid}`" if holder.pid else "stop that process"
        out.append(_f(id, "ports", "error",
                      f"{label} {ep.host}:{ep.port} is taken by another process{note}",
                      f"{who} (socket inode {holder.inode})",
                      f"stop that process ({kill}; `systemctl status {holder.pid or 'PID'}` "
                      f"names its unit) or give {field_} a free port", True))
    # what the network can reach
    hub = eps["hub"]
    conn = getattr(ctx.cfg.hub, "connect_url", None)
    if not hub.is_loopback and conn and not parse_endpoint(conn).is_loopback:
        out.append(_f("ports.hub_exposure", "ports", "ok",
                      "the hub's own port is reachable from the network, for users' servers "
                      f"at hub.connect_url {conn}",
                      "keep it firewalled from users' browsers: their entry point is "
                      "proxy.public_url"))
    elif not hub.is_loopback:
        out.append(_f("ports.hub_exposure", "ports", "warning",
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
        return [_f("ports.api_exposure", "ports", "error",
                   f"the proxy API listens on {holder.address}, reachable from the network, "
                   f"although proxy.api_url is {ep.origin}",
                   holder.describe(),
                   "remove --api-ip (or the address given to it) from proxy.extra_args in "
                   "hubsvc.toml, then restart hubsvc; whoever holds the token controls every "
                   "route")]
    return [_f("ports.hub_exposure", "ports", "error",
               f"the hub listens on {holder.address}, reachable from the network, although "
               f"hub.bind_url is {ep.origin}: users can bypass the proxy",
               holder.describe(),
               "remove the address override from hub.extra_args (or the admin's JupyterHub "
               "config), then restart hubsvc")]


def check_entry_url(ctx: Ctx, url: str) -> list[Finding]:
    """Is `url` (what a user opened) the public entry point, or the hub's private port?"""
    cfg = ctx.cfg
    try:
        ep = parse_endpoint(url)
    except ValueError as e:
        return [_f("entry.url", "entry point", "error", f"{url!r} is not a URL", str(e),
                   "pass --url http://HOST:PORT/")]
    origin = ep.connect_origin
    chp = http_get(origin + "/_chp_healthz")
    page = http_get(ep.url(""))
    local = _is_local_host(ep.host)
    served_by_chp = isinstance(chp, Reply) and chp.status == 200 and b"OK" in chp.body
    hub_port = local and ep.port == cfg.hub_bind.port
    if isinstance(page, Exception) and isinstance(chp, Exception):
        evidence = f"GET {url} → {_err_text(page)}"
        if hub_port:
            return [_f("entry.url", "entry point", "error",
                       f"{url} is the hub's private address (hub.bind_url), not the entry "
                       "point", evidence,
                       f"open {ctx.users_url} instead (proxy.public_url)")]
        return [_f("entry.url", "entry point", "error", f"{url} does not answer", evidence,
                   f"users should open {ctx.users_url} (proxy.public_url)")]
    if served_by_chp:
        if local and ep.port == cfg.public.port:
            return [_f("entry.url", "entry point", "ok",
                       f"{url} is hubsvc's public entry point (served by the proxy)")]
        return [_f("entry.url", "entry point", "warning",
                   f"{url} is served by a configurable-http-proxy, but not the one on "
                   "proxy.public_url", f"GET {origin}/_chp_healthz → 200",
                   f"users should open {ctx.users_url}")]
    ev = f"GET {origin}/_chp_healthz → " + (
        f"HTTP {chp.status}" if isinstance(chp, Reply) else _err_text(chp))
    if isinstance(page, Reply):
        ev += f"; GET {url} → HTTP {page.status}"
        if page.headers.get("location"):
            ev += f" Location: {page.headers['location']}"
    if hub_port or (isinstance(page, Reply) and "x-jupyterhub-version" in page.headers):
        return [_f("entry.url", "entry point", "error",
                   f"{url} reaches the hub directly, without the proxy: the classic wrong "
                   "entry point (login works, then 302 to a 404 or a redirect loop)", ev,
                   f"open {ctx.users_url} instead (proxy.public_url); update bookmarks and "
                   "links, and keep hub.bind_url on 127.0.0.1")]
    return [_f("entry.url", "entry point", "warning", f"{url} is not hubsvc's entry point", ev,
               f"users should open {ctx.users_url}")]


def _is_local_host(host: str) -> bool:
    try:
        addrs = {str(a) for a in ports._resolve(host)}
    except OSError:
        return False
    local = {"127.0.0.1", "::1", "0.0.0.0", "::"}
    if addrs & local or any(a.startswith("127.") for a in addrs):
        return True
    for a in addrs:
        err = ports.bind_error(a, 0)
        if err is None:
            return True
    return False


def _is_user_server(pid: int) -> bool:
    """A single-user server talks to the hub's API legitimately."""
    cmd = ports.cmdline(pid) or ""
    if "jupyterhub-singleuser" in cmd or "jupyterhub.singleuser" in cmd:
        return True
    try:
        env = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return False
    return b"\0JUPYTERHUB_API_URL=" in b"\0" + env


def direct_hub_clients(ctx: Ctx) -> list[Finding]:
    """Open connections to the hub's port from something other than CHP or hubsvc.

    Browsers keep connections open; a client talking to the hub's port directly that is
    neither the proxy, hubsvc, nor a process started by the hub (users' servers) is a
    person or tool using the wrong entry point.
    """
    hub = ctx.cfg.hub_bind
    conns = ports.connections_to(hub.port)
    if not conns:
        return []
    proxy_pids: set[int] = set()
    for key in ("public", "api"):
        ep = _endpoints(ctx.cfg)[key]
        h = ports.port_holder(ep.host, ep.port)
        if h is not None and h.pid is not None:
            proxy_pids.add(h.pid)
    hub_holder = ports.port_holder(hub.host, hub.port)
    hub_tree: set[int] = set()
    if hub_holder is not None and hub_holder.pid is not None:
        hub_tree = set(ports.iter_pids_of_tree(hub_holder.pid))
    me = os.getpid()  # the doctor's own probes
    strangers: list[str] = []
    for c in conns:
        if c.peer_pid is not None and (c.peer_pid in proxy_pids or c.peer_pid in hub_tree
                                       or c.peer_pid in ctx.our_pids or c.peer_pid == me):
            continue
        if c.peer_pid is None and c.peer_local:
            continue  # a local peer we cannot identify: not enough to accuse anyone
        if c.peer_pid is not None and _is_user_server(c.peer_pid):
            continue  # a user's server started elsewhere (SystemdSpawner …) calling the API
        who = (f"pid {c.peer_pid} ({' '.join((ports.cmdline(c.peer_pid) or '?').split())[:80]})"
               if c.peer_pid is not None else f"{c.peer} (another host)")
        strangers.append(who)
    if not strangers:
        return [_f("entry.direct_clients", "entry point", "ok",
                   "no one but the proxy and hubsvc talks to the hub's port")]
    return [_f("entry.direct_clients", "entry point", "warning",
               f"{len(strangers)} connection(s) reach the hub's private port "
               f"{hub.port} directly, not through the proxy",
               "; ".join(sorted(set(strangers))[:10]),
               f"users must open {ctx.users_url} (proxy.public_url), not "
               f"{hub.origin}/ — the hub's own port answers the login page but then "
               "redirects to a 404 or a redirect loop (single-user servers on other hosts "
               "also connect here; those are fine)")]


def check_service(ctx: Ctx) -> list[Finding]:
    """The running service: components, chain, routes vs running servers."""
    cfg = ctx.cfg
    out: list[Finding] = []
    st = ctx.status
    if st is None and ctx.status_error:
        out.append(_f("service.status", "service", "skipped",
                      "hubsvc's status cannot be read by this account", ctx.status_error,
                      "run the doctor as root or as the service account"))
    elif st is None:
        out.append(_f("service.status", "service", "skipped",
                      "hubsvc is not running (no status.json)",
                      f"{cfg.paths.runtime_dir / status_mod.FILE} absent"))
    elif not ctx.supervisor_alive:
        out.append(_f("service.status", "service", "skipped",
                      f"hubsvc is not running (status.json names pid {st.get('pid')}, "
                      "which is gone)"))
    else:
        out.append(_f("service.status", "service", "ok" if st.get("ready") else "error",
                      f"hubsvc pid {st.get('pid')}: " + ("ready" if st.get("ready") else
                                                         f"not ready ({st.get('state')})"),
                      json.dumps({k: v for k, v in st.items() if k != "components"})[:300],
                      "" if st.get("ready") else "see `hubsvc status` and the journal"))
        for name, comp in (st.get("components") or {}).items():
            state = comp.get("state")
            restarts = int(comp.get("restarts") or 0)
            lf = comp.get("last_failure")
            ev = f"pid {comp.get('pid')}, state {state}, {restarts} restart(s)" + (
                f", last failure: {lf}" if lf else "")
            if state != "ready":
                out.append(_f(f"service.{name}", "service", "error", f"{name} is {state}", ev,
                              f"see `journalctl -u hubsvc` (or hubsvc's output) for {name}"))
            elif restarts:
                out.append(_f(f"service.{name}", "service", "warning",
                              f"{name} is ready but was restarted {restarts} time(s)", ev,
                              f"find why in the logs around the last failure: {lf}"))
            else:
                out.append(_f(f"service.{name}", "service", "ok", f"{name} ready", ev))
    # live probes: only when something listens where hubsvc's components would
    eps = _endpoints(cfg)
    live = any(ports.port_holder(eps[k].host, eps[k].port) for k in ("api", "hub", "public"))
    if not live:
        return out
    tok = {"Authorization": f"token {ctx.proxy_token}"} if ctx.proxy_token else None
    jobs: dict[str, Callable[[], Reply | Exception]] = {
        "routes": lambda: (http_get(cfg.api.url("api/routes"), tok) if tok
                           else RuntimeError(ctx.token_error or "no token")),
        "hub_health": lambda: http_get(ctx.hub_url("hub/health")),
        "public_health": lambda: http_get(cfg.public.url("hub/health")),
        "chp_healthz": lambda: http_get(cfg.public.connect_origin + "/_chp_healthz"),
        "servers": lambda: (http_get(ctx.hub_url("hub/api/users?state=active&limit=10000"),
                                     {"Authorization": f"token {ctx.hub_token}"})
                            if ctx.hub_token else RuntimeError(ctx.token_error or "no token")),
    }
    conn = getattr(cfg.hub, "connect_url", None)
    if conn:
        conn_url = parse_endpoint(conn).url(ctx.hub_prefix.lstrip("/") + "hub/api/")
        jobs["connect"] = lambda: http_get(conn_url)
    with cf.ThreadPoolExecutor(len(jobs)) as ex:
        futs = {k: ex.submit(fn) for k, fn in jobs.items()}
        r = {k: f.result() for k, f in futs.items()}

    def desc(x: Reply | Exception) -> str:
        return f"HTTP {x.status}" if isinstance(x, Reply) else _err_text(x)

    routes: dict[str, Any] | None = None
    rr = r["routes"]
    if isinstance(rr, RuntimeError):
        out.append(_f("service.proxy_api", "service", "skipped",
                      "the proxy's routes were not read: the token cannot be read here",
                      str(rr), "run the doctor as root or as the service account"))
    elif isinstance(rr, Reply) and rr.status == 200:
        routes = rr.json()
        out.append(_f("service.proxy_api", "service", "ok",
                      f"proxy API answers with hubsvc's token ({len(routes)} routes)"))
    elif isinstance(rr, Reply) and rr.status == 403:
        out.append(_f("service.proxy_api", "service", "error",
                      "the proxy on proxy.api_url refuses hubsvc's token",
                      f"GET {cfg.api.url('api/routes')} → 403",
                      "another configurable-http-proxy holds the API port, or the token "
                      f"file {ctx.files.proxy_token} changed since it started: restart hubsvc"))
    else:
        out.append(_f("service.proxy_api", "service", "error", "the proxy API does not answer",
                      f"GET {cfg.api.url('api/routes')} → {desc(rr)}",
                      "restart hubsvc (`systemctl restart hubsvc`) and read the journal"))
    hh = r["hub_health"]
    if isinstance(hh, Reply) and hh.status == 200:
        out.append(_f("service.hub_health", "service", "ok",
                      f"the hub answers on {cfg.hub_bind.origin}"))
    else:
        out.append(_f("service.hub_health", "service", "error", "the hub does not answer",
                      f"GET {ctx.hub_url('hub/health')} → {desc(hh)}",
                      "read the hub's log (`journalctl -u hubsvc -t hubsvc-hub`)"))
    ph, cz = r["public_health"], r["chp_healthz"]
    if isinstance(ph, Reply) and ph.status == 200:
        out.append(_f("entry.public", "entry point", "ok",
                      f"{ctx.users_url} reaches the hub through the proxy"))
    else:
        out.append(_f("entry.public", "entry point", "error",
                      "the public URL does not reach the hub through the proxy",
                      f"GET {cfg.public.url('hub/health')} → {desc(ph)}; "
                      f"GET /_chp_healthz → {desc(cz)}",
                      "the hub's route may be missing from the proxy: restart hubsvc, or ask "
                      "the hub to re-sync (see service.routes)"))
    if "connect" in r:
        cr = r["connect"]
        if isinstance(cr, Reply) and cr.status == 200:
            out.append(_f("service.connect_url", "service", "ok",
                          f"users' servers can reach the hub at {conn}"))
        else:
            out.append(_f("service.connect_url", "service", "error",
                          f"the hub does not answer at hub.connect_url {conn}: users' "
                          "servers cannot reach it (spawns time out)",
                          f"GET {conn_url} → {desc(cr)} (from this host)",
                          "make hub.bind_url listen on an address that connect_url reaches, "
                          "and open that port to the machines servers run on"))
    if routes is not None:
        out += _route_findings(ctx, routes, r["servers"])
    if st is not None and ctx.supervisor_alive:
        out += _loop_findings(ctx, st.get("redirect_loops") or [], routes)
    return out


def _loop_findings(ctx: Ctx, loops: list[Any],
                   routes: dict[str, Any] | None = None) -> list[Finding]:
    """Redirect-loop episodes the supervisor saw in the hub's log (status.json).

    An episode still open is an error; one that ended is a warning (it happened since
    hubsvc started). A "missing route" loop whose route is in the proxy's table now is most
    often a browser on the hub's private port: the hub logs both the same way.
    """
    out: list[Finding] = []
    table = {_norm(k) for k in routes} if routes is not None else None
    hub_origin = ctx.cfg.hub_bind.origin
    for ep in loops:
        if not isinstance(ep, dict):
            continue
        user, cause = str(ep.get("user", "?")), ep.get("cause", "")
        sev: Severity = "error" if ep.get("open") else "warning"
        when = "now" if ep.get("open") else f"ended ({ep.get('ended_by') or 'over'})"
        ev = (f"user {user}: {ep.get('url', '')} ({ep.get('count', '?')} redirects, {when}); "
              f"{ep.get('detail', '')}")
        wrong_door = (f"users open {ctx.users_url} (proxy.public_url), never {hub_origin}/ "
                      "(the hub's private address)")
        if cause == "private_address":
            out.append(_f(f"entry.private_address.{user}", "entry point", "error",
                          f"{user} reached the hub's private address instead of the proxy "
                          "(the classic wrong entry point): a redirect loop", ev,
                          f"open {ctx.users_url} instead (proxy.public_url), not "
                          f"{hub_origin}/"))
        elif cause == "version_skew":
            out.append(_f(f"service.loop.{user}", "service", sev,
                          f"{user}'s server runs another JupyterHub version: a redirect loop",
                          ev, "install jupyterhub of the hub's version in the users' "
                          "environment (see jupyterhub.singleuser)"))
        elif cause == "missing_route" and table is not None and _norm(
                f"{ctx.hub_prefix}user/{user}") in table:
            out.append(_f(f"service.loop.{user}", "entry point", sev,
                          f"{user} was in a redirect loop although the proxy has a route for "
                          f"the server: most likely the browser used the hub's private address "
                          f"{hub_origin}/ (the classic wrong entry point), or the route was "
                          "missing then and has been restored since", ev,
                          f"{wrong_door}; if it happens through the public URL: "
                          + _resync_fix(ctx)))
        else:
            out.append(_f(f"service.loop.{user}", "service", sev,
                          f"{user} was in a redirect loop ({cause or 'cause unknown'})", ev,
                          _resync_fix(ctx)))
    return out


def _norm(spec: str) -> str:
    return spec if spec.endswith("/") else spec + "/"


def _resync_fix(ctx: Ctx) -> str:
    # no token on a command line (argv is world-readable in /proc): probe-spawn reads
    # hubsvc's own token file and re-syncs through the hub's API
    return ("hubsvc re-syncs the routes itself within one health interval; to do it now run "
            f"`hubsvc probe-spawn --config {ctx.cfg.source or resolve_path(None)} --user NAME` "
            "for one of the users listed (it asks the hub to push every route, "
            "POST /hub/api/proxy); the hub alone waits up to 5 minutes")


def _route_findings(ctx: Ctx, routes: dict[str, Any],
                    servers: Reply | Exception) -> list[Finding]:
    out: list[Finding] = []
    table = routetable.parse(routes)
    hub = table.hub_route()
    if hub is not None:
        out.append(_f("service.hub_route", "service", "ok",
                      f"the hub's route {_norm(hub.spec)} is in the proxy's table"))
    else:
        out.append(_f("service.hub_route", "service", "error",
                      "the proxy's table has no route marked as the hub's",
                      f"routes: {sorted(_norm(r.spec) for r in table)[:10]}", _resync_fix(ctx)))
    if isinstance(servers, RuntimeError):
        out.append(_f("service.routes", "service", "skipped",
                      "running servers were not compared with routes", str(servers)))
        return out
    if not (isinstance(servers, Reply) and servers.status == 200):
        ev = (f"HTTP {servers.status} {servers.body[:200]!r}" if isinstance(servers, Reply)
              else _err_text(servers))
        out.append(_f("service.routes", "service", "warning",
                      "the hub's list of running servers could not be read", ev,
                      "check that the hubsvc service and role exist in the hub "
                      "(restart hubsvc to regenerate its JupyterHub config)"))
        return out
    users = servers.json()
    if isinstance(users, dict):
        users = users.get("items", [])
    missing: list[str] = []
    count = 0
    for u in users:
        for sname, s in (u.get("servers") or {}).items():
            if not s.get("ready"):
                continue
            count += 1
            url = s.get("url") or ""
            if url not in table:
                label = u["name"] + (f"/{sname}" if sname else "")
                missing.append(f"{label} ({url})")
    if missing:
        out.append(_f("service.routes", "service", "error",
                      f"{len(missing)} running server(s) have no route in the proxy: their "
                      "users get a redirect loop (\"Redirect loop detected\")",
                      "missing: " + ", ".join(missing[:20]), _resync_fix(ctx)))
    else:
        out.append(_f("service.routes", "service", "ok",
                      f"every running server ({count}) has its route in the proxy"))
    return out


# ---- the user's flow: causes of redirect loops the JupyterHub config shows ----------------
def flow_findings(ctx: Ctx) -> list[Finding]:
    """The config-visible causes of hubsvc.probe.rules, with probe-spawn's own words and fix
    (the same rule functions decide both)."""
    from .probe import config_diagnoses
    from .probe import settings as flow_settings
    from .probe.flow import make_facts

    settings, why = flow_settings.load(ctx.cfg)
    if settings is None:
        return [_f("jupyterhub.flow", "jupyterhub", "skipped",
                   "redirect-loop causes in the JupyterHub config were not checked", why or "")]
    facts = make_facts(ctx.cfg, "NAME")
    facts.settings = settings
    out = [_f(f"jupyterhub.flow.{d.cause}", "jupyterhub", "error",
              d.summary + " (users' browsers loop or stop at a login page)",
              "; ".join(d.evidence), d.fix) for d in config_diagnoses(facts)]
    return out or [_f("jupyterhub.flow", "jupyterhub", "ok",
                      "no redirect-loop cause in the JupyterHub config (default_url, "
                      "public_url, cookie_options)")]


def check_systemd(ctx: Ctx) -> list[Finding]:
    if not systemd_running():
        try:
            comm = Path("/proc/1/comm").read_text().strip()
        except OSError:
            comm = "?"
        return [_f("systemd", "systemd", "skipped", "systemd not running",
                   f"PID 1 is {comm!r}; /run/systemd/system is absent")]
    props = _systemctl_show("hubsvc.service", ["LoadState", "UnitFileState", "ActiveState",
                                               "SubState", "DropInPaths", "FragmentPath",
                                               "Result", "NRestarts"])
    if props is None:
        return [_f("systemd", "systemd", "skipped", "systemctl is not usable here")]
    out: list[Finding] = []
    if props.get("LoadState") != "loaded":
        out.append(_f("systemd.unit", "systemd", "warning",
                      "hubsvc.service is not installed",
                      f"LoadState={props.get('LoadState')}",
                      "install the hubsvc package (it ships hubsvc.service), then "
                      "`systemctl daemon-reload`"))
        return out
    ufs = props.get("UnitFileState", "")
    if ufs in ("enabled", "enabled-runtime", "static", "alias", "linked"):
        out.append(_f("systemd.enabled", "systemd", "ok", f"hubsvc.service is {ufs}"))
    else:
        out.append(_f("systemd.enabled", "systemd", "warning",
                      "hubsvc.service does not start at boot", f"UnitFileState={ufs}",
                      "`systemctl enable --now hubsvc`"))
    out += failed_units_findings(_run_text(["systemctl", "list-units", "--failed", "--all",
                                            "--plain", "--no-legend", "hubsvc*"]))
    out += dropin_findings(props.get("DropInPaths", ""))
    return out


def _run_text(argv: list[str]) -> str:
    rc, so, _ = _run(argv, timeout=5)
    return so if rc == 0 else ""


def failed_units_findings(text: str) -> list[Finding]:
    failed = [ln.split()[0] for ln in text.splitlines() if ln.strip()]
    if not failed:
        return [_f("systemd.failed", "systemd", "ok", "no failed hubsvc units")]
    return [_f("systemd.failed", "systemd", "error", f"{len(failed)} hubsvc unit(s) failed",
               ", ".join(failed), "read why: `systemctl status " + " ".join(failed[:3])
               + "` and `journalctl -u hubsvc -b`; once fixed, `systemctl reset-failed`")]


# settings in a drop-in that change how hubsvc is started, supervised or sandboxed
_SENSITIVE = {"ExecStart", "Type", "Restart", "RestartPreventExitStatus", "WatchdogSec",
              "NotifyAccess", "KillMode", "User", "Group", "TimeoutStopSec",
              "TimeoutStartSec", "Environment", "EnvironmentFile", "ProtectHome",
              "ProtectSystem", "ReadWritePaths", "CapabilityBoundingSet", "DynamicUser",
              "StateDirectory", "RuntimeDirectory", "PrivateTmp", "SuccessExitStatus"}


def dropin_findings(paths_text: str) -> list[Finding]:
    paths = [Path(p) for p in paths_text.split() if p]
    if not paths:
        return [_f("systemd.dropins", "systemd", "ok", "no drop-ins change hubsvc.service")]
    touched: list[str] = []
    for p in paths:
        try:
            text = p.read_text()
        except OSError:
            continue
        for ln in text.splitlines():
            k, sep, v = ln.strip().partition("=")
            if sep and k.strip() in _SENSITIVE:
                touched.append(f"{p}: {k.strip()}={v.strip()}")
    if not touched:
        return [_f("systemd.dropins", "systemd", "ok",
                   f"{len(paths)} drop-in(s), none overrides hubsvc's settings",
                   ", ".join(map(str, paths)))]
    return [_f("systemd.dropins", "systemd", "warning",
               f"drop-ins override {len(touched)} of hubsvc.service's settings",
               "; ".join(touched[:15]),
               "make sure each is intended (`systemctl cat hubsvc`); remove the ones that "
               "are not with `systemctl revert hubsvc` or by deleting the file")]


# ---- orchestration --------------------------------------------------------------------------
def _guard(fn: Callable[[], list[Finding]], id: str, group: str) -> list[Finding]:
    try:
        return fn()
    except Exception as e:  # a bug in one check must not hide the others
        return [_f(id, group, "skipped", f"could not check: {type(e).__name__}: {e}")]


def collect(cfg: Config, *, url: str | None = None, acct: Account | None = None) -> list[
        Finding]:
    """Every check, run concurrently where they wait on programs or the network."""
    ctx = _make_ctx(cfg, acct, service_env=True)
    src = cfg.source or resolve_path(None)
    findings: list[Finding] = [
        _f("config.load", "config", "ok", f"{src} is valid"),
        _f("programs.path", "programs", "ok",
           f"programs are looked up as the service does: {ctx.path_source}, then hubsvc's "
           "own folders", ctx.search),
    ]
    with cf.ThreadPoolExecutor(6) as ex:
        f_proxy = ex.submit(_guard, lambda: check_proxy_program(ctx), "proxy.command",
                            "programs")

        def hub_chain() -> list[Finding]:
            out, py = check_hub_program(ctx)
            if py is None:
                return out
            probe = run_hub_probe(ctx, py)
            out += hub_findings(ctx, py, probe)
            return out + _scheduler_findings(ctx, probe) + survival.findings(
                ctx.cfg, probe, ctx.status if ctx.supervisor_alive else None)

        f_hub = ex.submit(_guard, hub_chain, "hub.command", "programs")
        f_service = ex.submit(_guard, lambda: check_service(ctx), "service", "service")
        f_systemd = ex.submit(_guard, lambda: check_systemd(ctx), "systemd", "systemd")
        f_url = ex.submit(_guard, lambda: check_entry_url(ctx, url), "entry.url",
                          "entry point") if url else None
        findings += _guard(lambda: check_files(ctx), "files", "files")
        findings += _guard(lambda: check_ports(ctx), "ports", "ports")
        findings += _guard(lambda: doctor_tls.check(ctx), "tls", "tls")
        findings += _guard(lambda: direct_hub_clients(ctx), "entry.direct_clients",
                           "entry point")
        findings += _guard(lambda: flow_findings(ctx), "jupyterhub.flow", "jupyterhub")
        findings += f_proxy.result() + f_hub.result() + f_service.result()
        if f_url is not None:
            findings += f_url.result()
        findings += f_systemd.result()
    order = {g: i for i, g in enumerate(GROUPS)}
    findings.sort(key=lambda f: order.get(f.group, len(GROUPS)))
    return findings


SLURM_SPAWNER = "batchspawner.batchspawner.SlurmSpawner"


def _scheduler_findings(ctx: Ctx, probe: dict[str, Any] | str) -> list[Finding]:
    """hubsvc.slurm's checks, only when the hub's spawner is a SlurmSpawner (they load the
    spawner settings again, which costs a second start of the hub's Python)."""
    if isinstance(probe, str):
        return []
    if SLURM_SPAWNER not in ((probe.get("spawner") or {}).get("mro") or []):
        return []
    try:
        from . import slurm
    except ImportError:
        return []
    return slurm.doctor_findings(ctx.cfg, path=ctx.search)


def preflight_findings(cfg: Config) -> list[Finding]:
    """Cheap checks for `hubsvc run` (no programs run, no network): binaries, node,
    files readable, state dir and secrets, ports. Checked for the account running it."""
    ctx = _make_ctx(cfg, Account.from_uid(os.geteuid(), "the account running hubsvc"))
    out = check_proxy_program(ctx, run_version=False)
    out += check_hub_program(ctx)[0]
    out += check_files(ctx, preflight=True)
    out += check_ports(ctx, preflight=True)
    return out


def port_findings(cfg: Config) -> list[Finding]:
    """The port checks of `preflight_findings` alone (a reload checks changed ports)."""
    ctx = _make_ctx(cfg, Account.from_uid(os.geteuid(), "the account running hubsvc"))
    return check_ports(ctx, preflight=True)


def blocking(findings: Iterable[Finding]) -> list[Finding]:
    """The findings that make starting pointless (for `hubsvc run` → exit 78)."""
    return [f for f in findings if f.severity == "error" and f.blocks_start]


def format_problem(f: Finding) -> str:
    """One finding as `hubsvc run` prints it (the same words as the doctor)."""
    ev = f"\n      evidence: {f.evidence}" if f.evidence else ""
    return f"  {f.id}: {f.what}{ev}\n      fix: {f.fix}"


def exit_code(findings: Iterable[Finding]) -> int:
    return EX_ERRORS if any(f.severity == "error" for f in findings) else EX_OK


def render_text(findings: list[Finding], cfg: Config | None, elapsed: float) -> str:
    lines: list[str] = []
    src = cfg.source if cfg else None
    lines.append(f"hubsvc doctor — {src}")
    width = max((len(f.id) for f in findings), default=10)
    groups = list(GROUPS) + sorted({f.group for f in findings} - set(GROUPS))
    for g in groups:
        fs = [f for f in findings if f.group == g]
        if not fs:
            continue
        lines.append("")
        lines.append(g)
        for f in fs:
            lines.append(f"  {f.severity:<8} {f.id:<{width}}  {f.what}")
    counts = {s: sum(1 for f in findings if f.severity == s) for s in SEVERITIES}
    lines.append("")
    lines.append(f"{counts['error']} error(s), {counts['warning']} warning(s), "
                 f"{counts['ok']} ok, {counts['skipped']} skipped ({elapsed:.1f} s)")
    todo = [f for f in findings if f.severity in ("error", "warning")]
    if todo:
        lines.append("")
        lines.append("What to fix:")
        todo.sort(key=lambda f: f.severity != "error")
        for i, f in enumerate(todo, 1):
            lines.append(f"{i:>3}. [{f.severity}] {f.id}: {f.what}")
            if f.evidence:
                lines.append(f"     evidence: {f.evidence}")
            if f.fix:
                lines.append(f"     fix: {f.fix}")
    skipped = [f for f in findings if f.severity == "skipped" and f.evidence]
    if skipped:
        lines.append("")
        lines.append("Not checked:")
        for f in skipped:
            lines.append(f"  {f.id}: {f.what} — {f.evidence}")
    return "\n".join(lines) + "\n"


def config_error_text(path: Path, err: ConfigError) -> str:
    """The same words as `hubsvc check-config`."""
    lines = [f"hubsvc: {path} cannot be used:"]
    for p in err.problems:
        lines.append(f"  {p.field}: {p.message}\n      fix: {p.fix}")
    return "\n".join(lines) + "\n"


def run_doctor(cfg_path: Path | str | None, *, as_json: bool, out: TextIO,
               url: str | None = None, err: TextIO | None = None) -> int:
    """`hubsvc doctor [--config PATH] [--json] [--url URL]`; returns the exit status."""
    t0 = time.monotonic()
    err = err if err is not None else sys.stderr
    path = resolve_path(cfg_path)
    if url is not None:
        try:
            parse_endpoint(url)
        except ValueError as e:
            msg = f"hubsvc doctor: --url: {e}\n      fix: pass the URL users open, e.g. " \
                  "--url http://HOST:8000/\n"
            if as_json:
                out.write(json.dumps({"exit_code": EX_CONFIG, "usage_error": str(e)}) + "\n")
            else:
                err.write(msg)
            return EX_CONFIG
    try:
        cfg = load(path)
    except ConfigError as e:
        if as_json:
            out.write(json.dumps({
                "config": str(path), "exit_code": EX_CONFIG,
                "config_errors": [asdict(p) for p in e.problems]}, indent=1) + "\n")
        else:
            err.write(config_error_text(path, e))
        return EX_CONFIG
    findings = collect(cfg, url=url)
    elapsed = time.monotonic() - t0
    code = exit_code(findings)
    if as_json:
        acct = next((f.what for f in findings if f.id == "files.account"), "")
        doc = {
            "config": str(cfg.source),
            "exit_code": code,
            "elapsed_s": round(elapsed, 3),
            "account": acct,
            "summary": {s: sum(1 for f in findings if f.severity == s) for s in SEVERITIES},
            "findings": [f.to_json() for f in findings],
        }
        out.write(json.dumps(doc, indent=1) + "\n")
    else:
        out.write(render_text(findings, cfg, elapsed))
    return code


def main(argv: list[str] | None = None) -> int:
    """`python -m hubsvc.doctor` until the CLI wires `hubsvc doctor`."""
    import argparse

    ap = argparse.ArgumentParser(prog="hubsvc doctor")
    ap.add_argument("--config")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--url", help="a URL users open, to check it is the right entry point")
    a = ap.parse_args(argv)
    return run_doctor(a.config, as_json=a.json, out=sys.stdout, url=a.url)


if __name__ == "__main__":
    sys.exit(main())
