"""The doctor's "systemd" group: hubsvc.service installed and enabled, failed units,
drop-ins that override what the package sets (and, through survival, whether users'
servers outlive what systemd does to the hub's unit)."""

from __future__ import annotations

from pathlib import Path

from .. import host
from .context import Ctx
from .finding import Finding


def check_systemd(ctx: Ctx) -> list[Finding]:
    if not host.systemd_running():
        try:
            comm = Path("/proc/1/comm").read_text().strip()
        except OSError:
            comm = "?"
        return [Finding("systemd", "systemd", "skipped", "systemd not running",
                        f"PID 1 is {comm!r}; /run/systemd/system is absent")]
    props = host.systemctl_show("hubsvc.service", ["LoadState", "UnitFileState", "ActiveState",
                                               "SubState", "DropInPaths", "FragmentPath",
                                               "Result", "NRestarts"])
    if props is None:
        return [Finding("systemd", "systemd", "skipped", "systemctl is not usable here")]
    out: list[Finding] = []
    if props.get("LoadState") != "loaded":
        out.append(Finding("systemd.unit", "systemd", "warning",
                           "hubsvc.service is not installed",
                           f"LoadState={props.get('LoadState')}",
                           "install the hubsvc package (it ships hubsvc.service), then "
                           "`systemctl daemon-reload`"))
        return out
    ufs = props.get("UnitFileState", "")
    if ufs in ("enabled", "enabled-runtime", "static", "alias", "linked"):
        out.append(Finding("systemd.enabled", "systemd", "ok", f"hubsvc.service is {ufs}"))
    else:
        out.append(Finding("systemd.enabled", "systemd", "warning",
                           "hubsvc.service does not start at boot", f"UnitFileState={ufs}",
                           "`systemctl enable --now hubsvc`"))
    out += failed_units_findings(_run_text(["systemctl", "list-units", "--failed", "--all",
                                            "--plain", "--no-legend", "hubsvc*"]))
    out += dropin_findings(props.get("DropInPaths", ""))
    return out


def _run_text(argv: list[str]) -> str:
    r = host.run(argv, 5)
    return r.out if r.ok else ""


def failed_units_findings(text: str) -> list[Finding]:
    failed = [ln.split()[0] for ln in text.splitlines() if ln.strip()]
    if not failed:
        return [Finding("systemd.failed", "systemd", "ok", "no failed hubsvc units")]
    return [Finding("systemd.failed", "systemd", "error", f"{len(failed)} hubsvc unit(s) failed",
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
        return [Finding("systemd.dropins", "systemd", "ok", "no drop-ins change hubsvc.service")]
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
        return [Finding("systemd.dropins", "systemd", "ok",
                        f"{len(paths)} drop-in(s), none overrides hubsvc's settings",
                        ", ".join(map(str, paths)))]
    return [Finding("systemd.dropins", "systemd", "warning",
                    f"drop-ins override {len(touched)} of hubsvc.service's settings",
                    "; ".join(touched[:15]),
                    "make sure each is intended (`systemctl cat hubsvc`); remove the ones that "
                    "are not with `systemctl revert hubsvc` or by deleting the file")]
