"""The doctor's "files" group, for the account that runs the hub: hubsvc.toml and the
admin's JupyterHub config readable, state and runtime folders usable and private, the
secrets 0600 and owned by that account, free space."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from .. import host
from ..host import Account
from .context import Ctx
from .finding import Finding

SPACE_ERROR_BYTES = 50 * 2**20
SPACE_WARN_BYTES = 500 * 2**20


def _readable_fix(path: Path, acct: Account) -> str:
    return (f"let {acct.name} read it without opening it to everyone: "
            f"`chgrp {host.group_name(acct.gid)} {path} && chmod 0640 {path}` (and make sure "
            f"every folder above it can be entered by {acct.name}); never chmod 777, "
            "never sudoers")


def check_files(ctx: Ctx, preflight: bool = False) -> list[Finding]:
    cfg, acct = ctx.cfg, ctx.acct
    out: list[Finding] = []
    if not preflight:
        out.append(Finding("files.account", "files", "ok",
                           f"file checks are made for {acct.name} (uid {acct.uid}), {acct.source}"))
    # hubsvc.toml and the admin's JupyterHub config
    if cfg.source is not None:
        why = host.access_as(cfg.source, acct, 4)
        out.append(Finding("files.hubsvc_toml", "files", "ok", f"{cfg.source} readable")
                   if why is None else
                   Finding("files.hubsvc_toml", "files", "error",
                           f"{cfg.source} cannot be read by {acct.name}", why,
                           _readable_fix(cfg.source, acct), True))
    cfile = cfg.hub.config_file
    cfile_err = host.stat_error(cfile) if cfile is not None else None
    if cfile is not None and cfile_err is not None:
        why = host.access_as(cfile, acct, 4)
        if acct.is_me or why is not None:
            out.append(Finding("files.hub_config", "files", "error",
                               f"the JupyterHub config {cfile} cannot be read by {acct.name}, "
                               "who runs the hub", why or cfile_err, _readable_fix(cfile, acct), True))
        else:
            out.append(Finding("files.hub_config", "files", "skipped",
                               f"{cfile} cannot be examined by uid {os.geteuid()}", cfile_err,
                               "run the doctor as root or as the service account"))
    elif cfile is not None:
        if not cfile.exists():
            out.append(Finding("files.hub_config", "files", "error",
                               f"the JupyterHub config {cfile} does not exist",
                               f"hub.config_file = {str(cfile)!r}",
                               "create it (it may be empty) or set hub.config_file = \"\"", True))
        elif not cfile.is_file():
            out.append(Finding("files.hub_config", "files", "error", f"{cfile} is not a file",
                               "", "point hub.config_file at a Python file", True))
        else:
            why = host.access_as(cfile, acct, 4)
            if why is None:
                out.append(Finding("files.hub_config", "files", "ok", f"{cfile} readable"))
            else:
                out.append(Finding("files.hub_config", "files", "error",
                                   f"the JupyterHub config {cfile} cannot be read by {acct.name}, "
                                   "who runs the hub", why, _readable_fix(cfile, acct), True))
            st = cfile.stat()
            if st.st_mode & 0o002:
                out.append(Finding("files.hub_config_mode", "files", "error",
                                   f"{cfile} is writable by everyone: any user can run code as "
                                   "the hub", f"mode {stat.S_IMODE(st.st_mode):04o}",
                                   f"`chmod o-w {cfile}`"))
    out += _state_dir_findings(ctx, preflight)
    out += _runtime_dir_findings(ctx)
    return out


def _dir_create_check(path: Path, acct: Account) -> str | None:
    """Why `acct` cannot create the folder `path` (None: it can)."""
    parent = path
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    why = host.access_as(parent, acct, 2)
    if why is not None:
        return f"{parent}: {why}"
    return host.access_as(parent, acct, 1)


def _state_dir_findings(ctx: Ctx, preflight: bool) -> list[Finding]:
    acct = ctx.acct
    sd = ctx.cfg.paths.state_dir
    out: list[Finding] = []
    err = host.stat_error(sd)
    if err is not None:
        return [Finding("files.state_dir", "files", "error" if acct.is_me else "skipped",
                        f"{sd} cannot be examined by uid {os.geteuid()}", err,
                        f"`install -d -m 0700 -o {acct.name} {sd}`" if acct.is_me else
                        "run the doctor as root or as the service account", acct.is_me)]
    if not sd.exists():
        why = _dir_create_check(sd, acct)
        if why is None:
            return [Finding("files.state_dir", "files", "ok",
                            f"{sd} does not exist yet; hubsvc creates it at first start")]
        return [Finding("files.state_dir", "files", "error", f"{sd} cannot be created by {acct.name}",
                        why, f"`install -d -m 0700 -o {acct.name} {sd}`", True)]
    if not sd.is_dir():
        return [Finding("files.state_dir", "files", "error", f"{sd} is not a directory", "",
                        "remove it or choose another paths.state_dir", True)]
    st = sd.stat()
    mode = stat.S_IMODE(st.st_mode)
    why = host.access_as(sd, acct, 2) or host.access_as(sd, acct, 1)
    if why is not None:
        out.append(Finding("files.state_dir", "files", "error",
                           f"{sd} is not writable by {acct.name}", why,
                           f"`chown {acct.name}: {sd} && chmod 0700 {sd}` (never chmod 777)", True))
    elif mode & 0o002:
        out.append(Finding("files.state_dir", "files", "error",
                           f"{sd} is writable by everyone", f"mode {mode:04o}",
                           f"`chmod 0700 {sd}`"))
    elif mode & 0o007:
        out.append(Finding("files.state_dir", "files", "warning",
                           f"{sd} is open to every user (it holds the hub's database)",
                           f"mode {mode:04o}", f"`chmod 0700 {sd}`"))
    else:
        out.append(Finding("files.state_dir", "files", "ok",
                           f"{sd} ({mode:04o}, {host.user_name(st.st_uid)})"))
    if not os.access(sd, os.X_OK):
        out.append(Finding("files.secrets", "files", "skipped",
                           f"the secrets in {sd} cannot be examined by uid {os.geteuid()}",
                           f"{sd}: mode {mode:04o}, owner {host.user_name(st.st_uid)}",
                           "run the doctor as root or as the service account"))
        return out + _space_findings(sd, preflight)
    for path in ctx.files.all():
        out += secret_findings(path, acct)
    db = sd / "jupyterhub.sqlite"
    if host.is_file(db) and mode & 0o001:  # others can enter the state dir
        dmode = stat.S_IMODE(db.stat().st_mode)
        if dmode & 0o006:
            out.append(Finding("files.db", "files", "warning",
                               f"the hub's database {db} is readable by every user",
                               f"mode {dmode:04o}", f"`chmod 0600 {db}`"))
    return out + _space_findings(sd, preflight)


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
            out.append(Finding("files.space", "files", "error", f"only {mib} MiB free for {sd}",
                               f"statvfs({sd})", "free disk space (the hub's database and logs grow)"))
        elif 0 <= free < SPACE_WARN_BYTES:
            out.append(Finding("files.space", "files", "warning", f"only {mib} MiB free for {sd}",
                               f"statvfs({sd})", "free disk space"))
        elif free >= 0:
            out.append(Finding("files.space", "files", "ok", f"{mib} MiB free for {sd}"))
    return out


def secret_findings(path: Path, acct: Account) -> list[Finding]:
    id = f"files.secret.{path.name}"
    try:
        st = path.lstat()
    except FileNotFoundError:
        return [Finding(id, "files", "ok", f"{path.name}: created at first start")]
    except OSError as e:
        return [Finding(id, "files", "error", f"{path} cannot be examined", e.strerror or str(e),
                        f"make {path.parent} searchable by {acct.name}", True)]
    if not stat.S_ISREG(st.st_mode):
        return [Finding(id, "files", "error", f"{path} is not a regular file",
                        f"mode {stat.filemode(st.st_mode)}",
                        "remove it; hubsvc creates a fresh one at the next start", True)]
    out: list[Finding] = []
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o077:
        out.append(Finding(id, "files", "error",
                           f"the secret {path} is readable by other accounts",
                           f"mode {mode:04o}, owner {host.user_name(st.st_uid)}:"
                           f"{host.group_name(st.st_gid)}",
                           f"`chmod 0600 {path}`, then treat it as exposed: stop hubsvc, delete "
                           "the file and start hubsvc to get a new one (for the cookie secret "
                           "this logs every user out)"))
    if st.st_uid != acct.uid:
        out.append(Finding(id, "files", "error",
                           f"the secret {path} is owned by {host.user_name(st.st_uid)}, not "
                           f"{acct.name}", f"owner uid {st.st_uid}",
                           f"`chown {acct.name}: {path}`", True))
    if not out:
        out.append(Finding(id, "files", "ok", f"{path.name} (0600, {acct.name})"))
    return out


def _runtime_dir_findings(ctx: Ctx) -> list[Finding]:
    rd = ctx.cfg.paths.runtime_dir
    if not rd.exists():
        why = _dir_create_check(rd, ctx.acct)
        if why is None or host.systemd_running():  # RuntimeDirectory= creates it under systemd
            return [Finding("files.runtime_dir", "files", "ok", f"{rd}: created at start")]
        return [Finding("files.runtime_dir", "files", "error",
                        f"{rd} cannot be created by {ctx.acct.name}", why,
                        f"`install -d -m 0755 -o {ctx.acct.name} {rd}`", True)]
    why = host.access_as(rd, ctx.acct, 2)
    if why is not None:
        return [Finding("files.runtime_dir", "files", "error", f"{rd} is not writable by "
                        f"{ctx.acct.name}", why, f"`chown {ctx.acct.name}: {rd}`", True)]
    return [Finding("files.runtime_dir", "files", "ok", f"{rd} writable")]
