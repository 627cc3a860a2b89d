"""Progress lines for long-running commands: what a run has done and its recent rate.

``evaluate`` and ``ingest`` report counts every few seconds; the rate is over the last
interval, not the whole run, so a stall shows at once instead of being averaged away.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, TextIO, TypeVar


class RunStats(Protocol):
    """What a progress line needs from a run's counters."""

    @property
    def records(self) -> int: ...

    elapsed_s: float


S = TypeVar("S", bound=RunStats)


def rate_printer(out: TextIO, line: Callable[[S, float], str]) -> Callable[[S], None]:
    """A progress callback printing ``line(stats, records_per_second)`` to ``out``, the
    rate measured since the previous call."""
    last_records, last_elapsed = 0, 0.0

    def show(stats: S) -> None:
        nonlocal last_records, last_elapsed
        records, elapsed = stats.records, stats.elapsed_s
        window = elapsed - last_elapsed
        rate = (records - last_records) / window if window > 0 else 0.0
        last_records, last_elapsed = records, elapsed
        print(line(stats, rate), file=out, flush=True)

    return show
