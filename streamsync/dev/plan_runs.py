"""A stable sort by event time of more plan entries than should be held in memory.

The synthetic stream is planned customer by customer and written in event-time order.
Holding the whole plan (about 150 bytes an entry) to sort it made ``dev generate``'s
memory grow with the number of records; here the entries are sorted in runs of
:data:`RUN_ENTRIES`, each run after the first spilled to an anonymous temporary file
(``marshal``: the entries are tuples of ints), and the runs are merged as they are
read. The order is exactly ``list.sort``'s: by time, ties in the order the entries were
added (a run holds consecutive entries, and the merge prefers the earlier run). When
:data:`FAN_IN` runs are spilled they are merged into one, so the merge never reads more
than that many runs at once: memory is bounded, whatever the number of entries.
"""

from __future__ import annotations

import heapq
import marshal
import tempfile
from collections.abc import Iterable, Iterator
from operator import itemgetter
from typing import IO, Any

#: Entries sorted and held per run: the memory :class:`PlanRuns` needs, about 150 bytes
#: an entry, whatever the number of entries.
RUN_ENTRIES = 250_000
#: Entries per ``marshal`` chunk in a spilled run (and per read back).
_CHUNK = 1024
#: Spilled runs merged into one when there are this many: each holds a chunk in memory
#: while it is merged.
FAN_IN = 32

_by_time = itemgetter(0)


class PlanRuns:
    """Collects plan entries (:meth:`extend`), then yields them sorted (:meth:`sorted`)."""

    def __init__(self, run_entries: int = RUN_ENTRIES) -> None:
        self.run_entries = run_entries
        self.count = 0
        self._buffer: list[tuple[Any, ...]] = []
        self._spilled: list[IO[bytes]] = []

    def extend(self, entries: list[tuple[Any, ...]]) -> None:
        self._buffer.extend(entries)
        self.count += len(entries)
        if len(self._buffer) >= self.run_entries:
            self._spill()

    def append(self, entry: tuple[Any, ...]) -> None:
        self._buffer.append(entry)
        self.count += 1
        if len(self._buffer) >= self.run_entries:
            self._spill()

    def _spill(self) -> None:
        self._buffer.sort(key=_by_time)
        self._spilled.append(spill(self._buffer))
        self._buffer = []
        if len(self._spilled) >= FAN_IN:
            runs, self._spilled = self._spilled, []
            self._spilled.append(spill(heapq.merge(*map(read, runs), key=_by_time)))

    def sorted(self) -> Iterator[tuple[Any, ...]]:
        """Every entry, by time (stable); the spilled runs are closed as they end."""
        self._buffer.sort(key=_by_time)
        runs = [read(handle) for handle in self._spilled]
        if self._buffer:
            runs.append(iter(self._buffer))
        self._buffer = []
        if len(runs) == 1:
            return runs[0]
        return heapq.merge(*runs, key=_by_time)


def spill(entries: Iterable[Any]) -> IO[bytes]:
    """``entries`` (tuples of ints, or ints) in an anonymous temporary file, rewound, for
    :func:`read`; deleted when closed."""
    handle = tempfile.TemporaryFile()  # noqa: SIM115 - open until it is read back
    chunk: list[Any] = []
    for entry in entries:
        chunk.append(entry)
        if len(chunk) >= _CHUNK:
            marshal.dump(chunk, handle)
            chunk = []
    if chunk:
        marshal.dump(chunk, handle)
    handle.seek(0)
    return handle


def read(handle: IO[bytes]) -> Iterator[Any]:
    """What :func:`spill` wrote, in order; the file is closed (deleted) at its end."""
    with handle:
        while True:
            try:
                chunk = marshal.load(handle)
            except EOFError:
                return
            yield from chunk
