"""Restart policy: exponential backoff and a restart budget. Pure; no I/O, no clock.

Like an OTP supervisor's intensity/period: more than `max_restarts` restarts of one
component within `window_s` seconds means giving up, and so do more than
`max_restarts_total` restarts of all components together (two components failing in turn
must not keep the service flapping forever). The n-th restart inside the window waits
backoff_initial_s * 2**(n-1), capped at backoff_max_s; a component that stayed up for a
whole window starts again from backoff_initial_s. Nothing else gives up: no timeout.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from .config import Restart


@dataclass(frozen=True)
class Decision:
    give_up: bool
    delay_s: float
    attempt: int  # 1-based count of restarts inside the window, this one included
    budget: int  # the budget that was checked (max_restarts, or the total)
    scope: str = "component"  # "component" or "total": which budget decided


@dataclass
class RestartTracker:
    policy: Restart
    total: bool = False  # counts every component's restarts against max_restarts_total
    _times: deque[float] = field(default_factory=deque)

    @property
    def budget(self) -> int:
        return self.policy.total_budget if self.total else self.policy.max_restarts

    def count(self, now: float) -> int:
        """Restarts recorded inside the window that ends at `now`."""
        window_start = now - self.policy.window_s
        while self._times and self._times[0] < window_start:
            self._times.popleft()
        return len(self._times)

    def decide(self, now: float) -> Decision:
        """Record a failure at `now` (monotonic seconds) and say what to do about it."""
        n = self.count(now) + 1
        self._times.append(now)
        delay = min(self.policy.backoff_max_s, self.policy.backoff_initial_s * 2 ** (n - 1))
        return Decision(give_up=n > self.budget, delay_s=delay, attempt=n, budget=self.budget,
                        scope="total" if self.total else "component")


def decide(component: RestartTracker, total: RestartTracker, now: float) -> Decision:
    """One restart of a component, checked against its own budget and the total."""
    own = component.decide(now)
    both = total.decide(now)
    if own.give_up or not both.give_up:
        return own
    return Decision(give_up=True, delay_s=own.delay_s, attempt=both.attempt,
                    budget=both.budget, scope="total")
