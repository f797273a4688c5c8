"""The client for the requests hubsvc makes every health interval to its own children on
loopback (CHP's ports, the hub's bind URL): kept-open HTTP/1.1 connections on asyncio
streams, with h11 (the HTTP/1.1 protocol library under httpx) doing all of the framing.

Why not httpx itself for these: a loopback GET through httpx costs ~0.9-1.9 ms of CPU on a
small VM (its request/response models, the connection pool, anyio), and the supervisor
makes several every interval for as long as it runs; the same GET here costs a small
fraction of that (bench figures in bench/RESULTS.md). Everything else hubsvc asks of the
hub goes through httpx. h11 is the same protocol code in both paths: this module only
moves bytes between h11 and a socket, and it parses nothing itself.

Each request is bounded by its `timeout` as a whole (connect, send, answer). A connection
is reused only after a complete answer that h11 says may be followed by another; one that
fails in any way is closed. A kept-open connection that the server closed meanwhile
(keep-alive timeouts: CHP's is 5 s) is retried once on a fresh connection.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

if TYPE_CHECKING:
    import h11

# h11 is imported where it is first used, not with this module: its import (~25 ms, it
# compiles its grammar) would otherwise come before CHP's exec in `hubsvc run`.

MAX_HEAD = 64 * 1024
MAX_BODY = 64 * 1024 * 1024  # CHP's table at 100,000 routes is ~20 MB
IDLE_PER_ORIGIN = 8  # kept-open connections per origin (routes are written 8 at a time)
READ_CHUNK = 256 * 1024
MAX_CACHED_REQUESTS = 64  # the probes' few requests; reads only (a write is not repeated)


class LoopbackError(Exception):
    """The request got no complete answer; the message says why, for a person."""


def request_errors() -> tuple[type[Exception], ...]:
    """What a failed request raises, for `except request_errors():` — this client's
    errors, and httpx's once httpx is loaded (a request made with httpx loaded it).
    httpx is not imported before CHP's exec in `hubsvc run` (~50 ms): the modules on that
    path name its errors through this, evaluated only when an exception is raised."""
    httpx = sys.modules.get("httpx")
    return (LoopbackError, httpx.HTTPError) if httpx is not None else (LoopbackError,)


class LoopbackTimeout(LoopbackError):
    pass


class LoopbackConnectError(LoopbackError):
    pass


@dataclass
class Response:
    status_code: int
    headers: dict[str, str] = field(default_factory=dict)  # names in lower case
    content: bytes = b""

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", errors="replace")

    def json(self) -> Any:
        return json.loads(self.content)


@dataclass
class _Conn:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    proto: h11.Connection

    def close(self) -> None:
        self.writer.close()


class _Stale(Exception):
    """A kept-open connection was closed by the server before it answered."""


class Client:
    def __init__(self) -> None:
        self._idle: dict[tuple[str, str, int], list[_Conn]] = {}
        self._ssl: ssl.SSLContext | None = None
        self._requests: dict[tuple[Any, ...], h11.Request] = {}

    # ---- public ----------------------------------------------------------------------
    async def get(self, url: str, *, timeout: float,
                  headers: dict[str, str] | None = None) -> Response:
        return await self.request("GET", url, timeout=timeout, headers=headers)

    async def request(self, method: str, url: str, *, timeout: float,
                      headers: dict[str, str] | None = None, body: bytes = b"") -> Response:
        import h11

        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise LoopbackError(f"unsupported URL {url!r}")
        host = parts.hostname
        port = parts.port or (443 if parts.scheme == "https" else 80)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        netloc = f"[{host}]" if ":" in host else host
        head = (("Host", f"{netloc}:{port}"), ("Accept-Encoding", "identity"),
                *(headers or {}).items())
        if body or method not in ("GET", "HEAD", "DELETE"):
            head += (("Content-Length", str(len(body))),)
        req = self._requests.get((method, target, head))
        if req is None:  # h11 validates every header of a new event: the same request
            # made every interval is validated once
            try:
                req = h11.Request(method=method, target=target, headers=list(head))
            except h11.LocalProtocolError:  # its message would quote the value (a token)
                raise LoopbackError("the request has a header h11 refuses (a value with "
                                    "a line break or control character)") from None
            if not body and len(self._requests) < MAX_CACHED_REQUESTS:
                self._requests[(method, target, head)] = req  # one-off writes are not kept
        key = (parts.scheme, host, port)
        try:
            async with asyncio.timeout(timeout):
                return await self._exchange(key, req, body)
        except TimeoutError:
            raise LoopbackTimeout(f"timed out after {timeout:g}s") from None

    async def aclose(self) -> None:
        self.close()

    def close(self) -> None:
        """Close every kept-open connection (a later request opens a new one)."""
        for conns in self._idle.values():
            for c in conns:
                c.close()
        self._idle.clear()

    # ---- one exchange ------------------------------------------------------------------
    async def _exchange(self, key: tuple[str, str, int], req: h11.Request,
                        body: bytes) -> Response:
        idle = self._idle.setdefault(key, [])
        for conn in [c for c in idle if c.writer.is_closing() or c.reader.at_eof()]:
            conn.close()  # closed by the server meanwhile (keep-alive timeout)
            idle.remove(conn)
        while idle:  # a kept-open connection: the server may still close it as we write
            conn = idle.pop()
            try:
                return await self._send(key, conn, req, body, reused=True)
            except _Stale:
                continue
        conn = await self._connect(key)
        try:
            return await self._send(key, conn, req, body, reused=False)
        except _Stale:  # a fresh connection closed before answering
            raise LoopbackError("the server closed the connection without answering") from None

    async def _connect(self, key: tuple[str, str, int]) -> _Conn:
        scheme, host, port = key
        ctx = None
        if scheme == "https":
            if self._ssl is None:
                ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE  # our own listener, reached by address
                self._ssl = ctx
            ctx = self._ssl
        try:
            reader, writer = await asyncio.open_connection(host, port, ssl=ctx)
        except ConnectionRefusedError:
            raise LoopbackConnectError("connection refused") from None
        except OSError as e:
            raise LoopbackConnectError(f"cannot connect ({e.strerror or e})") from None
        import h11

        proto = h11.Connection(our_role=h11.CLIENT, max_incomplete_event_size=MAX_HEAD)
        return _Conn(reader, writer, proto)

    async def _send(self, key: tuple[str, str, int], conn: _Conn, req: h11.Request,
                    body: bytes, reused: bool) -> Response:
        import h11

        done = False
        try:
            p = conn.proto
            out = p.send(req) or b""
            if body:
                out += p.send(h11.Data(data=body)) or b""
            out += p.send(h11.EndOfMessage()) or b""
            conn.writer.write(out)
            resp = await _read_response(conn, reused)
            done = True
        except h11.ProtocolError as e:
            raise LoopbackError(f"not an HTTP answer: {e}") from None
        except (ConnectionError, ssl.SSLError) as e:
            if reused and not _answered(conn.proto):
                raise _Stale() from None
            raise LoopbackError(f"incomplete answer: {type(e).__name__}: {e}") from None
        finally:
            if not done:
                conn.close()
        p = conn.proto
        idle = self._idle.setdefault(key, [])
        if (p.our_state is h11.DONE and p.their_state is h11.DONE
                and len(idle) < IDLE_PER_ORIGIN):
            p.start_next_cycle()
            idle.append(conn)
        else:
            conn.close()
        return resp


def _answered(p: h11.Connection) -> bool:
    """Has the server begun its answer (then a failure is not a stale connection)?"""
    import h11

    return p.their_state not in (h11.IDLE, h11.SEND_RESPONSE)


async def _read_response(conn: _Conn, reused: bool) -> Response:
    import h11

    p = conn.proto
    status = 0
    headers: dict[str, str] = {}
    body = bytearray()
    ev: Any = h11.NEED_DATA  # nothing is buffered before the answer's first bytes
    while True:
        if ev is h11.NEED_DATA:
            data = await conn.reader.read(READ_CHUNK)
            if not data and reused and not _answered(p):
                raise _Stale()
            p.receive_data(data)  # b"" tells h11 the server closed: it decides if that is ok
        elif isinstance(ev, h11.Response):
            status = ev.status_code
            headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in ev.headers}
        elif isinstance(ev, h11.Data):
            if len(body) + len(ev.data) > MAX_BODY:
                raise LoopbackError("answer too large")
            body += ev.data
        elif isinstance(ev, h11.EndOfMessage):
            return Response(status, headers, bytes(body))
        elif isinstance(ev, h11.ConnectionClosed):
            if reused and not _answered(p):
                raise _Stale()
            raise LoopbackError("the server closed the connection before a full answer")
        ev = p.next_event()  # an InformationalResponse (1xx) is skipped here too
