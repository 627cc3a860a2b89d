"""A task: one input partition number, with its own engine and state.

Partition ``p`` of every (co-partitioned) input topic belongs to task ``p``: one
customer's records are all in the same partition number, so a task's engine sees every
record of its customers and nothing else, and a rebalance moves whole tasks.

Time. Each input partition's watermark is its newest event time minus the allowed
lateness. While a partition is caught up (at its end offset) it also advances with the
wall clock (minus a small grace), so a deadline fires within about a second of its
time even when nothing arrives; while a backlog is being read only event time moves
it, so evaluating a finished topic from the start gives what ``replay`` gives. The
task's watermark is the lowest of its partitions'.

State. After each commit the task hands over its changes as store keys (see
:mod:`streamsync.state.codec`): the customers the engine changed, the records accepted
in this commit that are still in the reorder buffer (one segment), their record ids,
tombstones for segments no longer needed, and the meta record.
"""

from __future__ import annotations

import gc
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from streamsync.audiences.compiler import NEVER
from streamsync.audiences.definition import Audience
from streamsync.audiences.engine import Engine
from streamsync.deltas.record import MembershipDelta
from streamsync.ingest.event import Event
from streamsync.state.codec import (
    CODEC_VERSION,
    CUSTOMER_PREFIX,
    EVENTS_PREFIX,
    IDS_PREFIX,
    META_KEY,
    StateError,
    decode_customer,
    decode_events,
    decode_ids,
    decode_meta,
    encode_customer,
    encode_events,
    encode_ids,
    encode_meta,
    fingerprint,
    segment_key,
)
from streamsync.state.store import PartitionStore

#: No event time seen yet.
UNKNOWN = -NEVER


class Task:
    """Engine, per-topic progress and pending state changes of one partition number."""

    def __init__(
        self,
        partition: int,
        topics: Sequence[str],
        audiences: Sequence[Audience],
        *,
        allowed_lateness_ms: int,
        dedup_horizon_ms: int,
        wall_clock: bool,
        idle_grace_ms: int,
    ) -> None:
        self.partition = partition
        self.topics = list(topics)
        self.engine = Engine(
            audiences,
            allowed_lateness_ms=allowed_lateness_ms,
            dedup_horizon_ms=dedup_horizon_ms,
            auto_advance=False,
        )
        self.fingerprint = fingerprint(self.engine.program)
        self.lateness = allowed_lateness_ms
        self.horizon = dedup_horizon_ms
        self.wall_clock = wall_clock
        self.grace = idle_grace_ms
        self.newest: dict[str, int] = dict.fromkeys(self.topics, UNKNOWN)
        self.caught_up: dict[str, bool] = dict.fromkeys(self.topics, False)
        self._new: list[tuple[int, int, Event]] = []
        self._new_ids: list[str] = []
        self._event_segments: dict[int, int] = {}  # segment -> newest effective timestamp
        self._id_segments: dict[int, int] = {}  # segment -> newest timestamp
        self._next_segment = 0
        self.store: PartitionStore | None = None

    # -- records and time ------------------------------------------------------------------

    def process(self, event: Event) -> list[MembershipDelta]:
        engine = self.engine
        arrival = engine.arrivals
        closed = engine.watermark
        out = engine.process(event)
        if engine.arrivals != arrival:  # accepted (not a duplicate): remember until released
            ts = event.timestamp_ms
            if ts < closed:
                event = replace(event, timestamp_ms=closed)
                ts = closed
            self._new.append((ts, arrival, event))
            if event.record_id is not None:
                self._new_ids.append(event.record_id)
        source = event.source
        if source is not None and event.timestamp_ms > self.newest.get(source.topic, UNKNOWN):
            self.newest[source.topic] = event.timestamp_ms
        return out

    def watermark(self, now_ms: int) -> int:
        """Instants before this are final for this task (``UNKNOWN`` if none is).

        A partition that has delivered nothing yet holds it back (its first records may
        be old) unless it is caught up: an empty partition holds nothing back. Being
        caught up does not make a partition's own progress irrelevant (its producer may
        append older records than another topic's newest), so without the wall clock it
        still counts with its newest record."""
        low = NEVER
        for topic in self.topics:
            newest = self.newest[topic]
            mark = UNKNOWN if newest == UNKNOWN else newest - self.lateness
            if self.caught_up[topic]:
                if self.wall_clock:
                    mark = max(mark, now_ms - self.grace)
                elif newest == UNKNOWN:
                    continue
            low = min(low, mark)
        return UNKNOWN if low == NEVER else low

    def advance(self, now_ms: int) -> list[MembershipDelta]:
        mark = self.watermark(now_ms)
        if mark == UNKNOWN or mark - 1 < self.engine.watermark:
            return []
        return self.engine.advance_to(mark - 1)

    def finish(self, until_ms: int) -> list[MembershipDelta]:
        """Bounded run: release everything and fire deadlines up to ``until_ms``."""
        return self.engine.finish(until_ms)

    # -- state -------------------------------------------------------------------------------

    def changes(self) -> dict[bytes, bytes | None]:
        """Store keys changed since the last call; empty if nothing changed."""
        engine = self.engine
        closed = engine.watermark
        out: dict[bytes, bytes | None] = {}
        customers = engine.customers
        for cid in engine.take_touched():
            out[CUSTOMER_PREFIX + cid.encode()] = encode_customer(customers[cid])
        if self._new:
            live = [entry for entry in self._new if entry[0] >= closed]
            self._new = []
            if live:
                segment = self._segment()
                out[segment_key(EVENTS_PREFIX, segment)] = encode_events(live)
                self._event_segments[segment] = max(entry[0] for entry in live)
        if self._new_ids:
            segment = self._segment()
            out[segment_key(IDS_PREFIX, segment)] = encode_ids(self._new_ids)
            self._id_segments[segment] = max(self.newest.values())
            self._new_ids = []
        for segment, newest in list(self._event_segments.items()):
            if newest < closed:  # every record in it has been applied
                del self._event_segments[segment]
                out[segment_key(EVENTS_PREFIX, segment)] = None
        clock = engine.clock()
        forget = clock["max_seen"] - 2 * self.horizon
        for segment, newest in list(self._id_segments.items()):
            if newest < forget:
                del self._id_segments[segment]
                out[segment_key(IDS_PREFIX, segment)] = None
        # The clock alone moving (the wall clock while idle) needs no write: anything it
        # released or fired changed a customer or a segment, which is written.
        if out:
            out[META_KEY] = encode_meta(
                {
                    "codec": CODEC_VERSION,
                    "fingerprint": self.fingerprint,
                    "clock": clock,
                    "newest": self.newest,
                    "next_segment": self._next_segment,
                    "event_segments": self._event_segments,
                    "id_segments": self._id_segments,
                }
            )
        return out

    def _segment(self) -> int:
        segment = self._next_segment
        self._next_segment += 1
        return segment

    def load(self, store: PartitionStore, source: str) -> int:
        """Take the state in ``store`` (already brought up to date); return the number
        of customers. Raises :class:`StateError` if it was written by other definitions."""
        self.store = store
        raw = store.get(META_KEY)
        if raw is None:
            return 0
        meta: dict[str, Any] = decode_meta(raw)
        if meta.get("fingerprint") != self.fingerprint:
            raise StateError(
                f"{source}: the stored state was written for other audience definitions "
                f"(fingerprint {meta.get('fingerprint')}, now {self.fingerprint}); "
                "evaluate the changed definitions under a new evaluate.group_id "
                "(state is rebuilt from the input topics) or restore the old definitions"
            )
        clock: dict[str, int] = meta["clock"]
        closed = clock["closed"]
        # Millions of new containers: the cyclic collector would rescan them again and
        # again while they are built (they hold no cycles), so it waits until the end.
        paused = gc.isenabled()
        gc.disable()
        try:
            customers = {
                key[len(CUSTOMER_PREFIX) :].decode(): decode_customer(value)
                for key, value in store.items(CUSTOMER_PREFIX)
            }
        finally:
            if paused:
                gc.enable()
        buffer = [
            entry
            for _, value in store.items(EVENTS_PREFIX)
            for entry in decode_events(value)
            if entry[0] >= closed
        ]
        seen = {rid for _, value in store.items(IDS_PREFIX) for rid in decode_ids(value)}
        self.engine.restore(clock, customers, buffer, seen)
        for topic, newest in meta["newest"].items():
            if topic in self.newest:
                self.newest[topic] = newest
        self._next_segment = meta["next_segment"]
        self._event_segments = dict(meta["event_segments"])
        self._id_segments = dict(meta["id_segments"])
        return len(customers)
