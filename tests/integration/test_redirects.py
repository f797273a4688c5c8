"""Issue 4 against the real CHP and the real JupyterHub: each named cause reproduced for
real, the probe's verdict, exit code and repair asserted, and the passive watch's events."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from hubsvc import config
from hubsvc.loopwatch import LoopWatch
from hubsvc.probe import Verdict, add_arguments, probe_spawn, run_cli
from hubsvc.routewatch import check_and_repair, check_routes

from .hubsvc_harness import REPO, TEST_TOKEN, Instance, free_port

pytestmark = pytest.mark.integration

SKEW_VERSION = "5.5.4"
CACHE = Path(os.environ.get("HUBSVC_TEST_CACHE", Path.home() / ".cache" / "hubsvc-test"))


@pytest.fixture
def quiet_hubsvc(make_hubsvc: Any) -> Instance:
    """hubsvc whose own watch (every health interval) will not repair a route we delete
    before the probe under test has seen the loop."""
    return make_hubsvc(overrides=QUIET)


QUIET = {"health": {"interval_s": 60.0, "timeout_s": 2.0}}


def cfg_of(inst: Instance) -> config.Config:
    return config.load(inst.config)


def probe(inst: Instance, user: str, **kw: Any) -> Verdict:
    kw.setdefault("timeout_s", 90.0)
    return asyncio.run(probe_spawn(cfg_of(inst), user, **kw))


def cli(inst: Instance, *argv: str) -> int:
    p = argparse.ArgumentParser()
    add_arguments(p)
    return asyncio.run(run_cli(cfg_of(inst), p.parse_args(list(argv))))


def delete_route(inst: Instance, user: str) -> None:
    with httpx.Client(trust_env=False, timeout=5) as c:
        r = c.delete(f"{inst.api}/api/routes/user/{user}",
                     headers={"Authorization": f"token {inst.secret('proxy_auth_token')}"})
    assert r.status_code == 204, r.status_code


def start_server(inst: Instance, user: str, timeout: float = 90) -> None:
    """inst.spawn with room for a slow machine: the hub answers the spawn request only
    after its slow_spawn_timeout (10 s), the harness's own client gives up at 10 s."""
    create_user(inst, user)
    r = inst.api_call("POST", f"users/{user}/server", timeout=60)
    assert r.status_code in (201, 202, 400), r.text
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        srv = (inst.api_call("GET", f"users/{user}").json().get("servers") or {}).get("")
        if srv and srv.get("ready"):
            return
        time.sleep(0.2)
    raise AssertionError(f"{user}'s server not ready in {timeout}s")


def create_user(inst: Instance, user: str) -> None:
    r = inst.api_call("POST", f"users/{user}")
    assert r.status_code in (201, 409), r.text


def skew_venv() -> Path:
    """A second environment with jupyterhub-singleuser SKEW_VERSION (and this checkout's
    JupyterLab, so a browser can load it), made once and cached outside the repository
    (pip from the package registry)."""
    from importlib.metadata import version

    venv = CACHE / f"jupyterhub-{SKEW_VERSION}"
    pkgs = [f"jupyterhub=={SKEW_VERSION}", "jupyter_server",
            f"jupyterlab=={version('jupyterlab')}"]
    done = venv / (".complete-" + "-".join(p.replace("=", "") for p in pkgs[2:]))
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.exists():
            if not (venv / "bin" / "pip").exists():
                subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)],
                               check=True)
            subprocess.run([str(venv / "bin" / "pip"), "install", "-q", *pkgs],
                           check=True, timeout=900)
            done.touch()
    return venv / "bin" / "jupyterhub-singleuser"


# --------------------------------------------------------------------------- healthy


def test_healthy_flow_no_false_alarm_over_repeated_probes(hubsvc: Instance) -> None:
    create_user(hubsvc, "alice")
    v = probe(hubsvc, "alice", start=True)
    assert v.outcome == "healthy", v.render_text()
    assert v.exit_code == 0 and v.chain[-1].status == 200
    assert v.chain[-1].url.endswith("/user/alice/lab")
    assert not v.warnings
    for _ in range(5):
        v = probe(hubsvc, "alice", start=False)
        assert (v.outcome, v.exit_code, v.cause) == ("healthy", 0, "none"), v.render_text()
    cfg = cfg_of(hubsvc)

    async def passive() -> list[Any]:
        async with httpx.AsyncClient(trust_env=False) as c:
            return [await check_routes(c, cfg, hubsvc.secret("hubsvc_api_token"))
                    for _ in range(3)]

    assert asyncio.run(passive()) == [[], [], []]
    assert "Redirect loop detected" not in hubsvc.log_text()
    # the probe cleans up the short-lived tokens it minted for alice
    toks = hubsvc.api_call("GET", "users/alice/tokens").json()
    assert not [t for t in toks.get("api_tokens", []) if t.get("note") == "hubsvc probe-spawn"]


def test_no_start_does_not_spawn(hubsvc: Instance) -> None:
    create_user(hubsvc, "bob")
    assert cli(hubsvc, "--user", "bob", "--no-start") == 2
    srv = (hubsvc.api_call("GET", "users/bob").json().get("servers") or {}).get("")
    assert not srv


def test_bad_usage_exits_78(hubsvc: Instance, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(hubsvc, "--user", "nobody-here") == 78
    assert "no user 'nobody-here'" in capsys.readouterr().err


# --------------------------------------------------------------------------- missing route


def test_missing_route_loop_found_fast_repaired_and_reprobed(quiet_hubsvc: Instance) -> None:
    hubsvc = quiet_hubsvc
    start_server(hubsvc, "carol")
    delete_route(hubsvc, "carol")
    t0 = time.monotonic()
    v = probe(hubsvc, "carol", start=False, repair=False)
    took = time.monotonic() - t0
    assert (v.outcome, v.cause, v.exit_code) == ("loop", "missing_route", 1), v.render_text()
    assert v.timings_ms["verdict_after_repeat"] < 2000
    assert took < 2.0  # the hub itself needs ~14 s to answer its 500
    assert any("no route for /user/carol/" in e for e in v.evidence)
    assert "redirects=1" in (v.chain[-1].location or "")
    assert "/user/carol" not in hubsvc.routes()  # --no-repair repaired nothing
    # passive watch sees the same drift
    cfg = cfg_of(hubsvc)
    drifts = asyncio.run(_check(cfg, hubsvc))
    assert [(d.kind, d.user) for d in drifts] == [("missing", "carol")]
    # now with repair
    v = probe(hubsvc, "carol", start=False)
    assert (v.outcome, v.cause, v.exit_code, v.repaired) == ("repaired", "missing_route", 0,
                                                            True), v.render_text()
    assert v.first_chain and v.chain[-1].status == 200
    assert "POST /hub/api/proxy" in (v.repair or "")
    assert "/user/carol" in hubsvc.routes()
    text = v.render_text()
    assert "LOOP FOUND AND REPAIRED" in text and "chain before repair" in text


def test_route_to_a_dead_target_is_wrong_target_and_repaired(quiet_hubsvc: Instance) -> None:
    hubsvc = quiet_hubsvc
    start_server(hubsvc, "olga")
    with httpx.Client(trust_env=False, timeout=5) as c:
        r = c.post(f"{hubsvc.api}/api/routes/user/olga",
                   json={"target": f"http://127.0.0.1:{free_port()}", "user": "olga",
                         "server_name": "", "jupyterhub": True},
                   headers={"Authorization": f"token {hubsvc.secret('proxy_auth_token')}"})
    assert r.status_code == 201
    v = probe(hubsvc, "olga", start=False, repair=False)
    assert (v.outcome, v.cause, v.exit_code) == ("broken", "wrong_target", 1), v.render_text()
    assert any("the server listens at http://127.0.0.1:" in e for e in v.evidence), v.evidence
    v = probe(hubsvc, "olga", start=False)
    assert (v.outcome, v.cause, v.exit_code) == ("repaired", "wrong_target", 0), v.render_text()
    assert v.chain[-1].status == 200


async def _check(cfg: config.Config, inst: Instance) -> list[Any]:
    async with httpx.AsyncClient(trust_env=False) as c:
        return await check_routes(c, cfg, inst.secret("hubsvc_api_token"))


def test_passive_watch_repairs_drift_and_loop_log_is_one_episode(quiet_hubsvc: Instance) -> None:
    hubsvc = quiet_hubsvc
    start_server(hubsvc, "dave")
    cfg = cfg_of(hubsvc)
    tok = hubsvc.user_token("dave")
    delete_route(hubsvc, "dave")
    # a browser stuck in the loop, all the way to the hub's own 500 (~14 s)
    hops = 0
    url = f"{hubsvc.public}/user/dave/"
    with httpx.Client(trust_env=False, timeout=20,
                      headers={"Authorization": f"token {tok}"}) as c:
        for _ in range(20):
            r = c.get(url)
            hops += 1
            if not r.is_redirect:
                break
            url = str(r.url.join(r.headers["location"]))
    assert r.status_code == 500 and "Redirect loop detected" in r.text
    # the hub's log (as hubsvc relays it) -> one episode, not one event per hop
    lw = LoopWatch(quiet_s=30)
    eps = [e for e in (lw.feed(ln) for ln in _wait_log(hubsvc, "500 GET /hub/user/dave/"))
           if e is not None]
    assert len(eps) == 1, eps
    ep = eps[0]
    assert (ep.user, ep.count, ep.cause, ep.ended_by) == ("dave", 4, "missing_route", "hub_500")
    assert ep.lines >= 4 and ep.event()["event"] == "redirect_loop"

    async def watch() -> Any:
        async with httpx.AsyncClient(trust_env=False) as c:
            return await check_and_repair(c, cfg, hubsvc.secret("hubsvc_api_token"))

    res = asyncio.run(watch())
    assert [(d.kind, d.user, d.found) for d in res.drifts] == [("missing", "dave", None)]
    assert res.repaired is True and not res.remaining
    assert res.drifts[0].event()["event"] == "route_drift"
    assert hubsvc.get_public("/user/dave/api/status", tok) == 200


def _wait_log(inst: Instance, needle: str, timeout: float = 10) -> list[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = inst.log_text()
        if needle in text:
            return text.splitlines()
        time.sleep(0.1)
    raise AssertionError(f"{needle!r} not in the log:\n{inst.log_text()[-3000:]}")


# --------------------------------------------------------------------------- private address


def test_private_address_entry_is_named(hubsvc: Instance) -> None:
    start_server(hubsvc, "erin")
    v = probe(hubsvc, "erin", start=False, entry_url=f"{hubsvc.hub}/user/erin/")
    assert (v.outcome, v.cause, v.exit_code) == ("loop", "private_address", 1), v.render_text()
    assert f"{hubsvc.public}/user/erin/" in v.fix
    # the session never goes to another origin than the public URL's, even the hub's own
    assert "walked without credentials" in v.credentials
    assert any("walked without the login session" in e for e in v.evidence), v.evidence
    assert not [h for h in v.chain if h.url.startswith(hubsvc.hub) and h.cookies_sent]
    # the public URL itself is fine: no repair was attempted
    assert v.repair is None and "/user/erin" in hubsvc.routes()


# --------------------------------------------------------------------------- version skew


@pytest.fixture(scope="module")
def skew_singleuser() -> Path:
    return skew_venv()


def test_version_skew_is_reported(make_hubsvc: Any, skew_singleuser: Path) -> None:
    inst = make_hubsvc(overrides=QUIET, hub_extra=(
        f"c.Spawner.cmd = [{str(skew_singleuser)!r}]\n"
        'c.Spawner.default_url = "/api/status"\n'))
    create_user(inst, "frank")
    # default_url is an API page (the old jupyter_server has no lab): only a token opens
    # it, a browser's cookies get 403 there; the token walk checks the server's version
    v = probe(inst, "frank", start=True, token_walk=True)
    # the flow works, but the skew is named with the header's evidence
    assert v.outcome == "healthy" and v.exit_code == 0, v.render_text()
    assert any(f"jupyterhub-singleuser {SKEW_VERSION}" in w for w in v.warnings), v.warnings
    assert v.chain[-1].jupyterhub_version == SKEW_VERSION
    # with a loop, the hub gives up after 2 redirects instead of 4; the probe says why
    delete_route(inst, "frank")
    v = probe(inst, "frank", start=False, repair=False, token_walk=True)
    # the token goes only to frank's server path: the hub's catch-all sends the token-less
    # request on to its login page, so the token walk sees the flow broken, not the loop
    assert (v.outcome, v.cause) == ("broken", "missing_route"), v.render_text()
    # the server's version is read where its own environment says it listens
    assert any(f"X-JupyterHub-Version {SKEW_VERSION}" in e and "2 redirects" in e
               for e in v.evidence), v.evidence


# --------------------------------------------------------------------------- server-side causes


SELF_REDIRECTING_SERVER = """
import http.server, os, urllib.parse
u = urllib.parse.urlsplit(os.environ["JUPYTERHUB_SERVICE_URL"])
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path.split("?")[0].rstrip("/").endswith("/api"):
            body = b'{"version": "0"}'
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        self.send_response(302)
        self.send_header("Location", self.path)  # a misconfigured server: itself
        self.send_header("Content-Length", "0")
        self.end_headers()
    def log_message(self, *a):
        pass
http.server.HTTPServer((u.hostname, u.port), H).serve_forever()
"""


def test_server_redirecting_to_itself(make_hubsvc: Any) -> None:
    inst = make_hubsvc(start=False)
    script = inst.root / "self_redirecting_server.py"
    script.write_text(SELF_REDIRECTING_SERVER)
    inst.hub_extra = f"c.Spawner.cmd = [{sys.executable!r}, {str(script)!r}]\n"
    inst.write_config()
    inst.start()
    create_user(inst, "gina")
    v = probe(inst, "gina", start=True)
    assert (v.outcome, v.cause, v.exit_code) == ("loop", "self_redirect", 1), v.render_text()
    assert "default_url" in v.fix


def test_prefix_mismatch(make_hubsvc: Any) -> None:
    inst = make_hubsvc(start=False)
    inst.overrides = {"proxy": {"public_url": f"{inst.public}/jhub/"}}
    inst.write_config()
    inst.start()
    with httpx.Client(trust_env=False, timeout=10) as c:
        r = c.post(f"{inst.hub}/jhub/hub/api/users/hank",
                   headers={"Authorization": f"token {TEST_TOKEN}"})
    assert r.status_code == 201, r.text
    v = probe(inst, "hank", start=True)
    assert v.outcome == "healthy", v.render_text()
    # a link without the prefix is put right by the hub itself: no false alarm
    v = probe(inst, "hank", start=False, entry_url=f"{inst.public}/user/hank/")
    assert v.outcome == "healthy", v.render_text()
    # a front proxy (a second, real CHP) that strips /jhub before hubsvc's proxy
    front_port, front_api = free_port(), free_port()
    chp = REPO / "node_modules" / ".bin" / "configurable-http-proxy"
    env = dict(os.environ, CONFIGPROXY_AUTH_TOKEN="front-token")
    front = subprocess.Popen(
        [str(chp), "--ip", "127.0.0.1", "--port", str(front_port), "--api-ip", "127.0.0.1",
         "--api-port", str(front_api), "--no-include-prefix", "--log-level", "warn"],
        env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        with httpx.Client(trust_env=False, timeout=5) as c:
            for _ in range(100):
                with contextlib.suppress(httpx.HTTPError):
                    r = c.post(f"http://127.0.0.1:{front_api}/api/routes/jhub",
                               json={"target": inst.public},
                               headers={"Authorization": "token front-token"})
                    if r.status_code == 201:
                        break
                time.sleep(0.1)
        v = probe(inst, "hank", start=False,
                  entry_url=f"http://127.0.0.1:{front_port}/jhub/user/hank/")
    finally:
        front.terminate()
        front.wait(10)
    # each pass adds a "hub/" to the path, so no URL repeats exactly (a browser gives up
    # after 20 hops); the probe folds the repeated segment and stops at the first repeat
    assert (v.outcome, v.cause, v.exit_code) == ("loop", "prefix_mismatch", 1), v.render_text()
    on_front = [h for h in v.chain if h.url.startswith(f"http://127.0.0.1:{front_port}/")]
    assert len(on_front) <= 3 and "/jhub/" in v.fix, v.render_text()
    assert not [h for h in on_front if h.cookies_sent], "credentials went to another origin"
    assert any("path grows by the same segment" in e for e in v.evidence), v.evidence
    assert any("ends ok with 200" in e for e in v.evidence), v.evidence


def test_spawn_failure_message_from_progress_api(make_hubsvc: Any) -> None:
    inst = make_hubsvc(hub_extra='c.Spawner.cmd = ["/nonexistent/jupyterhub-singleuser"]\n')
    create_user(inst, "ivan")
    v = probe(inst, "ivan", start=True)
    assert (v.outcome, v.exit_code) == ("spawn_failed", 2), v.render_text()
    assert v.spawn_message and "nonexistent" in v.spawn_message


def test_spawn_timeout(make_hubsvc: Any) -> None:
    inst = make_hubsvc(hub_extra='c.Spawner.cmd = ["/bin/sleep", "120"]\n'
                                 "c.Spawner.http_timeout = 60\n")
    create_user(inst, "judy")
    t0 = time.monotonic()
    v = probe(inst, "judy", start=True, timeout_s=4)
    assert (v.outcome, v.exit_code) == ("spawn_timeout", 2), v.render_text()
    assert time.monotonic() - t0 < 8
    with contextlib.suppress(httpx.HTTPError):
        inst.api_call("DELETE", "users/judy/server")


def test_hub_unreachable_from_the_server(make_hubsvc: Any) -> None:
    # a hub_connect_url nothing listens on: the server cannot reach the hub's API
    inst = make_hubsvc(hub_extra='c.Spawner.hub_connect_url = "http://127.0.0.1:9"\n'
                                 "c.Spawner.http_timeout = 8\n")
    create_user(inst, "kate")
    v = probe(inst, "kate", start=True, timeout_s=60)
    assert (v.outcome, v.cause, v.exit_code) == ("spawn_failed", "hub_unreachable", 2), \
        v.render_text()
    assert any("JUPYTERHUB_API_URL=http://127.0.0.1:9" in e for e in v.evidence)
    assert "hub_connect_url" in v.fix


# --------------------------------------------------------------------------- login form


def test_login_form_walk_with_cookies_through_oauth(quiet_hubsvc: Instance) -> None:
    hubsvc = quiet_hubsvc
    """With a password the probe logs in through the form and walks with cookies only,
    through the hub's OAuth handshake (which visits /user/NAME/lab twice, legitimately)."""
    create_user(hubsvc, "mia")
    v = probe(hubsvc, "mia", start=True, password="anything")
    assert v.outcome == "healthy", v.render_text()
    paths = [h.url for h in v.chain]
    assert any("/hub/api/oauth2/authorize" in p for p in paths), paths
    assert any("/user/mia/oauth_callback" in p for p in paths), paths
    assert v.chain[-1].status == 200 and "/user/mia/lab" in v.chain[-1].url
    # the same with the route gone: the loop is found with cookies as well
    delete_route(hubsvc, "mia")
    v = probe(hubsvc, "mia", start=False, password="anything", repair=False)
    assert (v.outcome, v.cause) == ("loop", "missing_route"), v.render_text()
    assert v.timings_ms["verdict_after_repeat"] < 2000
    assert not any((h.elapsed_ms or 0) > 1500 for h in v.chain), v.render_text()


# --------------------------------------------------------------------------- the command


def test_hubsvc_probe_spawn_command_json_and_exit_codes(quiet_hubsvc: Instance) -> None:
    hubsvc = quiet_hubsvc
    exe = Path(sys.executable).parent / "hubsvc"
    helptext = subprocess.run([str(exe), "--help"], capture_output=True, text=True).stdout
    if "probe-spawn" not in helptext:
        pytest.skip("`hubsvc probe-spawn` is not wired into the CLI yet")
    import json

    create_user(hubsvc, "nina")
    base = [str(exe), "probe-spawn", "--config", str(hubsvc.config), "--user", "nina"]
    r = subprocess.run([*base, "--json"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    doc = json.loads(r.stdout)
    assert doc["outcome"] == "healthy" and doc["exit_code"] == 0 and doc["chain"]
    delete_route(hubsvc, "nina")
    r = subprocess.run([*base, "--no-repair"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1, r.stdout + r.stderr
    assert r.stdout.startswith("REDIRECT LOOP: nina:") and "cause: missing_route" in r.stdout
    r = subprocess.run(base, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "LOOP FOUND AND REPAIRED" in r.stdout, r.stdout + r.stderr
    r = subprocess.run([*base[:-1], "ghost"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 78 and "no user 'ghost'" in r.stderr
    r = subprocess.run([*base, "--timeout", "-1"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 78


class Forwarder:
    """A TCP forwarder on a free loopback port to `target_port`, in a thread; `stop()`
    closes it and every connection through it (the hub becomes unreachable through it)."""

    def __init__(self, target_port: int):
        import socket
        import threading

        self.target_port = target_port
        self.lsock = socket.socket()
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(64)
        self.port = self.lsock.getsockname()[1]
        self.conns: list[Any] = []
        self.stopped = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        import socket
        import threading

        while not self.stopped:
            try:
                a, _ = self.lsock.accept()
            except OSError:
                return
            try:
                b = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
            except OSError:
                a.close()
                continue
            self.conns += [a, b]
            for x, y in ((a, b), (b, a)):
                threading.Thread(target=self._pipe, args=(x, y), daemon=True).start()

    @staticmethod
    def _pipe(src: Any, dst: Any) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                dst.close()

    def stop(self) -> None:
        import socket

        self.stopped = True
        with contextlib.suppress(OSError):
            self.lsock.shutdown(socket.SHUT_RDWR)
        self.lsock.close()
        for c in self.conns:
            with contextlib.suppress(OSError):
                c.close()


def test_hub_unreachable_from_a_running_server(make_hubsvc: Any) -> None:
    """The server reaches the hub through a forwarder (hub_connect_url) that is cut once
    the server runs: every login check of the server fails."""
    inst = make_hubsvc(start=False, overrides=QUIET)
    fwd = Forwarder(inst.hub_port)
    try:
        inst.hub_extra = f'c.JupyterHub.hub_connect_url = "http://127.0.0.1:{fwd.port}"\n'
        inst.write_config()
        inst.start()
        create_user(inst, "pete")
        v = probe(inst, "pete", start=True)
        assert v.outcome == "healthy", v.render_text()
        fwd.stop()
        v = probe(inst, "pete", start=False)
    finally:
        fwd.stop()
    assert (v.cause, v.exit_code) == ("hub_unreachable", 1), v.render_text()
    assert any(f"JUPYTERHUB_API_URL=http://127.0.0.1:{fwd.port}" in e for e in v.evidence)
    assert "hub_connect_url" in v.fix


# --------------------------------------------------------------------------- the hub's pages
# Misconfigurations a browser walks into after login, that a walk starting at /user/NAME/
# with a token never sees. Each: the session walk names the cause with its evidence, the
# token walk says what it did not see, and doctor reports it with the same words and fix.

HUB_PAGE_CAUSES = {
    # JupyterHub's RootHandler and LoginHandler send a logged-in user to default_url
    "default_url_to_hub_root": ('c.JupyterHub.default_url = "/hub/"\n',
                                "loop", "hub_default_url_loop"),
    # HubOAuth.set_cookie applies cookie_options over the server's own path
    "cookie_path_hub_only": (
        'c.JupyterHub.tornado_settings = {"cookie_options": {"path": "/hub/"}}\n',
        "loop", "cookie_scope"),
    # the hub's _set_cookie applies cookie_options: a Domain the host is not in is refused
    "cookie_domain_elsewhere": (
        'c.JupyterHub.tornado_settings = {"cookie_options": {"domain": "example.org"}}\n',
        "broken", "cookie_scope"),
    # the server's OAuth redirect and the hub's catch-all use public_url's host
    "public_url_other_host": ('c.JupyterHub.public_url = "http://localhost:{port}/"\n',
                              "broken", "public_url_mismatch"),
}


@pytest.mark.parametrize("case", sorted(HUB_PAGE_CAUSES))
def test_hub_page_causes_found_by_the_session_walk(make_hubsvc: Any, case: str) -> None:
    from hubsvc.doctor.context import make_ctx
    from hubsvc.doctor.jupyterhub import flow_findings

    extra, outcome, cause = HUB_PAGE_CAUSES[case]
    inst = make_hubsvc(start=False, overrides=QUIET)
    inst.hub_extra = extra.replace("{port}", str(inst.public_port))
    inst.write_config()
    inst.start()
    create_user(inst, "quinn")
    v = probe(inst, "quinn", start=True, repair=False)
    assert (v.outcome, v.cause, v.walk_mode) == (outcome, cause, "session"), v.render_text()
    assert v.exit_code == 1 and v.evidence and v.fix
    assert any(str(inst.hub_config) in e for e in v.evidence), v.evidence  # config named
    if outcome == "loop":
        assert v.timings_ms["verdict_after_repeat"] < 2000, v.timings_ms
        rep = v.chain[-1]
        assert rep.t_ms > 0 and v.timings_ms["walk_to_repeat"] >= rep.t_ms
        assert 0 <= v.timings_ms["verdict_at"] - rep.t_ms < 2000, v.timings_ms
    # the walk carried the session only to the public origin
    pub = inst.public
    assert all(not h.cookies_sent or h.url.startswith(pub) for h in v.chain), v.render_text()
    # doctor: the same rule, the same words, the same fix
    finds = [f for f in flow_findings(make_ctx(cfg_of(inst)))
             if f.id == f"jupyterhub.flow.{cause}"]
    assert len(finds) == 1 and finds[0].severity == "error", finds
    assert finds[0].what.startswith(v.summary) and finds[0].fix == v.fix
    # the token walk does not see any of it, and says so instead of a bare OK
    t = probe(inst, "quinn", start=False, token_walk=True)
    if t.outcome == "healthy":
        text = t.render_text()
        assert text.startswith("NO LOOP IN THE STEPS WALKED") and "OAuth" in text, text


# --------------------------------------------------------------------------- credentials


class Recorder:
    """A loopback HTTP listener on another port that records the headers it receives
    and answers 200 (the listener of a reported URL on another origin)."""

    def __init__(self, hang: bool = False) -> None:
        import http.server
        import threading

        self.seen: list[dict[str, str]] = []
        self.stop_event = threading.Event()
        seen, stop = self.seen, self.stop_event

        class H(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                seen.append({k.lower(): v for k, v in self.headers.items()})
                if hang:
                    stop.wait(30)
                    return
                self.send_response(200)
                self.send_header("content-length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *a: Any) -> None:
                pass

        self.srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.srv.daemon_threads = True
        self.port = self.srv.server_address[1]
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.stop_event.set()
        self.srv.shutdown()
        self.srv.server_close()


def probe_tokens(inst: Instance, user: str) -> list[dict[str, Any]]:
    toks = inst.api_call("GET", f"users/{user}/tokens").json().get("api_tokens", [])
    return [t for t in toks if str(t.get("note")).startswith("hubsvc probe-spawn")]


def test_credentials_never_leave_the_public_origin_and_token_is_narrow(
        quiet_hubsvc: Instance) -> None:
    from hubsvc.probe.spawn import HubAPI

    inst = quiet_hubsvc
    start_server(inst, "rita")
    rec = Recorder()
    try:
        other = f"http://127.0.0.1:{rec.port}/user/rita/"
        for token_walk in (True, False):
            v = probe(inst, "rita", start=False, entry_url=other, token_walk=token_walk)
            assert "without credentials" in v.credentials or "no credentials" in \
                v.credentials, v.render_text()
            assert v.chain[-1].url == other and not v.chain[-1].cookies_sent
    finally:
        rec.close()
    assert len(rec.seen) == 2
    assert not [h for h in rec.seen if "authorization" in h or "cookie" in h], rec.seen
    assert not probe_tokens(inst, "rita")
    # the token probe-spawn mints opens rita's server and nothing else
    cfg = cfg_of(inst)

    async def mint() -> tuple[str, str]:
        async with httpx.AsyncClient(trust_env=False) as c:
            return await HubAPI(c, cfg, inst.secret("hubsvc_api_token")).mint_token("rita", 60)

    tok, tid = asyncio.run(mint())
    try:
        assert inst.get_public("/user/rita/api/status", tok) == 200
        with httpx.Client(trust_env=False, timeout=5) as c:
            h = {"Authorization": f"token {tok}"}
            # its own name is all the hub tells it (JupyterHub lets any token identify
            # its owner); no server model, no list of users, no new token, no stop
            me = c.get(f"{inst.hub}/hub/api/users/rita", headers=h)
            assert me.status_code == 200 and "servers" not in me.json(), me.text
            assert c.get(f"{inst.hub}/hub/api/users", headers=h).status_code == 403
            assert c.post(f"{inst.hub}/hub/api/users/rita/tokens", headers=h,
                          json={}).status_code == 403
            assert c.delete(f"{inst.hub}/hub/api/users/rita/server",
                            headers=h).status_code == 403
        info = inst.api_call("GET", f"users/rita/tokens/{tid}").json()
        # what was asked for, plus the two JupyterHub gives every token to identify its owner
        assert set(info["scopes"]) == {"access:servers!server=rita/", "read:users:name!user=rita",
                                       "read:users:groups!user=rita"}, info
        assert info.get("expires_at"), info  # short-lived
    finally:
        inst.api_call("DELETE", f"users/rita/tokens/{tid}")
    # the cookie secret replaced under the running hub: the session hubsvc makes from the
    # file is no longer the hub's, and the walk says so instead of guessing a loop
    secret = inst.state / "jupyterhub_cookie_secret"
    kept = secret.read_text()
    secret.write_text("cd" * 32 + "\n")
    try:
        v = probe(inst, "rita", start=False, repair=False)
    finally:
        secret.write_text(kept)
    assert (v.outcome, v.cause) == ("broken", "session_refused"), v.render_text()
    assert "restart hubsvc" in v.fix


def test_token_deleted_whenever_the_probe_is_interrupted(quiet_hubsvc: Instance,
                                                        tmp_path: Path) -> None:
    """SIGTERM and SIGINT while the walk hangs, and SIGINT in the moment the hub has made
    the token but probe-spawn has not yet read its id: no probe token is left behind."""
    import signal

    from hubsvc.probe.spawn import PAUSE_AFTER_MINT_ENV

    inst = quiet_hubsvc
    start_server(inst, "sam")
    rec = Recorder(hang=True)  # a page on the public origin that never answers
    exe = Path(sys.executable).parent / "hubsvc"
    argv = [str(exe), "probe-spawn", "--config", str(inst.config), "--user", "sam",
            "--token-walk", "--url", f"{inst.public}/hang/"]
    try:
        with httpx.Client(trust_env=False, timeout=5) as c:
            r = c.post(f"{inst.api}/api/routes/hang",
                       json={"target": f"http://127.0.0.1:{rec.port}"},
                       headers={"Authorization": f"token {inst.secret('proxy_auth_token')}"})
        assert r.status_code == 201
        for n, (sig, moment) in enumerate([("SIGTERM", "walk"), ("SIGINT", "walk"),
                                           ("SIGINT", "mint")]):
            marker = tmp_path / f"minted-{n}"
            env = dict(os.environ)
            if moment == "mint":
                env[PAUSE_AFTER_MINT_ENV] = str(marker)
            seen_before = len(rec.seen)
            p = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True)
            try:
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline and p.poll() is None and not (
                        marker.exists() if moment == "mint" else
                        probe_tokens(inst, "sam") and len(rec.seen) > seen_before):
                    time.sleep(0.1)
                assert p.poll() is None, p.communicate()
                # the hub has made the token: the moment is real
                assert probe_tokens(inst, "sam"), f"{sig} {moment}: no token was minted"
                if moment == "walk":
                    assert "authorization" not in rec.seen[-1]  # /hang is not the server
                else:
                    assert len(rec.seen) == seen_before  # the walk has not begun
                p.send_signal(getattr(signal, sig))
                out, err = p.communicate(timeout=30)
            finally:
                if p.poll() is None:
                    p.kill()
                    p.wait(10)
            assert p.returncode == 130, (sig, moment, p.returncode, out, err)
            assert "interrupted" in err
            assert not probe_tokens(inst, "sam"), (sig, moment)
    finally:
        rec.close()
