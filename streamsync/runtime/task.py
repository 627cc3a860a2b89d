"""A task: one input partition number, with its own engine and state.

Partition ``p`` of every (co-partitioned) input topic belongs to task ``p``: one
customer's records are all in the same partition number, so a task's engine sees every
record of its customers and nothing else, and a rebalance moves whole tasks.

Time (../shared/audiences.md, "Live clock and late records"). Whether an input
partition has more to give is decided by offsets, as Kafka Streams does since KIP-695:
it is caught up when its position has reached the end offset the broker reported
(queried at assignment, then taken from fetch responses and end-of-partition events),
never because a timer ran out, so the result cannot depend on how fast fetches come
back. The task's clock is the lowest newest event time, minus the allowed lateness, of
the partitions that may still give records (one that has given nothing yet holds it
where it is); a caught-up partition holds nothing back. Live (with the wall clock) a
partition is caught up when its position reaches the end its fetches report, and once
every partition is caught up the clock follows the wall clock minus a small grace, so a
deadline fires within about a second of its time even when nothing arrives. Without
the wall clock (replaying history exactly) a keyed input at its end still counts with
its newest record (only each partition's own order is certain: its producer may append
records older than another topic's newest); one that has given nothing counts as
caught up only once the broker confirmed its end after the task's latest records were
read (the router asks). The raw partitions behind a repartition input count the same
way: one that has given records holds the clock at its newest, even at its end (a
producer's batch for it can be appended after records of other partitions produced
later, so a confirmed end proves nothing about those), so without the wall clock a raw
partition that finished early holds the clock, as a keyed one does, until the run's
end. While a backlog is being read
only event time moves it, so evaluating a finished log from the start gives what
``replay`` gives. A repartition input (see :mod:`streamsync.runtime.repartition`)
merges many raw partitions: its progress is what the raw partitions' marks report, and
it is caught up only when they all were at their end.

Identity (``identity.live``; see :mod:`streamsync.runtime.identity_stage`). The task
also keeps the identity table of partition ``p`` of the identity topic. That input holds
only the table's clock (:meth:`Task.decide_identity`); the forward topic, which brings
what links attribute to the task's customers, holds the customers' clock like any input.

State. After each commit the task hands over its changes as store keys (see
:mod:`streamsync.state.codec`): the customers the engine changed, the records accepted
in this commit that are still in the reorder buffer (one segment), their record ids,
tombstones for segments no longer needed, and the meta record (clock, customer count,
audience sizes).

Customers live in the partition store; the engine holds only the recently changed ones
(up to the ``keep`` given to :meth:`Task.persist`, which evicts the rest once they are
stored) and reads the others through the store when a record of theirs is applied.
Deadlines of customers not in memory are found in the store's timer index: before the
clock advances to a watermark, every customer due before it is read back, so its
deadline fires from the engine's heap exactly as if it had never left. Opening a
partition therefore reads no customer at all.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

from streamsync.audiences.compiler import (
    CUSTOMER_ID,
    DEFAULT_MAX_KEYS,
    DUE,
    NEVER,
    Customer,
    compile_audiences,
)
from streamsync.audiences.definition import Audience
from streamsync.audiences.engine import Engine
from streamsync.audiences.migration import Migration, definitions_record, stored_definitions
from streamsync.deltas.record import ENTER, MembershipDelta
from streamsync.identity.config import IdentityConfig
from streamsync.identity.table import IDENTITY_PREFIX, Forward, IdentityTable
from streamsync.ingest.event import Event, progress_ms
from streamsync.runtime.repartition import MergedInput
from streamsync.state.codec import (
    CODEC_VERSION,
    CUSTOMER_PREFIX,
    DEFINITIONS_KEY,
    EVENTS_PREFIX,
    IDS_PREFIX,
    LAYOUT_VERSION,
    META_KEY,
    StateError,
    customer_due,
    decode_customer,
    decode_events,
    decode_meta,
    encode_customer,
    encode_events,
    encode_ids,
    encode_meta,
    fingerprint,
    segment_key,
    timer_key,
)
from streamsync.state.store import PartitionStore

#: No event time seen yet.
UNKNOWN = -NEVER
#: Customers not in memory that one stuck-members count reads at most (per task).
OVERDUE_SCAN_LIMIT = 10_000
#: Customers read back for their deadlines per commit (per task), at most (roughly: a
#: whole instant's customers are read together).
READ_DUE_PER_COMMIT = 20_000


_T = TypeVar("_T")

#: Largest changelog value a segment is encoded into (bytes, roughly): a cycle that
#: buffers many large records (a backlog of 9 KB records) is split over several
#: segments instead of one value beyond what the topic and the producer accept.
SEGMENT_BYTES = 1 << 20


def _sized(
    items: list[_T], encode: Callable[[list[_T]], bytes]
) -> Iterator[tuple[list[_T], bytes]]:
    """``items`` encoded in chunks of at most :data:`SEGMENT_BYTES` each (a single item
    larger than that is a chunk of its own), in order."""
    if not items:
        return
    value = encode(items)
    if len(value) <= SEGMENT_BYTES or len(items) == 1:
        yield items, value
        return
    half = len(items) // 2
    yield from _sized(items[:half], encode)
    yield from _sized(items[half:], encode)


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
        merged: Mapping[str, frozenset[str]] | None = None,
        max_keys: int = DEFAULT_MAX_KEYS,
        identity: IdentityConfig | None = None,
        identity_topic: str = "",
    ) -> None:
        self.partition = partition
        self.topics = list(topics)
        #: the input of the identity table (``""``: identity is not resolved live); the
        #: other inputs hold the clock of the task's customers, this one the table's
        self.identity_topic = identity_topic
        self._customer_topics = [t for t in self.topics if t != identity_topic]
        self.table = IdentityTable(identity or IdentityConfig(), allowed_lateness_ms)
        self.engine = Engine(
            audiences,
            allowed_lateness_ms=allowed_lateness_ms,
            dedup_horizon_ms=dedup_horizon_ms,
            auto_advance=False,
            loader=self._read_customer,
            seen_before=self._seen_before,
            max_keys=max_keys,
        )
        self.fingerprint = fingerprint(self.engine.program)
        self.audiences = list(audiences)
        #: the stored definitions differ from these: what :meth:`migrate` will do
        self.migration: Migration | None = None
        #: customers converted by :meth:`migrate`, not in the store until the next commit
        self._migrated: dict[bytes, bytes] = {}
        #: ``(due, customer key)`` of the converted customers with a deadline, in order
        self._migrated_timers: list[tuple[int, bytes]] = []
        #: the definitions record is to be written with the next commit
        self._record_definitions = True
        self.lateness = allowed_lateness_ms
        self.horizon = dedup_horizon_ms
        self.wall_clock = wall_clock
        self.grace = idle_grace_ms
        self.newest: dict[str, int] = dict.fromkeys(self.topics, UNKNOWN)
        #: input -> its position has reached the end offset the broker reported
        self.caught_up: dict[str, bool] = dict.fromkeys(self.topics, False)
        #: input -> the end offset the broker last reported (-1: not known yet)
        self.ends: dict[str, int] = dict.fromkeys(self.topics, -1)
        #: input -> the position it was last placed at (the next offset to read)
        self.positions: dict[str, int] = dict.fromkeys(self.topics, -1)
        self._new: list[tuple[int, int, Event]] = []
        self._new_ids: list[str] = []
        self._event_segments: dict[int, int] = {}  # segment -> newest effective timestamp
        self._id_segments: dict[int, int] = {}  # segment -> newest record time seen when written
        self._next_segment = 0
        self.store: PartitionStore | None = None
        #: customers in the store (or about to be: created since the last commit)
        self.customer_count = 0
        #: audience -> [members, holdout members], from the deltas emitted so far
        self._sizes: dict[str, list[int]] = {a.name: [0, 0] for a in audiences}
        #: timer index entries before this were read (or are in ``_dropped``)
        self._scanned = UNKNOWN
        #: timer index entries passed since the last commit, removed from the store with it
        self._dropped: list[bytes] = []
        #: customers read back for their deadlines since the last commit
        self._read = 0
        #: the engine's (late, too late) counts already handed out by :meth:`take_late`
        self._late_taken = (0, 0)
        #: repartition inputs: their progress is the raw partitions' marks, not their own
        self.merged = {topic: MergedInput(sources) for topic, sources in (merged or {}).items()}

    # -- records and time ------------------------------------------------------------------

    def process(self, event: Event) -> list[MembershipDelta]:
        engine = self.engine
        arrival = engine.arrivals
        out = engine.process(event)
        if out:
            self._count(out)
        if engine.arrivals != arrival:  # accepted (not a duplicate): remember until released
            entry = engine.last_accepted
            assert entry is not None
            self._new.append(entry)
            if event.record_id is not None:
                self._new_ids.append(event.record_id)
        source = event.source
        if source is not None:
            progress = progress_ms(event, self.lateness)
            if (
                progress > self.newest.get(source.topic, UNKNOWN)
                and source.topic not in self.merged
            ):
                self.newest[source.topic] = progress
        return out

    def process_forwarded(self, event: Event, from_ms: int) -> list[MembershipDelta]:
        """A record attributed to its customer through a link, from ``from_ms`` on
        (read from the forward topic): see :meth:`Engine.process_attributed`."""
        engine = self.engine
        arrival = engine.arrivals
        out = engine.process_attributed(event, from_ms)
        if out:
            self._count(out)
        if engine.arrivals != arrival:
            entry = engine.last_accepted
            assert entry is not None
            self._new.append(entry)
            if event.record_id is not None:
                self._new_ids.append(event.record_id)
        return out

    def decide_identity(self, now_ms: int) -> list[Forward]:
        """Move the identity table to its own clock (the identity input's progress);
        return what links attribute to a person."""
        if not self.identity_topic:
            return []
        mark = self._watermark((self.identity_topic,), now_ms)
        if mark == UNKNOWN:
            return []
        return self.table.release(mark)

    def identity_progress(self) -> tuple[int | None, bool, int]:
        """What the forward topic's mark of this task says: the progress that lets a
        customer's clock reach the table's (``None``: nothing decided yet), whether the
        table waits for nothing (its input is caught up and every item decided), and
        the identity input's position."""
        topic = self.identity_topic
        closed = self.table.closed
        newest = None if closed == UNKNOWN else closed + self.lateness
        done = self.caught_up[topic] and not self.table.waiting
        return newest, done, max(self.positions[topic], self.ends[topic])

    def mark(self, topic: str, value: bytes) -> None:
        """A progress mark read from repartition input ``topic``."""
        merged = self.merged[topic]
        merged.mark(value)
        if not self.wall_clock:  # news: every end must be confirmed again
            for other in self.merged.values():
                other.confirmed.clear()
        self._merged_progress(topic)

    def confirm_sources(self, topic: str, ends: Mapping[str, int]) -> None:
        """The broker reports ``ends`` (source key -> end offset) now for the raw
        partitions of repartition input ``topic`` last reported at their end."""
        merged = self.merged[topic]
        for key, end in ends.items():
            merged.confirm(key, end)
        self._merged_progress(topic)

    def _merged_progress(self, topic: str) -> None:
        newest = self.merged[topic].newest(trust_ends=self.wall_clock)
        if newest is not None and newest > self.newest[topic]:
            self.newest[topic] = newest
        self._check_caught_up(topic)

    def reopened(self) -> None:
        """Taken up again after a revoke (parked, not restored): every input must be
        placed again (:meth:`place`) before it counts as caught up."""
        for topic in self.caught_up:
            self.caught_up[topic] = False
            self.ends[topic] = self.positions[topic] = -1

    def place(self, topic: str, position: int, end: int) -> None:
        """Input ``topic`` will be read from ``position`` (the next offset) and the
        broker reports ``end`` as its end offset (``-1``: not known, keep the last one):
        caught up when the position has reached the end, and, for a repartition input,
        every raw partition feeding it was last reported at its end."""
        if end > self.ends[topic]:
            self.ends[topic] = end
        self.positions[topic] = position
        self._check_caught_up(topic)

    def _check_caught_up(self, topic: str) -> None:
        known = self.ends[topic]
        merged = self.merged.get(topic)
        self.caught_up[topic] = (
            known >= 0
            and self.positions[topic] >= known
            and (merged is None or merged.settled(trust_ends=self.wall_clock))
        )

    def at_end(self, topic: str, position: int) -> None:
        """Input ``topic`` was read to its end: ``position`` is the end offset."""
        self.place(topic, position, position)

    def watermark(self, now_ms: int) -> int:
        """Instants before this are final for this task (``UNKNOWN`` if none is): see
        the module docstring. A partition that has given nothing yet and is not caught
        up holds it (its first records may be old); a caught-up one holds nothing back,
        except, without the wall clock, an input that has given records (a keyed input,
        or a raw partition behind a repartition input): it still counts with its
        newest, since its producer may append records older than another topic's
        newest (only each partition's own order is certain). The identity input holds
        the identity table's clock only (:meth:`decide_identity`)."""
        return self._watermark(self._customer_topics, now_ms)

    def _watermark(self, topics: Iterable[str], now_ms: int) -> int:
        lateness = self.lateness
        wall_clock = self.wall_clock
        low = NEVER
        high = UNKNOWN
        for topic in topics:
            newest = self.newest[topic]
            if self.caught_up[topic] and (wall_clock or newest == UNKNOWN):
                if newest != UNKNOWN and newest - lateness > high:
                    high = newest - lateness
                continue
            if newest == UNKNOWN:
                return UNKNOWN
            low = min(low, newest - lateness)
        if low != NEVER:  # some partition may still give records
            return low
        if wall_clock:
            high = max(high, now_ms - self.grace)
        return high

    def advance(self, now_ms: int) -> list[MembershipDelta]:
        mark = self.watermark(now_ms)
        if mark == UNKNOWN or mark - 1 < self.engine.watermark:
            return []
        reached = self._read_due(mark, READ_DUE_PER_COMMIT - self._read)
        return self._count(self.engine.advance_to(reached - 1))

    def finish(self, until_ms: int) -> list[MembershipDelta]:
        """Bounded run: release everything and fire deadlines up to ``until_ms``."""
        self._read_due(until_ms + 1, None)
        return self._count(self.engine.finish(until_ms))

    def take_late(self) -> tuple[int, int]:
        """Records behind the clock since the last call: ``(within the allowed lateness,
        beyond it)``. The engine's own counters are state (restored with it), so after a
        rewind this starts again from the last commit's counts."""
        stats = self.engine.stats
        within, beyond = stats.late - self._late_taken[0], stats.too_late - self._late_taken[1]
        self._late_taken = (stats.late, stats.too_late)
        return within, beyond

    def _count(self, deltas: list[MembershipDelta]) -> list[MembershipDelta]:
        sizes = self._sizes
        for delta in deltas:
            size = sizes.get(delta.audience)
            if size is None:  # a removed audience's members leaving
                continue
            step = 1 if delta.op == ENTER else -1
            size[0] += step
            if delta.holdout:
                size[1] += step
        return deltas

    def sizes(self) -> dict[str, tuple[int, int]]:
        """Members and holdout members of every audience, as of the emitted deltas."""
        return {name: (size[0], size[1]) for name, size in self._sizes.items()}

    # -- customers in the store ----------------------------------------------------------------

    def _read_customer(self, customer_id: str) -> Customer | None:
        """The engine's loader: a stored customer, or ``None`` for a new one."""
        store = self.store
        key = CUSTOMER_PREFIX + customer_id.encode()
        raw = self._migrated.get(key) if self._migrated else None
        if raw is None and store is not None:
            raw = store.get(key)
        if raw is None:
            self.customer_count += 1
            return None
        return decode_customer(raw)

    def _seen_before(self, record_id: str) -> bool:
        """The engine's ``seen_before``: a record id accepted before the last commit."""
        store = self.store
        return store is not None and store.has_record_id(record_id)

    def _read_due(self, limit: int, budget: int | None) -> int:
        """Give the engine every stored customer due before ``limit`` it does not hold,
        or, past ``budget`` customers, those due before the next instant after it;
        return the instant the clock may advance to (``limit``, or that instant). The
        budget bounds the customers read back, and the deltas of one commit, when many
        deadlines pass at once (a restart after downtime); the rest follow next commit.

        Index entries are read once (``_scanned`` only grows while the task lives) and
        then dropped with the next commit: each one is passed, its customer fires now
        and is written again with its next deadline. An entry is stale when the stored
        customer's own deadline differs (it was written again since)."""
        if self.store is None or limit <= self._scanned:
            return limit
        engine = self.engine
        last = UNKNOWN
        read = 0
        for due, index_key, raw in self._due_in_store(self._scanned, limit):
            if budget is not None and read >= budget and due > last:
                limit = due  # a whole instant at a time: the next one waits
                break
            self._dropped.append(index_key)
            if raw is not None:
                engine.admit(decode_customer(raw))
                read += 1
                last = due
        self._read += read
        self._scanned = limit
        return limit

    def _due_in_store(self, start: int, limit: int) -> Iterator[tuple[int, bytes, bytes | None]]:
        """The timer index entries due in ``[start, limit)`` as ``(due, index key,
        encoded customer)``; the customer is ``None`` when the engine holds it (its
        deadline is on the heap) or the entry is stale."""
        store = self.store
        assert store is not None
        resident = self.engine.customers
        migrated = self._migrated
        entries: Iterable[tuple[int, bytes, bytes]] = store.timers(start, limit)
        if migrated:  # converted customers' deadlines are not in the store's index yet
            pending = [
                (due, key, timer_key(due, key))
                for due, key in self._migrated_timers
                if start <= due < limit
            ]
            entries = heapq.merge(entries, pending)
        for due, key, index_key in entries:
            raw = None
            if key[len(CUSTOMER_PREFIX) :].decode() not in resident:
                raw = migrated.get(key) if migrated else None
                if raw is None:
                    raw = store.get(key)
                if raw is not None and customer_due(raw) != due:
                    raw = None
            yield due, index_key, raw

    def overdue_members(self, before_ms: int) -> dict[str, int]:
        """:meth:`Engine.overdue_members` over every customer of the task: those in
        memory, and up to :data:`OVERDUE_SCAN_LIMIT` in the store only."""
        stored: list[Customer] = []
        if self.store is not None:
            for _, _, raw in self._due_in_store(self._scanned, before_ms):
                if len(stored) >= OVERDUE_SCAN_LIMIT:
                    break
                if raw is not None:
                    stored.append(decode_customer(raw))
        return self.engine.overdue_members(before_ms, stored)

    def persist(
        self,
        changes: Mapping[bytes, bytes | None],
        changelog_offset: int | None,
        *,
        keep: int | None = None,
    ) -> None:
        """Write a committed :meth:`changes` to the local store, then hold at most
        ``keep`` customers in memory (all of them when ``None``)."""
        store = self.store
        if store is None:
            return
        store.apply(changes, changelog_offset, drop_timers=self._dropped)
        self._dropped = []
        self._migrated = {}
        self._migrated_timers = []
        self._read = 0
        self.engine.forget_seen()  # the store answers for them now
        if keep is not None:
            self.engine.evict(keep)

    # -- changed definitions -----------------------------------------------------------------

    def migrate(self, history: Mapping[str, Customer]) -> list[MembershipDelta]:
        """Apply :attr:`migration` to every stored customer (see
        :mod:`streamsync.audiences.migration`): the converted customers are written
        with the next commit, in the same transaction as the returned deltas (the
        difference the changed definitions make at the clock's instant). ``history``
        holds, per customer, the facts rebuilt from the input history."""
        migration = self.migration
        self.migration = None
        if migration is None or migration.same_layout or self.store is None:
            return []
        t = self.engine.watermark - 1
        if t < UNKNOWN:  # no instant evaluated yet: no customer either
            return []
        convert = migration.convert
        migrated = self._migrated
        timers = self._migrated_timers
        out: list[MembershipDelta] = []
        for key, raw in self.store.items(CUSTOMER_PREFIX):
            old = decode_customer(raw)
            c, deltas = convert(old, t, history.get(old[CUSTOMER_ID]))
            migrated[key] = encode_customer(c)
            due = c[DUE]
            if due < NEVER:
                timers.append((due, key))
            if deltas:
                out.extend(deltas)
        timers.sort()
        return self._count(out)

    # -- state -------------------------------------------------------------------------------

    def changes(self) -> dict[bytes, bytes | None]:
        """Store keys changed since the last call; empty if nothing changed."""
        engine = self.engine
        closed = engine.watermark
        out: dict[bytes, bytes | None] = {}
        customers = engine.customers
        if self._migrated:  # the converted customers, before any changed since
            out.update(self._migrated)
        if self.identity_topic:
            out.update(self.table.changes())
        if self._record_definitions:
            out[DEFINITIONS_KEY] = definitions_record(self.audiences, LAYOUT_VERSION)
            self._record_definitions = False
        for cid in engine.take_touched():
            out[CUSTOMER_PREFIX + cid.encode()] = encode_customer(customers[cid])
        if self._new:
            live = [entry for entry in self._new if entry[0] >= closed]
            self._new = []
            for chunk, value in _sized(live, encode_events):
                segment = self._segment()
                out[segment_key(EVENTS_PREFIX, segment)] = value
                self._event_segments[segment] = max(entry[0] for entry in chunk)
        clock = engine.clock()
        max_seen = clock["max_seen"]
        if self._new_ids:
            # Stamped with the newest record time seen, which these records moved, not
            # with the inputs' progress: that can lag them by any amount (a repartition
            # input moves only with the marks that follow its records, a keyed input
            # read behind the others), and a segment dropped early lets a copy of its
            # records through as new.
            for _, value in _sized(self._new_ids, encode_ids):
                segment = self._segment()
                out[segment_key(IDS_PREFIX, segment)] = value
                self._id_segments[segment] = max_seen
            self._new_ids = []
        for segment, newest in list(self._event_segments.items()):
            if newest < closed:  # every record in it has been applied
                del self._event_segments[segment]
                out[segment_key(EVENTS_PREFIX, segment)] = None
        forget = max_seen - 2 * self.horizon
        for segment, newest in list(self._id_segments.items()):
            if newest < forget:
                del self._id_segments[segment]
                out[segment_key(IDS_PREFIX, segment)] = None
        # The clock alone moving (the wall clock while idle) needs no write: anything it
        # released or fired changed a customer or a segment, which is written.
        # Marks read from repartition inputs are kept in the meta record.
        marked = False
        for merged in self.merged.values():
            marked = marked or merged.dirty
            merged.dirty = False
        if out or marked:
            out[META_KEY] = encode_meta(
                {
                    "codec": CODEC_VERSION,
                    "fingerprint": self.fingerprint,
                    "clock": clock,
                    "newest": self.newest,
                    "next_segment": self._next_segment,
                    "event_segments": self._event_segments,
                    "id_segments": self._id_segments,
                    "merged": {topic: m.to_json() for topic, m in self.merged.items()},
                    "customers": self.customer_count,
                    "sizes": self._sizes,
                }
            )
        return out

    def _segment(self) -> int:
        segment = self._next_segment
        self._next_segment += 1
        return segment

    def load(self, store: PartitionStore, source: str) -> int:
        """Take the state in ``store`` (already brought up to date); return the number
        of customers it holds (none is read: see the module docstring). Raises
        :class:`StateError` if it was written by other definitions."""
        self.store = store
        if self.identity_topic:
            self.table.load(store.items(IDENTITY_PREFIX))
        raw = store.get(META_KEY)
        if raw is None:
            return 0
        meta: dict[str, Any] = decode_meta(raw)
        stored = store.get(DEFINITIONS_KEY)
        self._record_definitions = stored is None
        if meta.get("fingerprint") != self.fingerprint:
            if stored is None:
                raise StateError(
                    f"{source}: the stored state was written for other audience "
                    "definitions by a version that did not record them; evaluate the "
                    "old definitions once with this version (it records them), or the "
                    "new ones under a new evaluate.group_id"
                )
            layout, audiences = stored_definitions(stored)
            if layout != LAYOUT_VERSION:
                raise StateError(
                    f"{source}: the stored state was written in customer layout {layout} "
                    f"by another version of streamsync (this one reads layout "
                    f"{LAYOUT_VERSION}); evaluate under a new evaluate.group_id (state is "
                    "rebuilt from the input topics) or run the version that wrote it"
                )
            old = compile_audiences(audiences, lateness_ms=self.lateness)
            self.migration = Migration(old, self.engine.program)
            self._record_definitions = True
        clock: dict[str, int] = meta["clock"]
        closed = clock["closed"]
        buffer = [
            entry
            for _, value in store.items(EVENTS_PREFIX)
            for entry in decode_events(value)
            if entry[0] >= closed
        ]
        self.engine.restore(clock, {}, buffer, set())  # ids: asked of the store
        self._late_taken = (clock["late"], clock["too_late"])
        for topic, newest in meta["newest"].items():
            if topic in self.newest:
                self.newest[topic] = newest
        self._next_segment = meta["next_segment"]
        self._event_segments = dict(meta["event_segments"])
        self._id_segments = dict(meta["id_segments"])
        for topic, marks in meta.get("merged", {}).items():
            if topic in self.merged:
                self.merged[topic].load(marks)
        self.customer_count = meta["customers"]
        for name, size in meta["sizes"].items():
            if name in self._sizes:
                self._sizes[name] = list(size)
        return self.customer_count
