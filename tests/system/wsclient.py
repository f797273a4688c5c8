"""Hold one WebSocket open to a user's kernel, as JupyterLab does, and log what happens.

Run in the container's network namespace (nsenter -n) with a Python that has tornado
(the test suite's own):
    wsclient.py WS_URL TOKEN LOG_FILE
Every second it sends an execute_request on the kernel's channels socket and waits (at most
10 s) for the execute_reply. LOG_FILE gets one JSON object per line:
    {"event": "open"}                          connected
    {"event": "reply", "n": N, "t": EPOCH}     the kernel answered request N
    {"event": "timeout", "n": N}               no answer within 10 s (the socket is still open)
    {"event": "closed", "code": C, "reason": R, "t": EPOCH}   the server closed it: exit 1
    {"event": "error", "error": "..."}         could not connect: exit 2
SIGTERM ends it with {"event": "end"} and exit 0. It never reconnects: a socket that was
cut shows as "closed", never hidden by a new one.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
import uuid

from tornado.httpclient import HTTPRequest
from tornado.websocket import WebSocketClosedError, websocket_connect

PERIOD_S = 1.0
REPLY_TIMEOUT_S = 10.0
MAX_RUN_S = 3600.0  # a forgotten client ends by itself


def _log(path: str, **event: object) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(event) + "\n")


def _request(session: str, n: int) -> tuple[str, str]:
    msg_id = uuid.uuid4().hex
    msg = {
        "header": {"msg_id": msg_id, "username": "test", "session": session,
                   "msg_type": "execute_request", "version": "5.3",
                   "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
        "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
        "content": {"code": f"{n} * 2", "silent": False, "store_history": False,
                    "user_expressions": {}, "allow_stdin": False, "stop_on_error": True},
    }
    return msg_id, json.dumps(msg)


async def main(url: str, token: str, log: str) -> int:
    session = uuid.uuid4().hex
    sep = "&" if "?" in url else "?"
    req = HTTPRequest(f"{url}{sep}session_id={session}",
                      headers={"Authorization": f"token {token}"}, request_timeout=20)
    try:
        conn = await websocket_connect(req)
    except Exception as e:
        _log(log, event="error", error=f"{type(e).__name__}: {e}")
        return 2
    _log(log, event="open", t=time.time())
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    deadline = time.monotonic() + MAX_RUN_S
    n = 0
    while not stop.is_set() and time.monotonic() < deadline:
        n += 1
        msg_id, text = _request(session, n)
        try:
            await conn.write_message(text)
        except WebSocketClosedError:
            _log(log, event="closed", code=conn.close_code, reason=conn.close_reason,
                 t=time.time())
            return 1
        answered = False
        until = time.monotonic() + REPLY_TIMEOUT_S
        while not answered and time.monotonic() < until:
            try:
                raw = await asyncio.wait_for(conn.read_message(), until - time.monotonic())
            except TimeoutError:
                break
            if raw is None:
                _log(log, event="closed", code=conn.close_code, reason=conn.close_reason,
                     t=time.time())
                return 1
            msg = json.loads(raw) if isinstance(raw, str) else {}
            answered = (msg.get("msg_type") == "execute_reply"
                        and msg.get("parent_header", {}).get("msg_id") == msg_id)
        _log(log, **({"event": "reply", "n": n, "t": time.time()} if answered
                     else {"event": "timeout", "n": n, "t": time.time()}))
        try:
            await asyncio.wait_for(stop.wait(), PERIOD_S)
        except TimeoutError:
            pass
    conn.close()
    _log(log, event="end", t=time.time())
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 4:
        print(__doc__, file=sys.stderr)
        sys.exit(64)
    sys.exit(asyncio.run(main(*sys.argv[1:])))
