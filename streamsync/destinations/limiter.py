"""Token-bucket rate limiter that also obeys the destination's 429 reset.

Plain arithmetic, no threads: :meth:`TokenBucket.wait_s` says how long until ``cost``
units may be sent, :meth:`take` spends them. See :class:`~streamsync.destinations.config.RateLimit`
for why refill rate and capacity keep every window under the vendor's limit.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from streamsync.destinations.config import RateLimit

#: Sent this long after a 429's reset at the earliest: the reset header has whole-second
#: resolution and clocks are read at different moments on each side.
RESET_MARGIN_S = 0.05


class TokenBucket:
    def __init__(
        self,
        limit: RateLimit,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.rate = limit.utilisation * limit.limit / limit.window_s
        self.capacity = max(1.0, (1.0 - limit.utilisation) * limit.limit)
        self.tokens = self.capacity
        self._clock = clock
        self._wall = wall
        self._updated = clock()
        #: Wall-clock epoch seconds before which nothing may be sent (from a 429).
        self.blocked_until = 0.0

    def _refill(self) -> float:
        now = self._clock()
        self.tokens = min(self.capacity, self.tokens + (now - self._updated) * self.rate)
        self._updated = now
        return now

    def wait_s(self, cost: int) -> float:
        """Seconds until ``cost`` units may be sent (0: now). A cost above the capacity
        waits for a full bucket and then goes into debt."""
        self._refill()
        blocked = self.blocked_until - self._wall()
        need = min(float(cost), self.capacity)
        short = 0.0 if self.tokens >= need else (need - self.tokens) / self.rate
        return max(blocked, short, 0.0)

    def take(self, cost: int) -> None:
        self._refill()
        self.tokens -= cost

    def block_until(self, epoch_s: float) -> None:
        """Send nothing before ``epoch_s`` (plus a small margin); the bucket restarts
        empty so the new window is not opened with a burst."""
        self.blocked_until = max(self.blocked_until, epoch_s + RESET_MARGIN_S)
        self._refill()
        self.tokens = min(self.tokens, 0.0)
