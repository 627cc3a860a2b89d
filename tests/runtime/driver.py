"""An in-process driver of the evaluate runtime, without a broker (as Kafka Streams'
TopologyTestDriver): the real router, task manager, tasks, collector and checkpoint
(:meth:`streamsync.runtime.app.Runtime.build`, exactly as ``Application.run`` wires
them) on in-memory stand-ins of the consumer, the transactional producer and the
restore consumer.

The stand-ins keep one log per topic partition (:class:`FakeCluster`). What the
producer writes inside a transaction is staged and appended to the logs only when the
transaction commits, with the consumed offsets; an abort drops it. The consumer reads
the input logs from its positions and reports each partition's end once it reaches it
(``enable.partition.eof``); a rewind seeks it back to the committed offsets, and the
restore consumer reads the changelog log, so a rewind or a reassignment restores the
tasks from what was committed, as against a broker.

A test pipes records (:meth:`EvaluateDriver.pipe`), consumer errors
(:meth:`EvaluateDriver.pipe_error`), moves the wall clock (:meth:`EvaluateDriver.tick`),
runs a turn of the loop (:meth:`EvaluateDriver.process`: route what is pending, move
the tasks' time on), commits (:meth:`EvaluateDriver.commit`, optionally failing it with
:meth:`EvaluateDriver.fail_next_commit`) and reads what was committed
(:meth:`EvaluateDriver.deltas`, :meth:`EvaluateDriver.dead_letters`).
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import (
    OFFSET_BEGINNING,
    OFFSET_INVALID,
    TIMESTAMP_CREATE_TIME,
    TIMESTAMP_NOT_AVAILABLE,
    KafkaError,
    KafkaException,
    TopicPartition,
)

from streamsync.audiences.definition import Audience
from streamsync.audiences.loader import load_audiences
from streamsync.config import AppConfig
from streamsync.dead_letter import REASON_HEADER
from streamsync.deltas.codec import decode_json
from streamsync.deltas.config import DeltasConfig
from streamsync.deltas.record import MembershipDelta
from streamsync.ingest.config import IngestConfig, TopicConfig
from streamsync.ingest.decoder import Decoder
from streamsync.ingest.outcomes import TopicStats
from streamsync.kafka.config import KafkaConfig
from streamsync.kafka.health import ClientHealth
from streamsync.runtime.app import Runtime
from streamsync.runtime.checkpoint import Watchdog
from streamsync.runtime.config import EvaluateConfig
from streamsync.runtime.stats import EvaluateStats
from streamsync.runtime.task import Task
from streamsync.runtime.telemetry import EvaluateTelemetry, NoTelemetry
from streamsync.runtime.topics import TopicPlan, plan_topics

Headers = list[tuple[str, bytes | str | None]]


class FakeMessage:
    """A ``confluent_kafka.Message``'s accessors over plain fields."""

    __slots__ = ("_error", "_headers", "_key", "_offset", "_partition", "_timestamp", "_topic",
                 "_value")  # fmt: skip

    def __init__(
        self,
        topic: str | None,
        partition: int | None,
        offset: int | None,
        key: bytes | None = None,
        value: bytes | None = None,
        *,
        timestamp_ms: int | None = None,
        headers: Headers | None = None,
        error: KafkaError | None = None,
    ) -> None:
        self._topic, self._partition, self._offset = topic, partition, offset
        self._key, self._value = key, value
        self._timestamp = timestamp_ms
        self._headers = headers
        self._error = error

    def error(self) -> KafkaError | None:
        return self._error

    def topic(self) -> str | None:
        return self._topic

    def partition(self) -> int | None:
        return self._partition

    def offset(self) -> int | None:
        return self._offset

    def key(self) -> bytes | None:
        return self._key

    def value(self) -> bytes | None:
        return self._value

    def headers(self) -> Headers | None:
        return self._headers

    def timestamp(self) -> tuple[int, int]:
        if self._timestamp is None:
            return TIMESTAMP_NOT_AVAILABLE, -1
        return TIMESTAMP_CREATE_TIME, self._timestamp


@dataclass
class FakeCluster:
    """Topic partitions as lists of committed records, and the group's offsets."""

    partitions: dict[str, int] = field(default_factory=dict)
    logs: dict[tuple[str, int], list[FakeMessage]] = field(default_factory=dict)
    committed: dict[tuple[str, int], int] = field(default_factory=dict)

    def create(self, topic: str, partitions: int) -> None:
        self.partitions.setdefault(topic, partitions)

    def append(
        self,
        topic: str,
        partition: int,
        key: bytes | None,
        value: bytes | None,
        *,
        timestamp_ms: int | None = None,
        headers: Headers | None = None,
    ) -> FakeMessage:
        if not 0 <= partition < self.partitions[topic]:
            raise ValueError(f"{topic} has no partition {partition}")
        log = self.logs.setdefault((topic, partition), [])
        message = FakeMessage(
            topic, partition, len(log), key, value, timestamp_ms=timestamp_ms, headers=headers
        )
        log.append(message)
        return message

    def log(self, topic: str, partition: int) -> list[FakeMessage]:
        return self.logs.get((topic, partition), [])

    def read(self, topic: str) -> list[FakeMessage]:
        """Every committed record of ``topic``, partition by partition."""
        return [m for p in range(self.partitions.get(topic, 0)) for m in self.log(topic, p)]


def _error(code: int, reason: str = "", *, fatal: bool = False) -> KafkaException:
    return KafkaException(KafkaError(code, reason or None, fatal=fatal))


class FakeProducer:
    """A transactional producer: writes are staged in the open transaction and reach
    the cluster only when it commits (delivery callbacks are served then)."""

    def __init__(self, cluster: FakeCluster) -> None:
        self.cluster = cluster
        self.in_txn = False
        self._staged: list[tuple[str, int, bytes | None, bytes | None, Headers | None, Any]] = []
        self._offsets: list[TopicPartition] = []
        #: raised by the next ``commit_transaction`` (then cleared)
        self.fail_commit: KafkaException | None = None
        self.commits = 0
        self.aborts = 0

    def init_transactions(self, timeout: float) -> None:
        pass

    def begin_transaction(self) -> None:
        if self.in_txn:
            raise _error(KafkaError._STATE, "a transaction is already open")
        self.in_txn = True

    def produce(
        self,
        topic: str,
        value: bytes | None = None,
        key: bytes | None = None,
        partition: int | None = None,
        headers: Headers | None = None,
        on_delivery: Callable[[KafkaError | None, Any], None] | None = None,
    ) -> None:
        if not self.in_txn:
            raise _error(KafkaError._STATE, "produce outside a transaction")
        count = self.cluster.partitions[topic]
        if partition is None:
            partition = zlib.crc32(key) % count if key is not None else 0
        self._staged.append((topic, partition, key, value, headers, on_delivery))

    def poll(self, timeout: float = 0) -> int:
        return 0

    def flush(self, timeout: float = 0) -> int:
        return 0

    def send_offsets_to_transaction(
        self, offsets: list[TopicPartition], metadata: Any, timeout: float
    ) -> None:
        if not self.in_txn:
            raise _error(KafkaError._STATE, "offsets outside a transaction")
        self._offsets.extend(offsets)

    def commit_transaction(self, timeout: float = 0) -> None:
        if self.fail_commit is not None:
            error, self.fail_commit = self.fail_commit, None
            raise error
        for topic, partition, key, value, headers, on_delivery in self._staged:
            message = self.cluster.append(topic, partition, key, value, headers=headers)
            if on_delivery is not None:
                on_delivery(None, message)
        for tp in self._offsets:
            self.cluster.committed[(tp.topic, tp.partition)] = tp.offset
        self._drop()
        self.commits += 1

    def abort_transaction(self, timeout: float = 0) -> None:
        self._drop()
        self.aborts += 1

    def _drop(self) -> None:
        self._staged.clear()
        self._offsets.clear()
        self.in_txn = False


@dataclass(frozen=True)
class FailedOffset:
    """A partition of a ``committed()`` answer that carries an error (librdkafka's
    ``TopicPartition`` cannot be given one from Python)."""

    topic: str
    partition: int
    offset: int
    error: KafkaError


class FakeConsumer:
    """The group consumer: reads its assignment from the cluster's logs. Error messages
    piped with :meth:`push` come first in the next :meth:`take`."""

    def __init__(self, cluster: FakeCluster) -> None:
        self.cluster = cluster
        self._assignment: list[TopicPartition] = []
        self.positions: dict[tuple[str, int], int] = {}
        #: the position at which the end of each partition was last reported
        self._eof_at: dict[tuple[str, int], int] = {}
        #: the end offset reported by each partition's last fetch that returned records
        self._fetched_end: dict[tuple[str, int], int] = {}
        #: topics whose fetches have not come back yet (see :meth:`hold`)
        self.held: set[str] = set()
        self._pushed: list[FakeMessage] = []
        #: how many more :meth:`committed` answers mark every partition
        #: ``COORDINATOR_LOAD_IN_PROGRESS`` (a coordinator restarted and still loading)
        self.coordinator_loading = 0
        #: :meth:`committed` times out (no coordinator answers) while this is set
        self.coordinator_away = False
        #: the partitions each :meth:`committed` call asked for
        self.committed_asked: list[list[tuple[str, int]]] = []

    def assign(self, partitions: list[TopicPartition]) -> None:
        self._assignment = list(partitions)
        for tp in partitions:
            key = (tp.topic, tp.partition)
            self.positions[key] = self.cluster.committed.get(key, 0)
            self._eof_at.pop(key, None)

    def assignment(self) -> list[TopicPartition]:
        return list(self._assignment)

    def committed(self, partitions: list[TopicPartition], timeout: float = 0) -> list[Any]:
        """As librdkafka answers: the offsets; a raised ``_TIMED_OUT`` while the
        coordinator is away; partitions without offsets, each with its error, while it
        loads."""
        self.committed_asked.append([(tp.topic, tp.partition) for tp in partitions])
        if self.coordinator_away:
            raise _error(KafkaError._TIMED_OUT, "Failed to get committed offsets")
        if self.coordinator_loading > 0:
            self.coordinator_loading -= 1
            loading = KafkaError(KafkaError.COORDINATOR_LOAD_IN_PROGRESS)
            return [
                FailedOffset(tp.topic, tp.partition, OFFSET_INVALID, loading) for tp in partitions
            ]
        return [
            TopicPartition(
                tp.topic,
                tp.partition,
                self.cluster.committed.get((tp.topic, tp.partition), OFFSET_INVALID),
            )
            for tp in partitions
        ]

    def seek(self, tp: TopicPartition) -> None:
        key = (tp.topic, tp.partition)
        self.positions[key] = 0 if tp.offset == OFFSET_BEGINNING else tp.offset
        self._eof_at.pop(key, None)

    def consumer_group_metadata(self) -> object:
        return object()

    def get_watermark_offsets(
        self, tp: TopicPartition, timeout: float = 0, cached: bool = False
    ) -> tuple[int, int]:
        """Asked of the broker: the log's end; ``cached``: what the last fetch said."""
        key = (tp.topic, tp.partition)
        if cached:
            end = self._fetched_end.get(key, OFFSET_INVALID)
            return (OFFSET_INVALID if end == OFFSET_INVALID else 0), end
        return 0, len(self.cluster.log(*key))

    def hold(self, topic: str) -> None:
        """The fetches of ``topic`` do not come back until :meth:`release` (a slow
        broker, a busy network): its records stay unread, however long the wait."""
        self.held.add(topic)

    def release(self, topic: str) -> None:
        self.held.discard(topic)

    def push(self, message: FakeMessage) -> None:
        self._pushed.append(message)

    def take(self, limit: int = 2000) -> list[FakeMessage]:
        """Up to ``limit`` records from the positions, each partition's end once."""
        out, self._pushed = self._pushed, []
        for tp in self._assignment:
            if tp.topic in self.held:
                continue
            key = (tp.topic, tp.partition)
            log = self.cluster.log(*key)
            position = self.positions[key]
            batch = log[position : position + max(0, limit - len(out))]
            if batch:  # as librdkafka: the cached end moves with records fetched
                self._fetched_end[key] = len(log)
            out.extend(batch)
            position += len(batch)
            self.positions[key] = position
            if position == len(log) and self._eof_at.get(key) != position:
                self._eof_at[key] = position
                eof = KafkaError(KafkaError._PARTITION_EOF)
                out.append(FakeMessage(tp.topic, tp.partition, position, error=eof))
        return out


class FakeRestorer:
    """The restore consumer: reads the (committed) changelog log."""

    def __init__(self, cluster: FakeCluster) -> None:
        self.cluster = cluster
        self._assigned: tuple[str, int] | None = None
        self._position = 0

    def get_watermark_offsets(
        self, tp: TopicPartition, timeout: float = 0, cached: bool = False
    ) -> tuple[int, int]:
        return 0, len(self.cluster.log(tp.topic, tp.partition))

    def assign(self, partitions: list[TopicPartition]) -> None:
        [tp] = partitions
        self._assigned = (tp.topic, tp.partition)
        self._position = 0 if tp.offset < 0 else tp.offset

    def position(self, partitions: list[TopicPartition]) -> list[TopicPartition]:
        return [TopicPartition(tp.topic, tp.partition, self._position) for tp in partitions]

    def consume(self, limit: int, timeout: float) -> list[FakeMessage]:
        assert self._assigned is not None
        log = self.cluster.log(*self._assigned)
        batch = log[self._position : self._position + limit]
        self._position += len(batch)
        return batch

    def unassign(self) -> None:
        self._assigned = None


def driver_config(
    tmp: Path,
    audiences: Path,
    *,
    topics: Sequence[tuple[str, str]] = (("pipelines", "pipelines_json"),),
    rekeyed: Sequence[str] = (),
    **evaluate: Any,
) -> AppConfig:
    """A configuration for the driver: ``topics`` as (name, format), those named in
    ``rekeyed`` with ``repartition: true``; state under ``tmp``."""
    return AppConfig(
        kafka=KafkaConfig(bootstrap_servers="driver:9092"),
        ingest=IngestConfig(
            topics=[
                TopicConfig(name=name, format=fmt, repartition=name in rekeyed)
                for name, fmt in topics
            ],
            dead_letter_topic="dead-letter",
        ),
        deltas=DeltasConfig(topic="deltas"),
        evaluate=EvaluateConfig(
            audiences=audiences, group_id="driver", state_dir=tmp / "state", **evaluate
        ),
    )


class EvaluateDriver:
    """The runtime of ``config`` on a :class:`FakeCluster` whose input topics have
    ``partitions`` partitions each; every partition is assigned to it at once."""

    def __init__(
        self,
        config: AppConfig,
        *,
        partitions: int = 1,
        audiences: Sequence[Audience] | None = None,
        telemetry: EvaluateTelemetry | None = None,
        now_ms: int | None = None,
    ) -> None:
        assert config.evaluate is not None
        self.config = config
        self.now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        self.cluster = FakeCluster()
        for topic in config.ingest.topics:
            self.cluster.create(topic.name, partitions)
        self.plan: TopicPlan = plan_topics(config, self.cluster.partitions)
        for spec in self.plan.create:
            self.cluster.create(spec.name, spec.partitions)
        names = self.plan.names
        self.names = names
        self.audiences = (
            list(audiences) if audiences is not None else load_audiences(config.evaluate.audiences)
        )
        self.stats = EvaluateStats({name: TopicStats() for name in names.subscription})
        self.tasks: dict[int, Task] = {}
        self.consumer = FakeConsumer(self.cluster)
        self.producer = FakeProducer(self.cluster)
        self.restorer = FakeRestorer(self.cluster)
        self._watchdog = Watchdog(3600.0)
        self.runtime = Runtime.build(
            config=config,
            plan=self.plan,
            audiences=self.audiences,
            decoders={t.name: Decoder(t, None) for t in config.ingest.topics},
            tasks=self.tasks,
            stats=self.stats,
            telemetry=telemetry or NoTelemetry(),
            consumer=self.consumer,
            producer=self.producer,
            restorer=self.restorer,
            admin=None,
            health=ClientHealth("driver"),
            watchdog=self._watchdog,
            dead_letter_max=None,
        )
        self.assign()

    # -- input ---------------------------------------------------------------------------

    def assign(self) -> None:
        """Assign every partition of every subscribed topic (as a rebalance would)."""
        tps = [
            TopicPartition(topic, p)
            for topic in self.names.subscription
            for p in range(self.cluster.partitions[topic])
        ]
        self.consumer.assign(tps)
        self.runtime.on_assign(self.consumer, tps)
        self.runtime.health.check()

    def revoke(self) -> None:
        """Revoke every partition (the work so far is committed first, as on a broker)."""
        tps = self.consumer.assignment()
        self.runtime.on_revoke(self.consumer, tps)
        self.consumer.assign([])
        self.runtime.health.check()

    def lose(self) -> None:
        """Every partition is lost (the member was dropped from the group, as after a
        session timed out during a broker restart): nothing can be committed for them."""
        tps = self.consumer.assignment()
        self.runtime.on_lost(self.consumer, tps)
        self.consumer.assign([])
        self.runtime.health.check()

    def pipe(
        self,
        topic: str,
        value: bytes | None,
        *,
        key: bytes | None = None,
        partition: int = 0,
        timestamp_ms: int | None = None,
        headers: Headers | None = None,
    ) -> int:
        """Append a record to an input topic; its offset."""
        message = self.cluster.append(
            topic, partition, key, value, timestamp_ms=timestamp_ms, headers=headers
        )
        offset = message.offset()
        assert offset is not None
        return offset

    def pipe_error(
        self, error: KafkaError, *, topic: str | None = None, partition: int | None = None
    ) -> None:
        """A consumer error message, returned first by the next :meth:`process`."""
        self.consumer.push(FakeMessage(topic, partition, None, error=error))

    def tick(self, ms: int) -> None:
        """Move the wall clock the tasks are advanced to on by ``ms``."""
        self.now_ms += ms

    # -- the loop --------------------------------------------------------------------------

    def process(self) -> int:
        """One turn of the loop without the commit: route every pending message (and the
        ends of the partitions read to their end), then move the tasks' time on to the
        wall clock; the number of records routed."""
        handled = self.runtime.router.route(self.consumer.take())
        self.runtime.health.check()
        self.runtime.advance(self.now_ms)
        return handled

    def commit(self) -> bool:
        """Commit the cycle; ``False`` if it was aborted and rewound."""
        return self.runtime.checkpoint.commit(timeout_s=0.5)

    def fail_next_commit(self, code: int = KafkaError._FENCED, *, fatal: bool = False) -> None:
        """The next commit fails with ``code`` (not retriable by default: aborted;
        ``fatal``: the producer cannot go on)."""
        self.producer.fail_commit = _error(code, "failed by the test", fatal=fatal)

    def finish(self) -> None:
        """Fire every deadline up to the newest record, as a bounded run's end does."""
        self.runtime.manager.finish()

    # -- output ----------------------------------------------------------------------------

    def deltas(self) -> list[MembershipDelta]:
        """The committed deltas, as a ``read_committed`` reader sees them."""
        return [decode_json(m.value() or b"") for m in self.cluster.read(self.names.deltas)]

    def dead_letters(self) -> list[FakeMessage]:
        return self.cluster.read(self.names.dead_letters)

    def dead_letter_reasons(self) -> list[str]:
        return [dict(m.headers() or [])[REASON_HEADER].decode() for m in self.dead_letters()]

    def committed_offsets(self) -> dict[tuple[str, int], int]:
        return dict(self.cluster.committed)

    def close(self) -> None:
        self.runtime.checkpoint.close()
        self.runtime.manager.close()
