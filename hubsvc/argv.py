"""What a `hubsvc` command line names, read before anything heavy is imported (the entry
point decides how `run` loads on it; cli parses the rest)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

# config.DEFAULT_PATH (tests/unit/test_hubhold.py keeps it equal) and config.ENV_VAR
DEFAULT_CONFIG = "/etc/hubsvc/hubsvc.toml"
CONFIG_ENV = "HUBSVC_CONFIG"


def command_word(argv: list[str]) -> str | None:
    """The subcommand named in argv, skipping global options (and --config's value)."""
    it = iter(argv)
    for a in it:
        if a == "--config":
            next(it, None)
        elif not a.startswith("-"):
            return a
    return None


_RUN_VALUES = {"--config": None, "--log-level": ("debug", "info", "warning", "error")}


def plain_run(argv: list[str]) -> bool:
    """argv is `run` with only options cli's parser accepts for it, spelled in full
    (`--config PATH`, `--log-level LEVEL`, either as `--opt=value`): a command line that
    will not end in a usage error, `--help` or `--version` before the config is read."""
    words, i = 0, 0
    while i < len(argv):
        a = argv[i]
        name, eq, value = a.partition("=")
        if name in _RUN_VALUES:
            if name == "--log-level" and not words:
                return False  # run's own option: not before the subcommand
            if not eq:
                i += 1
                if i >= len(argv):
                    return False
                value = argv[i]
            choices = _RUN_VALUES[name]
            if not value or (choices is not None and value not in choices):
                return False
        elif a == "run":
            words += 1
        else:
            return False
        i += 1
    return words == 1


def option_value(argv: Sequence[str], name: str) -> str | None:
    """The value of the last `name VALUE` or `name=VALUE` in argv (argparse keeps the
    last), or None."""
    found = None
    for i, a in enumerate(argv):
        if a == name and i + 1 < len(argv):
            found = argv[i + 1]
        elif a.startswith(name + "="):
            found = a[len(name) + 1:]
    return found


def config_path(argv: Sequence[str]) -> Path:
    """The config file `hubsvc ARGV` will read, in config.resolve_path's order, before
    argparse and config are loaded (hubsvc.warm, hubsvc.hubhold)."""
    return Path(option_value(argv, "--config") or os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG)
