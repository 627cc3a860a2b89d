"""What one evaluate run counted, and how the counts follow the transactions.

Counts describe committed work: when a transaction aborts, its records are read and
counted again, so :func:`rollback` puts the counts back to the last :func:`snapshot`
(except the aborts themselves and the engine errors, which did happen).
"""

from __future__ import annotations

import copy
from collections import Counter
from dataclasses import dataclass, field, fields

from streamsync.runtime.ingest_loop import IngestStats


@dataclass
class EvaluateStats(IngestStats):
    """Ingest counts plus what evaluation produced."""

    deltas: int = 0
    commits: int = 0
    aborts: int = 0
    restored_customers: int = 0
    engine_errors: int = 0
    #: records that arrived behind their task's clock, within the allowed lateness
    late: int = 0
    #: records that arrived behind it by more (applied at the clock's instant)
    too_late: int = 0
    #: deltas emitted because audience definitions changed (at start-up)
    definition_changes: int = 0
    #: per-key fact entries dropped at evaluate.max_keys_per_customer
    keys_dropped: int = 0
    delta_counts: Counter[tuple[str, str]] = field(default_factory=Counter)


def snapshot(stats: EvaluateStats) -> EvaluateStats:
    """A copy of ``stats`` as of a commit."""
    return copy.deepcopy(stats)


def rollback(stats: EvaluateStats, committed: EvaluateStats) -> None:
    """Put ``stats`` back to ``committed`` in place (others hold ``stats``), counting
    one more abort and keeping the engine errors."""
    aborts, errors = stats.aborts + 1, stats.engine_errors
    for item in fields(stats):
        setattr(stats, item.name, copy.deepcopy(getattr(committed, item.name)))
    stats.aborts, stats.engine_errors = aborts, errors
