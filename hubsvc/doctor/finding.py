"""What a check found, and the one way it is written for a person.

A `Finding` carries what is wrong, the evidence (paths, pids, modes, responses) and the
fix; `describe` formats those three for `hubsvc doctor`, `hubsvc run`'s preflight and
`check-config` alike. Imports nothing of hubsvc, so any module may build findings.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from ..config import Config, Problem

Severity = Literal["error", "warning", "ok", "skipped"]
SEVERITIES: tuple[Severity, ...] = ("error", "warning", "ok", "skipped")
GROUPS = ("config", "programs", "files", "ports", "tls", "jupyterhub", "scheduler",
          "entry point", "service", "systemd")

EX_OK = 0
EX_ERRORS = 1
EX_CONFIG = 78


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


def for_group(group: str) -> Callable[..., Finding]:
    """A constructor of findings of one group whose ids start with "GROUP."."""
    def make(id: str, severity: Severity, what: str, evidence: str = "", fix: str = "",
             blocks: bool = False) -> Finding:
        return Finding(f"{group}.{id}", group, severity, what, evidence, fix, blocks)

    return make


def describe(name: str, what: str, evidence: str, fix: str | None, indent: str = "  ",
             detail: str = "      ") -> str:
    """`name: what`, an `evidence:` line when there is evidence, a `fix:` line unless
    `fix` is None."""
    out = f"{indent}{name}: {what}"
    if evidence:
        out += f"\n{detail}evidence: {evidence}"
    if fix is not None:
        out += f"\n{detail}fix: {fix}"
    return out


def blocking(findings: Iterable[Finding]) -> list[Finding]:
    """The findings that make starting pointless (for `hubsvc run` → exit 78)."""
    return [f for f in findings if f.severity == "error" and f.blocks_start]


def format_problem(f: Finding) -> str:
    """One finding as `hubsvc run` prints it (the same words as the doctor)."""
    return describe(f.id, f.what, f.evidence, f.fix)


def exit_code(findings: Iterable[Finding]) -> int:
    return EX_ERRORS if any(f.severity == "error" for f in findings) else EX_OK


def render_text(findings: list[Finding], cfg: Config | None, elapsed: float) -> str:
    """`hubsvc doctor`'s report: every finding by group, the counts, then what to fix."""
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
            lines.append(describe(f"{i:>3}. [{f.severity}] {f.id}", f.what, f.evidence,
                                  f.fix or None, indent="", detail="     "))
    skipped = [f for f in findings if f.severity == "skipped" and f.evidence]
    if skipped:
        lines.append("")
        lines.append("Not checked:")
        for f in skipped:
            lines.append(f"  {f.id}: {f.what} — {f.evidence}")
    return "\n".join(lines) + "\n"


def problems_text(source: str, problems: Iterable[Problem]) -> str:
    """Config problems as `check-config`, `run` and `doctor` print them."""
    lines = [f"hubsvc: {source} cannot be used:"]
    lines += [describe(p.field, p.message, p.evidence, p.fix) for p in problems]
    return "\n".join(lines) + "\n"
