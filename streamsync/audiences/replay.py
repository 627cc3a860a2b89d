"""Offline replay: the live engine over a file of records, with the clock at ``until``.

The same decoders and the same :class:`~streamsync.audiences.engine.Engine` as the Kafka
path, so a preview on history is exactly what the live run would have emitted.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TextIO

from streamsync.audiences.definition import Audience
from streamsync.audiences.engine import DEFAULT_ALLOWED_LATENESS_MS, Engine
from streamsync.deltas.record import MembershipDelta
from streamsync.identity.config import IdentityConfig
from streamsync.identity.resolver import IdentityResolver, IdentityStats
from streamsync.ingest.event import ALIAS, ANONYMOUS, NO_CUSTOMER, Event
from streamsync.ingest.jsonl import LineError, Skipped


@dataclass
class ReplaySummary:
    lines: int = 0
    events: int = 0
    skipped_no_customer: int = 0
    #: valid records not evaluated, by reason (no_customer, group, alias, empty_batch)
    skipped: Counter[str] = field(default_factory=Counter)
    #: records whose id was already seen (counted once)
    duplicates: int = 0
    #: records behind the clock by at most the allowed lateness, applied at their own time
    late: int = 0
    #: records behind the clock by more than the allowed lateness, applied at the clock
    too_late: int = 0
    #: records stamped more than the allowed lateness after they were received
    ahead: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    deltas: Counter[tuple[str, str]] = field(default_factory=Counter)
    #: identity resolution (all zero when it is off)
    identity: IdentityStats = field(default_factory=IdentityStats)


class Progress:
    """Prints a line to ``stream`` at most every ``every_s`` seconds: long replays show
    they are alive, short ones stay quiet."""

    def __init__(self, stream: TextIO | None, every_s: float = 2.0) -> None:
        self.stream = stream
        self.every = every_s
        self.started = time.monotonic()
        self.last = self.started

    def tick(self, summary: ReplaySummary) -> None:
        if self.stream is None:
            return
        now = time.monotonic()
        if now - self.last < self.every:
            return
        self.last = now
        rate = summary.lines / max(now - self.started, 1e-9)
        print(
            f"streamsync replay: {summary.lines:,} lines, {summary.events:,} events, "
            f"{sum(summary.deltas.values()):,} deltas ({rate:,.0f} lines/s)",
            file=self.stream,
            flush=True,
        )


def replay(
    audiences: Sequence[Audience],
    records: Iterable[Event | LineError | Skipped],
    *,
    until_ms: int | None = None,
    allowed_lateness_ms: int = DEFAULT_ALLOWED_LATENESS_MS,
    on_event: Callable[[Event], None] | None = None,
    on_error: Callable[[LineError], None] | None = None,
    progress: TextIO | None = sys.stderr,
    summary: ReplaySummary | None = None,
    identity: IdentityConfig | None = None,
    on_resolver: Callable[[IdentityResolver], None] | None = None,
) -> Iterator[MembershipDelta]:
    """Yield the deltas of ``audiences`` over ``records`` (in arrival order).

    Records after ``until_ms`` are ignored; every deadline at or before it fires. The
    default is the latest timestamp in the input.

    ``identity`` resolves identity links (:mod:`streamsync.identity`; the records must
    be read with ``links=True``); ``None``: every record counts as its own key's, and
    anonymous records and aliases, if any, are skipped. ``on_resolver`` is given the
    resolver before the first record (``explain`` reads its links); ``on_event`` is also
    given each record attributed through a link, as the person's (``Event.via`` set).
    """
    engine = Engine(audiences, allowed_lateness_ms=allowed_lateness_ms)
    resolver = None
    if identity is not None and identity.resolves:
        resolver = IdentityResolver(engine, identity)
        if on_event is not None:
            resolver.on_forward = on_event
        if on_resolver is not None:
            on_resolver(resolver)
    process = engine.process if resolver is None else resolver.process
    stats = summary if summary is not None else ReplaySummary()
    ticker = Progress(progress)
    for item in records:
        stats.lines += 1
        if isinstance(item, Event):
            if until_ms is not None and item.timestamp_ms > until_ms:
                continue
            if resolver is None and (item.id_kind == ANONYMOUS or item.kind == ALIAS):
                reason = ALIAS if item.kind == ALIAS else NO_CUSTOMER
                stats.skipped[reason] += 1
                stats.skipped_no_customer += reason == NO_CUSTOMER
                continue
            stats.events += 1
            if on_event is not None:
                on_event(item)
            for delta in process(item):
                stats.deltas[(delta.audience, delta.op)] += 1
                yield delta
        elif isinstance(item, Skipped):
            stats.skipped[item.reason] += 1
            if item.reason == NO_CUSTOMER:
                stats.skipped_no_customer += 1
        else:
            stats.errors[item.error.reason.value] += 1
            if on_error is not None:
                on_error(item)
        if stats.lines % 4096 == 0:
            ticker.tick(stats)
    for delta in engine.finish(until_ms):
        stats.deltas[(delta.audience, delta.op)] += 1
        yield delta
    stats.duplicates = engine.stats.duplicates
    stats.late = engine.stats.late
    stats.too_late = engine.stats.too_late
    stats.ahead = engine.stats.ahead
    if resolver is not None:
        stats.identity = resolver.stats
