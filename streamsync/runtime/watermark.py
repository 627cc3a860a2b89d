"""Event-time progress across the partitions one consumer reads.

A consumer reads several partitions (of several topics) at different speeds, so the
newest timestamp it has seen says little about what is still to come. What is final is
what every partition has moved past: the watermark is the slowest partition's newest
timestamp minus the allowed lateness.
"""

from __future__ import annotations

from streamsync.ingest.event import Event

#: No watermark yet (no partition has delivered a record).
UNKNOWN = -(1 << 62)


class PartitionWatermarks:
    """Newest event time per ``(topic, partition)``; see the module docstring.

    An assigned partition that has not delivered a record yet holds the watermark back
    (its first records may be old), unless it is known to be caught up: a partition at
    its end offset has nothing in flight that could be late. When every partition is
    caught up, the newest timestamp of any of them stands for the shared clock.
    Events without a source (tests, files) count as one partition of their own.
    """

    __slots__ = ("_idle", "_newest", "lateness_ms")

    def __init__(self, lateness_ms: int) -> None:
        self.lateness_ms = lateness_ms
        self._newest: dict[tuple[str, int], int] = {}
        self._idle: set[tuple[str, int]] = set()

    def observe(self, event: Event) -> None:
        source = event.source
        key = ("", 0) if source is None else (source.topic, source.partition)
        if event.timestamp_ms > self._newest.get(key, UNKNOWN):
            self._newest[key] = event.timestamp_ms
        if self._idle:
            self._idle.discard(key)

    # PartitionListener (streamsync.runtime.ingest_loop)
    def assigned(self, partitions: list[tuple[str, int]]) -> None:
        for key in partitions:
            self._newest.setdefault(key, UNKNOWN)

    def revoked(self, partitions: list[tuple[str, int]]) -> None:
        for key in partitions:
            self._newest.pop(key, None)
            self._idle.discard(key)

    def caught_up(self, topic: str, partition: int) -> None:
        if (topic, partition) in self._newest:
            self._idle.add((topic, partition))

    @property
    def watermark(self) -> int:
        """Instants before this are final; ``UNKNOWN`` while any busy partition has not
        delivered a record."""
        busy = [ts for key, ts in self._newest.items() if key not in self._idle]
        low = min(busy) if busy else max(self._newest.values(), default=UNKNOWN)
        return UNKNOWN if low == UNKNOWN else low - self.lateness_ms
