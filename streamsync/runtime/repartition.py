"""Re-keying topics that are not keyed by customer, through an internal repartition topic.

A task needs every record of its customers, so an input topic whose records are keyed by
something else (or not keyed: many producers write a null key) cannot feed the tasks
directly. As Kafka Streams does, such a topic (``repartition: true`` in its topic
configuration) is read by the same consumer group, decoded, and each event is produced,
keyed by customer, to ``<group_id>.repartition.<topic>``, which has the partition count
of the keyed input topics and is a regular task input: co-partitioned by construction.
The raw topic is never a task input, so an event is evaluated once, from the repartition
topic. The produced records and the raw topic's consumed offsets commit in the same
transaction, so a crash re-keys exactly the records whose re-keying was rolled back.

The repartition value is a compact encoding of the decoded :class:`Event` (one Kafka
record may hold several Customer.io records for different customers, so the original
bytes cannot be forwarded), which the task reads back without a second decode.

Time. A repartition partition merges many raw partitions read at different paces, so
its own newest record says nothing about the others: watermarks travel with the data,
as in Flink. In each cycle that a raw partition's progress (newest event time, and
whether it is at its end) changed, a *mark* record carrying it is written to every
repartition partition, after the events it covers. A task's repartition input then
counts as the lowest newest of all raw partitions, and as caught up only when every raw
partition was last reported at its end and the repartition partition itself is read to
its end. The marks a task has read are part of its state (the meta record), so they
agree with its committed offsets after a restore.

Purging. Once a repartition offset is committed, nothing reads the records before it
again (a restore reads the changelog, a new owner starts at the committed offset), so
:class:`Purger` deletes them, as Kafka Streams does, instead of keeping them for the
topic's retention.
"""

from __future__ import annotations

import logging
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson
from confluent_kafka import KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient

from streamsync.audiences.compiler import NEVER
from streamsync.ingest.event import Event, SourcePosition

log = logging.getLogger(__name__)

#: First byte of a repartition record's value: a re-keyed event, or a progress mark;
#: on the identity topics also a link, and a record attributed through a link (see
#: :mod:`streamsync.runtime.identity_stage`).
EVENT_TAG = 0x01
MARK_TAG = 0x02
LINK_TAG = 0x03
FORWARD_TAG = 0x04

Partitioner = Literal["consistent", "murmur2"]

#: No event time seen yet (the task's sentinel too).
_NONE = -NEVER


def repartition_topic(group_id: str, topic: str) -> str:
    """The internal topic a ``repartition: true`` input topic is re-keyed through."""
    return f"{group_id}.repartition.{topic}"


def murmur2(data: bytes) -> int:
    """Kafka's Java default partitioner hash (``Utils.murmur2``), as a signed 32-bit int."""
    m, r = 0x5BD1E995, 24
    length = len(data)
    h = (0x9747B28C ^ length) & 0xFFFFFFFF
    end = length - length % 4
    for i in range(0, end, 4):
        k = int.from_bytes(data[i : i + 4], "little")
        k = (k * m) & 0xFFFFFFFF
        k ^= k >> r
        k = (k * m) & 0xFFFFFFFF
        h = (h * m) & 0xFFFFFFFF
        h ^= k
    rest = length % 4
    if rest == 3:
        h ^= data[end + 2] << 16
    if rest >= 2:
        h ^= data[end + 1] << 8
    if rest >= 1:
        h ^= data[end]
        h = (h * m) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * m) & 0xFFFFFFFF
    h ^= h >> 15
    return h - (1 << 32) if h & 0x80000000 else h


def partition_for(key: bytes, partitions: int, partitioner: Partitioner) -> int:
    """The partition the producers of the keyed topics put ``key`` in: librdkafka's
    default (``consistent``: CRC-32) or the Java client's (``murmur2``)."""
    if partitioner == "consistent":
        return zlib.crc32(key) % partitions
    return (murmur2(key) & 0x7FFFFFFF) % partitions


def _fields(event: Event) -> list[Any]:
    return [
        event.customer_id,
        event.kind,
        event.name,
        event.timestamp_ms,
        event.record_id,
        event.properties,
        event.traits,
        event.identifiers,
        event.id_kind,
        event.received_ms,
    ]


def _event(fields: list[Any], source: SourcePosition | None) -> Event:
    cid, kind, name, ts, rid, properties, traits, identifiers, id_kind, *rest = fields
    received = rest[0] if rest else None  # written before received times were carried
    return Event(
        cid, kind, name, ts, rid, properties, traits, identifiers, source, id_kind, received
    )


def encode_event(event: Event) -> bytes:
    return bytes((EVENT_TAG,)) + orjson.dumps(_fields(event))


def decode_event(value: bytes, source: SourcePosition | None) -> Event:
    return _event(orjson.loads(value[1:]), source)


def encode_link(linked_id: str, at_ms: int, event: Event) -> bytes:
    """A link of ``linked_id`` to ``event``'s customer at ``at_ms`` (``event``: the
    record that links, without its properties: only who, when and which record)."""
    return bytes((LINK_TAG,)) + orjson.dumps(
        [linked_id, at_ms, event.customer_id, event.id_kind, event.record_id, event.kind]
    )


def decode_link(value: bytes) -> tuple[str, int, str, str, str | None, str]:
    """``(linked id, at, person, person's id kind, record id, record kind)``."""
    xid, at, person, id_kind, rid, kind = orjson.loads(value[1:])
    return str(xid), int(at), str(person), str(id_kind), rid, str(kind)


def encode_forward(event: Event, from_ms: int) -> bytes:
    """A record attributed to ``event.customer_id`` through linked id ``event.via`` from
    instant ``from_ms`` on."""
    return bytes((FORWARD_TAG,)) + orjson.dumps([from_ms, event.via, _fields(event)])


def decode_forward(value: bytes, source: SourcePosition) -> tuple[Event, int]:
    from_ms, via, fields = orjson.loads(value[1:])
    event = _event(fields, source)
    event.via = via
    return event, int(from_ms)


def source_key(topic: str, partition: int) -> str:
    return f"{topic}[{partition}]"


def parse_source_key(key: str) -> tuple[str, int]:
    """``(topic, partition)`` of a :func:`source_key`."""
    topic, _, rest = key.rpartition("[")
    return topic, int(rest[:-1])


def encode_mark(
    topic: str, partition: int, newest: int, caught_up: bool, position: int = -1
) -> bytes:
    """A progress mark of raw partition ``topic[partition]``: its newest event time,
    whether it was read to its end, and (at its end) the offset of that end."""
    key = source_key(topic, partition)
    return bytes((MARK_TAG,)) + orjson.dumps([key, newest, caught_up, position])


@dataclass
class MergedInput:
    """What a task knows of the raw partitions feeding one repartition input: each one's
    last mark (newest event time, at its end, the offset of that end). Part of the
    task's state, except :attr:`confirmed`."""

    sources: frozenset[str]
    marks: dict[str, tuple[int, bool, int]] = field(default_factory=dict)
    #: a mark arrived since the task last wrote its meta record
    dirty: bool = False
    #: raw partitions at their end whose end the broker confirmed after the task's
    #: latest records were read (see :meth:`newest`)
    confirmed: set[str] = field(default_factory=set)

    def mark(self, value: bytes) -> None:
        key, newest, caught_up, *rest = orjson.loads(value[1:])
        position = int(rest[0]) if rest else -1
        old = self.marks.get(key)
        if old is not None:
            newest = max(newest, old[0])  # a re-read raw partition reports less at first
        self.marks[key] = (newest, bool(caught_up), position)
        self.confirmed.discard(key)
        self.dirty = True

    def empty_at_end(self) -> list[tuple[str, int]]:
        """``(source key, end offset)`` of the raw partitions last reported at their end
        without having given a record: the only ones whose end the broker must confirm
        (see :meth:`newest`)."""
        return [(key, mark[2]) for key, mark in self.marks.items() if mark[1] and mark[0] == _NONE]

    def confirm(self, key: str, end: int) -> None:
        """The broker reports ``end`` as raw partition ``key``'s end now: its mark's
        claim to be at its end holds if nothing was appended since."""
        mark = self.marks.get(key)
        if mark is not None and mark[1] and 0 <= end <= mark[2]:
            self.confirmed.add(key)
        else:
            self.confirmed.discard(key)

    def newest(self, *, trust_ends: bool) -> int | None:
        """The progress of the merged input: the lowest newest event time of the raw
        partitions that may still give records; ``None`` while one of those has not
        reported any. Live (``trust_ends``) a raw partition reported at its end holds
        nothing back, as a keyed input at its end does not. Without the wall clock
        (replaying history exactly) it is treated as a keyed input is: one that has
        given records still counts with its newest, since only each partition's own
        order is certain (a producer's batch for it may be appended after records of
        other partitions produced later, so the broker confirming its end proves
        nothing about them), and one that has given nothing holds nothing back once
        the broker confirmed its end after the task's latest records were read
        (:meth:`confirm`). When all hold nothing back, the newest of them all."""
        low: int | None = None
        high: int | None = None
        confirmed = self.confirmed
        for key in self.sources | self.marks.keys():
            mark = self.marks.get(key)
            if mark is None:
                return None
            newest, caught_up, _ = mark
            if caught_up and (trust_ends or (newest == _NONE and key in confirmed)):
                if newest != _NONE and (high is None or newest > high):
                    high = newest
                continue
            if newest == _NONE:
                return None
            low = newest if low is None else min(low, newest)
        return high if low is None else low

    def settled(self, *, trust_ends: bool) -> bool:
        """Every raw partition was last reported at its end and, unless ``trust_ends``,
        each that has given nothing had its end confirmed (see :meth:`newest`)."""
        return self.caught_up() and (
            trust_ends or all(m[0] != _NONE or k in self.confirmed for k, m in self.marks.items())
        )

    def caught_up(self) -> bool:
        """Every raw partition was last reported at its end."""
        return all(
            key in self.marks and self.marks[key][1] for key in self.sources | self.marks.keys()
        )

    def to_json(self) -> dict[str, list[Any]]:
        return {key: list(mark) for key, mark in self.marks.items()}

    def load(self, data: Mapping[str, list[Any]]) -> None:
        self.marks = {key: (int(v[0]), bool(v[1]), int(v[2])) for key, v in data.items()}


class Repartitioner:
    """The re-keying stage of one process: where each event goes, and the progress of
    the raw partitions this process reads, reported as marks once per cycle."""

    def __init__(
        self,
        targets: Mapping[str, str],
        partitions: int,
        raw_partitions: Mapping[str, int],
        partitioner: Partitioner,
    ) -> None:
        #: raw topic -> repartition topic
        self.targets = dict(targets)
        self.partitions = partitions
        self.partitioner: Partitioner = partitioner
        self.raw_partitions = dict(raw_partitions)
        self._newest: dict[tuple[str, int], int] = {}
        #: raw partition -> the offset of its end when read to it, else -1
        self._end: dict[tuple[str, int], int] = {}
        self._sent: dict[tuple[str, int], tuple[int, bool, int]] = {}
        self._pending: dict[tuple[str, int], tuple[int, bool, int]] = {}

    def sources(self, raw: str) -> frozenset[str]:
        return frozenset(source_key(raw, p) for p in range(self.raw_partitions[raw]))

    def route(self, event: Event) -> tuple[bytes, int, bytes]:
        """Key, repartition partition and value of ``event``."""
        key = event.customer_id.encode()
        return key, partition_for(key, self.partitions, self.partitioner), encode_event(event)

    def seen(self, raw: str, partition: int, timestamp_ms: int | None) -> None:
        tp = (raw, partition)
        self._end[tp] = -1
        if timestamp_ms is not None and timestamp_ms > self._newest.get(tp, _NONE):
            self._newest[tp] = timestamp_ms
        elif tp not in self._newest:
            self._newest[tp] = _NONE

    def at_end(self, raw: str, partition: int, position: int) -> None:
        """Raw partition ``raw[partition]`` was read to its end, offset ``position``."""
        tp = (raw, partition)
        self._end[tp] = position
        self._newest.setdefault(tp, _NONE)

    def marks(self) -> Iterator[tuple[str, int, bytes]]:
        """(repartition topic, partition, value) of the marks this cycle must write."""
        self._pending.clear()
        for tp, newest in self._newest.items():
            end = self._end.get(tp, -1)
            state = (newest, end >= 0, end)
            if self._sent.get(tp) == state:
                continue
            self._pending[tp] = state
            value = encode_mark(tp[0], tp[1], *state)
            target = self.targets[tp[0]]
            for partition in range(self.partitions):
                yield target, partition, value

    def committed(self) -> None:
        self._sent.update(self._pending)
        self._pending.clear()

    def reset(self, partitions: list[tuple[str, int]] | None = None) -> None:
        """Forget the progress of ``partitions`` (all when ``None``): after an abort
        they are read again from the committed offsets, after a revoke someone else
        reads them."""
        self._pending.clear()
        if partitions is None:
            self._newest.clear()
            self._end.clear()
            self._sent.clear()
            return
        for tp in partitions:
            self._newest.pop(tp, None)
            self._end.pop(tp, None)
            self._sent.pop(tp, None)


class Purger:
    """Deletes the records of repartition topics that this process has consumed and
    committed, at most once per interval, as Kafka Streams does after a commit
    (``repartition.purge.interval.ms``, default 30 s).

    Why: the repartition topics are internal and grow with every input record; once an
    offset is committed nothing reads the records before it again (a crash resumes from
    it, a restore reads the changelog), so keeping them until retention only costs disk.
    Only offsets passed to :meth:`committed` are purged, and only of :attr:`topics`: a
    user's own topics are never touched. Purging is housekeeping: requests are not waited
    for (:meth:`tick` looks at the previous one's results), and a failure is logged once
    per kind, never raised; the offsets are asked for again on the next interval.
    """

    def __init__(
        self,
        admin: AdminClient,
        topics: Iterable[str],
        interval_s: float,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.admin = admin
        self.topics = frozenset(topics)
        self.interval_s = interval_s
        self._clock = clock
        self._due = clock() + interval_s
        #: (topic, partition) -> committed offset not yet purged up to
        self._pending: dict[tuple[str, int], int] = {}
        self._in_flight: dict[TopicPartition, Future[Any]] = {}
        self._warned: set[str] = set()
        #: (topic, partition) -> the low watermark the last successful purge reported
        self.low_watermarks: dict[tuple[str, int], int] = {}

    def committed(self, offsets: Mapping[tuple[str, int], int]) -> None:
        """Remember the offsets a transaction has just committed (other topics ignored)."""
        pending = self._pending
        for tp, offset in offsets.items():
            if tp[0] in self.topics and offset > pending.get(tp, 0):
                pending[tp] = offset

    def tick(self) -> None:
        """Check the request in flight; send the next one when the interval has passed
        and none is in flight (one request at a time, all partitions in it)."""
        if self._in_flight:
            if not all(future.done() for future in self._in_flight.values()):
                return
            self._check()
        if not self._pending:
            return
        now = self._clock()
        if now < self._due:
            return
        self._due = now + self.interval_s
        offsets = [TopicPartition(t, p, o) for (t, p), o in self._pending.items()]
        self._pending = {}
        try:
            self._in_flight = self.admin.delete_records(offsets)
        except Exception as exc:  # housekeeping never stops the service
            self._failed(offsets, exc)

    def settle(self, timeout_s: float) -> None:
        """Wait up to ``timeout_s`` for the request in flight and check its results."""
        if self._in_flight:
            wait_futures(list(self._in_flight.values()), timeout_s)
            if all(future.done() for future in self._in_flight.values()):
                self._check()

    def _check(self) -> None:
        done, self._in_flight = self._in_flight, {}
        for tp, future in done.items():
            exc = future.exception()
            if exc is None:
                self.low_watermarks[(tp.topic, tp.partition)] = future.result().low_watermark
            else:
                self._failed([tp], exc)

    def _failed(self, offsets: list[TopicPartition], exc: BaseException) -> None:
        error = exc.args[0] if isinstance(exc, KafkaException) and exc.args else None
        kind = error.name() if isinstance(error, KafkaError) else type(exc).__name__
        for tp in offsets:  # asked for again next time, with any newer offset
            key = (tp.topic, tp.partition)
            self._pending[key] = max(tp.offset, self._pending.get(key, 0))
        if kind not in self._warned:
            self._warned.add(kind)
            log.warning(
                "cannot purge consumed records of repartition topic %s[%d] (%s); "
                "they stay until the topic's retention removes them (retried; further "
                "%s failures are not reported)",
                offsets[0].topic,
                offsets[0].partition,
                error.str() if isinstance(error, KafkaError) else exc,
                kind,
            )
