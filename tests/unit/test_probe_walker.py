"""The walker's loop rules on a scripted HTTP transport (pure logic; the real programs
are exercised in tests/integration/test_redirects.py)."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from hubsvc.probe import BROWSER_REDIRECT_LIMIT, Facts, Walk
from hubsvc.probe.walker import Walker

pytestmark = pytest.mark.unit
PUB = "http://127.0.0.1:8000"


def facts() -> Facts:
    return Facts(user="alice", public_origin=PUB, public_base="/",
                 hub_origin="http://127.0.0.1:8081", server_path="/user/alice/")


def walk(handler, start: str):
    async def go():
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as c:
            w = Walk()
            await Walker(c, facts()).follow(start, w)
            return w

    return asyncio.run(go())


def test_counter_only_change_is_a_loop_before_the_sleeping_hop():
    asked = []

    def handler(req: httpx.Request) -> httpx.Response:
        asked.append(str(req.url))
        p = req.url.path
        n = int(req.url.params.get("redirects", 0))
        if p == "/user/alice/":
            return httpx.Response(302, headers={"location": f"/hub/user/alice/?redirects={n}"
                                                if n else "/hub/user/alice/"})
        return httpx.Response(302, headers={"location": f"/user/alice/?redirects={n + 1}"})

    w = walk(handler, f"{PUB}/user/alice/")
    assert w.ended == "loop" and w.repeat_of == 0 and len(w.hops) == 2
    assert not any("hub/user/alice/?redirects" in u for u in asked)  # the hub would sleep


def test_ever_new_urls_end_at_the_browser_limit():
    def handler(req: httpx.Request) -> httpx.Response:
        n = int(req.url.params.get("page", 0))
        return httpx.Response(302, headers={"location": f"/x?page={n + 1}"})

    w = walk(handler, f"{PUB}/x?page=0")
    assert w.ended == "too_many_redirects" and len(w.hops) == BROWSER_REDIRECT_LIMIT


def test_same_url_with_new_cookie_is_not_a_loop():
    """The OAuth handshake: /lab, then authorize, callback (sets a cookie), /lab again."""

    def handler(req: httpx.Request) -> httpx.Response:
        p = req.url.path
        has = "srv" in req.headers.get("cookie", "")
        if p == "/user/alice/lab":
            if has:
                return httpx.Response(200, text="lab")
            return httpx.Response(302, headers={"location": "/hub/api/oauth2/authorize?state=1"})
        if p == "/hub/api/oauth2/authorize":
            return httpx.Response(302, headers={"location": "/user/alice/oauth_callback?code=9"})
        return httpx.Response(302, headers={"location": "/user/alice/lab",
                                            "set-cookie": "srv=1; Path=/user/alice/"})

    w = walk(handler, f"{PUB}/user/alice/lab")
    assert w.ended == "ok" and w.final.status == 200 and len(w.hops) == 4


def test_growing_path_is_a_loop():
    def handler(req: httpx.Request) -> httpx.Response:
        return httpx.Response(302, headers={"location": req.url.path.replace(
            "/jhub/", "/jhub/hub/", 1)})

    w = walk(handler, f"{PUB}/jhub/hub/user/alice/")
    assert w.ended == "loop" and w.growing and len(w.hops) == 1


def test_identity_provider_steps_are_listed_not_walked(tmp_path) -> None:
    """An authenticator that sends browsers elsewhere (auto_login to an outside identity
    provider): the walk stops at the hand-over and says which steps it did not walk."""
    import time

    from hubsvc import config
    from hubsvc.probe.flow import Probe
    from hubsvc.probe.model import Walk as W

    cfg = config.parse({"paths": {"state_dir": str(tmp_path / "s"),
                                  "runtime_dir": str(tmp_path / "r")},
                        "proxy": {"public_url": "http://127.0.0.1:8000"}})
    asked: list[str] = []

    def handler(req: httpx.Request) -> httpx.Response:
        asked.append(str(req.url))
        if req.url.path == "/hub/login":
            return httpx.Response(302, headers={"location": "/hub/oauth_login?next="})
        if req.url.path == "/hub/oauth_login":
            return httpx.Response(302, headers={
                "location": "https://idp.example.org/authorize?client_id=hub"})
        return httpx.Response(500)

    async def go() -> W:
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as c:
            p = Probe(cfg, "alice", c, None, "t", time.monotonic() + 10, 10)  # type: ignore[arg-type]
            w = W()
            r = await p.login_page(Walker(c, p.facts), w)
            assert r is None
            return w

    w = asyncio.run(go())
    assert [h.step for h in w.hops] == ["login", "login"]
    assert not any("idp.example.org" in u for u in asked)  # never sent anything there
    assert len(w.not_walked) == 1 and "https://idp.example.org" in w.not_walked[0]


def test_token_goes_only_to_the_users_server_path() -> None:
    seen: dict[str, str | None] = {}

    def handler(req: httpx.Request) -> httpx.Response:
        seen[f"{req.url.port}{req.url.path}"] = req.headers.get("authorization")
        if req.url.path == "/user/alice/":
            return httpx.Response(302, headers={"location": "/hub/user/alice/"})
        return httpx.Response(200)

    async def go() -> None:
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as c:
            wk = Walker(c, facts(), token="secret-token")
            await wk.follow(f"{PUB}/user/alice/", Walk())
            await wk.follow("http://127.0.0.1:9999/user/alice/", Walk())

    asyncio.run(go())
    assert seen["8000/user/alice/"] == "token secret-token"
    assert seen["8000/hub/user/alice/"] is None  # the hub's pages: no token
    assert seen["9999/user/alice/"] is None  # another origin: no token


def test_password_file_must_be_private(tmp_path) -> None:
    from hubsvc.probe.cli import read_password

    f = tmp_path / "pw"
    f.write_text("s3cret\n")
    f.chmod(0o644)
    with pytest.raises(ValueError, match="chmod 600"):
        read_password(f)
    f.chmod(0o600)
    assert read_password(f) == "s3cret"
