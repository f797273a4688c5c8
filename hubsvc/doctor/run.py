"""`hubsvc doctor`: every check group, run concurrently where they wait on programs or
the network, and the report (text or JSON) with its exit status (0: no error, 1: errors,
78: unusable config or arguments)."""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import TextIO

from .. import survival
from ..config import Config, ConfigError, load, parse_endpoint, resolve_path
from ..host import Account
from . import hubprobe, scheduler, tls
from .context import make_ctx
from .entry import check_entry_url, direct_hub_clients
from .files import check_files
from .finding import EX_CONFIG, GROUPS, SEVERITIES, Finding, describe, exit_code, problems_text, render_text
from .jupyterhub import flow_findings, hub_findings
from .network import check_ports
from .programs import check_hub_program, check_proxy_program
from .service import check_service
from .systemd import check_systemd


def _guard(fn: Callable[[], list[Finding]], id: str, group: str) -> list[Finding]:
    try:
        return fn()
    except Exception as e:  # a bug in one check must not hide the others
        return [Finding(id, group, "skipped", f"could not check: {type(e).__name__}: {e}")]


def collect(cfg: Config, *, url: str | None = None, acct: Account | None = None) -> list[
        Finding]:
    """Every check, run concurrently where they wait on programs or the network."""
    ctx = make_ctx(cfg, acct, service_env=True)
    src = cfg.source or resolve_path(None)
    findings: list[Finding] = [
        Finding("config.load", "config", "ok", f"{src} is valid"),
        Finding("programs.path", "programs", "ok",
                f"programs are looked up as the service does: {ctx.path_source}, then hubsvc's "
                "own folders", ctx.search),
    ]
    with cf.ThreadPoolExecutor(6) as ex:
        f_proxy = ex.submit(_guard, lambda: check_proxy_program(ctx), "proxy.command",
                            "programs")

        flow: list[Finding] = []  # filled by hub_chain from the same start of the hub's Python

        def hub_chain() -> list[Finding]:
            out, py = check_hub_program(ctx)
            probe = hubprobe.run(cfg, py, ctx.search) if py is not None else None
            flow[:] = _guard(lambda: flow_findings(ctx, probe), "jupyterhub.flow", "jupyterhub")
            if py is None or probe is None:
                return out
            out += hub_findings(ctx, py, probe)
            return out + scheduler.findings(cfg, probe, path=ctx.search) + survival.findings(
                cfg, probe, ctx.status if ctx.supervisor_alive else None)

        f_hub = ex.submit(_guard, hub_chain, "hub.command", "programs")
        f_service = ex.submit(_guard, lambda: check_service(ctx), "service", "service")
        f_systemd = ex.submit(_guard, lambda: check_systemd(ctx), "systemd", "systemd")
        f_url = ex.submit(_guard, lambda: check_entry_url(ctx, url), "entry.url",
                          "entry point") if url else None
        findings += _guard(lambda: check_files(ctx), "files", "files")
        findings += _guard(lambda: check_ports(ctx), "ports", "ports")
        findings += _guard(lambda: tls.check(ctx), "tls", "tls")
        findings += _guard(lambda: direct_hub_clients(ctx), "entry.direct_clients",
                           "entry point")
        hub = f_hub.result()
        findings += flow + f_proxy.result() + hub + f_service.result()
        if f_url is not None:
            findings += f_url.result()
        findings += f_systemd.result()
    order = {g: i for i, g in enumerate(GROUPS)}
    findings.sort(key=lambda f: order.get(f.group, len(GROUPS)))
    return findings


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
            msg = describe("hubsvc doctor: --url", str(e), "", "pass the URL users open, e.g. "
                           "--url http://HOST:8000/", indent="") + "\n"
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
            err.write(problems_text(str(path), e.problems))
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
    """`python -m hubsvc.doctor` (the same as `hubsvc doctor`)."""
    ap = argparse.ArgumentParser(prog="hubsvc doctor")
    ap.add_argument("--config")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--url", help="a URL users open, to check it is the right entry point")
    a = ap.parse_args(argv)
    return run_doctor(a.config, as_json=a.json, out=sys.stdout, url=a.url)
