"""The doctor's "programs" group: configurable-http-proxy and its node, JupyterHub and
the Python that runs it, found on the PATH the service gets and run with `--version`."""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

from .. import host
from ..commands import resolve_command
from .context import Ctx
from .finding import Finding
from .hubprobe import hub_python

PROC_TIMEOUT_S = 8.0

# Versions hubsvc is built and tested against.
CHP_SUPPORTED_MAJORS = (4, 5)
NODE_MIN_MAJOR = 18  # CHP 5.x declares node >= 20, measured to work on 18.20 and 20


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
    path = resolve_command(name, base, search)
    if path is not None:
        return [Finding(id, "programs", "ok", f"{label} found: {path}")], path
    bad = _not_executable_candidates(name, base, search)
    if bad:
        p = bad[0]
        try:
            mode = f"{stat.S_IMODE(p.stat().st_mode):04o}"
        except OSError as e:
            mode = f"? ({e.strerror})"
        if p.is_dir():
            return [Finding(id, "programs", "error", f"{label}: {p} is a directory, not a program",
                            f"{field} = {name!r}", f"set {field} to the program's path", True)], None
        return [Finding(id, "programs", "error", f"{label} is not executable: {p}",
                        f"{field} = {name!r}; {p} has mode {mode}",
                        f"`chmod 0755 {p}` (or reinstall {label}: {install})", True)], None
    where = search
    if "/" in name:
        return [Finding(id, "programs", "error", f"{label} not found at {name}",
                        f"{field} = {name!r}: no such file",
                        f"install it ({install}) or set {field} to the right absolute path",
                        True)], None
    return [Finding(id, "programs", "error", f"{label} not found: {name!r} is not on PATH",
                    f"searched {where}",
                    f"install it ({install}), or set {field} in hubsvc.toml to its absolute path "
                    "(a node installed in a custom prefix is not on the service's PATH)",
                    True)], None


def _interpreter_findings(id: str, prog: Path, label: str, install: str,
                          search: str) -> tuple[list[Finding], Path | None]:
    """The '#!' interpreter of a script (node for CHP): found and executable?"""
    sb = host.shebang(prog)
    if not sb:
        return [], None
    interp = sb[0]
    found = resolve_command(interp, search=search)
    if found is None:
        return [Finding(id, "programs", "error",
                        f"{label} needs {interp!r}, which is not on PATH",
                        f"{prog} starts with {host.first_line(prog)}; searched {search}",
                        f"install it ({install}) or put it on the PATH the service gets "
                        "(a drop-in with Environment=PATH=... for systemd)", True)], None
    return [Finding(id, "programs", "ok", f"{label}: {found}")], found


def version_tuple(text: str) -> tuple[int, ...] | None:
    m = re.search(r"(\d+)\.(\d+)(?:\.(\d+))?", text)
    if not m:
        return None
    return tuple(int(x) for x in m.groups() if x is not None)


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
    import concurrent.futures as cf  # here: `hubsvc run`'s preflight never runs them

    with cf.ThreadPoolExecutor(len(jobs)) as ex:
        env = host.child_env(ctx.search)
        res = {k: ex.submit(host.run, v, PROC_TIMEOUT_S, env) for k, v in jobs.items()}
        got = {k: r.result() for k, r in res.items()}
    chp = got["chp"]
    so = chp.out
    ver = version_tuple(so) if chp.ok else None
    if ver is None:
        out.append(Finding("proxy.version", "programs", "error",
                           "configurable-http-proxy does not run",
                           f"`{prog} --version` → exit {chp.rc}: {chp.why()}",
                           "reinstall configurable-http-proxy and check that node starts "
                           f"(`{node or 'node'} --version`)", True))
    elif ver[0] not in CHP_SUPPORTED_MAJORS:
        out.append(Finding("proxy.version", "programs", "warning",
                           f"configurable-http-proxy {'.'.join(map(str, ver))} is not a supported "
                           "version", f"{prog} --version → {so.strip()}",
                           "install configurable-http-proxy 5.x (hubsvc is tested with 5.3.0)"))
    else:
        out.append(Finding("proxy.version", "programs", "ok",
                           f"configurable-http-proxy {'.'.join(map(str, ver))}"))
    if "node" in got:
        nr = got["node"]
        so = nr.out
        nver = version_tuple(so) if nr.ok else None
        if nver is None:
            out.append(Finding("proxy.node_version", "programs", "error", "node does not run",
                               f"`{node} --version` → exit {nr.rc}: {nr.why(300)}",
                               "reinstall nodejs (`dnf install nodejs`)", True))
        elif nver[0] < NODE_MIN_MAJOR:
            out.append(Finding("proxy.node_version", "programs", "warning",
                               f"node {so.strip()} is older than configurable-http-proxy 5 asks for",
                               f"{node} --version → {so.strip()}",
                               f"install node >= {NODE_MIN_MAJOR} (`dnf module install nodejs:20` "
                               "on RHEL 9)"))
        else:
            out.append(Finding("proxy.node_version", "programs", "ok", f"node {so.strip()}"))
    return out


def check_hub_program(ctx: Ctx) -> tuple[list[Finding], Path | None]:
    cfg = ctx.cfg
    base = cfg.source.parent if cfg.source else None
    out, prog = _command_findings("hub.command", "hub.command", cfg.hub.command, base,
                                  "JupyterHub", "`pip install 'jupyterhub>=6,<7'` in hubsvc's "
                                  "environment", ctx.search)
    if prog is None:
        return out, None
    gone = _missing_interpreter(prog, ctx.search)
    if gone is not None:
        out.append(gone)
        return out, None
    py = hub_python(prog, ctx.search)
    if py is None:
        out.append(Finding("hub.python", "programs", "warning",
                           f"cannot tell which Python runs {prog}",
                           f"{prog} has no '#!…python' first line",
                           "point hub.command at the jupyterhub script of a Python environment"))
        return out, None
    return out, py


def _missing_interpreter(prog: Path, search: str) -> Finding | None:
    """The jupyterhub script's '#!' interpreter cannot be run (a virtualenv removed or
    moved since it was installed): the hub could never start."""
    sb = host.shebang(prog)
    if not sb or resolve_command(sb[0], search=search) is not None:
        return None
    interp = sb[0]
    if "/" in interp:
        what = f"JupyterHub cannot start: {interp}, the interpreter of {prog}, " \
               "does not exist or is not executable"
        evidence = f"{prog} starts with {host.first_line(prog)}"
    else:
        what = f"JupyterHub cannot start: {prog} needs {interp!r}, which is not on PATH"
        evidence = f"{prog} starts with {host.first_line(prog)}; searched {search}"
    return Finding("hub.python", "programs", "error", what, evidence,
                   "point hub.command at the jupyterhub script of an existing Python "
                   "environment (recreate a virtualenv whose Python was removed or moved)",
                   True)
