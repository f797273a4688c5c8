"""The probe's cookie jar keeps and sends cookies by a browser's rules, and keeps every
cookie on the public URL's origin."""

from __future__ import annotations

import pytest

from hubsvc.probe.cookies import CookieJar, parse_set_cookie, path_match

pytestmark = pytest.mark.unit

PUB = "http://127.0.0.1:8000"
NAMED = "http://hub.example.org:8000"


def test_host_only_default_path_and_path_match() -> None:
    jar = CookieJar()
    jar.receive(f"{PUB}/user/a/oauth_callback", ["jupyterhub-user-a=1; Path=/user/a/"])
    jar.receive(f"{PUB}/hub/login", ["x=2"])  # no Path: the directory of the request
    assert jar.for_request(f"{PUB}/user/a/lab").names == ["jupyterhub-user-a"]
    assert jar.for_request(f"{PUB}/user/ab/lab").names == []  # /user/a/ does not cover it
    assert jar.for_request(f"{PUB}/hub/spawn").names == ["x"]
    assert jar.for_request("http://127.0.0.2:8000/hub/spawn").names == []  # host-only
    assert path_match("/user/a", "/user/a") and not path_match("/user/ab", "/user/a")


def test_path_not_covering_is_reported_not_sent() -> None:
    jar = CookieJar()
    jar.receive(f"{PUB}/user/a/oauth_callback", ["jupyterhub-user-a=1; Path=/hub/"])
    sent = jar.for_request(f"{PUB}/user/a/lab")
    assert sent.names == [] and "Path does not cover /user/a/lab" in sent.not_matching[0]


def test_secure_cookie_refused_over_http_except_on_loopback() -> None:
    assert parse_set_cookie("s=1; Secure", f"{NAMED}/hub/login").stored is False
    assert "plain http" in (parse_set_cookie("s=1; Secure", f"{NAMED}/hub/login")
                            .rejected_because or "")
    assert parse_set_cookie("s=1; Secure", f"{PUB}/hub/login").stored  # localhost rule
    assert parse_set_cookie("s=1; Secure", "https://hub.example.org/hub/login").stored
    jar = CookieJar()
    jar.receive("https://hub.example.org/hub/login", ["s=1; Secure; Path=/"])
    assert jar.for_request("http://hub.example.org/hub/").names == []
    assert jar.for_request("https://hub.example.org/hub/").names == ["s"]


def test_domain_rules() -> None:
    bad = parse_set_cookie("d=1; Domain=example.com", f"{NAMED}/hub/login")
    assert not bad.stored and "does not cover" in (bad.rejected_because or "")
    jar = CookieJar()
    jar.receive(f"{NAMED}/hub/login", ["d=1; Domain=.example.org; Path=/"])
    assert jar.for_request("http://other.example.org/").names == ["d"]
    assert not parse_set_cookie("d=1; Domain=127.0.0.1", "http://127.0.0.2/").stored


def test_expiry_deletes_and_prefixes_and_samesite() -> None:
    jar = CookieJar()
    jar.receive(f"{PUB}/hub/", ["a=1; Path=/hub/"])
    jar.receive(f"{PUB}/hub/", ["a=; Path=/hub/; Max-Age=0"])
    assert jar.for_request(f"{PUB}/hub/").names == []
    jar.receive(f"{PUB}/hub/", ["b=1; Path=/hub/; expires=Thu, 01 Jan 1970 00:00:00 GMT"])
    assert jar.for_request(f"{PUB}/hub/").names == []
    assert not parse_set_cookie("__Host-x=1; Secure; Path=/hub/", f"{PUB}/").stored
    assert parse_set_cookie("__Host-x=1; Secure; Path=/", f"{PUB}/").stored
    assert not parse_set_cookie("n=1; SameSite=None", f"{PUB}/").stored
    jar.receive(f"{PUB}/hub/", ["st=1; Path=/; SameSite=Strict", "lx=1; Path=/"])
    assert sorted(jar.for_request(f"{PUB}/hub/").names) == ["lx", "st"]
    assert jar.for_request(f"{PUB}/hub/", cross_site_chain=True).names == ["lx"]


def test_credentials_stay_on_the_public_origin() -> None:
    """Browsers ignore the port; hubsvc does not let a session leave the public origin."""
    jar = CookieJar(credential_origin=PUB)
    jar.receive(f"{PUB}/hub/login", ["jupyterhub-hub-login=secret; Path=/hub/"])
    assert jar.for_request(f"{PUB}/hub/home").names == ["jupyterhub-hub-login"]
    other = jar.for_request("http://127.0.0.1:9999/hub/home")
    assert other.names == [] and other.header == ""
    assert other.withheld == ["jupyterhub-hub-login"]


def test_loop_fingerprint_ignores_values_not_names() -> None:
    jar = CookieJar()
    jar.receive(f"{PUB}/user/a/oauth_callback", ["jupyterhub-user-a=1; Path=/hub/"])
    s1 = jar.state()
    jar.receive(f"{PUB}/user/a/oauth_callback", ["jupyterhub-user-a=2; Path=/hub/"])
    assert jar.state() == s1
    jar.receive(f"{PUB}/user/a/", ["jupyterhub-user-a-oauth-state=x; Path=/user/a/"])
    assert jar.state() != s1
