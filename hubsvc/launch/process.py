"""Components as direct children of the supervisor.

Each child gets its own session (a Ctrl-C at the terminal reaches only hubsvc, which
then stops children in order) and PR_SET_PDEATHSIG=SIGTERM (a supervisor killed with
-9 does not leave a proxy or hub behind to hold the ports; users' servers are the
hub's children in their own sessions and are not affected).
"""

from __future__ import annotations

import asyncio
import ctypes
import signal
import subprocess

from ..components import ComponentSpec
from ..output import Sink
from . import ByPid

_PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True)


def _in_child() -> None:
    _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


class ProcessHandle(ByPid):
    def __init__(self, proc: asyncio.subprocess.Process):
        self._proc = proc
        self.pid = proc.pid

    async def wait(self) -> int:
        return await self._proc.wait()

    @property
    def returncode(self) -> int | None:
        return self._proc.returncode

    def signal(self, sig: int) -> None:
        if self._proc.returncode is None:  # never signal a reaped (maybe reused) pid
            try:
                self._proc.send_signal(sig)
            except ProcessLookupError:
                pass


class ProcessLauncher:
    name = "process"

    async def start(self, spec: ComponentSpec, sink: Sink) -> ProcessHandle:
        out = sink.fd if sink.fd >= 0 else subprocess.DEVNULL
        proc = await asyncio.create_subprocess_exec(
            *spec.argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            env=spec.env,
            cwd=spec.cwd,
            start_new_session=True,
            preexec_fn=_in_child,
        )
        return ProcessHandle(proc)

    async def adopt(self, spec: ComponentSpec, sink: Sink) -> ProcessHandle | None:
        return None  # children die with their supervisor (PDEATHSIG): nothing to adopt

    async def keep_on_stop(self, spec: ComponentSpec) -> bool:
        return False
