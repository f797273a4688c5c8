"""A small HTTP/1.1 client for the requests hubsvc makes every health interval to its own
children on loopback (CHP's ports, the hub's bind URL).

Why not httpx for these: a loopback GET through httpx costs ~0.9-1.9 ms of CPU on a small
VM (its request/response models, the connection pool, anyio), and the supervisor makes
four every interval, for as long as it runs; the same GET on a kept-open connection here
costs ~0.1 ms. It speaks only what those requests need: GET/POST with a small body,
answers with Content-Length, chunked or read-to-close bodies, keep-alive, http or https
(unverified: hubsvc's own listeners, by address). Everything else hubsvc asks of the hub
goes through httpx.

Each request is bounded by its `timeout` as a whole (connect, send, answer). A connection
is reused only after a complete answer; one that fails in any way is closed. A kept-open
connection the server closed meanwhile (keep-alive timeouts: CHP's is 5 s) is retried once
on a fresh connection.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

MAX_HEAD = 64 * 1024
MAX_BODY = 64 * 1024 * 1024  # CHP's table at 100,000 routes is ~20 MB
IDLE_PER_ORIGIN = 8  # kept-open connections per origin (routes are written 8 at a time)


class LoopbackError(Exception):
    """The request got no complete answer; the message says why, for a person."""


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


_Conn = tuple[asyncio.StreamReader, asyncio.StreamWriter]


class Client:
    def __init__(self) -> None:
        self._idle: dict[tuple[str, str, int], list[_Conn]] = {}
        self._ssl: ssl.SSLContext | None = None

    # ---- public ----------------------------------------------------------------------
    async def get(self, url: str, *, timeout: float,
                  headers: dict[str, str] | None = None) -> Response:
        return await self.request("GET", url, timeout=timeout, headers=headers)

    async def request(self, method: str, url: str, *, timeout: float,
                      headers: dict[str, str] | None = None, body: bytes = b"") -> Response:
        parts = urlsplit(url)
        scheme = parts.scheme
        if scheme not in ("http", "https") or not parts.hostname:
            raise LoopbackError(f"unsupported URL {url!r}")
        host = parts.hostname
        port = parts.port or (443 if scheme == "https" else 80)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        netloc = f"[{host}]" if ":" in host else host
        head = [f"{method} {target} HTTP/1.1", f"Host: {netloc}:{port}",
                "Accept-Encoding: identity"]
        for k, v in (headers or {}).items():
            head.append(f"{k}: {v}")
        if body or method not in ("GET", "HEAD", "DELETE"):
            head.append(f"Content-Length: {len(body)}")
        raw = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body
        key = (scheme, host, port)
        try:
            async with asyncio.timeout(timeout):
                return await self._exchange(key, raw, method)
        except TimeoutError:
            raise LoopbackTimeout(f"timed out after {timeout:g}s") from None

    async def aclose(self) -> None:
        self.close()

    def close(self) -> None:
        """Close every kept-open connection (a later request opens a new one)."""
        for conns in self._idle.values():
            for _, w in conns:
                w.close()
        self._idle.clear()

    # ---- one exchange ------------------------------------------------------------------
    async def _exchange(self, key: tuple[str, str, int], raw: bytes, method: str) -> Response:
        idle = self._idle.setdefault(key, [])
        for conn in [c for c in idle if c[1].is_closing() or c[0].at_eof()]:
            conn[1].close()  # closed by the server meanwhile (keep-alive timeout)
            idle.remove(conn)
        while idle:  # a kept-open connection: the server may still close it as we write
            conn = idle.pop()
            try:
                return await self._send(key, conn, raw, method, reused=True)
            except _Stale:
                continue
        conn = await self._connect(key)
        try:
            return await self._send(key, conn, raw, method, reused=False)
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
            return await asyncio.open_connection(host, port, ssl=ctx, limit=MAX_HEAD)
        except ConnectionRefusedError:
            raise LoopbackConnectError("connection refused") from None
        except OSError as e:
            raise LoopbackConnectError(f"cannot connect ({e.strerror or e})") from None

    async def _send(self, key: tuple[str, str, int], conn: _Conn, raw: bytes, method: str,
                    reused: bool) -> Response:
        reader, writer = conn
        done = False
        try:
            writer.write(raw)
            try:
                status_line = await reader.readuntil(b"\r\n")
            except (asyncio.IncompleteReadError, ConnectionError) as e:
                if reused:
                    raise _Stale() from None
                raise LoopbackError(f"no answer: {type(e).__name__}") from None
            resp, keep = await _read_response(reader, status_line, method)
            done = True
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError) as e:
            raise LoopbackError(f"incomplete answer: {type(e).__name__}: {e}") from None
        except asyncio.LimitOverrunError:
            raise LoopbackError("answer header too large") from None
        finally:
            if not done:
                writer.close()
        idle = self._idle.setdefault(key, [])
        if keep and len(idle) < IDLE_PER_ORIGIN:
            idle.append(conn)
        else:
            writer.close()
        return resp


class _Stale(Exception):
    """A kept-open connection was closed by the server before it answered."""


async def _read_response(reader: asyncio.StreamReader, status_line: bytes,
                         method: str) -> tuple[Response, bool]:
    try:
        version, code = status_line.split(None, 2)[:2]
        status = int(code)
    except ValueError:
        raise LoopbackError(f"not an HTTP answer: {status_line[:60]!r}") from None
    headers: dict[str, str] = {}
    size = 0
    while True:
        line = await reader.readuntil(b"\r\n")
        size += len(line)
        if size > MAX_HEAD:
            raise LoopbackError("answer header too large")
        if line == b"\r\n":
            break
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    conn_hdr = headers.get("connection", "").lower()
    keep = version == b"HTTP/1.1" and "close" not in conn_hdr
    if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
        return Response(status, headers), keep
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body = bytearray()
        while True:
            try:
                n = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            except ValueError:
                raise LoopbackError("malformed chunked answer") from None
            if n == 0:
                while await reader.readuntil(b"\r\n") != b"\r\n":  # trailers
                    pass
                break
            if len(body) + n > MAX_BODY:
                raise LoopbackError("answer too large")
            body += await reader.readexactly(n)
            await reader.readexactly(2)
        return Response(status, headers, bytes(body)), keep
    length = headers.get("content-length")
    if length is not None:
        try:
            n = int(length)
        except ValueError:
            raise LoopbackError("malformed Content-Length") from None
        if n > MAX_BODY:
            raise LoopbackError("answer too large")
        return Response(status, headers, await reader.readexactly(n)), keep
    data = await reader.read()  # no length: the body ends with the connection
    if len(data) > MAX_BODY:
        raise LoopbackError("answer too large")
    return Response(status, headers, data), False
