"""A real browser (Debian's Chromium, headless, via Selenium and chromedriver) opens the
plain-http port, is redirected to https, logs in and reaches JupyterLab over https; the
certificate comes from a throwaway CA and is pinned in the browser by its key (no blanket
"ignore certificate errors")."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterator
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

from tests.tlsca import CA

from . import chromium
from .hubsvc_harness import REPO, Instance, free_port, new_root

pytestmark = pytest.mark.integration

CHROMIUM, CHROMEDRIVER = chromium.CHROMIUM, chromium.CHROMEDRIVER

webdriver = pytest.importorskip("selenium.webdriver")
if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
    pytest.skip("needs Debian's chromium and chromium-driver", allow_module_level=True)

from selenium.common.exceptions import TimeoutException  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402


class TlsInstance(Instance):
    @property
    def public(self) -> str:
        return f"https://localhost:{self.public_port}"


@pytest.fixture
def tls_hub() -> Iterator[tuple[TlsInstance, str, int]]:
    root = new_root("hubsvc-tls-browser-")
    ca = CA()
    srv = ca.server("localhost")
    cert, key = ca.write(root / "pki", srv)
    spki = srv.cert.public_key().public_bytes(serialization.Encoding.DER,
                                              serialization.PublicFormat.SubjectPublicKeyInfo)
    pin = base64.b64encode(hashlib.sha256(spki).digest()).decode()
    http_port = free_port()
    inst = TlsInstance(root, overrides={
        "proxy": {"public_url": f"https://localhost:{0}"},  # replaced below
        "tls": {"mode": "files", "cert_file": str(cert), "key_file": str(key),
                "http_port": http_port}})
    inst.overrides["proxy"]["public_url"] = inst.public
    inst.write_config()
    try:
        inst.start(timeout=120)
        yield inst, pin, http_port
    finally:
        inst.cleanup()


@pytest.fixture
def browser_pinned(request: pytest.FixtureRequest, tls_hub: tuple[TlsInstance, str, int]
                   ) -> Iterator[Any]:
    _inst, pin, _port = tls_hub
    # trust exactly this certificate's key, as a browser trusts a CA it knows
    drv = chromium.start(f"--ignore-certificate-errors-spki-list={pin}")
    try:
        yield drv
    finally:
        rep = getattr(request.node, "rep_call", None)
        if rep is not None and rep.failed:
            out = REPO / "test-output" / request.node.name
            out.mkdir(parents=True, exist_ok=True)
            try:
                drv.save_screenshot(str(out / "at-failure.png"))
                (out / "at-failure.url.txt").write_text(drv.current_url + "\n")
            except Exception:  # the browser may be gone
                pass
        chromium.stop(drv)


def test_browser_redirected_to_https_logs_in_and_reaches_lab(
        tls_hub: tuple[TlsInstance, str, int], browser_pinned: Any) -> None:
    inst, _pin, http_port = tls_hub
    drv, user = browser_pinned, "tina"
    drv.get(f"http://localhost:{http_port}/hub/login")
    WebDriverWait(drv, 30).until(lambda d: d.find_elements(By.NAME, "username"))
    assert drv.current_url == f"{inst.public}/hub/login", drv.current_url
    assert "Your connection is not private" not in drv.page_source
    drv.find_element(By.NAME, "username").send_keys(user)
    drv.find_element(By.NAME, "password").send_keys("any password (dummy authenticator)")
    drv.find_element(By.CSS_SELECTOR, "form button[type=submit], form input[type=submit]").click()
    try:
        WebDriverWait(drv, 90, poll_frequency=0.2).until(
            lambda d: f"/user/{user}/lab" in d.current_url
            and d.find_elements(By.CSS_SELECTOR, ".jp-LabShell"))
    except TimeoutException:
        raise AssertionError(f"no JupyterLab at {drv.current_url}\n{inst.log_text()[-3000:]}"
                             ) from None
    assert drv.current_url.startswith(f"{inst.public}/user/{user}/lab")
    # the hub saw https (CHP's X-Forwarded-Proto): its login cookie (path /hub/) is Secure
    drv.get(f"{inst.public}/hub/home")
    WebDriverWait(drv, 30).until(lambda d: "/hub/home" in d.current_url)
    cookies = {c["name"]: c for c in drv.get_cookies()}
    assert cookies["jupyterhub-hub-login"]["secure"] is True, cookies
