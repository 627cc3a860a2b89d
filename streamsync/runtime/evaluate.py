"""The evaluate stage: decoded events from the ingest loop into the audience engine.

The engine runs without its own clock (``auto_advance=False``); this stage advances it
to the partitions' common watermark, so reading one topic ahead of another never turns
records into late corrections.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from streamsync.audiences.definition import Audience
from streamsync.audiences.engine import DEFAULT_ALLOWED_LATENESS_MS, Engine
from streamsync.deltas.record import MembershipDelta
from streamsync.ingest.event import Event
from streamsync.runtime.watermark import UNKNOWN, PartitionWatermarks

DeltaSink = Callable[[MembershipDelta], None]

#: How long a live consumer remembers record ids for deduplication (event time): Kafka
#: redeliveries and producer retries arrive within minutes, and remembering every id for
#: ever would grow without bound. Replay remembers them for ever.
DEFAULT_DEDUP_HORIZON_MS = 24 * 60 * 60_000

#: Events between watermark checks: often enough for timely deadlines, rarely enough
#: that the check costs nothing per event.
_ADVANCE_EVERY = 256


class EvaluateStage:
    """``on_event`` for :class:`~streamsync.runtime.ingest_loop.IngestLoop`; every delta
    goes to ``sink`` in event-time order per customer."""

    def __init__(
        self,
        audiences: Sequence[Audience],
        sink: DeltaSink,
        *,
        allowed_lateness_ms: int = DEFAULT_ALLOWED_LATENESS_MS,
        dedup_horizon_ms: int | None = DEFAULT_DEDUP_HORIZON_MS,
    ) -> None:
        self.engine = Engine(
            audiences,
            allowed_lateness_ms=allowed_lateness_ms,
            dedup_horizon_ms=dedup_horizon_ms,
            auto_advance=False,
        )
        self.watermarks = PartitionWatermarks(allowed_lateness_ms)
        self.sink = sink
        self._since_advance = 0

    def __call__(self, event: Event) -> None:
        self.watermarks.observe(event)
        self._emit(self.engine.process(event))
        self._since_advance += 1
        if self._since_advance >= _ADVANCE_EVERY:
            self.advance()

    # PartitionListener: the ingest loop reports assignment and end-of-partition.
    def assigned(self, partitions: list[tuple[str, int]]) -> None:
        self.watermarks.assigned(partitions)

    def revoked(self, partitions: list[tuple[str, int]]) -> None:
        self.watermarks.revoked(partitions)

    def caught_up(self, topic: str, partition: int) -> None:
        self.watermarks.caught_up(topic, partition)
        self.advance()

    def advance(self) -> None:
        """Fire everything before the common watermark."""
        self._since_advance = 0
        watermark = self.watermarks.watermark
        if watermark != UNKNOWN:  # advance_to ignores instants already final
            self._emit(self.engine.advance_to(watermark - 1))

    def finish(self, until_ms: int | None = None) -> None:
        """End of input (a bounded run): release everything and fire deadlines up to
        ``until_ms`` (default: the newest record)."""
        self._emit(self.engine.finish(until_ms))

    def _emit(self, deltas: list[MembershipDelta]) -> None:
        sink = self.sink
        for delta in deltas:
            sink(delta)
