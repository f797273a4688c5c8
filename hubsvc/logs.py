"""Logging: structlog everywhere; how a line looks depends on where it goes.

- At a terminal: structlog's readable console lines.
- Under systemd (stderr is the journal stream systemd gave us): each event goes to
  journald's native socket with its own fields (PRIORITY, HUBSVC_EVENT,
  HUBSVC_COMPONENT, …), so `journalctl -u hubsvc -o json` shows them as fields.
- Anywhere else (pipes, files): one line per event, `<P>event key=value …`, with the
  syslog priority prefix journald and syslog understand.
Secrets never reach a log call: no code here sees them.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
from typing import Any, TextIO

# structlog is imported by configure(), not with this module: `hubsvc run` executes CHP
# before it loads what only the supervisor needs (cli.cmd_run), and main() uses lossy()

PRIORITY = {"critical": 2, "error": 3, "warning": 4, "warn": 4, "info": 6, "debug": 7}
JOURNAL_SOCKET = "/run/systemd/journal/socket"
IDENTIFIER = "hubsvc"
_KEY_ORDER = ("component", "pid", "state", "reason")


def _fmt_value(v: Any) -> str:
    s = v if isinstance(v, str) else json.dumps(v, default=str)
    if s == "" or any(c in s for c in ' "=\n\t'):
        return json.dumps(s)
    return s


def logfmt(event_dict: dict[str, Any]) -> str:
    event = str(event_dict.pop("event", ""))
    keys = [k for k in _KEY_ORDER if k in event_dict]
    keys += sorted(k for k in event_dict if k not in _KEY_ORDER)
    parts = [event] + [f"{k}={_fmt_value(event_dict[k])}" for k in keys]
    return " ".join(parts)


def stderr_is_journal() -> bool:
    """True when systemd connected our stderr to journald (JOURNAL_STREAM=dev:ino)."""
    js = os.environ.get("JOURNAL_STREAM", "")
    try:
        dev, ino = (int(x) for x in js.split(":"))
        st = os.fstat(sys.stderr.fileno())
    except (ValueError, OSError):
        return False
    return (st.st_dev, st.st_ino) == (dev, ino)


class JournalSender:
    """Native journald protocol over a non-blocking datagram socket."""

    def __init__(self, path: str = JOURNAL_SOCKET):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setblocking(False)

    def send(self, fields: dict[str, str]) -> bool:
        buf = bytearray()
        for k, v in fields.items():
            b = v.encode("utf-8", "replace")[:60000]
            if b"\n" in b:
                buf += k.encode() + b"\n" + len(b).to_bytes(8, "little") + b + b"\n"
            else:
                buf += k.encode() + b"=" + b + b"\n"
        try:
            self.sock.sendto(bytes(buf), self.path)
            return True
        except OSError:
            return False


def _journal_field(key: str) -> str:
    k = "".join(c if c.isalnum() else "_" for c in key.upper())
    return "HUBSVC_" + k.lstrip("_")


class Renderer:
    """Final structlog processor for non-terminal output."""

    def __init__(self, stream: TextIO, journal: JournalSender | None):
        self.stream = stream
        self.journal = journal

    def __call__(self, _logger: Any, method: str, event_dict: dict[str, Any]) -> str:
        prio = PRIORITY.get(event_dict.pop("level", method), 6)
        event_dict.pop("timestamp", None)
        child = event_dict.pop("_child", None)
        identifier = f"{IDENTIFIER}-{child}" if child else IDENTIFIER
        if child:
            # a line a child printed: kept verbatim
            line = str(event_dict.pop("event", ""))
            event_dict = {"component": child}
        fields_src = dict(event_dict)
        if not child:
            line = logfmt(event_dict)
        if self.journal is not None:
            fields = {
                "MESSAGE": line,
                "PRIORITY": str(prio),
                "SYSLOG_IDENTIFIER": identifier,
            }
            for k, v in fields_src.items():
                fields[_journal_field(k)] = v if isinstance(v, str) else json.dumps(v, default=str)
            if self.journal.send(fields):
                import structlog

                raise structlog.DropEvent
        if child:
            line = f"{child}| {line}"
        return f"<{prio}>{line}"


def _console_prep(_logger: Any, _method: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    child = event_dict.pop("_child", None)
    if child:
        return {"event": f"{child}| {event_dict.get('event', '')}", "level": event_dict["level"]}
    return event_dict


class LossyStream:
    """The log stream, minus its failures: when whoever reads our stderr has gone (a closed
    pipe, a terminal hung up), a log line is lost rather than raised into the code that
    logged it, which is often the very code that must go on (a stop request, a restart)."""

    def __init__(self, stream: TextIO):
        self.stream = stream
        self.lost = 0  # lines that could not be written

    def write(self, text: str) -> int:
        try:
            return self.stream.write(text)
        except (OSError, ValueError):  # EPIPE, EIO; ValueError: the stream was closed
            self.lost += 1
            return 0

    def flush(self) -> None:
        try:
            self.stream.flush()
        except (OSError, ValueError):
            pass

    def __getattr__(self, name: str) -> Any:  # fileno, isatty, encoding … of the stream
        return getattr(self.stream, name)


def lost_lines() -> int:
    """Log lines lost so far because nobody read hubsvc's stderr (see LossyStream)."""
    return int(getattr(sys.stderr, "lost", 0))


def lossy(stream: TextIO) -> TextIO:
    return stream if isinstance(stream, LossyStream) else LossyStream(stream)  # type: ignore[return-value]


def choose_mode(stream: TextIO | None = None) -> str:
    """How lines written to `stream` (default stderr) are rendered: "console" at a terminal,
    "journal" when systemd connected stderr to journald, else "line"."""
    stream = stream or sys.stderr
    if stream.isatty():
        return "console"
    if stream is sys.stderr and stderr_is_journal() and os.path.exists(JOURNAL_SOCKET):
        return "journal"
    return "line"


def configure(level: str = "info", stream: TextIO | None = None, mode: str = "auto") -> str:
    """Set up structlog (and stdlib logging for libraries). Returns the mode chosen."""
    import structlog

    stream = stream or sys.stderr
    if mode == "auto":
        mode = choose_mode(stream)
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
    ]
    if mode == "console":
        processors += [
            _console_prep,
            structlog.processors.TimeStamper(fmt="%H:%M:%S", utc=False),
            structlog.dev.ConsoleRenderer(colors=True, sort_keys=False),
        ]
    else:
        journal = JournalSender() if mode == "journal" else None
        processors.append(Renderer(stream, journal))
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.PrintLoggerFactory(file=lossy(stream)),  # type: ignore[arg-type]
        cache_logger_on_first_use=False,
    )
    logging.basicConfig(level=logging.WARNING, stream=lossy(stream),  # type: ignore[arg-type]
                        format="<4>%(name)s: %(message)s")
    return mode
