"""`hubsvc probe-spawn`: options, the run, the exit code (0 ok, 1 loop, 2 spawn, 78 usage)."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path
from typing import Any

from ..config import Config
from .flow import probe_spawn
from .model import EX_CONFIG, ProbeUsageError

EX_INTERRUPTED = 130


def read_password(path: Path) -> str:
    """The password in PATH, which only its owner may read (like hubsvc's own secrets)."""
    mode = path.stat().st_mode
    if mode & 0o077:
        raise ValueError(f"{path} can be read by others (mode {mode & 0o777:o}); "
                         f"fix: chmod 600 {path}")
    # a password, not one of hubsvc's generated secrets: any non-empty length is valid
    value = path.read_text().strip()
    if not value:
        raise ValueError(f"{path} is empty; fix: write the probe account's password into it")
    return value


def add_arguments(p: Any) -> None:
    """Options of `hubsvc probe-spawn` (argparse)."""
    p.add_argument("--user", required=True, help="the hub user whose flow to walk")
    p.add_argument("--no-start", action="store_true",
                   help="only inspect: do not start the server if it is not running")
    p.add_argument("--no-repair", action="store_true",
                   help="diagnose only: do not re-sync the proxy's routes")
    p.add_argument("--timeout", type=float, default=120.0, metavar="S",
                   help="give up after S seconds in all (default 120)")
    p.add_argument("--url", default=None, metavar="URL",
                   help="after the login, also open URL (e.g. the address a user reported). "
                        "Credentials go only to the public URL's origin: a URL on another "
                        "origin is walked without any, and the output says so")
    p.add_argument("--password-file", default=None, metavar="PATH",
                   help="log in through the hub's form with the password in PATH (0600) "
                        "instead of the session hubsvc makes from the hub's cookie secret")
    p.add_argument("--token-walk", action="store_true",
                   help="the shortcut walk: start at /user/NAME/ with a short-lived token "
                        "that can only open USER's server (skips the hub's pages, cookies "
                        "and the OAuth hops; the output lists what it could not see)")
    p.add_argument("--json", action="store_true", help="print the verdict as JSON")


async def run_cli(cfg: Config, args: Any) -> int:
    """Print the verdict, return the exit code. SIGTERM ends the walk like Ctrl-C: the
    probe's token is deleted on the way out either way."""
    if args.timeout <= 0 or args.timeout > 3600:
        print("hubsvc probe-spawn: --timeout must be in (0, 3600]", file=sys.stderr)
        return EX_CONFIG
    password = None
    if args.password_file:
        try:
            password = read_password(Path(args.password_file))
        except (OSError, ValueError) as e:
            print(f"hubsvc probe-spawn: --password-file: {e}", file=sys.stderr)
            return EX_CONFIG
    if password is not None and getattr(args, "token_walk", False):
        print("hubsvc probe-spawn: --password-file and --token-walk exclude each other",
              file=sys.stderr)
        return EX_CONFIG
    task = asyncio.current_task()
    loop = asyncio.get_running_loop()
    installed = False
    if task is not None:
        try:
            loop.add_signal_handler(signal.SIGTERM, task.cancel)
            installed = True
        except (NotImplementedError, RuntimeError, ValueError):
            pass  # not the main thread: the caller owns signals
    try:
        v = await probe_spawn(cfg, args.user, start=not args.no_start, timeout_s=args.timeout,
                              repair=not args.no_repair, entry_url=args.url, password=password,
                              token_walk=getattr(args, "token_walk", False))
    except ProbeUsageError as e:
        print(f"hubsvc probe-spawn: {e}", file=sys.stderr)
        return EX_CONFIG
    except asyncio.CancelledError:
        print("hubsvc probe-spawn: interrupted (its token, if any, was deleted)",
              file=sys.stderr)
        return EX_INTERRUPTED
    finally:
        if installed:
            loop.remove_signal_handler(signal.SIGTERM)
    print(v.to_json() if args.json else v.render_text())
    return v.exit_code
