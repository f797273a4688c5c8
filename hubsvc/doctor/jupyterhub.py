"""The doctor's "jupyterhub" group: what the hub's Python makes of the admin's config
(version, load errors, settings hubsvc owns, authenticator and spawner classes), PAM and
local accounts, the single-user server's JupyterHub, and the redirect-loop causes the
config shows (hubsvc.probe's rules)."""

from __future__ import annotations

import ast
import os
from pathlib import Path
from typing import Any

from .. import host, hubdb
from ..commands import resolve_command
from ..probe import config_diagnoses
from ..probe import settings as flow_settings
from ..probe.flow import make_facts
from .context import Ctx
from .finding import Finding
from .hubprobe import hub_python
from .programs import version_tuple

HUB_SUPPORTED_MAJORS = (6,)


def hub_findings(ctx: Ctx, py: Path, probe: dict[str, Any] | str) -> list[Finding]:
    out: list[Finding] = []
    cfg = ctx.cfg
    if isinstance(probe, str):
        return [Finding("hub.import", "programs", "error", "JupyterHub's Python does not start",
                        probe, "reinstall hubsvc's environment", True)]
    if probe.get("error"):
        return [Finding("hub.import", "programs", "error",
                        "JupyterHub cannot be imported in the hub's environment",
                        f"{py}: {probe['error']}",
                        f"`{py} -m pip install 'jupyterhub>=6,<7'`", True)]
    hv = probe["version"]
    vt = version_tuple(hv) or (0,)
    if vt[0] not in HUB_SUPPORTED_MAJORS:
        out.append(Finding("hub.version", "programs", "warning",
                           f"JupyterHub {hv} is not a supported version",
                           f"{py}: jupyterhub {hv}", "install jupyterhub 6.x"))
    else:
        out.append(Finding("hub.version", "programs", "ok", f"JupyterHub {hv} ({py})"))

    # the admin's config
    cfile = cfg.hub.config_file
    le = probe.get("load_error")
    if le:
        where = f"{cfile}, line {le['line']}" if le.get("line") else str(cfile)
        out.append(Finding("jupyterhub.config_load", "jupyterhub", "error",
                           "the JupyterHub config file fails to load",
                           f"{where}: {le['type']}: {le['message']}"
                           + (f" (caused by {le['cause']})" if le.get("cause") else ""),
                           f"fix {where}; try it with `{py} -c \"from traitlets.config.loader import "
                           f"PyFileConfigLoader as L; L('{cfile.name if cfile else ''}', "
                           f"path='{cfile.parent if cfile else ''}').load_config()\"`", True))
    elif cfile is not None and cfile.is_file():
        out.append(Finding("jupyterhub.config_load", "jupyterhub", "ok", f"{cfile} loads"))
    lines = owned_lines(cfile) if cfile else {}
    for section, key, value in probe.get("owned_set", []):
        ln = lines.get((section, key))
        at = f"{cfile}, line {ln}" if ln else str(cfile)
        out.append(Finding(f"jupyterhub.owned.{section}.{key}", "jupyterhub", "warning",
                           f"the JupyterHub config sets c.{section}.{key}, which hubsvc owns: "
                           "it is ignored", f"{at}: c.{section}.{key} = {value}",
                           f"remove that line from {cfile}; {_owned_fix(section, key)}"))
    for kind, trait in (("authenticator", "authenticator_class"), ("spawner", "spawner_class")):
        info = probe.get(kind) or {}
        if info.get("error"):
            out.append(Finding(f"jupyterhub.{kind}", "jupyterhub", "error",
                               f"the {kind} class {info.get('name')!r} cannot be imported",
                               f"c.JupyterHub.{trait} = {info.get('name')!r}: {info['error']}",
                               f"install the package that provides it into {py.parent.parent}, or "
                               f"fix c.JupyterHub.{trait}", True))
        elif info.get("class"):
            out.append(Finding(f"jupyterhub.{kind}", "jupyterhub", "ok",
                               f"{kind}: {info['class']}"))
    out += _pam_findings(ctx, probe)
    out += _local_users_findings(ctx, probe)
    out += _singleuser_findings(ctx, py, probe)
    return out


def owned_lines(path: Path) -> dict[tuple[str, str], int]:
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
        return [Finding("jupyterhub.pam", "jupyterhub", "ok",
                        "PAM authentication: the hub runs as root")]
    shadow = Path("/etc/shadow")
    why = host.access_as(shadow, ctx.acct, 4)
    if why is None:
        return [Finding("jupyterhub.pam", "jupyterhub", "ok",
                        f"PAM authentication: {ctx.acct.name} can read {shadow}")]
    return [Finding("jupyterhub.pam", "jupyterhub", "error",
                    f"PAM authentication cannot check other users' passwords as {ctx.acct.name}",
                    f"the hub runs as {ctx.acct.name} ({ctx.acct.source}); {shadow}: {why}",
                    "run hubsvc as root (the packaged hubsvc.service does), or use another "
                    "authenticator; do not add the account to sudoers")]


def _local_users_findings(ctx: Ctx, probe: dict[str, Any]) -> list[Finding]:
    mro = (probe.get("spawner") or {}).get("mro", [])
    if ("jupyterhub.spawner.LocalProcessSpawner" not in mro
            or "jupyterhub.spawner.SimpleLocalProcessSpawner" in mro):
        return []
    names = sorted(set(probe.get("config_users", [])) | set(hubdb.user_names(ctx.cfg.paths.state_dir)))
    missing, homeless = [], []
    for n in names:
        pw = host.local_user(n)
        if pw is None:
            missing.append(n)
            continue
        if not pw.pw_dir or not os.path.isdir(pw.pw_dir):
            homeless.append(f"{n} ({pw.pw_dir or 'no home set'})")
    out: list[Finding] = []
    if missing:
        out.append(Finding("jupyterhub.users", "jupyterhub", "error",
                           "LocalProcessSpawner runs each server as the Unix user of the same name; "
                           f"{len(missing)} hub user(s) have no Unix account",
                           "no account for: " + ", ".join(missing[:20]),
                           "create the accounts (`useradd -m NAME`), or remove those users from "
                           "the hub, or use a spawner that does not need local accounts"))
    if homeless:
        out.append(Finding("jupyterhub.homes", "jupyterhub", "error",
                           "hub users whose home directory is missing: their servers cannot start",
                           ", ".join(homeless[:20]),
                           "create each home (`mkhomedir_helper NAME`, or `mkdir` + `chown NAME:`)"))
    if names and not out:
        out.append(Finding("jupyterhub.users", "jupyterhub", "ok",
                           f"{len(names)} hub user(s) have Unix accounts and homes"))
    if ctx.acct.uid != 0 and names:
        out.append(Finding("jupyterhub.spawn_as", "jupyterhub", "error",
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
        return [Finding("jupyterhub.singleuser", "jupyterhub", "skipped",
                        "jupyterhub-singleuser: not checked for "
                        f"{(probe.get('spawner') or {}).get('class', 'this spawner')}",
                        "its servers may run in an environment this host does not see")]
    first = cmd[0]
    exe = Path(first) if first.startswith("/") else resolve_command(first, search=ctx.search)
    if exe is None:
        return [Finding("jupyterhub.singleuser", "jupyterhub", "error",
                        f"the single-user server command {first!r} is not found",
                        f"Spawner.cmd = {cmd!r}; searched {ctx.search}",
                        "install jupyterhub (same version as the hub) and jupyterlab into the "
                        "users' environment, or set c.Spawner.cmd to the absolute path of its "
                        "jupyterhub-singleuser", True)]
    if not os.access(exe, os.X_OK):
        return [Finding("jupyterhub.singleuser", "jupyterhub", "error",
                        f"{exe} is not executable", f"Spawner.cmd = {cmd!r}",
                        f"`chmod 0755 {exe}`", True)]
    su_py = exe if "python" in exe.name else hub_python(exe, ctx.search)
    if su_py is None:
        return [Finding("jupyterhub.singleuser", "jupyterhub", "warning",
                        f"cannot tell the JupyterHub version behind {exe}",
                        f"{exe} is not a Python script",
                        "make sure it runs jupyterhub-singleuser of the hub's version")]
    hub_v = probe["version"]
    try:
        same = su_py.resolve() == hub_py.resolve() or os.path.samefile(su_py, hub_py)
    except OSError:
        same = False
    if same and su_py.parent == hub_py.parent:
        return [Finding("jupyterhub.singleuser", "jupyterhub", "ok",
                        f"jupyterhub-singleuser {hub_v}: {exe} (the hub's environment)")]
    r = host.run([str(su_py), "-c", "from jupyterhub._version import __version__ as v; print(v)"],
                 10, env=host.child_env(ctx.search))
    if not r.ok:
        return [Finding("jupyterhub.singleuser", "jupyterhub", "error",
                        f"jupyterhub is not importable where {exe} runs",
                        f"{su_py}: {r.why(300)}",
                        f"`{su_py} -m pip install 'jupyterhub=={hub_v}' jupyterlab`", True)]
    su_v = r.out.strip()
    if su_v != hub_v:
        return [Finding("jupyterhub.singleuser", "jupyterhub", "error",
                        f"jupyterhub-singleuser {su_v} does not match the hub's JupyterHub {hub_v}",
                        f"Spawner.cmd {exe} runs {su_py} with jupyterhub {su_v}; the hub "
                        f"({hub_py}) has {hub_v}",
                        f"`{su_py} -m pip install 'jupyterhub=={hub_v}'` (a mismatch causes "
                        "redirect loops and failed spawns)")]
    return [Finding("jupyterhub.singleuser", "jupyterhub", "ok",
                    f"jupyterhub-singleuser {su_v}: {exe}")]


def flow_findings(ctx: Ctx, probe: dict[str, Any] | str | None = None) -> list[Finding]:
    """The config-visible causes of hubsvc.probe.rules, with probe-spawn's own words and fix
    (the same rule functions decide both). `probe`: the doctor's run of the hub probe, whose
    answer has the settings; without one, the settings are read on their own."""
    settings, why = (flow_settings.from_probe(ctx.cfg, probe) if probe is not None
                     else flow_settings.load(ctx.cfg))
    if settings is None:
        return [Finding("jupyterhub.flow", "jupyterhub", "skipped",
                        "redirect-loop causes in the JupyterHub config were not checked", why or "")]
    facts = make_facts(ctx.cfg, "NAME")
    facts.settings = settings
    out = [Finding(f"jupyterhub.flow.{d.cause}", "jupyterhub", "error",
                   d.summary + " (users' browsers loop or stop at a login page)",
                   "; ".join(d.evidence), d.fix) for d in config_diagnoses(facts)]
    return out or [Finding("jupyterhub.flow", "jupyterhub", "ok",
                           "no redirect-loop cause in the JupyterHub config (default_url, "
                           "public_url, cookie_options)")]
