"""What a running evaluate has committed, read from Kafka without touching it: the input
to ``streamsync audiences diff``.

A restart with changed definitions migrates each task at its own clock (the ``closed``
instant of the task's latest changelog meta record) and compares with the membership it
had committed (the membership table). To predict exactly that, per task partition
``p``, this reads:

* the latest meta record of changelog partition ``p`` (a meta is written with every
  commit, so the latest is among the last records: the tail is read first, the whole
  partition only when the tail holds none);
* the input records of task ``p`` - partition ``p`` of every keyed input topic, and the
  events of re-keyed topics whose customer the repartition partitioner puts in ``p`` -
  from the oldest offset the broker holds, merged in record-time order (an
  approximation of the order evaluate consumed them in), with the coverage of each
  input partition (:class:`~streamsync.runtime.history.Coverage`);
* the membership table, whose members are placed in the task their customer's records
  are in (the table is partitioned like the deltas, not like the inputs).

Everything is read with one assign-only ``read_committed`` consumer per topic group
(:class:`~streamsync.kafka.reader.TopicReader`): no consumer group is joined, nothing is
committed or written, so it runs from a laptop against a production cluster.
"""

from __future__ import annotations

import heapq
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from confluent_kafka import Message

from streamsync.audiences.definition import Audience
from streamsync.audiences.diff import REBUILT, DiffBuilder, DiffReport
from streamsync.config import AppConfig
from streamsync.deltas.membership import MemberKey, MembersProgress, read_members
from streamsync.errors import UserMistake
from streamsync.ingest.decoder import Decoder, record_time_ms
from streamsync.ingest.event import Event, Skipped, SourcePosition
from streamsync.ingest.registry_client import configured_registry
from streamsync.kafka.health import KafkaUnavailable
from streamsync.kafka.reader import TIMEOUT, TopicReader
from streamsync.runtime.history import Coverage, uncovered
from streamsync.runtime.repartition import partition_for
from streamsync.runtime.task import UNKNOWN
from streamsync.runtime.topics import plan_topics
from streamsync.state.codec import META_KEY, decode_meta

#: Changelog offsets read first, looking for the latest meta record of a partition.
_TAIL = 256
_PROGRESS_EVERY_S = 2.0


@dataclass
class TaskInput:
    """What one task partition holds."""

    partition: int
    #: the task's input events, in record-time order
    events: list[Event] = field(default_factory=list)
    #: the keyed inputs' partitions read, with how far back they go
    coverage: list[Coverage] = field(default_factory=list)
    #: ``closed`` of the latest changelog meta record (``None``: none found)
    closed: int | None = None

    @property
    def newest_ms(self) -> int | None:
        return max((e.timestamp_ms for e in self.events), default=None)


@dataclass
class Snapshot:
    """What a read found (see the module docstring)."""

    changelog: str
    changelog_exists: bool
    tasks: dict[int, TaskInput]
    #: current members (the membership table)
    members: set[MemberKey]
    members_topic: str
    #: customer id -> the task partition their records are in
    placed: dict[str, int]
    #: every input partition read (keyed and re-keyed)
    coverage: list[Coverage]
    rekeyed: list[str]
    records_read: int = 0
    undecodable: int = 0
    #: changelog partitions whose meta record could not be decoded
    unreadable_meta: list[int] = field(default_factory=list)


class _Clock:
    """Progress lines at most every few seconds, and the one deadline of the read."""

    def __init__(self, timeout_s: float, progress: Callable[[str], None] | None) -> None:
        self.started = time.monotonic()
        self.deadline = self.started + timeout_s
        self.timeout_s = timeout_s
        self.progress = progress
        self.last = self.started

    def left(self) -> float:
        return max(0.0, self.deadline - time.monotonic())

    def say(self, line: str, *, force: bool = False) -> None:
        now = time.monotonic()
        if self.progress is not None and (force or now - self.last >= _PROGRESS_EVERY_S):
            self.last = now
            self.progress(f"{line} ({now - self.started:.0f}s)")

    def timed_out(self, what: str) -> KafkaUnavailable:
        return KafkaUnavailable(
            f"timed out reading {what} after {self.timeout_s:.0f}s; nothing predicted "
            "(raise --timeout)"
        )


def read_snapshot(
    config: AppConfig,
    *,
    timeout_s: float,
    progress: Callable[[str], None] | None = None,
) -> Snapshot:
    """Read what ``config``'s evaluate committed (see the module docstring). Raises
    :class:`~streamsync.runtime.errors.MissingTopics` for missing input topics,
    :class:`~streamsync.deltas.membership.MembersTopicMissing` without a membership
    table and :class:`KafkaUnavailable` when the cluster does not answer in time."""
    settings = config.evaluate
    if settings is None:
        raise UserMistake("the configuration has no evaluate section (evaluate.audiences)")
    clock = _Clock(timeout_s, progress)
    reader = TopicReader(config, clock.deadline, name="diff")
    try:
        counts = reader.topics()
        plan = plan_topics(config, counts)
        names = plan.names

        def members_progress(at: MembersProgress) -> None:
            clock.say(f"{at.records_read:,} records of {names.members} read")

        table = read_members(config, timeout_s=clock.left(), progress=members_progress)
        if not table.complete:
            raise clock.timed_out(names.members)
        tasks = {p: TaskInput(p) for p in range(plan.partitions)}
        snapshot = Snapshot(
            changelog=names.changelog,
            changelog_exists=names.changelog in counts,
            tasks=tasks,
            members=set(table.members),
            members_topic=names.members,
            placed={},
            coverage=[],
            rekeyed=sorted(names.rekeyed),
        )
        if snapshot.changelog_exists:
            _read_clocks(reader, snapshot, clock)
        _read_inputs(reader, config, snapshot, counts, plan.partitions, clock)
        return snapshot
    finally:
        reader.close()


def _read_clocks(reader: TopicReader, snapshot: Snapshot, clock: _Clock) -> None:
    """Each changelog partition's latest ``closed``: from the tail, else the whole."""
    tasks = snapshot.tasks
    found: dict[int, int] = {}

    def handle(message: Message) -> bool:
        if message.key() != META_KEY:
            return False
        partition = message.partition() or 0
        value = message.value()
        if value is None:
            return False
        try:
            found[partition] = int(decode_meta(value)["clock"]["closed"])
        except (ValueError, KeyError, TypeError, EOFError):
            if partition not in snapshot.unreadable_meta:
                snapshot.unreadable_meta.append(partition)
        return False

    def tick() -> None:
        clock.say(f"reading {snapshot.changelog} for the task clocks")

    partitions = [(snapshot.changelog, p) for p in tasks]
    if reader.read(partitions, handle, tick, last=_TAIL) == TIMEOUT:
        raise clock.timed_out(snapshot.changelog)
    rest = [(snapshot.changelog, p) for p in tasks if p not in found]
    if rest and reader.read(rest, handle, tick) == TIMEOUT:
        raise clock.timed_out(snapshot.changelog)
    for partition, closed in found.items():
        tasks[partition].closed = closed


def _read_inputs(
    reader: TopicReader,
    config: AppConfig,
    snapshot: Snapshot,
    counts: dict[str, int],
    partitions: int,
    clock: _Clock,
) -> None:
    """Every input record, decoded as evaluate decodes it, into its task."""
    settings = config.evaluate
    assert settings is not None
    # The registry evaluate decodes with (a Schema Registry or a folder of .avsc files).
    registry = configured_registry(config.ingest)
    topics = config.ingest.topics
    decoders = {t.name: Decoder(t, registry) for t in topics}
    rekeyed = {t.name for t in topics if t.repartition}
    wanted = [(t.name, p) for t in topics for p in range(counts[t.name])]
    offsets = reader.offsets(wanted)
    #: (topic, raw partition, task) -> (record time, event), in offset order
    streams: dict[tuple[str, int, int], list[tuple[int, Event]]] = {}
    first: dict[tuple[str, int], int] = {}
    placed = snapshot.placed
    partitioner = settings.repartition_partitioner

    def handle(message: Message) -> bool:
        snapshot.records_read += 1
        topic = message.topic() or ""
        raw = message.partition() or 0
        record_ms = record_time_ms(message)
        source = SourcePosition(topic, raw, message.offset() or 0)
        for outcome in decoders[topic].decode_all(
            message.value(), message.key(), source, record_ms
        ):
            if not isinstance(outcome, Event):
                if not isinstance(outcome, Skipped):
                    snapshot.undecodable += 1
                continue
            cid = outcome.customer_id
            task = partition_for(cid.encode(), partitions, partitioner) if topic in rekeyed else raw
            placed.setdefault(cid, task)
            streams.setdefault((topic, raw, task), []).append(
                (-1 if record_ms is None else record_ms, outcome)
            )
            ts = outcome.timestamp_ms
            if ts < first.get((topic, raw), ts + 1):
                first[(topic, raw)] = ts
        return False

    def tick() -> None:
        clock.say(f"{snapshot.records_read:,} input records read")

    if reader.read(wanted, handle, tick) == TIMEOUT:
        raise clock.timed_out("the input topics")
    for (topic, raw), (low, high) in offsets.items():
        cover = Coverage(topic, raw, low, high, first.get((topic, raw)))
        snapshot.coverage.append(cover)
        if topic not in rekeyed and raw in snapshot.tasks:
            snapshot.tasks[raw].coverage.append(cover)
    by_task: dict[int, list[list[tuple[int, Event]]]] = {}
    for (_, _, task), items in streams.items():
        by_task.setdefault(task, []).append(items)
    for task, lists in by_task.items():
        merged = heapq.merge(*lists, key=lambda item: item[0])
        snapshot.tasks[task].events = [event for _, event in merged]


def predict(
    snapshot: Snapshot,
    current: Sequence[Audience],
    new: Sequence[Audience],
    *,
    allowed_lateness_ms: int,
) -> DiffReport:
    """What a restart with ``new`` definitions emits, per task partition at its clock
    (see :mod:`streamsync.audiences.diff`), from what ``snapshot`` read."""
    builder = DiffBuilder(current, new, allowed_lateness_ms=allowed_lateness_ms)
    told: dict[int | None, list[MemberKey]] = {}
    for key in snapshot.members:
        told.setdefault(snapshot.placed.get(key[1]), []).append(key)
    notes: list[str] = []
    instants: list[int] = []
    fallback: list[int] = []
    changes = builder.migration.changes
    for number, task in sorted(snapshot.tasks.items()):
        members = told.get(number, [])
        if task.closed is not None and task.closed <= UNKNOWN:
            builder.keep(members)  # no instant evaluated: evaluate migrates nothing
            continue
        if task.closed is None:
            until = task.newest_ms
            if until is None:
                builder.keep(members)
                continue
            fallback.append(number)
        else:
            until = task.closed - 1
        instants.append(until)
        builder.add(members, builder.evaluate(task.events, until_ms=until))
        for name, change in changes.items():
            if change.kind not in REBUILT:
                continue
            if change.history:
                for line in uncovered(change, task.coverage, snapshot.rekeyed, until):
                    builder.note(name, line)
            else:
                for line in uncovered(change, task.coverage, [], until):
                    builder.note(name, f"this prediction reads the topics: {line}")
    unplaced = told.get(None, [])
    builder.add(unplaced, set())
    for name, count in Counter(a for a, _ in unplaced if changes.get(a)).items():
        if changes[name].kind in REBUILT:
            builder.note(
                name,
                f"{count:,} current member(s) have no records left in the input topics: "
                "counted as leaving, evaluate decides from its state",
            )
    if not snapshot.changelog_exists:
        notes.append(
            f"changelog {snapshot.changelog} does not exist: each partition's newest record "
            "stands for its clock"
        )
    elif fallback:
        listed = ", ".join(str(p) for p in fallback)
        notes.append(
            f"no clock in {snapshot.changelog} for partition(s) {listed}: their newest "
            "record stands for it"
        )
    if snapshot.unreadable_meta:
        listed = ", ".join(str(p) for p in sorted(snapshot.unreadable_meta))
        notes.append(f"meta records of {snapshot.changelog} partition(s) {listed} unreadable")
    if snapshot.undecodable:
        notes.append(f"{snapshot.undecodable:,} input record(s) could not be decoded (skipped)")
    topics = ", ".join(sorted({c.topic for c in snapshot.coverage}))
    source = (
        f"{snapshot.members_topic} ({len(snapshot.members):,} memberships), "
        f"{snapshot.records_read:,} records of {topics}"
    )
    return builder.report(source, instants, notes)


__all__ = ["Snapshot", "TaskInput", "predict", "read_snapshot"]
