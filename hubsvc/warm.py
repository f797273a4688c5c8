"""CHP's node, loading CHP while `hubsvc run` checks its configuration.

From its exec to its API answering, CHP takes ~0.3 s on a small VM, most of it node
compiling CHP's modules; `hubsvc run` takes about as long to validate hubsvc.toml and run
its preflight before CHP may be executed. So, before anything else, `hubsvc run` starts
node on hubsvc/chp_warm.mjs, which loads CHP's library and waits on a pipe. It has
read no configuration and bound no port. The head start (launch.process.head_start)
then hands it CHP's command line and environment, and the process becomes CHP: its API
answers 0.1-0.16 s sooner (bench/RESULTS.md). Only the first start: a later start of CHP
(a restart, a reload) executes it directly. The loader runs CHP's own library code, as
hubsvc's account, before hubsvc.toml is validated: the program that account would run
anyway, with no port and no token.

Any other outcome (the config names another command, a check fails, the launcher is
systemd, hubsvc exits or dies) closes that pipe, or stops it: it ends without having
done anything. It is only tried where it can be matched exactly: CHP's npm bin script
run by node, under the process launcher. Reads the raw TOML only for
`supervisor.launcher` and `proxy.command`: validating the file is config.load's job,
and a file that validates differently loses nothing (the command is compared again
before the hand-over).

Loads nothing but the standard library and hubsvc's stdlib-only helpers (host, commands,
output): it runs before pydantic, asyncio and the supervisor are imported.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from . import host
from .argv import config_path
from .commands import resolve_command
from .output import Sink

LOADER = Path(__file__).resolve().parent / "chp_warm.mjs"
CWD = Path("/")  # components.PROXY_CWD; compared again at the hand-over
HAND_OVER_S = 2.0  # for it to read CHP's command line (it reads at once unless hung)
TOKEN_ENV = "CONFIGPROXY_AUTH_TOKEN"  # the one variable it is given only at the hand-over
PACKAGE = "configurable-http-proxy"


class Warm:
    """node on chp_warm.mjs for the CHP bin script `bin`, waiting for its command line."""

    def __init__(self, bin_script: Path, node: str, env: Mapping[str, str], sink: Sink,
                 mode: str):
        self.bin, self.env, self.cwd, self.sink = bin_script, dict(env), CWD, sink
        self.sink_mode = mode  # what `sink` was prepared for (sink_mode())
        out = sink.fd if sink.fd >= 0 else subprocess.DEVNULL
        r, self._control = os.pipe()  # its end is passed by number; both close-on-exec here
        try:
            self.popen = subprocess.Popen(
                [node, str(LOADER), str(bin_script), str(r)], stdin=subprocess.DEVNULL,
                stdout=out, stderr=out, env=self.env, cwd=self.cwd, start_new_session=True,
                pass_fds=(r,), preexec_fn=host.die_with_parent())
        except BaseException:
            os.close(self._control)
            raise
        finally:
            os.close(r)

    def mismatch(self, argv: Sequence[str], env: Mapping[str, str], cwd: Path,
                 sink: Sink) -> str | None:
        """Why CHP with this command line cannot be this process (a name, never a value),
        or None."""
        if self.popen.poll() is not None:
            return "exited"
        try:
            if Path(argv[0]).resolve() != self.bin:
                return "argv"
        except (OSError, IndexError, ValueError):
            return "argv"
        if {k: v for k, v in env.items() if k != TOKEN_ENV} != self.env:
            return "env"
        if not all(_utf8(k) and _utf8(v) for k, v in env.items()):
            return "env"  # JSON would not carry its bytes as they are
        if Path(cwd) != self.cwd:
            return "cwd"
        if sink is not self.sink:
            return "sink"
        return None

    def hand_over(self, argv: Sequence[str], env: Mapping[str, str]) -> subprocess.Popen[bytes] | None:
        """Give it CHP's command line; the process it now is, or None (it had ended, or did
        not read it within HAND_OVER_S)."""
        message = json.dumps({"argv0": argv[0], "args": list(argv[1:]), "env": dict(env)}).encode()
        deadline = time.monotonic() + HAND_OVER_S
        os.set_blocking(self._control, False)
        try:
            while message:
                try:
                    message = message[os.write(self._control, message):]
                except BlockingIOError:  # more than a pipe holds: wait until it reads
                    left = deadline - time.monotonic()
                    if left <= 0 or not select.select([], [self._control], [], left)[1]:
                        return None
        except OSError:  # BrokenPipeError: it had ended
            return None
        finally:
            self._close_control()  # end of the document: it runs CHP
        return self.popen

    def stop(self) -> None:
        """Not wanted: close its pipe (it ends by itself), and make sure, bounded."""
        self._close_control()
        try:
            self.popen.wait(1.0)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(2.0)

    def _close_control(self) -> None:
        if self._control >= 0:
            os.close(self._control)
            self._control = -1


_pending: Warm | None = None  # this process's warm node, until the head start takes it


def begin(argv: Sequence[str]) -> None:
    """`hubsvc run ARGV`: start the warm node for the config it names (never raises:
    without it, CHP is executed as usual)."""
    global _pending
    if "-h" in argv or "--help" in argv:
        return
    try:  # a wrong guess of the file only means another node is loading
        _pending = start(config_path(argv), early_log_mode())
    except Exception:  # a guess that fails costs nothing but the head start's head start
        _pending = None


def early_log_mode() -> str:
    """logs.choose_mode() where it matters to the components' output ("journal" or not),
    without loading logs' dependencies when it cannot be the journal."""
    if "JOURNAL_STREAM" in os.environ:  # only then can hubsvc's output be the journal
        from .logs import choose_mode

        return choose_mode()
    return "line"  # or "console": the same output for the components


def take(log_mode: str) -> Warm | None:
    """The warm node, for the head start of CHP whose output follows `log_mode`."""
    global _pending
    warm, _pending = _pending, None
    if warm is not None and warm.sink_mode != sink_mode(log_mode):
        warm.stop()
        warm.sink.close()
        return None
    return warm


def discard() -> None:
    """`hubsvc run` ends (or fails a check) without having handed it CHP's command line."""
    global _pending
    warm, _pending = _pending, None
    if warm is not None:
        warm.stop()
        warm.sink.close()


def sink_mode(log_mode: str) -> str:
    """CHP's output under the process launcher (cli._output_mode; a file is the hub's)."""
    return "journal" if log_mode == "journal" else "pipe"


def start(config_path: Path, log_mode: str) -> Warm | None:
    """node loading the CHP that `config_path` names, when it would run under the process
    launcher; None otherwise (and on any doubt: the head start then executes CHP)."""
    import tomllib

    try:
        raw = tomllib.loads(config_path.read_text())
    except (OSError, ValueError):
        return None  # config.load says why
    supervisor, proxy = raw.get("supervisor", {}), raw.get("proxy", {})
    if not isinstance(supervisor, dict) or not isinstance(proxy, dict):
        return None
    launcher = supervisor.get("launcher", "auto")
    if launcher != "process" and not (launcher == "auto" and not host.started_by_systemd()):
        return None  # systemd starts CHP in its unit
    command = proxy.get("command", PACKAGE)
    if not isinstance(command, str) or not command:
        return None
    found = resolve_command(command, config_path.parent)
    bin_script = _npm_bin(found) if found is not None else None
    if bin_script is None:
        return None
    env = host.child_env()
    node = _node(found, env["PATH"]) if found is not None else None
    if node is None:
        return None
    sink = Sink("proxy")
    try:
        sink.prepare(sink_mode(log_mode))
        return Warm(bin_script, node, env, sink, sink_mode(log_mode))
    except OSError:
        sink.close()
        return None


def _utf8(s: str) -> bool:
    try:
        s.encode()
    except UnicodeEncodeError:  # undecodable bytes from the environment (surrogateescape)
        return False
    return True


def _npm_bin(path: Path) -> Path | None:
    """CHP's bin script (…/configurable-http-proxy/bin/configurable-http-proxy) that
    `path` is or links to, or None."""
    try:
        script = path.resolve()
        package = json.loads((script.parent.parent / "package.json").read_text())
    except (OSError, ValueError):
        return None
    if script.parent.name != "bin" or not isinstance(package, dict) or package.get("name") != PACKAGE:
        return None
    return script


def _node(script: Path, search: str) -> str | None:
    """The node that running `script` would execute, when its #! line is exactly node (no
    options, which this loader would not pass on), or None."""
    import shutil

    line = host.first_line(script)
    words = line[2:].split() if line.startswith("#!") else []
    if len(words) == 2 and os.path.basename(words[0]) == "env":
        words = words[1:]
    if len(words) != 1 or os.path.basename(words[0]) != "node":
        return None
    return words[0] if "/" in words[0] else shutil.which(words[0], path=search)
