"""hubsvc's loopback HTTP client against a tiny in-process server that answers the ways
CHP (chunked, keep-alive), tornado (Content-Length) and HTTP/1.0 servers do."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from hubsvc.loopback import Client, LoopbackConnectError, LoopbackError, LoopbackTimeout

Handler = Callable[[bytes, asyncio.StreamWriter], Awaitable[bool]]  # -> keep the connection


async def serve(handler: Handler) -> tuple[asyncio.Server, int, dict[str, int]]:
    stats = {"connections": 0, "requests": 0}

    async def on_conn(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        stats["connections"] += 1
        try:
            while True:
                head = await r.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                body = await r.readexactly(length)
                stats["requests"] += 1
                if not await handler(head + body, w):
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            w.close()

    server = await asyncio.start_server(on_conn, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1], stats


def run(coro: Awaitable[Any]) -> Any:
    return asyncio.run(coro)  # type: ignore[arg-type]


async def chunked(req: bytes, w: asyncio.StreamWriter) -> bool:
    w.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: keep-alive\r\n\r\n"
            b"5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\n\r\n")
    await w.drain()
    return True


def test_chunked_answers_on_one_kept_open_connection() -> None:
    async def main() -> None:
        server, port, stats = await serve(chunked)
        c = Client()
        for _ in range(5):
            r = await c.get(f"http://127.0.0.1:{port}/x", timeout=2)
            assert (r.status_code, r.content) == (200, b"hello, world")
        assert stats == {"connections": 1, "requests": 5}
        c.close()
        server.close()

    run(main())


def test_content_length_post_and_headers_sent() -> None:
    seen: list[bytes] = []

    async def echo(req: bytes, w: asyncio.StreamWriter) -> bool:
        seen.append(req)
        body = b'{"ok": true}'
        w.write(b"HTTP/1.1 201 Created\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
        await w.drain()
        return True

    async def main() -> None:
        server, port, _ = await serve(echo)
        c = Client()
        r = await c.request("POST", f"http://127.0.0.1:{port}/api/routes/user/a?x=1",
                            headers={"Authorization": "token t"}, body=b'{"target": "y"}',
                            timeout=2)
        assert r.status_code == 201 and r.json() == {"ok": True}
        c.close()
        server.close()

    run(main())
    head = seen[0]
    assert head.startswith(b"POST /api/routes/user/a?x=1 HTTP/1.1\r\n")
    assert b"\r\nAuthorization: token t\r\n" in head and b"Content-Length: 15\r\n" in head
    assert head.endswith(b'{"target": "y"}')


def test_a_kept_connection_the_server_closed_is_replaced() -> None:
    async def once(req: bytes, w: asyncio.StreamWriter) -> bool:
        w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await w.drain()
        return False  # close after every answer, without saying so (a keep-alive timeout)

    async def main() -> None:
        server, port, stats = await serve(once)
        c = Client()
        for _ in range(3):
            await asyncio.sleep(0.01)  # let the close arrive, or not: both must work
            r = await c.get(f"http://127.0.0.1:{port}/", timeout=2)
            assert r.content == b"ok"
        assert stats["connections"] == 3
        c.close()
        server.close()

    run(main())


def test_http10_body_ends_with_the_connection() -> None:
    async def old(req: bytes, w: asyncio.StreamWriter) -> bool:
        w.write(b"HTTP/1.0 200 OK\r\n\r\nuntil close")
        await w.drain()
        return False

    async def main() -> None:
        server, port, _ = await serve(old)
        c = Client()
        assert (await c.get(f"http://127.0.0.1:{port}/", timeout=2)).content == b"until close"
        c.close()
        server.close()

    run(main())


def test_refused_timeout_and_garbage_are_errors_with_reasons() -> None:
    async def silent(req: bytes, w: asyncio.StreamWriter) -> bool:
        await asyncio.sleep(5)
        return False

    async def garbage(req: bytes, w: asyncio.StreamWriter) -> bool:
        w.write(b"SSH-2.0-OpenSSH\r\n\r\n")
        await w.drain()
        return False

    async def main() -> None:
        c = Client()
        probe = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        port = probe.sockets[0].getsockname()[1]
        probe.close()
        await probe.wait_closed()
        with pytest.raises(LoopbackConnectError, match="refused"):
            await c.get(f"http://127.0.0.1:{port}/", timeout=2)
        server, port, _ = await serve(silent)
        with pytest.raises(LoopbackTimeout, match=r"0\.2s"):
            await c.get(f"http://127.0.0.1:{port}/", timeout=0.2)
        server.close()
        server, port, _ = await serve(garbage)
        with pytest.raises(LoopbackError, match="not an HTTP answer"):
            await c.get(f"http://127.0.0.1:{port}/", timeout=2)
        server.close()
        with pytest.raises(LoopbackError, match="unsupported"):
            await c.get("ftp://127.0.0.1/", timeout=2)
        c.close()
        with contextlib.suppress(Exception):
            await server.wait_closed()

    run(main())
