"""What a `hubsvc` command line names, read before anything heavy is imported (the entry
point decides how `run` loads on it; cli parses the rest)."""

from __future__ import annotations


def command_word(argv: list[str]) -> str | None:
    """The subcommand named in argv, skipping global options (and --config's value)."""
    it = iter(argv)
    for a in it:
        if a == "--config":
            next(it, None)
        elif not a.startswith("-"):
            return a
    return None
