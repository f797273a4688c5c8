"""Entry point of the `hubsvc` command. `hubsvc exec` is dispatched before anything heavy
is imported (it runs at every start of a component unit)."""

from __future__ import annotations

import sys

from .argv import command_word


def main() -> int:
    if sys.argv[1:2] == ["exec"]:
        from .execshim import main as exec_main

        return exec_main(sys.argv[2:])
    if command_word(sys.argv[1:]) == "run":
        # `hubsvc run` loads ~340 modules before it executes CHP and runs the supervisor: the
        # cyclic garbage collector would walk them again and again while they load (~15 ms
        # of the start). It is turned back on before the supervisor's loop (cli._run).
        import gc

        gc.disable()
        # node starts loading CHP now, on the other core, while hubsvc loads and checks
        # its config (hubsvc.warm); the head start hands it CHP's command line
        from . import hubhold, warm

        try:
            warm.begin(sys.argv[1:])
            # then the hub starts loading JupyterHub, held: its unit under systemd, else a
            # child (hubsvc.hubhold)
            hubhold.begin(sys.argv[1:])
            from .cli import main as cli_main

            return cli_main()
        finally:
            try:
                warm.discard()  # not handed over: a check failed, or the launcher is systemd
            finally:
                hubhold.discard()  # not taken: a check failed
    from .cli import main as cli_main

    return cli_main()


if __name__ == "__main__":
    sys.exit(main())
