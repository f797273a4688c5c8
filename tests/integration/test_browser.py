"""A real browser (Debian's Chromium, headless, driven by Selenium through Debian's
chromedriver) against real hubsvc (CHP 5.3.0 + JupyterHub 6.1.1).

1. Logs in through hubsvc, spawns, sees JupyterLab at /user/NAME/lab; the route is removed
   behind hubsvc's back and the browser gets its page again once the route is repaired.
2. The equivalence suite: every cause in probe-spawn's corpus that can be reproduced for
   real is opened in Chromium and walked by probe-spawn; both must end in the same class
   (JupyterLab / a loop / stuck elsewhere), probe-spawn must name the expected cause, and a
   loop verdict must come within 2 s of the first repeated hop. Per-user causes share one
   hub (a pre_spawn_hook gives each user their fault); each hub-wide one has its own hub.

Causes of the corpus NOT in the suite, and why (JupyterHub 6.1.1's source):
- `oauth_cycle` (the fallback for an authorize <-> callback cycle): no standalone real
  reproduction exists. The server restarts OAuth only when its own cookie yields no valid
  token: the callback has just validated the token and cached the hub's answer for
  cache_max_age (300 s) under the same session id (services/auth.py,
  HubOAuthCallbackHandler.get -> user_for_token), and a logged-in user without access gets
  403, not a redirect (singleuser/extension.py, JupyterHubIdentityProvider.get_user:
  "avoids redirect loops for users who are logged in, but not allowed"). So every real
  OAuth cycle is a cookie that was not stored or not sent, which `cookie_scope` names
  first from the walk's own jar (cookie_path_hub_only below is such a cycle).
- `session_refused` from a cookie secret or database replaced under the running hub: the
  hub keeps the old secret in memory, so browsers log in and work; only the session
  hubsvc makes from the new file is refused. A hubsvc-side state, not a browser outcome;
  probe-spawn's verdict for it is checked in test_redirects.py. The browser-visible
  session_refused (c.JupyterHub.cookie_max_age_days = 0) is in the suite.
- `version_skew` as a cause of its own: 6.1.1 only logs a mismatch (_version.py,
  _check_version) and gives up its /hub/user/ loop after 2 redirects instead of 4
  (handlers/base.py, _redirect_to_user_server). The suite checks both for real with
  jupyterhub-singleuser 5.5.4: JupyterLab loads (probe: healthy, with a skew warning), and
  a lost route ends on the hub's loop page naming the versions (probe: missing_route with
  the skew as evidence).

Screenshots go to test-output/<test>/ on failure."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from hubsvc import config
from hubsvc.probe import Verdict, probe_spawn
from hubsvc.routewatch import WatchResult, check_and_repair

from . import chromium
from .hubsvc_harness import REPO, Instance
from .test_redirects import delete_route

pytestmark = pytest.mark.integration

CHROMIUM, CHROMEDRIVER = chromium.CHROMIUM, chromium.CHROMEDRIVER
OUTPUT = REPO / "test-output"

webdriver = pytest.importorskip("selenium.webdriver")
if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
    pytest.skip("needs Debian's chromium and chromium-driver", allow_module_level=True)

from selenium.common.exceptions import TimeoutException  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402


@pytest.fixture
def browser(request: pytest.FixtureRequest) -> Iterator[Any]:
    drv = chromium.start()
    shots: list[tuple[str, bytes]] = []
    drv.shots = shots  # screenshots taken along the way, written out on failure
    try:
        yield drv
    finally:
        rep = getattr(request.node, "rep_call", None)
        if rep is not None and rep.failed:
            out = OUTPUT / request.node.name
            out.mkdir(parents=True, exist_ok=True)
            for name, png in shots:
                (out / f"{name}.png").write_bytes(png)
            try:
                drv.save_screenshot(str(out / "at-failure.png"))
                (out / "at-failure.url.txt").write_text(drv.current_url + "\n")
            except Exception:  # the browser may be gone
                pass
        chromium.stop(drv)


def snap(drv: Any, name: str) -> None:
    try:
        drv.shots.append((name, drv.get_screenshot_as_png()))
    except Exception:
        pass


def wait_for_lab(drv: Any, user: str, timeout: float) -> None:
    WebDriverWait(drv, timeout, poll_frequency=0.2).until(
        lambda d: f"/user/{user}/lab" in d.current_url
        and d.find_elements(By.CSS_SELECTOR, ".jp-LabShell"))


def test_login_spawn_lab_then_route_repaired_under_the_browser(make_hubsvc: Any,
                                                                 browser: Any) -> None:
    # a health interval of 3 s: the browser is surely inside the hub's loop (which sleeps
    # 2 s, then 4 s) when hubsvc notices the missing route and repairs it
    hubsvc: Instance = make_hubsvc(overrides={"health": {"interval_s": 3.0, "timeout_s": 1.0}})
    user = "lena"
    drv = browser
    drv.get(f"{hubsvc.public}/hub/login")
    WebDriverWait(drv, 30).until(lambda d: d.find_elements(By.NAME, "username"))
    drv.find_element(By.NAME, "username").send_keys(user)
    drv.find_element(By.NAME, "password").send_keys("any password (dummy authenticator)")
    snap(drv, "1-login")
    drv.find_element(By.CSS_SELECTOR, "form button[type=submit], form input[type=submit]").click()
    try:
        wait_for_lab(drv, user, 90)
    except TimeoutException:
        snap(drv, "2-no-lab")
        raise
    snap(drv, "2-lab")
    assert drv.current_url.startswith(f"{hubsvc.public}/user/{user}/lab")

    # the route disappears behind hubsvc's back
    with httpx.Client(trust_env=False, timeout=5) as c:
        r = c.delete(f"{hubsvc.api}/api/routes/user/{user}",
                     headers={"Authorization": f"token {hubsvc.secret('proxy_auth_token')}"})
    assert r.status_code == 204
    assert f"/user/{user}" not in hubsvc.routes()

    # hubsvc's watch repairs while the browser is caught in the hub's redirect loop. Until
    # the supervisor runs routewatch itself, the test runs the same call after 4.5 s.
    cfg = config.load(hubsvc.config)
    result: dict[str, Any] = {}

    def watch() -> None:
        deadline = time.monotonic() + 4.5
        while time.monotonic() < deadline:
            if f"/user/{user}" in hubsvc.routes():
                result["by"] = "hubsvc"
                return
            time.sleep(0.1)

        async def once() -> WatchResult:
            async with httpx.AsyncClient(trust_env=False) as c:
                return await check_and_repair(c, cfg, hubsvc.secret("hubsvc_api_token"))

        result["by"] = "test"
        result["r"] = asyncio.run(once())

    t = threading.Thread(target=watch)
    t0 = time.monotonic()
    t.start()
    drv.get(f"{hubsvc.public}/user/{user}/lab")  # follows the loop until the route is back
    t.join(30)
    try:
        wait_for_lab(drv, user, 60)
    except TimeoutException:
        snap(drv, "3-after-repair-no-lab")
        raise
    took = time.monotonic() - t0
    snap(drv, "3-lab-after-repair")
    assert f"/user/{user}" in hubsvc.routes()
    assert "Redirect loop detected." not in drv.page_source
    # the page came back through the hub's own loop (it counts ?redirects=N) before the
    # hub gave up (~14 s)
    assert "redirects=" in drv.current_url, drv.current_url
    assert took < 14, took
    if result["by"] == "test":
        res = result["r"]
        assert [(d.kind, d.user) for d in res.drifts] == [("missing", user)]
        assert res.repaired is True
    else:
        log = hubsvc.log_text()
        assert "route_drift" in log and f"user={user}" in log, log[-3000:]


# =========================================================================== equivalence
# For every cause in probe-spawn's corpus, reproduced for real, Chromium's outcome and
# probe-spawn's verdict fall in the same class:
#   "lab"   JupyterLab loaded               <-> healthy / repaired
#   "loop"  ERR_TOO_MANY_REDIRECTS, or the   <-> loop / too_many_redirects
#           hub's "Redirect loop detected"
#   "stuck" any other page (login form again, an error page, a failed spawn)
#                                           <-> broken / spawn_failed / spawn_timeout
# One hub per misconfiguration; causes that are per user share one hub.

PROBE_CLASS = {"healthy": "lab", "repaired": "lab", "loop": "loop",
               "too_many_redirects": "loop", "broken": "stuck", "spawn_failed": "stuck",
               "spawn_timeout": "stuck"}
# hubsvc's own route watch must not repair what a case breaks on purpose
CALM = {"health": {"interval_s": 300.0, "timeout_s": 2.0}}
# (case, probe's cause, Chromium's class, where Chromium ended, probe's outcome)
RESULTS: list[tuple[str, str, str, str, str]] = []


def chromium_outcome(drv: Any, user: str, timeout: float = 90) -> tuple[str, str]:
    """(class, detail) of where the browser ended up: polls until JupyterLab renders, an
    error page or the hub's loop page shows, or the page stays put for 3 s elsewhere."""
    deadline = time.monotonic() + timeout
    last, since = "", time.monotonic()
    while time.monotonic() < deadline:
        try:
            url, src = drv.current_url, drv.page_source
        except Exception:  # a navigation in progress
            time.sleep(0.2)
            continue
        if "ERR_TOO_MANY_REDIRECTS" in src:
            return "loop", "ERR_TOO_MANY_REDIRECTS"
        if "Redirect loop detected" in src:
            return "loop", "the hub's 'Redirect loop detected' page"
        if f"/user/{user}/lab" in url and drv.find_elements(By.CSS_SELECTOR, ".jp-LabShell"):
            return "lab", url
        # how long a page may stay put before it counts as where the browser ended:
        # spawn-pending waits for the spawn, JupyterLab needs a few seconds to render
        if "spawn-pending" in url or "/hub/spawn" in url:
            # the page turns its progress bar red when the spawn failed; a spawn that
            # fails at once is the hub's error page
            try:
                failed = drv.execute_script(
                    "return !!document.querySelector('.progress-bar.bg-danger, div.error')")
            except Exception:  # the page is being replaced
                failed = False
            settle = 3.0 if failed else 60.0
        elif f"/user/{user}/" in url and drv.title != "JupyterHub" and drv.find_elements(
                By.ID, "jupyter-config-data"):  # a JupyterLab page, still rendering
            settle = 20.0
        else:
            settle = 3.0
        if url != last:
            last, since = url, time.monotonic()
        elif time.monotonic() - since > settle:
            return "stuck", f"{url} ({drv.title})"
        time.sleep(0.2)
    return "stuck", f"timeout at {last}"


def chromium_login(drv: Any, inst: Instance, user: str) -> tuple[str, str]:
    # every cookie of the profile (WebDriver's delete_all_cookies only sees the current
    # page's path): the next user starts as a new browser
    drv.execute_cdp_cmd("Network.clearBrowserCookies", {})
    drv.get(f"{inst.public}/hub/login")
    WebDriverWait(drv, 30).until(lambda d: d.find_elements(By.NAME, "username"))
    drv.find_element(By.NAME, "username").send_keys(user)
    drv.find_element(By.NAME, "password").send_keys("x")
    drv.find_element(By.CSS_SELECTOR, "form button[type=submit], form input[type=submit]").click()
    return chromium_outcome(drv, user)


def run_probe(inst: Instance, user: str, **kw: Any) -> Verdict:
    kw.setdefault("timeout_s", 90.0)
    return asyncio.run(probe_spawn(config.load(inst.config), user, repair=False, **kw))


def agree(case: str, chromium: tuple[str, str], v: Verdict, cause: str) -> None:
    """Chromium and probe-spawn end in the same class, and probe-spawn names CAUSE."""
    RESULTS.append((case, v.cause, chromium[0], chromium[1][:90], v.outcome))
    assert PROBE_CLASS.get(v.outcome) == chromium[0], (
        f"{case}: Chromium {chromium}, probe-spawn:\n{v.render_text()}")
    assert v.cause == cause, f"{case}: probe-spawn:\n{v.render_text()}"
    if chromium[0] == "loop" and v.timings_ms.get("verdict_after_repeat") is not None:
        # from the probe's own hop timestamps: the verdict within 2 s of the repeat
        assert v.timings_ms["verdict_after_repeat"] < 2000, v.timings_ms
        # the hop whose Location repeated a place was sent at chain[-1].t_ms (the walk's
        # clock); the verdict came less than 2 s after it
        repeat_hop = v.chain[-1]
        assert 0 <= v.timings_ms["verdict_at"] - repeat_hop.t_ms < 2000, (
            v.timings_ms, repeat_hop.t_ms)


# A spawner that never finishes starting for one user ('slow'): the hub's start_timeout
# ends the spawn, as it does for a batch system or an image pull that takes too long.
SLOW_SPAWNER = """
import asyncio as _asyncio
from jupyterhub.spawner import SimpleLocalProcessSpawner as _Simple
class _SlowForOne(_Simple):
    async def start(self):
        if self.user.name == 'slow':
            await _asyncio.sleep(3600)
        return await super().start()
c.JupyterHub.spawner_class = _SlowForOne
"""


def test_equivalence_per_user_causes_on_one_hub(make_hubsvc: Any, browser: Any) -> None:
    """healthy (also through /hub/user-redirect/), missing_route, private_address,
    wrong_target (nothing there; another user's server there), self_redirect,
    hub_unreachable (spawn fails), version skew (healthy, and in a loop), a default_url
    the server does not have, the hub's start_timeout and probe-spawn's own --timeout:
    causes that live in one user's route or server."""
    from .test_redirects import SELF_REDIRECTING_SERVER, SKEW_VERSION, skew_venv

    skew = skew_venv()
    inst = make_hubsvc(start=False, overrides=CALM)
    script = inst.root / "self_redirecting_server.py"
    script.write_text(SELF_REDIRECTING_SERVER)
    inst.hub_extra = SLOW_SPAWNER + (
        "import sys as _sys\n"
        "def _per_user(spawner):\n"
        "    if spawner.user.name == 'selfie':\n"
        f"        spawner.cmd = [_sys.executable, {str(script)!r}]\n"
        "    if spawner.user.name == 'lost':\n"
        "        spawner.hub_connect_url = 'http://127.0.0.1:9'\n"
        "        spawner.http_timeout = 5\n"
        "    if spawner.user.name == 'old':\n"
        f"        spawner.cmd = [{str(skew)!r}]\n"
        "    if spawner.user.name == 'crash':\n"
        "        spawner.cmd = ['/nonexistent/jupyterhub-singleuser']\n"
        "    if spawner.user.name == 'mute':\n"
        "        spawner.cmd = ['/bin/sleep', '600']\n"
        "        spawner.http_timeout = 5\n"
        "    if spawner.user.name == 'nopage':\n"
        "        spawner.default_url = '/tree'\n"
        "    if spawner.user.name == 'slow':\n"
        "        spawner.start_timeout = 6\n"
        "c.Spawner.pre_spawn_hook = _per_user\n")
    inst.write_config()
    inst.start()
    drv = browser
    # healthy: the baseline both must call good
    agree("healthy", chromium_login(drv, inst, "hana"), run_probe(inst, "hana"), "none")
    # /hub/user-redirect/: the hub's link to "my own server, whoever I am"
    drv.get(f"{inst.public}/hub/user-redirect/lab")
    c = chromium_outcome(drv, "hana")
    agree("user_redirect_link", c, run_probe(
        inst, "hana", start=False, entry_url=f"{inst.public}/hub/user-redirect/lab"), "none")
    # missing_route: the proxy lost the route of a running server
    delete_route(inst, "hana")
    drv.get(f"{inst.public}/user/hana/lab")
    c = chromium_outcome(drv, "hana")
    agree("missing_route", c, run_probe(inst, "hana", start=False), "missing_route")
    # private_address: the same user opens the hub's own listener
    inst.api_call("POST", "proxy")  # the hub pushes the route back
    drv.get(f"{inst.hub}/user/hana/")
    c = chromium_outcome(drv, "hana")
    agree("private_address", c, run_probe(inst, "hana", start=False,
                                          entry_url=f"{inst.hub}/user/hana/"),
          "private_address")
    # wrong_target: the route points where nothing answers
    with httpx.Client(trust_env=False, timeout=5) as cl:
        r = cl.post(f"{inst.api}/api/routes/user/hana",
                    json={"target": "http://127.0.0.1:9", "user": "hana", "server_name": "",
                          "jupyterhub": True},
                    headers={"Authorization": f"token {inst.secret('proxy_auth_token')}"})
    assert r.status_code == 201
    drv.get(f"{inst.public}/user/hana/lab")
    c = chromium_outcome(drv, "hana")
    agree("wrong_target", c, run_probe(inst, "hana", start=False), "wrong_target")
    # self_redirect: the user's server redirects to itself
    agree("self_redirect", chromium_login(drv, inst, "selfie"), run_probe(inst, "selfie"),
          "self_redirect")
    # hub_unreachable: the server is given a hub address nothing listens on
    agree("hub_unreachable", chromium_login(drv, inst, "lost"), run_probe(inst, "lost"),
          "hub_unreachable")
    # version skew: jupyterhub-singleuser SKEW_VERSION under the 6.1.1 hub. JupyterHub
    # only logs the mismatch: JupyterLab loads, probe-spawn says healthy and warns
    c = chromium_login(drv, inst, "old")
    v = run_probe(inst, "old")
    agree("version_skew", c, v, "none")
    assert any(f"jupyterhub-singleuser {SKEW_VERSION}" in w for w in v.warnings), v.warnings
    # ... and in a loop the hub gives up after 2 redirects instead of 4, naming the skew
    delete_route(inst, "old")
    drv.get(f"{inst.public}/user/old/lab")
    c = chromium_outcome(drv, "old")
    assert f"jupyterhub version {SKEW_VERSION}" in drv.page_source, c
    v = run_probe(inst, "old", start=False)
    agree("version_skew_in_a_loop", c, v, "missing_route")
    assert any(f"X-JupyterHub-Version {SKEW_VERSION}" in e and "2 redirects" in e
               for e in v.evidence), v.evidence
    inst.api_call("POST", "proxy")
    # wrong_target, another way: hana's route leads to old's (live) server
    target = inst.routes()["/user/old"]["target"]
    with httpx.Client(trust_env=False, timeout=5) as cl:
        r = cl.post(f"{inst.api}/api/routes/user/hana",
                    json={"target": target, "user": "hana", "server_name": "",
                          "jupyterhub": True},
                    headers={"Authorization": f"token {inst.secret('proxy_auth_token')}"})
    assert r.status_code == 201
    drv.get(f"{inst.public}/user/hana/lab")
    c = chromium_outcome(drv, "hana")
    agree("wrong_target_other_server", c, run_probe(inst, "hana", start=False),
          "wrong_target")
    inst.api_call("POST", "proxy")
    # the server's default_url names a page the environment does not have (/tree needs
    # the notebook package)
    agree("server_page_missing", chromium_login(drv, inst, "nopage"),
          run_probe(inst, "nopage"), "server_page_missing")
    # the server's command is missing / the server never listens: the spawn fails
    agree("server_crashed", chromium_login(drv, inst, "crash"), run_probe(inst, "crash"),
          "server_crashed")
    agree("server_unresponsive", chromium_login(drv, inst, "mute"), run_probe(inst, "mute"),
          "server_unresponsive")
    # the hub's start_timeout: the browser's spawn-pending page turns red
    c = chromium_login(drv, inst, "slow")
    agree("spawn_timeout_hub", c, run_probe(inst, "slow", timeout_s=60), "spawn_timeout")
    # probe-spawn's own --timeout ends first: the browser is still waiting on the same
    # spawn-pending page (the red page above is where it ends)
    v = run_probe(inst, "slow", timeout_s=3)
    agree("spawn_timeout_probe", c, v, "spawn_timeout")
    assert v.outcome == "spawn_timeout", v.render_text()


HUB_CONFIG_CASES = {
    "hub_default_url_loop": 'c.JupyterHub.default_url = "/hub/"\n',
    "cookie_path_hub_only": 'c.JupyterHub.tornado_settings = {"cookie_options": '
                            '{"path": "/hub/"}}\n',
    "cookie_domain_elsewhere": 'c.JupyterHub.tornado_settings = {"cookie_options": '
                               '{"domain": "example.org"}}\n',
    "public_url_other_host": 'c.JupyterHub.public_url = "http://localhost:{port}/"\n',
    # Secure cookies over http on a loopback address: browsers keep them (a secure
    # context), so does the probe's jar; nothing loops
    "secure_cookies_on_loopback": 'c.JupyterHub.tornado_settings = {"cookie_options": '
                                  '{"secure": True}}\n',
    # __Host- cookies over http: the servers' OAuth state cookie is set without Secure
    # (6.1.1 decides by the public URL's scheme) and refused, on a loopback address too
    "cookie_host_prefix_over_http": "c.JupyterHub.cookie_host_prefix_enabled = True\n",
    # the hub refuses its own login cookie at the next request (tornado's max_age_days)
    "cookie_max_age_zero": "c.JupyterHub.cookie_max_age_days = 0\n",
}
HUB_CONFIG_CAUSE = {"hub_default_url_loop": "hub_default_url_loop",
                    "cookie_path_hub_only": "cookie_scope",
                    "cookie_domain_elsewhere": "cookie_scope",
                    "public_url_other_host": "public_url_mismatch",
                    "secure_cookies_on_loopback": "none",
                    "cookie_host_prefix_over_http": "cookie_scope",
                    "cookie_max_age_zero": "session_refused"}


@pytest.mark.parametrize("case", list(HUB_CONFIG_CASES))
def test_equivalence_hub_config_causes(make_hubsvc: Any, browser: Any, case: str) -> None:
    inst = make_hubsvc(start=False, overrides=CALM)
    inst.hub_extra = HUB_CONFIG_CASES[case].replace("{port}", str(inst.public_port))
    inst.write_config()
    inst.start()
    # a user the hub knows (a refused _xsrf cookie can keep the browser's login from
    # ever creating one)
    assert inst.api_call("POST", "users/ivy").status_code in (201, 409)
    c = chromium_login(browser, inst, "ivy")
    v = run_probe(inst, "ivy")
    agree(case, c, v, HUB_CONFIG_CAUSE[case])
    if case == "cookie_host_prefix_over_http":
        assert "cookie_host_prefix_enabled" in v.fix and any(
            "__Host-" in e for e in v.evidence), v.render_text()


def test_equivalence_front_proxy_strips_the_prefix(make_hubsvc: Any, browser: Any) -> None:
    """A second, real CHP in front that drops /jhub: the path grows on every pass."""
    import os
    import subprocess

    from .hubsvc_harness import free_port

    inst = make_hubsvc(start=False, overrides={**CALM})
    inst.overrides = {**CALM, "proxy": {"public_url": f"{inst.public}/jhub/"}}
    inst.write_config()
    inst.start()
    front_port, front_api = free_port(), free_port()
    chp = REPO / "node_modules" / ".bin" / "configurable-http-proxy"
    front = subprocess.Popen(
        [str(chp), "--ip", "127.0.0.1", "--port", str(front_port), "--api-ip", "127.0.0.1",
         "--api-port", str(front_api), "--no-include-prefix", "--log-level", "warn"],
        env=dict(os.environ, CONFIGPROXY_AUTH_TOKEN="front-token"), stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        with httpx.Client(trust_env=False, timeout=5) as cl:
            for _ in range(100):
                try:
                    r = cl.post(f"http://127.0.0.1:{front_api}/api/routes/jhub",
                                json={"target": inst.public},
                                headers={"Authorization": "token front-token"})
                    if r.status_code == 201:
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.1)
        drv = browser
        drv.get(f"{inst.public}/jhub/hub/login")
        WebDriverWait(drv, 30).until(lambda d: d.find_elements(By.NAME, "username"))
        drv.find_element(By.NAME, "username").send_keys("jo")
        drv.find_element(By.NAME, "password").send_keys("x")
        drv.find_element(By.CSS_SELECTOR, "form button[type=submit], form input[type=submit]"
                         ).click()
        c = chromium_outcome(drv, "jo")
        agree("base_url_prefix", c, run_probe(inst, "jo"), "none")
        # a link without the prefix: the hub's default route puts it right
        drv.get(f"{inst.public}/user/jo/lab")
        c = chromium_outcome(drv, "jo")
        agree("link_without_prefix", c, run_probe(
            inst, "jo", start=False, entry_url=f"{inst.public}/user/jo/lab"), "none")
        entry = f"http://127.0.0.1:{front_port}/jhub/user/jo/"
        drv.get(entry)
        c = chromium_outcome(drv, "jo")
        agree("front_proxy_prefix", c, run_probe(inst, "jo", start=False, entry_url=entry),
              "prefix_mismatch")
    finally:
        front.terminate()
        front.wait(10)


def test_zz_equivalence_agreement_figure() -> None:
    """Prints the agreement figure the README quotes (runs last in this module)."""
    if not RESULTS:
        pytest.skip("no equivalence case ran")
    agreed = sum(1 for _case, _cause, c, _d, o in RESULTS if PROBE_CLASS.get(o) == c)
    print(f"\nequivalence: {len(RESULTS)} cases, {agreed} agreed")
    for case, cause, c, detail, o in RESULTS:
        print(f"   {case} | Chromium {c} ({detail}) | probe {o} / {cause}")
    assert agreed == len(RESULTS)
