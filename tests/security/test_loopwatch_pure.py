"""The loop watch's tables are bounded and an access-log cycle is one event per episode."""

from __future__ import annotations

from hubsvc.hublog import RateLimit
from hubsvc.loopwatch import AccessLoops, LoopWatch


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def access(uri: str, loc: str, user: str = "u1", ip: str = "127.0.0.1", status: int = 302) -> str:
    return (f"[I 2026-11-30 16:00:00.000 JupyterHub log:192] {status} GET {uri} -> {loc} "
            f"({user}@{ip}) 1.23ms")


HOP = ("[W 2026-11-26 05:35:20.087 JupyterHub base:1690] Redirect loop detected on "
       "/hub/user/{u}/?redirects=1")


def test_self_redirect_is_one_event_per_user_and_episode() -> None:
    c = Clock()
    w = AccessLoops(clock=c)
    eps = []
    for _ in range(20):  # a browser following its 20 redirects
        c.t += 0.01
        eps.append(w.feed(access("/hub/", "/hub/")))
    found = [e for e in eps if e is not None]
    assert len(found) == 1
    ev = found[0].event()
    assert ev["event"] == "redirect_loop" and ev["user"] == "u1"
    assert ev["cause"] == "hub_redirect_cycle" and ev["hops"] == ["/hub/"]
    assert "hubsvc probe-spawn --user u1" in ev["hint"]
    # the browser retries a few seconds later: the same episode, no second event
    c.t += 3
    assert all(w.feed(access("/hub/", "/hub/")) is None for _ in range(20))
    # quiet long enough: a new episode, a new event
    c.t += 60
    w.expire()
    assert sum(w.feed(access("/hub/", "/hub/")) is not None for _ in range(20)) == 1


def test_two_page_cycle_and_absolute_locations() -> None:
    c = Clock()
    w = AccessLoops(clock=c)
    out = []
    for _ in range(10):
        out.append(w.feed(access("/hub/home", "http://127.0.0.1:8000/hub/spawn")))
        out.append(w.feed(access("/hub/spawn", "/hub/home")))
    (ep,) = [e for e in out if e is not None]
    assert ep.hops == ["/hub/home", "/hub/spawn"] and "/hub/home -> /hub/spawn -> /hub/home" in ep.detail


def test_not_a_loop() -> None:
    c = Clock()
    w = AccessLoops(clock=c)
    # a normal login flow
    flow = [access("/hub/", "/hub/login?next=%2Fhub%2F", user=""),
            access("/hub/login", "/hub/", user=""),  # POST logged as GET here: same shape
            access("/hub/", "/hub/spawn"), access("/hub/spawn", "/hub/spawn-pending/u1")]
    assert all(w.feed(ln) is None for ln in flow)
    # the same redirect requested over and over, never following it (a script, reloads)
    assert all(w.feed(access("/hub/", "/hub/login?next=%2Fhub%2F", user="")) is None
               for _ in range(50))
    # slow repeats are not a loop
    for _ in range(10):
        c.t += 6
        assert w.feed(access("/hub/x", "/hub/x")) is None
    # /hub/user/ loops are the hub's own detector's (LoopWatch)
    assert all(w.feed(access("/hub/user/u1/", "/hub/user/u1/")) is None for _ in range(10))
    # not the hub's pages
    assert all(w.feed(access("/user/u1/", "/user/u1/")) is None for _ in range(10))


def test_base_url_respected() -> None:
    w = AccessLoops(base_path="/jh/", clock=Clock())
    assert sum(w.feed(access("/jh/hub/", "/jh/hub/")) is not None for _ in range(10)) == 1
    assert all(w.feed(access("/hub/", "/hub/")) is None for _ in range(10))


def test_tables_are_bounded() -> None:
    c = Clock()
    w = AccessLoops(clock=c, max_clients=100)
    for i in range(10_000):
        w.feed(access(f"/hub/p{i}", f"/hub/q{i}", user=f"u{i}", ip=f"10.0.{i // 256}.{i % 256}"))
    assert len(w.chains) == 100
    lw = LoopWatch(clock=c, max_open=50)
    for i in range(10_000):
        lw.feed(HOP.format(u=f"victim{i}"))
    assert len(lw.open) == 50 and lw.evicted == 10_000 - 50
    assert len(lw.snapshot()) == 50


def test_rate_limit() -> None:
    c = Clock()
    r = RateLimit(rate=64, burst=10, clock=c)
    assert sum(r.take() for _ in range(1000)) == 10
    c.t += 0.5
    assert sum(r.take() for _ in range(1000)) == 10  # capped at the burst
    c.t += 0.0625
    assert sum(r.take() for _ in range(1000)) == 4
