"""`hubsvc run` starts without the modules only other commands need."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from hubsvc import cli

pytestmark = pytest.mark.unit


def test_command_word_skips_global_options() -> None:
    assert cli._command_word(["--config", "x.toml", "run", "--log-level", "debug"]) == "run"
    assert cli._command_word(["probe-spawn", "--user", "a"]) == "probe-spawn"
    assert cli._command_word(["--version"]) is None


def test_run_path_does_not_import_the_loop_probe() -> None:
    code = (
        "import sys\n"
        "from hubsvc import cli\n"
        "cli.build_parser(probe_options=False)\n"
        "import hubsvc.watch, hubsvc.slurm, hubsvc.supervisor, hubsvc.components\n"
        "print('hubsvc.redirects' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "False", out.stderr


def test_probe_spawn_keeps_its_options() -> None:
    p = cli.build_parser()
    args = p.parse_args(["probe-spawn", "--user", "ann", "--json"])
    assert args.user == "ann" and args.json is True


def test_run_checks_everything_once(tmp_path: Path) -> None:
    from hubsvc import config, preflight

    held = socket.socket()
    held.bind(("127.0.0.1", 0))
    held.listen()
    port = held.getsockname()[1]
    toml = tmp_path / "hubsvc.toml"
    toml.write_text(f'[paths]\nstate_dir = "{tmp_path}/s"\nruntime_dir = "{tmp_path}/r"\n'
                    f'[proxy]\ncommand = "{tmp_path}/no-such-chp"\n'
                    f'public_url = "http://127.0.0.1:{port}"\n')
    try:
        cfg = config.load(toml)
        both = preflight.static_problems(cfg) + preflight.port_problems(cfg)
        once = preflight.run_problems(cfg)
    finally:
        held.close()
    assert [p.field for p in once] == [p.field for p in both]
    fields = [p.field for p in once]
    assert "ports.public" in fields and "proxy.command" in fields, fields
