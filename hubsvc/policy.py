"""Restart policy: exponential backoff and a restart budget. Pure; no I/O, no clock.

Like an OTP supervisor's intensity/period: more than `max_restarts` restarts of one
component within `window_s` seconds means giving up. The n-th restart inside the window
waits backoff_initial_s * 2**(n-1), capped at backoff_max_s; a component that stayed up
for a whole window starts again from backoff_initial_s.
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
    budget: int  # max_restarts


@dataclass
class RestartTracker:
    policy: Restart
    _times: deque[float] = field(default_factory=deque)

    def decide(self, now: float) -> Decision:
        """Record a failure at `now` (monotonic seconds) and say what to do about it."""
        window_start = now - self.policy.window_s
        while self._times and self._times[0] < window_start:
            self._times.popleft()
        self._times.append(now)
        n = len(self._times)
        give_up = n > self.policy.max_restarts
        delay = min(self.policy.backoff_max_s, self.policy.backoff_initial_s * 2 ** (n - 1))
        return Decision(give_up=give_up, delay_s=delay, attempt=n, budget=self.policy.max_restarts)
