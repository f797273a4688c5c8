"""probe-spawn: walk a user's login → spawn → server flow as their browser does, find
redirect loops, name the cause (docs/redirect-loops.md).

Modules: urls (what counts as the same place), cookies (a jar with a browser's rules),
session (the hub login session hubsvc makes), walker (hop by hop), rules (one function
per cause; doctor uses the config-visible ones), settings (the effective JupyterHub config,
read in a child interpreter), spawn (hub API: start, progress, scoped tokens), evidence
(CHP's table, the server's environment and version), flow (the walk and the verdict),
cli (the command). Nothing here depends on the supervisor.
"""

from .cli import add_arguments, run_cli
from .flow import probe_spawn
from .model import (
    BROWSER_REDIRECT_LIMIT,
    EXIT_CODES,
    Diagnosis,
    Facts,
    FlowSettings,
    Hop,
    ProbeUsageError,
    Verdict,
    Walk,
)
from .rules import classify_spawn_failure, config_diagnoses, diagnose

__all__ = [
    "BROWSER_REDIRECT_LIMIT", "EXIT_CODES", "Diagnosis", "Facts", "FlowSettings", "Hop",
    "ProbeUsageError", "Verdict", "Walk", "add_arguments", "classify_spawn_failure",
    "config_diagnoses", "diagnose", "probe_spawn", "run_cli",
]
