"""Pure pieces of issue 4: URL normalisation, diagnosis, drift comparison, log episodes."""

from __future__ import annotations

import pytest

from hubsvc import routetable
from hubsvc.loopwatch import LoopWatch
from hubsvc.probe import Facts, Hop, Verdict, Walk, classify_spawn_failure, diagnose
from hubsvc.probe.urls import normalize_url

pytestmark = pytest.mark.unit

PUB = "http://127.0.0.1:8000"
HUB = "http://127.0.0.1:8081"


def table(payload):
    """CHP 5.3.0's flat payload (each route's data at its top level), as hubsvc reads it."""
    return routetable.parse({spec: {"jupyterhub": True, **d} for spec, d in payload.items()})


def facts(**kw):
    f = Facts(user="alice", public_origin=PUB, public_base="/", hub_origin=HUB,
              hub_version="6.1.1", server_path="/user/alice/", server_ready=True)
    for k, v in kw.items():
        setattr(f, k, v)
    return f


def loop_walk(origin=PUB):
    hops = [
        Hop("GET", f"{origin}/user/alice/", 302, f"{origin}/hub/user/alice/", served_by="hub"),
        Hop("GET", f"{origin}/hub/user/alice/", 302, f"{origin}/user/alice/?redirects=1",
            served_by="hub"),
    ]
    return Walk(hops, "loop", repeat_of=0, repeat_url=f"{origin}/user/alice/?redirects=1")


def test_normalize_ignores_counter_and_volatile_params():
    a = normalize_url("http://127.0.0.1:8000/user/alice/?redirects=1")
    b = normalize_url("http://127.0.0.1:8000/user/alice/?redirects=3")
    assert a == b == normalize_url("http://127.0.0.1:8000/user/alice/")
    assert normalize_url("http://H:80/x?state=1&code=2&next=%2Fa") == normalize_url(
        "http://h/x?code=9&next=%2Fa&state=7")
    assert normalize_url("http://h/x?next=/a") != normalize_url("http://h/x?next=/b")


def test_collapse_folds_growing_paths_only():
    from hubsvc.probe.urls import collapse_url

    assert collapse_url("http://h/jhub/hub/hub/hub/user/x/") == collapse_url(
        "http://h/jhub/hub/user/x/")
    assert collapse_url("http://h/user/x/lab") != collapse_url("http://h/user/x/")


def test_missing_route_is_named_and_repairable():
    d = diagnose(loop_walk(), facts(routes=table({"/": {"target": HUB, "hub": True}}),
                                    hub_target=HUB))
    assert d.cause == "missing_route" and d.repairable
    assert any("no route for /user/alice/" in e for e in d.evidence)


def test_route_pointing_at_hub_is_wrong_target():
    routes = table({"/": {"target": HUB, "hub": True},
                    "/user/alice": {"target": HUB, "user": "alice"}})
    d = diagnose(loop_walk(), facts(routes=routes, hub_target=HUB))
    assert d.cause == "wrong_target" and d.repairable


def test_private_address_wins():
    d = diagnose(loop_walk(HUB), facts(routes=table({})))
    assert d.cause == "private_address"
    assert f"{PUB}/user/alice/" in d.fix


def test_version_skew_when_route_is_fine():
    routes = table({"/": {"target": HUB, "hub": True},
                    "/user/alice": {"target": "http://127.0.0.1:5555", "user": "alice"}})
    d = diagnose(loop_walk(), facts(routes=routes, hub_target=HUB, server_version="5.5.4",
                                    target_answers=True))
    assert d.cause == "version_skew" and "jupyterhub==6.1.1" in d.fix


def test_self_redirect():
    u = f"{PUB}/user/alice/"
    w = Walk([Hop("GET", u, 302, u, served_by="server")], "loop", repeat_of=0, repeat_url=u)
    assert diagnose(w, facts()).cause == "self_redirect"


def test_prefix_mismatch():
    w = Walk([Hop("GET", f"{PUB}/jhub/user/alice/", 302, f"{PUB}/user/alice/lab",
                  served_by="server"),
              Hop("GET", f"{PUB}/user/alice/lab", 404, None, served_by="unknown")], "ok")
    d = diagnose(w, facts(public_base="/jhub/", server_path="/jhub/user/alice/"))
    assert d.cause == "prefix_mismatch"


def test_unknown_shape_keeps_chain():
    w = Walk([Hop("GET", f"{PUB}/a", 302, f"{PUB}/b"), Hop("GET", f"{PUB}/b", 302, f"{PUB}/a")],
             "loop", repeat_of=0, repeat_url=f"{PUB}/a")
    d = diagnose(w, facts(server_ready=False))
    assert d.cause == "unknown" and "/a" in d.evidence[-1]


def test_spawn_failure_classes():
    assert classify_spawn_failure(
        "Spawn failed: Server at http://127.0.0.1:1/user/a/api didn't respond in 30 seconds"
    )[0] == "server_unresponsive"
    assert classify_spawn_failure("Failed to connect to my Hub at x")[0] == "hub_unreachable"
    # the hub's start_timeout: a TimeoutError, whose message is empty
    assert classify_spawn_failure("Spawn failed: ")[0] == "spawn_timeout"
    assert classify_spawn_failure("Spawn failed: boom")[0] == "unknown"


def test_exit_codes_and_json():
    for outcome, code in [("healthy", 0), ("repaired", 0), ("loop", 1),
                          ("too_many_redirects", 1), ("spawn_failed", 2), ("spawn_timeout", 2)]:
        v = Verdict("alice", outcome, "none", "x")
        assert v.exit_code == code
        assert f'"exit_code": {code}' in v.to_json()
        assert v.render_text()


# Lines as JupyterHub 6.1.1 prints them (captured from a real run).
HOP = ("[W 2026-11-26 05:35:20.075 JupyterHub base:2018] Redirect loop detected on "
       "/hub/user/alice/?redirects={n}")
END = ("[W 2026-11-26 05:35:22.087 JupyterHub web:2106] 500 GET /hub/user/alice/?redirects=2 "
       "(127.0.0.1): Redirect loop detected. Notebook has jupyterhub version 5.5.4, but the Hub "
       "expects 6.1.1. Try installing jupyterhub==6.1.1 in the user environment if you "
       "continue to have problems.")


class Clock:
    t = 100.0

    def __call__(self):
        return self.t


def test_loopwatch_one_episode_per_user_not_a_flood():
    c = Clock()
    lw = LoopWatch(quiet_s=30, clock=c)
    out = [lw.feed(HOP.format(n=n)) for n in (1, 2, 3)]
    assert out == [None, None, None] and lw.snapshot()[0]["count"] == 3
    ep = lw.feed("[W 2026-11-26 05:35:22.087 JupyterHub web:2106] 500 GET "
                 "/hub/user/alice/?redirects=4 (127.0.0.1): Redirect loop detected.")
    assert ep is not None and ep.user == "alice" and ep.count == 4 and ep.lines == 4
    assert ep.cause == "missing_route" and ep.ended_by == "hub_500"
    assert lw.snapshot() == [] and lw.feed("[I ...] 200 GET /hub/health") is None


def test_loopwatch_skew_and_private_and_quiet():
    c = Clock()
    lw = LoopWatch(quiet_s=30, clock=c)
    lw.feed(HOP.format(n=1))
    ep = lw.feed(END)
    assert ep.cause == "version_skew" and "jupyterhub==6.1.1" in ep.detail
    lw.feed("                Detected possible direct connection to Hub's private ip: "
            "http://127.0.0.1:8081/hub/user/bob/?redirects=1, bypassing proxy.")
    lw.feed(HOP.format(n=1).replace("alice", "bob"))
    assert lw.expire() == []
    c.t += 31
    (ep,) = lw.expire()
    assert ep.user == "bob" and ep.cause == "private_address" and ep.ended_by == "quiet"
    assert ep.event()["event"] == "redirect_loop"


def test_dead_route_target_503_is_wrong_target():
    routes = table({"/": {"target": HUB, "hub": True},
                    "/user/alice": {"target": "http://127.0.0.1:1", "user": "alice"}})
    w = Walk([Hop("GET", f"{PUB}/user/alice/", 503, None, served_by="server")], "ok")
    d = diagnose(w, facts(routes=routes, hub_target=HUB, target_answers=False,
                          server_url="http://127.0.0.1:5555/user/alice/"))
    assert d.cause == "wrong_target" and d.repairable
    assert any("listens at http://127.0.0.1:5555" in e for e in d.evidence)


def test_route_to_another_users_server_is_wrong_target():
    routes = table({"/": {"target": HUB, "hub": True},
                    "/user/alice": {"target": "http://127.0.0.1:6666", "user": "alice"}})
    w = Walk([Hop("GET", f"{PUB}/user/alice/lab", 404, None, served_by="server")], "ok")
    d = diagnose(w, facts(routes=routes, hub_target=HUB, target_answers=False,
                          server_url="http://127.0.0.1:5555/user/alice/"))
    assert d.cause == "wrong_target" and "not alice's server" in d.summary
    assert any("127.0.0.1:5555" in e for e in d.evidence)


def test_server_page_missing_names_the_default_url_hop():
    routes = table({"/": {"target": HUB, "hub": True},
                    "/user/alice": {"target": "http://127.0.0.1:5555", "user": "alice"}})
    w = Walk([Hop("GET", f"{PUB}/user/alice/", 302, f"{PUB}/user/alice/tree",
                  served_by="server"),
              Hop("GET", f"{PUB}/user/alice/tree", 404, None, served_by="server")], "ok")
    d = diagnose(w, facts(routes=routes, hub_target=HUB, target_answers=True,
                          server_url="http://127.0.0.1:5555/user/alice/"))
    assert d.cause == "server_page_missing" and "/user/alice/tree" in d.summary
    assert any("default_url" in e for e in d.evidence) and "/lab" in d.fix
