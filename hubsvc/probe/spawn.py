"""The hub API calls of a probe: who the user is, start the server and follow its progress
(as the spawn-pending page does), and the short-lived, narrowly scoped token of a
token walk."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import signal
import threading
import time
from collections.abc import Awaitable
from typing import Any
from urllib.parse import quote

import httpx

from .. import hubapi
from .model import ProbeUsageError

TOKEN_NOTE = "hubsvc probe-spawn"
# Tests only: a file to create once the hub has made the token and before probe-spawn has
# read its id, then wait there until the probe is interrupted (at most PAUSE_S): the moment
# a Ctrl-C used to leave the token alive.
PAUSE_AFTER_MINT_ENV = "HUBSVC_PROBE_TEST_PAUSE_AFTER_MINT"
PAUSE_S = 30.0
REVOKE_LIMIT_S = 20.0


def token_scopes(user: str, server: str = "") -> list[str]:
    """The narrowest scope that lets a token open USER's server: access to that one
    server (JupyterHub's `access:servers!server=USER/NAME`), nothing on the hub."""
    return [f"access:servers!server={user}/{server}"]


def api_message(r: httpx.Response) -> str:
    try:
        return str(r.json().get("message") or r.status_code)
    except ValueError:
        return r.text[:200] or str(r.status_code)


class HubAPI(hubapi.HubAPI):
    """hubsvc's hub API client plus what the probe needs: raw responses, the progress
    event stream, scoped tokens."""

    async def call(self, method: str, rel: str, limit_s: float = 10.0,
                   **kw: Any) -> httpx.Response:
        return await self.client.request(method, self.base + rel, headers=self.headers,
                                         timeout=limit_s, **kw)

    async def mint_token(self, user: str, expires_in: int, note: str = TOKEN_NOTE,
                         released: asyncio.Event | None = None) -> tuple[str, str]:
        """(token, id) of a token for USER that can only reach USER's default server."""
        r = await self.call("POST", f"users/{quote(user, safe='')}/tokens",
                            json={"expires_in": int(expires_in), "note": note,
                                  "scopes": token_scopes(user)})
        if released is not None:
            await _pause_for_tests(released)
        if r.status_code not in (200, 201):
            raise ProbeUsageError(
                f"cannot mint a token for {user}: {r.status_code} {api_message(r)}; hubsvc's "
                "service needs the `tokens` scope")
        tok = r.json()
        return tok["token"], str(tok.get("id"))

    async def delete_token(self, user: str, token_id: str) -> bool:
        try:
            r = await self.call("DELETE", f"users/{quote(user, safe='')}/tokens/{token_id}",
                                limit_s=3.0)
        except httpx.HTTPError:
            return False
        return r.status_code in (204, 404)

    async def tokens_with_note(self, user: str, note: str) -> list[str]:
        """Ids of USER's tokens whose note is NOTE."""
        r = await self.call("GET", f"users/{quote(user, safe='')}/tokens", limit_s=3.0)
        if r.status_code != 200:
            return []
        return [str(t.get("id")) for t in r.json().get("api_tokens", [])
                if t.get("note") == note]

    async def progress(self, user: str, deadline: float) -> tuple[str, str | None]:
        """Follow the progress event stream: ('ready'|'failed'|'timeout'|'stopped', message)."""
        last: str | None = None
        url = self.base + f"users/{quote(user, safe='')}/server/progress"
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return "timeout", None
        try:
            async with asyncio.timeout(remaining):
                async with self.client.stream("GET", url, headers=self.headers,
                                              timeout=httpx.Timeout(10.0, read=None)) as r:
                    if r.status_code != 200:
                        return "stopped", f"progress API answered {r.status_code}"
                    async for line in r.aiter_lines():
                        if not line.startswith("data:"):
                            continue
                        try:
                            ev = json.loads(line[5:])
                        except ValueError:
                            continue
                        last = ev.get("message") or last
                        if ev.get("failed"):
                            return "failed", ev.get("message")
                        if ev.get("ready"):
                            return "ready", ev.get("message")
        except TimeoutError:
            return "timeout", last
        except httpx.HTTPError as e:
            return "stopped", f"{type(e).__name__}: {e}"
        return "stopped", last


def _create_marker(path: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, f"{os.getpid()}\n".encode())
    finally:
        os.close(fd)


async def _pause_for_tests(released: asyncio.Event) -> None:
    marker = os.environ.get(PAUSE_AFTER_MINT_ENV)
    if not marker:
        return
    # a new file only (O_EXCL, 0600): the variable can never make probe-spawn overwrite one
    try:
        await asyncio.to_thread(_create_marker, marker)
    except OSError:
        return
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(released.wait(), PAUSE_S)


class ProbeToken:
    """The short-lived token of a token walk, revoked on every way out.

    The mint runs as a task of its own that a cancellation (Ctrl-C, SIGTERM) does not
    stop, so a token the hub has already made is never lost track of: revoke() waits for
    the mint to answer and deletes the token by id. Should the mint's answer never come
    (a timeout after the hub made it), the token is found by its note, unique to this run.
    """

    def __init__(self, hub: HubAPI, user: str, expires_in: int):
        self.hub, self.user, self.expires_in = hub, user, expires_in
        self.note = f"{TOKEN_NOTE} {os.getpid()}-{secrets.token_hex(4)}"
        self._mint: asyncio.Future[tuple[str, str]] | None = None
        self._released = asyncio.Event()

    async def mint(self) -> str:
        self._mint = asyncio.ensure_future(self.hub.mint_token(
            self.user, self.expires_in, note=self.note, released=self._released))
        token, _ = await asyncio.shield(self._mint)
        return token

    async def revoke(self) -> None:
        self._released.set()
        if self._mint is None:
            return
        try:
            _, tid = await self._mint
        except (Exception, asyncio.CancelledError):
            tid = None
        if tid is not None and await self.hub.delete_token(self.user, tid):
            return
        with contextlib.suppress(httpx.HTTPError, ValueError):
            for other in await self.hub.tokens_with_note(self.user, self.note):
                await self.hub.delete_token(self.user, other)


async def to_the_end(aw: Awaitable[None], limit_s: float = REVOKE_LIMIT_S) -> None:
    """Run AW to its end (at most LIMIT_S) even when the caller is cancelled again or
    another Ctrl-C/SIGTERM arrives meanwhile: those signals wait until it is done (a second
    Ctrl-C would otherwise make asyncio.run cancel every task, the clean-up too)."""
    main = threading.current_thread() is threading.main_thread()
    old = (signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
           if main else None)
    try:
        task = asyncio.ensure_future(asyncio.wait_for(aw, limit_s))
        cancelled = False
        while not task.done():
            try:
                await asyncio.shield(task)
            except asyncio.CancelledError:
                cancelled = cancelled or not task.done()
            except Exception:
                break  # a failed clean-up leaves the token to its expiry (minutes)
        if cancelled:
            raise asyncio.CancelledError
    finally:
        if old is not None:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)
