from __future__ import annotations

from pathlib import Path

import pytest

from hubsvc.config import Restart
from hubsvc.policy import RestartTracker


def test_backoff_doubles_and_caps() -> None:
    t = RestartTracker(Restart(backoff_initial_s=0.1, backoff_max_s=1.0, max_restarts=10,
                               window_s=60))
    delays = [t.decide(float(i)).delay_s for i in range(6)]
    assert delays == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]


def test_gives_up_after_budget_within_window() -> None:
    t = RestartTracker(Restart(max_restarts=3, window_s=10))
    decisions = [t.decide(float(i)) for i in range(4)]
    assert [d.give_up for d in decisions] == [False, False, False, True]
    assert [d.attempt for d in decisions] == [1, 2, 3, 4]
    assert decisions[-1].budget == 3


def test_failures_outside_window_are_forgotten_and_backoff_resets() -> None:
    t = RestartTracker(Restart(backoff_initial_s=0.5, backoff_max_s=8, max_restarts=2,
                               window_s=10))
    assert not t.decide(0).give_up
    assert not t.decide(5).give_up
    d = t.decide(30)  # the earlier two are older than the window
    assert not d.give_up and d.attempt == 1 and d.delay_s == 0.5


def test_zero_budget_gives_up_at_first_failure() -> None:
    t = RestartTracker(Restart(max_restarts=0))
    assert t.decide(0).give_up


def test_total_budget_gives_up_when_components_fail_in_turn() -> None:
    from hubsvc.policy import decide

    pol = Restart(max_restarts=3, max_restarts_total=4, window_s=60)
    proxy, hub, total = RestartTracker(pol), RestartTracker(pol), RestartTracker(pol, total=True)
    out = [decide(proxy if i % 2 else hub, total, float(i)) for i in range(5)]
    assert [d.give_up for d in out] == [False, False, False, False, True]
    assert out[-1].scope == "total" and out[-1].budget == 4 and out[-1].attempt == 5


def test_total_budget_defaults_to_twice_max_restarts() -> None:
    assert Restart(max_restarts=5).total_budget == 10
    assert Restart(max_restarts=5, max_restarts_total=7).total_budget == 7


def test_total_budget_below_component_budget_is_refused_naming_the_field(tmp_path: Path) -> None:
    from hubsvc import config

    f = tmp_path / "hubsvc.toml"
    f.write_text("[restart]\nmax_restarts = 5\nmax_restarts_total = 3\n")
    with pytest.raises(config.ConfigError) as e:
        config.load(f)
    text = str(e.value)
    assert "restart" in text and "max_restarts_total (3) is below max_restarts (5)" in text
