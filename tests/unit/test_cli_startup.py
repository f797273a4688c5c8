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


# what `hubsvc run` imports before it executes CHP (cli.py: main, cmd_run, _run)
RUN_PATH = (
    "from hubsvc import cli\n"
    "cli.build_parser(probe_options=False)\n"
    "from hubsvc import (components, hubapi, hubconfig, loopback, notify, probes,\n"
    "    routetable, routewatch, secrets, slurm, supervisor, tls, watch)\n"
    "from hubsvc.launch import process\n"
)


def loaded_on_the_run_path(module: str) -> bool:
    """Is `module` imported by the run path, in a fresh interpreter?"""
    code = f"import sys\n{RUN_PATH}print({module!r} in sys.modules)\n"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() in ("True", "False"), out.stderr
    return out.stdout.strip() == "True"


def test_run_path_does_not_import_the_loop_probe() -> None:
    assert not loaded_on_the_run_path("hubsvc.redirects")


def test_run_path_does_not_import_httpx_before_chp_is_executed() -> None:
    """httpx (~50 ms to import) is loaded at the first request made with it, after READY:
    not by anything `hubsvc run` imports before it executes CHP."""
    assert not loaded_on_the_run_path("httpx")
    assert loaded_on_the_run_path("hubsvc.loopback")  # the check does see the run path


def test_a_failed_request_is_caught_whichever_client_made_it() -> None:
    """`except request_errors()` catches the loopback client's errors before httpx is
    loaded, and httpx's once it is."""
    import asyncio

    import httpx

    from hubsvc.loopback import LoopbackError, request_errors
    from hubsvc.probes import failure_text

    assert set(request_errors()) == {LoopbackError, httpx.HTTPError}

    async def refused() -> str:
        async with httpx.AsyncClient(trust_env=False) as c:
            try:
                await c.get("http://127.0.0.1:9/", timeout=1)
            except request_errors() as e:
                return failure_text(e, 1)
        return "no error"

    assert asyncio.run(refused()).startswith(("connection refused", "cannot connect")), \
        "the refused request was not caught as a request error"


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


def test_the_unit_shim_loads_only_what_it_needs() -> None:
    """`hubsvc exec` runs at every start of a component unit: it checks the token's length
    without importing hubsvc.secrets (dataclasses, the stdlib's secrets, OpenSSL)."""
    from hubsvc import execshim, secrets

    assert execshim.MIN_LENGTH == secrets.MIN_LENGTH
    code = ("import sys\nsys.argv = ['hubsvc', 'exec', 'nothing']\n"
            "from hubsvc.__main__ import main\nrc = main()\n"
            "print(rc, *(m in sys.modules for m in "
            "('hubsvc.secrets', 'dataclasses', '_hashlib', 'pydantic', 'asyncio')))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == ["64", "False", "False", "False", "False", "False"], \
        out.stdout + out.stderr
