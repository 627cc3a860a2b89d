"""Liveness and readiness of one streamsync process, as the admin server reports them.

Kubernetes restarts a pod whose liveness fails and sends no traffic to (and, through the
PodDisruptionBudget, counts as unavailable) a pod that is not ready. For streamsync,
"ready" means its state is restored and it is processing: the runtime calls
:meth:`Health.set_ready` once the assigned partitions' stores are up to date, and
:meth:`Health.set_not_ready` while a rebalance restores state again.

Liveness fails when the runtime declares a fatal error (:meth:`Health.fail`) or, when a
stall timeout is configured, when the processing loop has not called :meth:`Health.beat`
for that long: the admin server runs in its own thread, so it would otherwise keep
answering while the loop is stuck.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class Health:
    """Thread-safe liveness/readiness flags; every method is cheap enough for a hot loop."""

    def __init__(
        self,
        *,
        stall_timeout: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._stall_timeout = stall_timeout
        self._clock = clock
        self._lock = threading.Lock()
        self._ready = False
        self._not_ready_reason = "starting: state not restored yet"
        self._failure: str | None = None
        self._last_beat = clock()

    def set_ready(self) -> None:
        """State is restored and records are being processed."""
        with self._lock:
            self._ready = True
            self._not_ready_reason = ""

    def set_not_ready(self, reason: str) -> None:
        """Not ready (restoring after a rebalance, draining on shutdown); ``reason`` is shown
        by ``/readyz`` and must not hold customer data."""
        with self._lock:
            self._ready = False
            self._not_ready_reason = reason

    def fail(self, reason: str) -> None:
        """A fatal error: liveness fails from now on, so the orchestrator restarts us."""
        with self._lock:
            self._failure = reason
            self._ready = False
            self._not_ready_reason = reason

    def beat(self) -> None:
        """The processing loop made progress (call at least once per stall timeout)."""
        self._last_beat = self._clock()

    def liveness(self) -> tuple[bool, str]:
        """(alive, reason when not)."""
        with self._lock:
            failure = self._failure
        if failure is not None:
            return False, failure
        if self._stall_timeout is not None:
            silent = self._clock() - self._last_beat
            if silent > self._stall_timeout:
                return False, f"processing loop stalled for {silent:.0f}s"
        return True, ""

    def readiness(self) -> tuple[bool, str]:
        """(ready, reason when not); never ready while not alive."""
        alive, reason = self.liveness()
        if not alive:
            return False, reason
        with self._lock:
            return self._ready, self._not_ready_reason
