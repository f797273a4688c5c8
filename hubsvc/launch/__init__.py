"""How component processes are started and signalled. The supervisor decides *when*."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from ..components import ComponentSpec
from ..output import Sink


class Handle(Protocol):
    pid: int

    async def wait(self) -> int: ...

    def signal(self, sig: int) -> None: ...

    @property
    def returncode(self) -> int | None: ...

    def is_stopped(self) -> bool: ...


class Launcher(Protocol):
    async def start(self, spec: ComponentSpec, sink: Sink) -> Handle: ...


def pid_is_stopped(pid: int) -> bool:
    """True when the process is stopped (SIGSTOP/SIGTSTP) and cannot act on SIGTERM."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] in ("T", "t")
