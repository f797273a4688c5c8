"""Components as direct children of the supervisor.

Each child gets its own session (a Ctrl-C at the terminal reaches only hubsvc, which
then stops children in order) and PR_SET_PDEATHSIG=SIGTERM (a supervisor killed with
-9 does not leave a proxy or hub behind to hold the ports; users' servers are the
hub's children in their own sessions and are not affected).

CHP's head start: `hubsvc run` executes CHP as soon as the configuration and every
preflight check have passed, before it loads the supervisor and its event loop
(`head_start`, called by cli.cmd_run). The supervisor's first start of the proxy then
takes that process (`ProcessLauncher.start`) when it runs the same command line;
otherwise the early process is stopped and CHP started afresh. Nothing here loads
asyncio before CHP is executed.

The hub's head start (`hold_start`): right after CHP's, the hub's own command line runs
under `hubsvc.hold`, which loads JupyterHub's modules and then waits on a pipe; the
supervisor's first start of the hub writes the byte that lets it run (`HeadStart.release`),
once CHP is proven ready, like any start of the hub.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from .. import host
from ..hold import ENV as HOLD_ENV
from ..hold import GO, hold_argv
from . import ByPid

if TYPE_CHECKING:
    import asyncio

    from ..components import ComponentSpec
    from ..output import Sink
    from ..warm import Warm

_in_child = host.die_with_parent()


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


class EarlyHandle(ByPid):
    """A child executed before the event loop ran (CHP's head start). Its exit is seen
    through a pidfd the loop watches; it is reaped here, never by asyncio's watcher."""

    def __init__(self, popen: subprocess.Popen[bytes]):
        self._popen = popen
        self.pid = popen.pid
        self.executed_at = time.monotonic()
        self.warm: str | None = None  # hubsvc.warm: "loaded", or why it was not used

    async def wait(self) -> int:
        import asyncio

        if self.returncode is not None:
            return self.returncode
        loop = asyncio.get_running_loop()
        try:
            fd = os.pidfd_open(self.pid)
        except ProcessLookupError:  # exited and reaped in between
            return self._popen.wait()
        except OSError:  # no pidfd (an old kernel, a seccomp filter): a thread waits
            return await asyncio.to_thread(self._popen.wait)
        exited = loop.create_future()
        loop.add_reader(fd, lambda: exited.done() or exited.set_result(None))
        try:
            await exited
        finally:
            loop.remove_reader(fd)
            os.close(fd)
        return self._popen.wait()  # exited: reaps at once

    @property
    def returncode(self) -> int | None:
        return self._popen.poll()

    def signal(self, sig: int) -> None:
        if self._popen.poll() is None:  # never signal a reaped (maybe reused) pid
            with contextlib.suppress(ProcessLookupError):
                self._popen.send_signal(sig)

    def stop_and_reap(self, grace_s: float = 2.0) -> None:
        """SIGTERM, SIGKILL after `grace_s`, and reap it (blocking, bounded)."""
        self.signal(signal.SIGTERM)
        try:
            self._popen.wait(grace_s)
        except subprocess.TimeoutExpired:
            self.signal(signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._popen.wait(grace_s)


class HeadStart:
    """A component executed before the supervisor ran, and exactly what it was given.
    With `warm` (hubsvc.warm), the node already loading CHP is handed the command line
    when it matches exactly; otherwise it is stopped and CHP executed as usual."""

    def __init__(self, name: str, argv: Sequence[str], env: Mapping[str, str], cwd: Path,
                 sink: Sink, warm: Warm | None = None, held: Sequence[str] | None = None):
        self.name, self.argv, self.env, self.cwd, self.sink = name, list(argv), dict(env), cwd, sink
        self.warm: str | None = None  # "loaded": handed to the warm node; else why not
        self._go = -1  # with `held` (hubsvc.hold): the pipe whose byte lets it run
        popen = None
        if held is not None:
            r, self._go = os.pipe()
            try:
                out = sink.fd if sink.fd >= 0 else subprocess.DEVNULL
                popen = subprocess.Popen(
                    list(held), stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                    env={**self.env, HOLD_ENV: f"fd:{r}"}, cwd=cwd, pass_fds=(r,),
                    start_new_session=True, preexec_fn=_in_child)
            except BaseException:
                os.close(self._go)
                raise
            finally:
                os.close(r)
            self.warm = "loaded"
        if warm is not None:
            self.warm = warm.mismatch(self.argv, self.env, cwd, sink)
            if self.warm is None:
                popen = warm.hand_over(self.argv, self.env)
                self.warm = "loaded" if popen is not None else "exited"
            if popen is None:
                warm.stop()
        if popen is None:
            out = sink.fd if sink.fd >= 0 else subprocess.DEVNULL
            popen = subprocess.Popen(
                self.argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                env=self.env, cwd=cwd, start_new_session=True, preexec_fn=_in_child)
        self.handle = EarlyHandle(popen)
        self.handle.warm = self.warm

    def differs(self, spec: ComponentSpec, sink: Sink) -> list[str]:
        """What the supervisor's start would run differently (names only, never values:
        the environment holds CHP's token); empty when it may take this process."""
        return [what for what, same in (
            ("name", spec.name == self.name),
            ("argv", list(spec.argv) == self.argv),
            ("env", dict(spec.env) == self.env),
            ("cwd", Path(spec.cwd) == self.cwd),
            ("sink", sink is self.sink)) if not same]

    def release(self) -> bool:
        """Let a held process run (one executed for real: nothing to do). False when it
        can no longer be let run: it has exited."""
        if self._go < 0:
            return True
        try:
            if self.handle.returncode is not None:
                return False
            os.write(self._go, GO)
            return True
        except OSError:  # BrokenPipeError: it exited
            return False
        finally:
            os.close(self._go)
            self._go = -1

    def discard(self) -> None:
        """Stop it and reap it: it was never taken."""
        if self._go >= 0:  # a held process ends by itself at the end of its pipe
            os.close(self._go)
            self._go = -1
        self.handle.stop_and_reap()


def head_start(name: str, argv: Sequence[str], env: Mapping[str, str], cwd: Path,
               sink: Sink, warm: Warm | None = None) -> HeadStart | None:
    """Execute a component now (or hand it to `warm`); None when it cannot be executed
    (the supervisor's own start then fails with the reason, like any start)."""
    try:
        return HeadStart(name, argv, env, cwd, sink, warm)
    except (OSError, ValueError, subprocess.SubprocessError):  # ValueError: a NUL in argv
        if warm is not None:
            warm.stop()
        return None


def hold_start(name: str, argv: Sequence[str], env: Mapping[str, str], cwd: Path,
               sink: Sink) -> HeadStart | None:
    """Run the component's command line held (hubsvc.hold: its modules load, it runs
    only once released); None when it cannot be held (not a script of hubsvc's own
    Python) or not executed: the supervisor's start then executes it as usual."""
    held = hold_argv(list(argv))
    if held is None:
        return None
    try:
        return HeadStart(name, argv, env, cwd, sink, held=held)
    except (OSError, ValueError, subprocess.SubprocessError):
        return None


class ProcessLauncher:
    name = "process"

    def __init__(self, head_starts: Sequence[HeadStart] = ()):
        self._head = {h.name: h for h in head_starts}

    async def start(self, spec: ComponentSpec, sink: Sink) -> ProcessHandle | EarlyHandle:
        import asyncio

        early = self._head.pop(spec.name, None)
        if early is not None:
            differs = early.differs(spec, sink)
            if not differs:
                # taken even if it has already exited: the supervisor then sees this start
                # fail (its exit code, its output) like any other; a held one that exited
                # never ran the command, and is started afresh
                if early.release():
                    return early.handle
                differs = ["exited"]
            import structlog

            structlog.get_logger("hubsvc").warning(
                "head_start_discarded", component=spec.name, pid=early.handle.pid,
                differs=differs, action="stopped; started afresh")
            await asyncio.to_thread(early.discard)
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

    def discard_head_starts(self) -> None:
        """Stop what was executed early and never taken (a stop before the bring-up)."""
        while self._head:
            self._head.popitem()[1].discard()

    async def adopt(self, spec: ComponentSpec, sink: Sink) -> ProcessHandle | None:
        return None  # children die with their supervisor (PDEATHSIG): nothing to adopt

    async def keep_on_stop(self, spec: ComponentSpec) -> bool:
        return False
