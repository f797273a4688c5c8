"""Stand-in user servers, so a 2-core machine can run hundreds of "running" servers.

`python -m tests.standin PORT [PORT ...]` serves every request on every port with 200 and a
small JSON body (what the hub's readiness check and a route check need); it prints
`ready` once all ports listen. `tests.standin_spawner.StandInSpawner` hands these ports
out to the hub's servers. No JupyterLab process is started.
"""

from __future__ import annotations

import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

BODY = b'{"version": "stand-in", "started": "1970-01-01T00:00:00Z"}'


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _answer(self, body: bool) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(BODY)))
        self.end_headers()
        if body:
            self.wfile.write(BODY)

    def do_GET(self) -> None:
        self._answer(True)

    def do_HEAD(self) -> None:
        self._answer(False)

    def log_message(self, format: str, *args: object) -> None:
        pass  # silent: a benchmark counts other programs' log lines


class _Server(ThreadingHTTPServer):
    # A restarted hub checks every running server at once (hundreds of connections in the
    # same millisecond). The default listen backlog of 5 drops the rest, and each dropped
    # connection is retried by TCP 1, 3, 7, 15, 31 s later: a restart over 100 stand-in
    # servers then took 8-30 s by luck. Real servers each listen on their own socket.
    request_queue_size = 4096


def serve(ports: list[int]) -> None:
    servers = [_Server(("127.0.0.1", p), _Handler) for p in ports]
    for s in servers[1:]:
        threading.Thread(target=s.serve_forever, daemon=True).start()
    print("ready", flush=True)
    servers[0].serve_forever()


if __name__ == "__main__":
    serve([int(p) for p in sys.argv[1:]])
