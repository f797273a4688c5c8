"""Entry point of the `hubsvc` command. `hubsvc exec` is dispatched before anything heavy
is imported (it runs at every start of a component unit)."""

from __future__ import annotations

import sys


def main() -> int:
    if sys.argv[1:2] == ["exec"]:
        from .execshim import main as exec_main

        return exec_main(sys.argv[2:])
    from .cli import main as cli_main

    return cli_main()


if __name__ == "__main__":
    sys.exit(main())
