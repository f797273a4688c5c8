"""How component processes are started and signalled. The supervisor decides *when*."""

from __future__ import annotations

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
