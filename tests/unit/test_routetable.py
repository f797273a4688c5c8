"""CHP's table as CHP 5.3.0 really sends it (payloads recorded from the real programs by
tests/unit/data/record_chp_routes.py), and the drift watch's logic on top of it."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from hubsvc import routetable, routewatch
from hubsvc.config import Config
from hubsvc.routetable import TableUnavailable, normalise_spec, user_routespec
from hubsvc.routewatch import Drift, DriftWatch, Server, compare

pytestmark = pytest.mark.unit

DATA = Path(__file__).parent / "data"


def recorded(name: str) -> dict[str, Any]:
    return json.loads((DATA / f"chp-5.3.0-{name}.json").read_text())


def test_table_at_root_as_chp_sends_it() -> None:
    t = routetable.parse(recorded("routes-root"))
    hub = t.hub_route()
    assert hub is not None and hub.spec == "/" and hub.jupyterhub
    users = t.user_routes()
    assert sorted(users) == ["/user/alice", "/user/alice/nb", "/user/bob"]
    assert users["/user/alice"].server_name == "" and users["/user/alice/nb"].server_name == "nb"
    svc = t.get("/services/announce/")
    assert svc is not None and svc.service == "announce" and not svc.is_user_route
    assert t.get("/user/bob/") is t.get("/user/bob")
    assert "/user/bob/" in t and "/user/carol" not in t
    assert all(r.last_activity for r in t)


def test_hub_route_under_a_base_path_is_not_chps_default_route() -> None:
    t = routetable.parse(recorded("routes-base"))
    hub = t.hub_route()
    assert hub is not None and hub.spec == "/base"
    default = t.get("/")
    assert default is not None and not default.jupyterhub and not default.hub
    assert sorted(t.user_routes()) == ["/base/user/alice", "/base/user/alice/nb", "/base/user/bob"]
    assert user_routespec("/base/", "alice", "nb") == "/base/user/alice/nb"
    assert user_routespec("/", "a b@x") == "/user/a%20b@x"


def test_default_only_table_has_no_hub_route() -> None:
    t = routetable.parse(recorded("routes-default-only"))
    assert t.hub_route() is None and len(t) == 1 and t.user_routes() == {}


def test_what_chp_never_sends_is_refused_or_left_out() -> None:
    with pytest.raises(TableUnavailable):
        routetable.parse(["/"])
    with pytest.raises(TableUnavailable):
        routetable.parse_bytes(b"<html>")
    t = routetable.parse({"/a": "x", "/b": {"no": "target"}, "/c": {"target": "http://t"}})
    assert list(t.routes) == ["/c"]
    # JupyterHub's own reformatted shape ({"data": {...}}) is not CHP's: no hub, no user
    nested = routetable.parse({"/": {"target": "http://h", "data": {"hub": True}}})
    assert nested.hub_route() is None


def test_compare_against_the_real_payload() -> None:
    payload = recorded("routes-base")
    alice = payload["/base/user/alice"]["target"]
    bob = payload["/base/user/bob"]["target"]
    hub = payload["/base"]["target"]
    servers = [Server("alice", "", "/base/user/alice/"), Server("bob", "", "/base/user/bob/"),
               Server("alice", "nb", "/base/user/alice/nb/")]
    assert compare(servers, payload) == []
    # alice's route rewritten to bob's server, as the hub would write bob's
    payload["/base/user/alice"] = {**payload["/base/user/bob"]}
    # bob's route pointing at the hub; alice's named server gone
    payload["/base/user/bob"]["target"] = hub
    del payload["/base/user/alice/nb"]
    got = {(d.user, d.server_name): d for d in compare(servers, routetable.parse(payload))}
    assert got[("alice", "")].kind == "wrong_user" and "route of user bob" in got[("alice", "")].found
    assert got[("alice", "")].found.startswith(bob)
    assert got[("bob", "")].kind == "points_to_hub" and got[("bob", "")].found == hub
    assert got[("alice", "nb")].kind == "missing" and got[("alice", "nb")].found is None
    assert isinstance(got[("bob", "")], Drift) and got[("bob", "")].event()["event"] == "route_drift"
    # a route someone else wrote (no hub data) at alice's path
    payload = recorded("routes-base")
    payload["/base/user/alice"] = {"target": bob, "last_activity": "x"}
    (d,) = compare(servers, payload)
    assert d.kind == "wrong_user" and "did not add" in (d.found or "") and alice != bob


# ---- the drift watch's logic, with CHP and the hub answering from memory ------------------
class Programs:
    """CHP's API and the hub's REST API as in-memory state, counting requests to each."""

    def __init__(self) -> None:
        self.table: dict[str, Any] = recorded("routes-base")
        self.ready: dict[str, set[str]] = {"alice": {"", "nb"}, "bob": {""}}
        self.hub_requests: list[str] = []

    def model(self, user: str) -> dict[str, Any]:
        return {"name": user, "servers": {
            n: {"ready": True, "pending": None,
                "url": "/base/user/" + user + (f"/{n}/" if n else "/")}
            for n in sorted(self.ready.get(user, ()))}}

    def handle(self, req: httpx.Request) -> httpx.Response:
        path = req.url.path
        if path == "/api/routes":
            return httpx.Response(200, content=json.dumps(self.table).encode())
        if path == "/base/hub/api/users" and req.url.params.get("limit") == "1":
            self.hub_requests.append("COUNT")
            total = sum(1 for u in self.ready if self.ready[u])
            return httpx.Response(200, json={"items": [], "_pagination": {"total": total}})
        self.hub_requests.append(f"{req.method} {path}")
        if path == "/base/hub/api/users":
            items = [self.model(u) for u in sorted(self.ready) if self.ready[u]]
            return httpx.Response(200, json={"items": items, "_pagination": {"next": None}})
        if path.startswith("/base/hub/api/users/"):
            user = path.rsplit("/", 1)[1]
            return httpx.Response(200, json=self.model(user)) if user in self.ready \
                else httpx.Response(404)
        if path == "/base/hub/api/proxy" and req.method == "POST":
            self.table = recorded("routes-base")
            return httpx.Response(200)
        return httpx.Response(404)


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Programs, DriftWatch, httpx.AsyncClient, Clock]:
    (tmp_path / "proxy_auth_token").write_text("t" * 64 + "\n")  # hubsvc refuses short tokens
    hub_port = 8081
    cfg = Config.model_validate({
        "paths": {"state_dir": str(tmp_path), "runtime_dir": str(tmp_path / "run")},
        "proxy": {"public_url": "http://127.0.0.1:8000/base/", "api_url": "http://127.0.0.1:8001"},
        "hub": {"bind_url": f"http://127.0.0.1:{hub_port}"},
    })
    progs = Programs()
    clock = Clock()
    # a full listing every 5 min, as on a large hub: the hub's counts come in between
    watch = DriftWatch(cfg, full_listing_s=300.0, clock=clock)
    client = httpx.AsyncClient(transport=httpx.MockTransport(progs.handle))
    return progs, watch, client, clock


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_idle_checks_ask_chp_and_now_and_then_the_hubs_count(setup: Any) -> None:
    progs, watch, client, clock = setup
    assert run(watch.check(client, "t")) == []
    assert progs.hub_requests == ["GET /base/hub/api/users"]  # first check: one listing
    for _ in range(100):  # 200 s of 2 s intervals: nothing changed
        clock.t += 2
        assert run(watch.check(client, "t")) == []
    # one count (one row) a minute, nothing else
    assert progs.hub_requests == ["GET /base/hub/api/users"] + ["COUNT"] * 3
    clock.t += 100  # a full listing is due
    run(watch.check(client, "t"))
    assert progs.hub_requests == ["GET /base/hub/api/users"] + ["COUNT"] * 3 + [
        "GET /base/hub/api/users"]


def test_activity_alone_asks_nothing_of_the_hub(setup: Any) -> None:
    """CHP stamps last_activity on every request through a route (hubsvc's own probe of
    the public port included): a table that differs only there is no change."""
    progs, watch, client, clock = setup
    run(watch.check(client, "t"))
    for i in range(4):  # 4 intervals, each with new activity on every route
        clock.t += 2
        for spec, r in progs.table.items():
            progs.table[spec] = {**r, "last_activity": f"2026-11-30T20:00:0{i}.000Z"}
        assert run(watch.check(client, "t")) == []
    assert progs.hub_requests == ["GET /base/hub/api/users"]
    clock.t += 2
    del progs.table[next(s for s in progs.table if s.startswith("/base/user/bob"))]
    assert [d.user for d in run(watch.check(client, "t"))] == ["bob"]  # a route change still is


def test_vanished_route_is_drift_after_one_question_about_that_user(setup: Any) -> None:
    progs, watch, client, clock = setup
    run(watch.check(client, "t"))
    progs.hub_requests.clear()
    del progs.table["/base/user/bob"]
    clock.t += 2
    res = run(watch.check_and_repair(client, "t"))
    assert [(d.kind, d.user) for d in res.drifts] == [("missing", "bob")]
    assert res.repaired is True
    assert progs.hub_requests == ["COUNT", "GET /base/hub/api/users/bob",
                                  "POST /base/hub/api/proxy"]


def test_a_server_the_hub_stopped_is_forgotten_not_repaired(setup: Any) -> None:
    progs, watch, client, clock = setup
    run(watch.check(client, "t"))
    progs.hub_requests.clear()
    progs.ready["alice"].discard("nb")
    del progs.table["/base/user/alice/nb"]
    clock.t += 2
    assert run(watch.check_and_repair(client, "t")).drifts == []
    assert progs.hub_requests == ["COUNT", "GET /base/hub/api/users/alice"]
    clock.t += 2
    assert run(watch.check(client, "t")) == []
    assert progs.hub_requests == ["COUNT", "GET /base/hub/api/users/alice"]


def test_new_route_from_the_hub_is_learned_from_chp_alone(setup: Any) -> None:
    progs, watch, client, clock = setup
    run(watch.check(client, "t"))
    progs.hub_requests.clear()
    progs.ready["carol"] = {""}
    progs.table["/base/user/carol"] = {**progs.table["/base/user/bob"], "user": "carol"}
    clock.t += 2
    assert run(watch.check(client, "t")) == []
    assert normalise_spec("/base/user/carol/") in watch.known
    assert progs.hub_requests == ["COUNT"]  # the hub's count agrees: nothing else asked
    # rewritten to bob's data: wrong_user, confirmed with one question about carol
    progs.table["/base/user/carol"] = {**progs.table["/base/user/bob"]}
    clock.t += 2
    (d,) = run(watch.check(client, "t"))
    assert d.kind == "wrong_user" and d.user == "carol"
    assert progs.hub_requests == ["COUNT", "COUNT", "GET /base/hub/api/users/carol"]


def test_many_vanished_routes_cost_one_listing(setup: Any) -> None:
    progs, watch, client, clock = setup
    for i in range(20):
        progs.ready[f"u{i}"] = {""}
        progs.table[f"/base/user/u{i}"] = {**progs.table["/base/user/bob"], "user": f"u{i}"}
    run(watch.check(client, "t"))
    progs.hub_requests.clear()
    for i in range(20):
        del progs.table[f"/base/user/u{i}"]
    clock.t += 2
    got = run(watch.check(client, "t"))
    assert len(got) == 20 and {d.kind for d in got} == {"missing"}
    assert progs.hub_requests == ["COUNT", "GET /base/hub/api/users"]


def test_hub_route_gone_is_drift_without_asking_the_hub(setup: Any) -> None:
    progs, watch, client, clock = setup
    run(watch.check(client, "t"))
    progs.hub_requests.clear()
    del progs.table["/base"]
    clock.t += 2
    res = run(watch.check_and_repair(client, "t"))
    assert [(d.kind, d.user, d.routespec) for d in res.drifts] == [("missing", "", "/base")]
    assert res.repaired is True and progs.hub_requests == ["COUNT", "POST /base/hub/api/proxy"]


def test_module_level_calls_keep_what_they_learned(setup: Any) -> None:
    progs, watch, client, _clock = setup
    routewatch._watches.clear()
    for _ in range(3):
        assert run(routewatch.check_and_repair(client, watch.cfg, "t")).drifts == []
    assert progs.hub_requests == ["GET /base/hub/api/users"]
    routewatch._watches.clear()


def test_a_slow_listing_is_repeated_less_often(setup: Any) -> None:
    progs, watch, _client, clock = setup
    handle = progs.handle

    def slow(req: httpx.Request) -> httpx.Response:
        if req.url.path == "/base/hub/api/users":
            time.sleep(0.1)  # a large hub: the listing takes 0.1 s
        return handle(req)

    client = httpx.AsyncClient(transport=httpx.MockTransport(slow))
    watch.full_listing_s = 60.0  # the default
    run(watch.check(client, "t"))
    clock.t += 90  # past FULL_LISTING_S, not past 3000 x 0.1 s
    run(watch.check(client, "t"))
    assert progs.hub_requests == ["GET /base/hub/api/users", "COUNT"]
    # past 3000 x the listing's time: 0.1 s and the client's own (a loaded machine adds
    # to it: 400 s covers up to 0.13 s)
    clock.t += 310
    run(watch.check(client, "t"))
    assert progs.hub_requests == ["GET /base/hub/api/users", "COUNT", "GET /base/hub/api/users"]


def test_a_hub_too_busy_to_list_is_not_asked_again_at_once(setup: Any) -> None:
    progs, watch, client, clock = setup
    handle = progs.handle

    def busy(req: httpx.Request) -> httpx.Response:
        if req.url.path == "/base/hub/api/users" and req.url.params.get("limit") != "1":
            progs.hub_requests.append("timed out")
            raise httpx.ReadTimeout("busy", request=req)
        return handle(req)

    client = httpx.AsyncClient(transport=httpx.MockTransport(busy))
    with pytest.raises(httpx.ReadTimeout):
        run(watch.check(client, "t"))
    for _ in range(5):
        clock.t += 2
        run(watch.check(client, "t"))  # learns from CHP's table meanwhile
    assert progs.hub_requests == ["timed out", "COUNT"]
    assert "/base/user/bob" in watch.known


def test_a_route_that_came_and_went_unseen_is_found_by_the_hubs_count(setup: Any) -> None:
    progs, watch, client, clock = setup
    run(watch.check(client, "t"))
    progs.hub_requests.clear()
    # carol's server started and its route was deleted before the next check; only the
    # users' activity changed CHP's table: the next periodic count finds it
    progs.ready["carol"] = {""}
    found = []
    for i in range(31):  # a minute of intervals
        progs.table["/base"]["last_activity"] = f"2026-12-01T00:00:{i:02d}.000Z"
        clock.t += 2
        found = run(watch.check(client, "t"))
        if found:
            break
    (d,) = found
    assert (d.kind, d.user, d.routespec) == ("missing", "carol", "/base/user/carol")
    assert progs.hub_requests == ["COUNT", "GET /base/hub/api/users"]


ADDING = ("[I 2026-11-30 23:40:35.871 JupyterHub proxy:336] Adding user {user} to proxy "
          "{spec} => http://127.0.0.1:9/")


def test_a_route_the_hubs_log_announced_that_came_and_went_is_found_at_the_next_check(
        setup: Any) -> None:
    """The hub's log says it added carol's route; it was deleted before the next check:
    that check finds it missing and asks the hub about carol only (not a minute later)."""
    progs, watch, client, clock = setup
    run(watch.check(client, "t"))
    progs.hub_requests.clear()
    progs.ready["carol"] = {""}
    assert watch.hint(ADDING.format(user="carol", spec="/base/user/carol/"))
    clock.t += 2
    (d,) = run(watch.check(client, "t"))
    assert (d.kind, d.user, d.routespec) == ("missing", "carol", "/base/user/carol")
    assert progs.hub_requests == ["GET /base/hub/api/users/carol"]


def test_an_announced_route_waits_for_a_server_not_ready_yet_and_then_expires(setup: Any) -> None:
    progs, watch, client, clock = setup
    run(watch.check(client, "t"))
    progs.hub_requests.clear()
    # named server "nb 2" of dan: announced while the hub still marks it pending
    assert watch.hint(ADDING.format(user="dan", spec="/base/user/dan/nb%202/"))
    found = []
    for _ in range(4):
        clock.t += 2
        found += run(watch.check(client, "t"))
    assert found == []  # not ready: no drift, no repair
    asked = list(progs.hub_requests)
    assert asked and set(asked) == {"GET /base/hub/api/users/dan"} and len(asked) <= 3
    # then CHP shows nothing new and the hub is asked nothing more about dan
    progs.hub_requests.clear()
    for _ in range(3):
        clock.t += 2
        run(watch.check(client, "t"))
    assert progs.hub_requests == []


def test_many_announcements_at_once_cost_a_few_questions_per_check(setup: Any) -> None:
    """A spawn storm: ten routes announced, none in CHP yet at the next check. Each check
    asks about a few of those users, never a listing of every user."""
    progs, watch, client, clock = setup
    run(watch.check(client, "t"))
    progs.hub_requests.clear()
    for i in range(10):
        progs.ready[f"s{i}"] = {""}
        watch.hint(ADDING.format(user=f"s{i}", spec=f"/base/user/s{i}/"))
    clock.t += 0.5  # too soon: the hub writes the route just after it logs
    run(watch.check(client, "t"))
    assert progs.hub_requests == []
    clock.t += 2
    found = run(watch.check(client, "t"))
    assert len(found) == 4 and "GET /base/hub/api/users" not in progs.hub_requests
    assert len(progs.hub_requests) == 4


def test_only_the_hubs_own_announcement_is_a_hint(setup: Any) -> None:
    _progs, watch, _client, _clock = setup
    # a user's request that quotes the text, in the hub's access log
    assert not watch.hint("[I 2026-11-30 23:40:35.871 JupyterHub log:192] 302 GET "
                          "/base/hub/Adding%20user%20eve%20to%20proxy%20/base/user/bob/ => x")
    # a route that is not where the hub routes that user's servers
    assert not watch.hint(ADDING.format(user="eve", spec="/base/user/bob/"))
    assert not watch.hint(ADDING.format(user="eve", spec="/user/eve/"))  # outside the base
    assert watch.hint(ADDING.format(user="eve", spec="/base/user/eve/"))


def test_an_unseen_route_is_found_by_the_periodic_count_with_no_change_in_chp(setup: Any) -> None:
    progs, watch, client, clock = setup
    run(watch.check(client, "t"))
    progs.hub_requests.clear()
    progs.ready["dan"] = {""}  # running, its route never reached CHP (or came and went)
    found = []
    for _ in range(31):  # a minute of intervals
        clock.t += 2
        found += run(watch.check(client, "t"))
        if found:
            break
    assert [(d.kind, d.user) for d in found] == [("missing", "dan")]
    assert progs.hub_requests == ["COUNT", "GET /base/hub/api/users"]


def test_a_count_that_keeps_differing_is_listed_at_most_every_few_intervals(setup: Any) -> None:
    progs, watch, client, clock = setup
    run(watch.check(client, "t"))
    progs.hub_requests.clear()
    for i in range(6):  # servers starting one after the other, their routes not yet in CHP
        progs.ready[f"s{i}"] = {""}
        progs.table[f"/base/extra{i}"] = {"target": "http://127.0.0.1:9/"}  # a route change
        clock.t += 2
        run(watch.check(client, "t"))
    listings = [r for r in progs.hub_requests if r == "GET /base/hub/api/users"]
    assert progs.hub_requests.count("COUNT") == 6 and len(listings) == 2  # at 2 s and 12 s


def test_a_failed_replay_writes_nothing_after_it_returns(tmp_path: Path) -> None:
    """One route CHP refuses stops every writer before replay() returns: nothing is written
    into CHP while the hub's re-sync that follows runs."""
    from hubsvc.loopback import LoopbackError
    from hubsvc.routewatch import replay

    cfg = Config.model_validate({"paths": {"state_dir": str(tmp_path),
                                           "runtime_dir": str(tmp_path / "run")}})
    table = {f"/user/u{i}": {"target": f"http://127.0.0.1:{9000 + i}", "user": f"u{i}",
                             "jupyterhub": True, "last_activity": "2026-11-30T00:00:00.000Z"}
             for i in range(40)}
    table["/admin-added"] = {"target": "http://127.0.0.1:9999"}  # not the hub's: not replayed
    writes: list[str] = []
    late: list[str] = []  # written after replay() returned
    done = False

    class Refusing:
        async def request(self, method: str, url: str, **kw: Any) -> Any:
            await asyncio.sleep(0.001 if "/u0" not in url else 0)
            if url.endswith("/user/u0"):
                raise LoopbackError("timed out after 1s")
            (late if done else writes).append(url)
            return type("R", (), {"status_code": 201})()

    async def go() -> None:
        nonlocal done
        with pytest.raises(LoopbackError):
            await replay(Refusing(), cfg, "t" * 64, json.dumps(table).encode(), 1.0)  # type: ignore[arg-type]
        done = True
        await asyncio.sleep(0.05)  # a writer still running would write (and fail) now

    run(go())
    assert late == [] and len(writes) < 40
    assert not any("admin-added" in w for w in writes)
