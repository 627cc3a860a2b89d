"""Which offsets may be committed: everything below the oldest unsettled delta.

Changes are acknowledged out of offset order (a held audience, a collapsed delta, a
dead letter), so a partition's commit position is the smallest offset still pending,
or one past the last consumed offset when none is.
"""

from __future__ import annotations

from collections.abc import Iterable


class OffsetTracker:
    def __init__(self) -> None:
        self._pending: dict[int, set[int]] = {}
        self._next: dict[int, int] = {}
        self._committed: dict[int, int] = {}

    def track(self, partition: int, offset: int) -> None:
        """``offset`` was consumed and is not settled yet."""
        self._pending.setdefault(partition, set()).add(offset)
        if offset + 1 > self._next.get(partition, -1):
            self._next[partition] = offset + 1

    def done(self, partition: int, offsets: Iterable[int]) -> None:
        pending = self._pending.get(partition)
        if pending is not None:
            pending.difference_update(offsets)

    def position(self, partition: int) -> int | None:
        """The offset to commit for ``partition`` (``None``: nothing consumed)."""
        if partition not in self._next:
            return None
        pending = self._pending.get(partition)
        return min(pending) if pending else self._next[partition]

    def to_commit(self) -> dict[int, int]:
        """Positions that moved since the last :meth:`committed` call."""
        result = {}
        for partition in self._next:
            position = self.position(partition)
            if position is not None and position != self._committed.get(partition):
                result[partition] = position
        return result

    def committed(self, positions: dict[int, int]) -> None:
        self._committed.update(positions)

    def pending(self) -> int:
        return sum(len(p) for p in self._pending.values())

    def forget(self, partitions: Iterable[int]) -> None:
        for partition in partitions:
            self._pending.pop(partition, None)
            self._next.pop(partition, None)
            self._committed.pop(partition, None)
