"""How component processes are started and signalled. The supervisor decides *when*."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from .. import host

if TYPE_CHECKING:  # kept light: launch.unitstart runs before pydantic is loaded
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

    # Optional (the supervisor looks them up with getattr; every call is bounded in time):
    #
    # async def adopt(self, spec: ComponentSpec, sink: Sink) -> Handle | None
    #     A component still running from before this supervisor started (e.g. CHP kept
    #     across `systemctl restart hubsvc`), or None. An adopted handle counts only once
    #     the component's own readiness probe passes; otherwise it is stopped and started
    #     afresh. For CHP that probe is its API answering hubsvc's token; the hub's routes
    #     are then re-synced once the hub is ready.
    #
    # async def keep_on_stop(self, spec: ComponentSpec) -> bool
    #     True when this stop is really a restart of the service and the component should
    #     be left running for the next supervisor to adopt.
    #
    # Handle.cpu_ticks() -> int | None (optional too)
    #     CPU time the process has used so far: a component that fails its probes while it
    #     keeps using CPU is busy, not hung.


class ByPid:
    """What a handle learns from /proc about the process it names (both launchers)."""

    pid: int

    def is_stopped(self) -> bool:
        return host.is_stopped(self.pid)

    def cpu_ticks(self) -> int | None:
        return host.cpu_ticks(self.pid)
