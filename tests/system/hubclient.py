"""A browser's view of the hub, for the system tests. Standard library only.

Run inside the container's network namespace (nsenter -n), so any Python works:
    hubclient.py get URL                      -> {"status": N, "url": FINAL_URL}
    hubclient.py login-spawn BASE USER PASS   -> log in through the form, spawn, open the server
    hubclient.py user-status BASE USER        -> GET /user/USER/api/status with the saved cookies
Cookies persist in $HUBCLIENT_COOKIES between calls. Every request has a timeout; every
wait is bounded. Prints one JSON object; exit 0 unless the arguments are wrong.
"""

from __future__ import annotations

import http.cookiejar
import json
import os
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

TIMEOUT = 10.0


def _opener(jar: http.cookiejar.CookieJar) -> urllib.request.OpenerDirector:
    return urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))


def _jar() -> http.cookiejar.LWPCookieJar:
    path = os.environ.get("HUBCLIENT_COOKIES", "/tmp/hubclient-cookies.txt")
    jar = http.cookiejar.LWPCookieJar(path)
    if os.path.exists(path):
        jar.load(ignore_discard=True, ignore_expires=True)
    return jar


def _save(jar: http.cookiejar.LWPCookieJar) -> None:
    jar.save(ignore_discard=True, ignore_expires=True)


def _fetch(opener, url: str, data: dict | None = None) -> tuple[int, str, str]:
    body = urllib.parse.urlencode(data).encode() if data is not None else None
    req = urllib.request.Request(url, data=body)
    try:
        with opener.open(req, timeout=TIMEOUT) as r:
            return r.status, r.geturl(), r.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as e:
        return e.code, e.geturl(), e.read().decode("utf-8", "replace")
    except (urllib.error.URLError, OSError) as e:
        return 0, url, f"{type(e).__name__}: {e}"


def get(url: str) -> dict:
    status, final, body = _fetch(_opener(http.cookiejar.CookieJar()), url)
    return {"status": status, "url": final, "body": body[:300]}


def login_spawn(base: str, user: str, password: str, wait_s: float = 90.0) -> dict:
    jar = _jar()
    op = _opener(jar)
    base = base.rstrip("/")
    steps: list[str] = []
    status, url, body = _fetch(op, f"{base}/hub/login")
    steps.append(f"GET /hub/login {status}")
    m = re.search(r'name="_xsrf"\s+value="([^"]+)"', body)
    if status != 200 or not m:
        return {"ok": False, "steps": steps, "error": "no login form with _xsrf", "body": body[:500]}
    status, url, body = _fetch(
        op, f"{base}/hub/login?next=", {"username": user, "password": password, "_xsrf": m.group(1)}
    )
    steps.append(f"POST /hub/login {status} -> {url}")
    if not any(c.name.startswith("jupyterhub-hub-login") for c in jar):
        return {"ok": False, "steps": steps, "error": "login refused", "body": body[:500]}
    _save(jar)
    # Ask for the server; then follow the pending page until it hands over to /user/NAME/.
    status, url, body = _fetch(op, f"{base}/hub/spawn")
    steps.append(f"GET /hub/spawn {status} -> {url}")
    deadline = time.monotonic() + wait_s
    while f"/user/{user}/" not in url and time.monotonic() < deadline:
        time.sleep(1.0)
        status, url, body = _fetch(op, f"{base}/hub/spawn-pending/{user}")
    steps.append(f"pending -> {status} {url}")
    _save(jar)
    if f"/user/{user}/" not in url or status != 200:
        return {"ok": False, "steps": steps, "error": "server did not come up", "body": body[:500]}
    api = user_status(base, user)
    steps.append(f"GET /user/{user}/api/status {api['status']}")
    return {"ok": api["status"] == 200, "steps": steps, "url": url, "api": api}


def user_status(base: str, user: str) -> dict:
    jar = _jar()
    op = _opener(jar)
    status, url, body = _fetch(op, f"{base.rstrip('/')}/user/{user}/api/status")
    _save(jar)
    return {"status": status, "url": url, "body": body[:300]}


def main(argv: list[str]) -> int:
    if len(argv) >= 2 and argv[0] == "get":
        out = get(argv[1])
    elif len(argv) == 4 and argv[0] == "login-spawn":
        out = login_spawn(argv[1], argv[2], argv[3])
    elif len(argv) == 3 and argv[0] == "user-status":
        out = user_status(argv[1], argv[2])
    else:
        print(__doc__, file=sys.stderr)
        return 2
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
