"""The proxy's liveness check: CHP's public port every time, CHP's API only when no other
request of hubsvc's (the drift watch's read of CHP's table) saw it answer within the last
interval and a half."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from hubsvc import probes, secrets
from hubsvc.components import proxy_spec
from hubsvc.config import Config
from hubsvc.loopback import LoopbackTimeout, Response


class Recorder:
    """Answers every GET with `status` (or times out), and keeps the URLs asked."""

    def __init__(self) -> None:
        self.urls: list[str] = []
        self.status = 200
        self.hang = False

    async def get(self, url: str, *, timeout: float, headers: Any = None) -> Response:
        self.urls.append(url)
        if self.hang:
            raise LoopbackTimeout(url)
        return Response(self.status)


def test_the_api_is_asked_only_without_a_recent_answer(tmp_path: Path) -> None:
    cfg = Config.model_validate({
        "paths": {"state_dir": str(tmp_path), "runtime_dir": str(tmp_path / "run")},
        "proxy": {"public_url": "http://127.0.0.1:8000/", "api_url": "http://127.0.0.1:8001"},
        "health": {"interval_s": 2.0},
    })
    (tmp_path / "run").mkdir()
    files, _ = secrets.ensure(tmp_path)
    client, answers = Recorder(), probes.ApiAnswers()
    alive = proxy_spec(cfg, files, client, answers).alive  # type: ignore[arg-type]

    def check() -> tuple[bool, list[str]]:
        client.urls.clear()
        ok = asyncio.run(alive()).ok
        return ok, [u.split("/", 3)[2] for u in client.urls]

    public, api = "127.0.0.1:8000", "127.0.0.1:8001"
    assert check() == (True, [public, api])  # nothing seen yet: both asked
    answers.seen(cfg.api.origin)
    assert check() == (True, [public])  # the watch's read just now stands for the API
    assert check() == (True, [public, api])  # … for one check only
    answers.seen("http://127.0.0.1:9999")  # another CHP's API (before a reload) does not
    assert check() == (True, [public, api])
    answers.seen(cfg.api.origin)
    answers._at = (cfg.api.origin, time.monotonic() - 3.1)  # older than 1.5 intervals
    assert check() == (True, [public, api])
    # a hung CHP fails at its public port, whatever the watch saw before
    answers.seen(cfg.api.origin)
    client.hang = True
    ok, asked = check()
    assert not ok and asked == [public]
    # CHP refusing hubsvc's token (another CHP on the port) fails once the answer is old
    client.hang, client.status = False, 403
    answers._at = (cfg.api.origin, time.monotonic() - 10)
    res = asyncio.run(alive())
    assert not res.ok and "403" in res.detail


def test_only_the_drift_watchs_quick_successful_reads_count(tmp_path: Path) -> None:
    """The drift watch tells ApiAnswers of a read of CHP's table that succeeded within the
    liveness timeout; a refused, failed or slow read says nothing."""
    import httpx

    from hubsvc.routetable import TableUnavailable
    from hubsvc.routewatch import DriftWatch

    cfg = Config.model_validate({
        "paths": {"state_dir": str(tmp_path), "runtime_dir": str(tmp_path / "run")},
        "proxy": {"public_url": "http://127.0.0.1:8000/", "api_url": "http://127.0.0.1:8001"},
        "health": {"interval_s": 2.0, "timeout_s": 0.2},
    })
    (tmp_path / "proxy_auth_token").write_text("t" * 64 + "\n")
    answer = {"status": 200, "delay": 0.0}

    def chp(req: httpx.Request) -> httpx.Response:
        time.sleep(answer["delay"])
        return httpx.Response(answer["status"], content=b"{}")

    watch, answers = DriftWatch(cfg), probes.ApiAnswers()
    watch.answers = answers

    async def read() -> None:
        async with httpx.AsyncClient(transport=httpx.MockTransport(chp)) as c:
            await watch._table_bytes(c)

    asyncio.run(read())
    assert answers.take(cfg.api.origin, 3.0)
    answer["status"] = 403
    try:
        asyncio.run(read())
    except TableUnavailable:
        pass
    assert not answers.take(cfg.api.origin, 3.0)
    answer.update(status=200, delay=0.3)  # slower than the liveness timeout
    asyncio.run(read())
    assert not answers.take(cfg.api.origin, 3.0)
