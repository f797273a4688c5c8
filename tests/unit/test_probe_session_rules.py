"""The login session hubsvc makes, the token's scope, and the config-visible rules that
doctor and probe-spawn share."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from tornado.web import decode_signed_value

from hubsvc import config
from hubsvc.probe import Facts, FlowSettings, ProbeUsageError, config_diagnoses, diagnose, rules, session
from hubsvc.probe.model import Hop, Walk
from hubsvc.probe.spawn import token_scopes

pytestmark = pytest.mark.unit

PUB = "http://127.0.0.1:8000"


def cfg_in(tmp: Path) -> config.Config:
    state = tmp / "state"
    state.mkdir()
    (state / "jupyterhub_cookie_secret").write_text("ab" * 32 + "\n")
    con = sqlite3.connect(state / "jupyterhub.sqlite")
    con.execute("create table users (id integer, name text, cookie_id text)")
    con.execute("insert into users values (1, 'ann', 'c00k1e')")
    con.commit()
    con.close()
    return config.parse({"paths": {"state_dir": str(state), "runtime_dir": str(tmp / "run")},
                         "proxy": {"public_url": "http://127.0.0.1:8000/jhub/"}})


def test_login_cookie_is_the_hubs_signed_cookie_id(tmp_path: Path) -> None:
    cfg = cfg_in(tmp_path)
    c = session.login_cookie(cfg, "ann")
    secret = bytes.fromhex("ab" * 32)
    assert decode_signed_value(secret, "jupyterhub-hub-login", c.value) == b"c00k1e"
    assert (c.name, c.path, c.domain, c.host_only) == (
        "jupyterhub-hub-login", "/jhub/hub/", "127.0.0.1", True)
    with pytest.raises(ProbeUsageError, match="no user 'bob'"):
        session.login_cookie(cfg, "bob")
    # c.JupyterHub.cookie_host_prefix_enabled: another name (signed with it), Path=/, Secure
    h = session.login_cookie(cfg, "ann", host_prefix=True)
    assert decode_signed_value(secret, "__Host-jupyterhub-hub-login", h.value) == b"c00k1e"
    assert decode_signed_value(secret, "jupyterhub-hub-login", h.value) is None
    assert (h.name, h.path, h.secure) == ("__Host-jupyterhub-hub-login", "/", True)


def test_token_scope_is_one_server() -> None:
    assert token_scopes("ann") == ["access:servers!server=ann/"]


def facts(**settings: object) -> Facts:
    return Facts(user="ann", public_origin=PUB, public_base="/", hub_origin=
                 "http://127.0.0.1:8081", server_path="/user/ann/", public_url=PUB + "/",
                 settings=FlowSettings(**settings, source="/etc/jupyterhub_config.py"))


@pytest.mark.parametrize("kw,cause", [
    ({"default_url": "/hub/"}, "hub_default_url_loop"),
    ({"default_url": "/"}, "hub_default_url_loop"),
    ({"default_url": "/hub/login"}, "hub_default_url_loop"),
    ({"cookie_options": {"path": "/hub/"}}, "cookie_scope"),
    ({"cookie_options": {"domain": "example.org"}}, "cookie_scope"),
    ({"public_url": "http://localhost:8000/"}, "public_url_mismatch"),
    ({"public_url": "http://127.0.0.1:8000/jhub/"}, "public_url_mismatch"),
    ({"cookie_host_prefix": True}, "cookie_scope"),
    ({"cookie_max_age_days": 0.0}, "session_refused"),
    ({"cookie_max_age_days": 0.0001}, "session_refused"),
])
def test_config_rules_name_the_cause(kw: dict[str, object], cause: str) -> None:
    ds = config_diagnoses(facts(**kw))
    assert [d.cause for d in ds] == [cause]
    assert ds[0].fix and "/etc/jupyterhub_config.py" in " ".join(ds[0].evidence)


@pytest.mark.parametrize("kw", [
    {}, {"default_url": "/hub/home"}, {"default_url": "/user/ann/lab"},
    {"cookie_options": {"expires_days": 1}}, {"cookie_options": {"path": "/"}},
    {"cookie_options": {"secure": True}},  # loopback: browsers accept Secure over http
    {"public_url": PUB + "/"}, {"public_url": PUB},
    {"cookie_max_age_days": 14.0}, {"cookie_max_age_days": 0.5},
])
def test_config_rules_quiet_on_sound_settings(kw: dict[str, object]) -> None:
    assert config_diagnoses(facts(**kw)) == []


def test_secure_cookies_over_http_on_a_real_host_name() -> None:
    f = facts(cookie_options={"secure": True})
    f.public_origin = "http://hub.example.org:80"
    assert [d.cause for d in config_diagnoses(f)] == ["cookie_scope"]


def test_walk_and_config_give_the_same_words() -> None:
    f = facts(default_url="/hub/")
    cyc = Hop("GET", f"{PUB}/hub/", 302, f"{PUB}/hub/", served_by="hub", step="hub-root")
    w = Walk([Hop("GET", f"{PUB}/hub/login", 302, f"{PUB}/hub/", served_by="hub"), cyc],
             "loop", repeat_of=1, repeat_url=f"{PUB}/hub/")
    walked, conf = diagnose(w, f), config_diagnoses(f)[0]
    assert walked.cause == conf.cause == "hub_default_url_loop"
    assert (walked.summary, walked.fix) == (conf.summary, conf.fix)
    assert rules.hub_default_url_loop(w, facts()) is not None  # seen without the config too


def test_oauth_cookie_loop_is_cookie_scope_with_the_hop() -> None:
    f = facts()
    lab = Hop("GET", f"{PUB}/user/ann/lab", 302, f"{PUB}/hub/api/oauth2/authorize?state=1",
              served_by="server", step="server",
              cookies_not_sent=["jupyterhub-user-ann (Path=/hub/): Path does not cover "
                                "/user/ann/lab"])
    auth = Hop("GET", f"{PUB}/hub/api/oauth2/authorize?state=1", 302,
               f"{PUB}/user/ann/oauth_callback?code=1", served_by="hub", step="oauth-authorize")
    cb = Hop("GET", f"{PUB}/user/ann/oauth_callback?code=1", 302, f"{PUB}/user/ann/lab",
             served_by="server", step="oauth-callback", cookies_set=["jupyterhub-user-ann"])
    w = Walk([lab, auth, cb], "loop", repeat_of=0, repeat_url=f"{PUB}/user/ann/lab")
    d = diagnose(w, f)
    assert d.cause == "cookie_scope"
    assert any("hop 0 (/user/ann/lab): not sent: jupyterhub-user-ann" in e for e in d.evidence)
