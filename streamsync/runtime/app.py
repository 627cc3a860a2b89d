"""The evaluate application: input topics -> tasks (engine + state) -> deltas, exactly once.

One :class:`Application` wires everything the service does; ``streamsync evaluate`` and
``streamsync demo`` both run it. Kafka clients come from a :class:`KafkaClients`
factory, so a caller decides how they are built.

The cycle (every ``commit_interval``, default 100 ms), as Kafka Streams' exactly-once v2
and quix-streams' checkpoint do it:

1. records are decoded and handed to the task of their partition number; dead letters
   and the deltas the tasks emit are produced inside the open transaction;
2. each task's state changes (changed customers, still-buffered records, clock) are
   produced to the compacted changelog topic, partition = task, in the same transaction;
3. the consumed offsets are added with ``send_offsets_to_transaction`` and the
   transaction commits: deltas, dead letters, state and offsets become visible together
   or not at all;
4. then each task's local RocksDB copy is written, with the changelog offset it is now
   up to date with.

A crash anywhere rolls back to the last commit: the transaction is aborted (by the
coordinator, or by the restarted instance, which reuses its transactional id from the
state directory), the consumer resumes from the committed offsets, and the tasks are
restored from the changelog as of that commit. A ``read_committed`` reader of the deltas
topic therefore sees each membership transition once, with ``seq`` continuing.

Rebalances use the eager ``range`` assignor, which gives partition ``p`` of every
co-partitioned input topic to the same member. On revoke the work so far is committed
within ``revoke_budget`` and the tasks are parked; if the same partitions come back and
nobody wrote their changelog meanwhile, the parked state is reused without a restore.
"""

from __future__ import annotations

import copy
import logging
import os
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol

import orjson
from confluent_kafka import (
    OFFSET_BEGINNING,
    TIMESTAMP_NOT_AVAILABLE,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AdminClient,
    NewTopic,
)

from streamsync.audiences.definition import Audience
from streamsync.audiences.loader import load_audiences
from streamsync.config import AppConfig
from streamsync.deltas.codec import encode_avro
from streamsync.deltas.record import MembershipDelta
from streamsync.ingest.avro import FileSchemaRegistry, SchemaRegistry, confluent_frame
from streamsync.ingest.decoder import Decoder
from streamsync.ingest.errors import DecodeError
from streamsync.ingest.event import Event, SourcePosition
from streamsync.kafka.config import admin_config, consumer_config, producer_config
from streamsync.kafka.outage import QUIET_CLIENT, BrokerOutage, fatal_message, is_fatal
from streamsync.runtime import gc_policy
from streamsync.runtime.config import EvaluateConfig
from streamsync.runtime.dead_letter import (
    DEAD_LETTER_PRODUCER_OVERRIDES,
    dead_letter_headers,
    fit_dead_letter,
    topic_max_message_bytes,
)
from streamsync.runtime.ingest_loop import IngestStats, TopicStats
from streamsync.runtime.repartition import (
    MARK_TAG,
    Purger,
    Repartitioner,
    decode_event,
    repartition_topic,
)
from streamsync.runtime.task import Task
from streamsync.state.recovery import restore_partition
from streamsync.state.store import PartitionStore

if TYPE_CHECKING:
    from streamsync.runtime.observer import EvaluateObserver

log = logging.getLogger(__name__)

#: Dead-letter reason for a record whose evaluation raised inside the engine.
ENGINE_ERROR = "engine_error"


#: Exit status asking the supervisor for a restart: a transaction that can neither commit
#: nor abort, or a Kafka call hung past its budget (see :class:`Watchdog`). Safe: the
#: open transaction is aborted by the next incarnation and the work redone.
RESTART_EXIT_STATUS = 3


class RestartRequired(Exception):
    """The transactional producer cannot go on in this process; exit with
    :data:`RESTART_EXIT_STATUS` and be started again."""


class Watchdog:
    """Ends the process when one transactional call blocks far past its timeout.

    librdkafka can block in ``send_offsets_to_transaction`` indefinitely, ignoring its
    timeout, after the group coordinator went away and came back (a broker restart:
    confluentinc/librdkafka#5456 and #5511). Nothing inside the process can interrupt
    it; exiting is safe (the open transaction is aborted and the work redone from the
    last commit) and the supervisor (Kubernetes, systemd) starts the process again.
    """

    def __init__(self, limit_s: float) -> None:
        self.limit_s = limit_s
        self._armed: tuple[str, float] | None = None
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="watchdog", daemon=True)
        self._thread.start()

    def arm(self, call: str) -> None:
        self._armed = (call, time.monotonic())

    def disarm(self) -> None:
        self._armed = None

    def _watch(self) -> None:
        while not self._wake.wait(1.0):
            armed = self._armed
            if armed is not None and time.monotonic() - armed[1] > self.limit_s:
                log.critical(
                    "%s has blocked for over %.0fs (a known librdkafka hang after a "
                    "coordinator change); exiting with status %d to be restarted",
                    armed[0],
                    self.limit_s,
                    RESTART_EXIT_STATUS,
                )
                logging.shutdown()
                os._exit(RESTART_EXIT_STATUS)

    def close(self) -> None:
        self._wake.set()


class StartupError(Exception):
    """The topics or the cluster do not allow the service to start; the message says why."""


class BrokerUnreachable(Exception):
    """No broker answered for longer than ``evaluate.broker_timeout``."""


class KafkaClients(Protocol):
    """Builds the Kafka clients the application uses (injected for tests and tools)."""

    def consumer(self, config: dict[str, Any]) -> Consumer: ...

    def producer(self, config: dict[str, Any]) -> Producer: ...

    def admin(self, config: dict[str, Any]) -> AdminClient: ...


class ConfluentClients:
    """The default: confluent-kafka clients as configured."""

    def consumer(self, config: dict[str, Any]) -> Consumer:
        return Consumer(config)

    def producer(self, config: dict[str, Any]) -> Producer:
        return Producer(config)

    def admin(self, config: dict[str, Any]) -> AdminClient:
        return AdminClient(config)


@dataclass
class EvaluateStats(IngestStats):
    """Ingest counts plus what evaluation produced."""

    deltas: int = 0
    commits: int = 0
    aborts: int = 0
    restored_customers: int = 0
    engine_errors: int = 0
    delta_counts: Counter[tuple[str, str]] = field(default_factory=Counter)


def instance_id(state_dir: Path) -> str:
    """This instance's stable id (kept in the state directory), the suffix of its
    transactional id: a restarted instance fences its previous incarnation and aborts
    its open transaction at once instead of waiting for the transaction timeout."""
    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_dir / "instance-id"
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        value = uuid.uuid4().hex[:12]
        tmp = path.with_suffix(".tmp")
        tmp.write_text(value)
        os.replace(tmp, path)
        return value


def _require_partitions(metadata: Any, kind: str, topic: str, of: str, partitions: int) -> None:
    """An internal ``kind`` topic that already exists must have one partition per task
    (``of``: what sets that count, for the error)."""
    existing = metadata.topics.get(topic)
    if existing is not None and existing.error is None and len(existing.partitions) != partitions:
        raise StartupError(
            f"{kind} topic {topic} has {len(existing.partitions)} partitions, {of} {partitions}"
        )


def _poison_position(tb: TracebackType | None) -> SourcePosition | None:
    """The source of the record the engine was applying when it raised: the innermost
    frame holding an ``Event`` with a source (the engine releases records from its
    buffer long after they were handed in, so the caller cannot know which one)."""
    found: SourcePosition | None = None
    while tb is not None:
        for value in tb.tb_frame.f_locals.values():
            if isinstance(value, Event) and value.source is not None:
                found = value.source
        tb = tb.tb_next
    return found


class Application:
    """The evaluate service; see the module docstring. :meth:`run` until :meth:`stop`."""

    def __init__(
        self,
        config: AppConfig,
        *,
        audiences: Sequence[Audience] | None = None,
        clients: KafkaClients | None = None,
        registry: SchemaRegistry | None = None,
        batch_size: int = 2000,
        progress: Callable[[EvaluateStats], None] | None = None,
        progress_interval_s: float = 5.0,
    ) -> None:
        if config.evaluate is None:
            raise StartupError("the configuration has no evaluate section")
        self.config = config
        self.settings: EvaluateConfig = config.evaluate
        self.audiences = (
            list(audiences) if audiences is not None else load_audiences(self.settings.audiences)
        )
        self.clients = clients or ConfluentClients()
        ingest = config.ingest
        if registry is None and ingest.schema_registry_dir is not None:
            registry = FileSchemaRegistry.from_path(ingest.schema_registry_dir)
        self.decoders = {topic.name: Decoder(topic, registry) for topic in ingest.topics}
        self.topics = [topic.name for topic in ingest.topics]
        #: topics not keyed by customer -> the internal topics they are re-keyed through
        self.rekeyed = {
            topic.name: repartition_topic(self.settings.group_id, topic.name)
            for topic in ingest.topics
            if topic.repartition
        }
        #: the inputs of the tasks: keyed topics and repartition topics
        self.task_topics = [t for t in self.topics if t not in self.rekeyed]
        self.task_topics += self.rekeyed.values()
        self._repartitioner: Repartitioner | None = None
        self._purger: Purger | None = None
        self.batch_size = batch_size
        self.progress = progress
        self.progress_interval_s = progress_interval_s
        self.stats = EvaluateStats(
            {name: TopicStats() for name in self.topics + list(self.rekeyed.values())}
        )
        self._committed_stats = copy.deepcopy(self.stats)
        self.tasks: dict[int, Task] = {}
        self._parked: dict[int, tuple[Task, int]] = {}
        self._positions: dict[tuple[str, int], int] = {}
        self._poison: dict[tuple[str, int, int], str] = {}
        self._stop = False
        self._failed = False
        self._in_txn = False
        self._error: BaseException | None = None
        self._fatal: KafkaError | None = None
        self._outage = BrokerOutage(config.kafka.bootstrap_servers)
        self._changelog_offsets: dict[int, int] = {}
        self._partitions = 0
        self._dead_letter_max: int | None = None
        self._consumer: Consumer | None = None
        self._watchdog: Watchdog | None = None
        self._producer: Producer | None = None
        self._restorer: Consumer | None = None
        #: Reports to the process telemetry (``streamsync evaluate`` sets it).
        self.observer: EvaluateObserver | None = None
        fmt = config.deltas.format
        schema_id = self.settings.delta_schema_id
        self._encode: Callable[[MembershipDelta], bytes] = (
            (lambda d: orjson.dumps(d.to_json()))
            if fmt == "json"
            else (lambda d: confluent_frame(schema_id, encode_avro(d)))
        )

    # -- lifecycle ---------------------------------------------------------------------------

    def stop(self) -> None:
        """Finish the current batch, commit and return from :meth:`run` (signal-safe)."""
        self._stop = True

    def _client_base(self) -> dict[str, Any]:
        return {**self.config.kafka.client_config(), **QUIET_CLIENT, "error_cb": self._on_error}

    def _on_error(self, error: KafkaError) -> None:
        if is_fatal(error):
            self._fatal = error
        elif not self._outage.on_error(error):
            log.warning("kafka client error: %s", error)

    def _connect(self) -> AdminClient:
        """Wait for the cluster (reporting once, then at a slow interval) and check the
        topics: inputs present and co-partitioned; changelog, deltas and dead-letter
        topics created if missing."""
        settings = self.settings
        admin = self.clients.admin(
            admin_config(self.config.kafka.bootstrap_servers, extra=self._client_base())
        )
        bootstrap = self.config.kafka.bootstrap_servers
        started = time.monotonic()
        deadline = started + settings.broker_timeout_ms / 1000
        outage = BrokerOutage(bootstrap)
        while True:
            try:
                budget = settings.broker_timeout_ms / 1000
                metadata = admin.list_topics(timeout=min(5.0, max(1.0, budget / 4)))
                break
            except KafkaException as exc:
                error = exc.args[0] if exc.args else exc
                reason = error.str() if isinstance(error, KafkaError) else str(error)
                now = time.monotonic()
                admin.poll(0)  # serves the error callback: did the cluster refuse us?
                self._check_errors()  # then retrying cannot help
                if now >= deadline:
                    raise BrokerUnreachable(
                        f"cannot reach Kafka at {bootstrap} ({reason}); gave up after "
                        f"{now - started:.0f}s (evaluate.broker_timeout)"
                    ) from None
                outage.report(f"{reason}; retrying", now)
        self._outage.clear()
        counts: dict[str, int] = {}
        missing = []
        for name in self.topics:
            topic = metadata.topics.get(name)
            if topic is None or topic.error is not None:
                missing.append(name)
            else:
                counts[name] = len(topic.partitions)
        if missing:
            raise StartupError(f"input topics not found: {', '.join(missing)}")
        raw = {name: counts.pop(name) for name in self.rekeyed}
        if len(set(counts.values())) > 1:
            detail = ", ".join(f"{name} has {n}" for name, n in counts.items())
            raise StartupError(
                "input topics must be co-partitioned (one customer's records in the same "
                f"partition number of every topic), but their partition counts differ: {detail}"
            )
        self._partitions = partitions = self._repartition_setup(metadata, counts, raw)
        changelog = settings.changelog
        _require_partitions(metadata, "changelog", changelog, "the input topics", partitions)
        wanted = [
            NewTopic(
                changelog,
                partitions,
                -1,
                config={"cleanup.policy": "compact", "max.message.bytes": "16777216"},
            ),
            NewTopic(self.config.deltas.topic, partitions, -1),
            NewTopic(self.config.ingest.dead_letter_topic, partitions, -1),
            *(NewTopic(name, partitions, -1) for name in self.rekeyed.values()),
        ]
        create = [t for t in wanted if t.topic not in metadata.topics]
        if create:
            for name, future in admin.create_topics(create).items():
                try:
                    future.result(30)
                    log.info("created topic %s", name)
                except KafkaException as exc:
                    error = exc.args[0] if exc.args else None
                    if not (
                        isinstance(error, KafkaError)
                        and error.code() == KafkaError.TOPIC_ALREADY_EXISTS
                    ):
                        raise StartupError(f"cannot create topic {name}: {exc}") from None
        self._dead_letter_max = topic_max_message_bytes(admin, self.config.ingest.dead_letter_topic)
        if self.rekeyed:
            interval_s = settings.repartition_purge_interval_ms / 1000
            self._purger = Purger(admin, self.rekeyed.values(), interval_s)
        return admin

    def _repartition_setup(self, metadata: Any, counts: dict[str, int], raw: dict[str, int]) -> int:
        """The task count (the keyed topics' partition count, else
        ``evaluate.repartition_partitions``, else the largest re-keyed topic's), checked
        against existing repartition topics; builds the re-keying stage."""
        configured = self.settings.repartition_partitions
        if counts:
            partitions = next(iter(counts.values()))
            if configured is not None and configured != partitions:
                raise StartupError(
                    f"evaluate.repartition_partitions is {configured}, but the keyed input "
                    f"topics have {partitions} partitions; remove it or make them agree"
                )
        else:
            partitions = configured if configured is not None else max(raw.values())
        for name in self.rekeyed.values():
            _require_partitions(metadata, "repartition", name, "the tasks", partitions)
        if self.rekeyed:
            self._repartitioner = Repartitioner(
                self.rekeyed, partitions, raw, self.settings.repartition_partitioner
            )
        return partitions

    def _open_clients(self) -> None:
        settings = self.settings
        bootstrap = self.config.kafka.bootstrap_servers
        base = self._client_base()
        txn_id = f"{settings.group_id}-{instance_id(settings.state_dir)}"
        producer = self.clients.producer(
            producer_config(
                bootstrap,
                transactional_id=txn_id,
                extra={
                    **base,
                    **DEAD_LETTER_PRODUCER_OVERRIDES,
                    "transaction.timeout.ms": settings.transaction_timeout_ms,
                    "linger.ms": 2,
                },
            )
        )
        producer.init_transactions(settings.broker_timeout_ms / 1000)
        self._watchdog = Watchdog(max(30.0, 3 * settings.transaction_timeout_ms / 1000))
        self._producer = producer
        self._consumer = self.clients.consumer(
            consumer_config(
                bootstrap,
                settings.group_id,
                extra={
                    **base,
                    "partition.assignment.strategy": "range",
                    "enable.partition.eof": True,
                    "session.timeout.ms": settings.session_timeout_ms,
                    "heartbeat.interval.ms": max(settings.session_timeout_ms // 5, 500),
                },
            )
        )
        self._restorer = self.clients.consumer(
            consumer_config(bootstrap, f"{settings.group_id}.restore", extra=base)
        )

    # -- the loop ------------------------------------------------------------------------------

    def run(self, *, idle_timeout_s: float | None = None, finish: bool = False) -> EvaluateStats:
        """Evaluate until :meth:`stop` (or, with ``idle_timeout_s``, until every task is
        caught up and no record arrived for that long, counted only once partitions are
        assigned). ``finish`` then fires every deadline up to the newest record before
        the last commit, as ``replay`` does at the end of its input."""
        self._connect()
        self._open_clients()
        consumer, producer = self._consumer, self._producer
        assert consumer is not None and producer is not None
        interval = self.settings.commit_interval_ms / 1000
        started = time.monotonic()
        next_commit = started + interval
        last_progress = started
        idle_since: float | None = None
        try:
            consumer.subscribe(
                self.topics + list(self.rekeyed.values()),
                on_assign=self._on_assign,
                on_revoke=self._on_revoke,
                on_lost=self._on_lost,
            )
            while not self._stop:
                timeout = max(0.0, min(interval, next_commit - time.monotonic()))
                messages = self._receive(consumer, timeout)
                self._check_errors()
                now = time.monotonic()
                if messages and self._handle(messages):
                    idle_since = None
                    self._outage.clear()
                try:
                    self._advance()
                except Exception as exc:  # a record the engine cannot apply
                    self._on_engine_error(exc)
                    continue
                if now >= next_commit:
                    # The interval runs from the start of a commit, so that the
                    # commit's own round trips do not lengthen every cycle.
                    next_commit = time.monotonic() + interval
                    self._commit()
                    gc_policy.settle()
                self._watch_broker(now)
                if self.observer is not None:
                    self.observer.tick(consumer, self.tasks.values())
                if idle_timeout_s is not None:
                    if self.tasks and all(all(t.caught_up.values()) for t in self.tasks.values()):
                        idle_since = idle_since or now
                        if now - idle_since >= idle_timeout_s:
                            self.stats.stopped_by = "idle_timeout"
                            break
                    else:
                        idle_since = None
                if self.progress is not None and now - last_progress >= self.progress_interval_s:
                    last_progress = now
                    self.stats.elapsed_s = now - started
                    self.progress(self.stats)
            else:
                self.stats.stopped_by = "stop"
            if finish:
                self._finish()
            self._commit()
        except BaseException:
            self._failed = True  # closing must not try to commit a doomed transaction
            raise
        finally:
            self.stats.elapsed_s = time.monotonic() - started
            self._close()
        return self.stats

    def _close(self) -> None:
        consumer, producer = self._consumer, self._producer
        if consumer is not None:
            try:
                consumer.close()  # revokes: commits (nothing left) and parks the tasks
            except Exception as exc:
                log.warning("closing the consumer: %s", exc)
        if producer is not None and self._in_txn:
            try:
                producer.abort_transaction(5)
            except Exception as exc:
                log.warning("aborting the open transaction: %s", exc)
        for task in list(self.tasks.values()) + [t for t, _ in self._parked.values()]:
            if task.store is not None:
                task.store.close()
        self.tasks.clear()
        self._parked.clear()
        if self._restorer is not None:
            self._restorer.close()
        if self._purger is not None:
            self._purger.settle(2.0)  # to report a failure of the last purge
        if self._watchdog is not None:
            self._watchdog.close()
        gc_policy.rescan()

    def _receive(self, consumer: Consumer, timeout: float) -> list[Message]:
        """The records already fetched (up to ``batch_size``), or else the first to
        arrive within ``timeout`` and those fetched with it.

        ``consume(n, timeout)`` alone waits until it has ``n`` records or the timeout
        passed: below ``batch_size`` records per interval every record would wait for
        the commit to be due before being evaluated, and the whole interval's records
        would then be evaluated while the commit waits. Taking records as they come
        leaves only the commit itself between the last record of a cycle and its
        deltas being readable."""
        messages = consumer.consume(self.batch_size, 0)
        if messages or timeout < 0.001:
            return messages
        first = consumer.poll(timeout)
        if first is None:
            return []
        return [first, *consumer.consume(self.batch_size - 1, 0)]

    def _check_errors(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error
        if self._fatal is not None:
            raise BrokerUnreachable(fatal_message(self._fatal, self.config.kafka.bootstrap_servers))

    def _watch_broker(self, now: float) -> None:
        """Give up when no broker has answered for ``broker_timeout`` (a probe decides:
        the client reports trouble but not its end)."""
        down_for = self._outage.down_for(now)
        if not down_for or down_for < self.settings.broker_timeout_ms / 1000:
            return
        assert self._consumer is not None
        try:
            self._consumer.list_topics(timeout=5)
        except KafkaException:
            raise BrokerUnreachable(
                f"cannot reach Kafka at {self.config.kafka.bootstrap_servers} "
                f"for {down_for:.0f}s; giving up"
            ) from None
        self._outage.clear()

    def _handle(self, messages: list[Message]) -> int:
        """Decode and evaluate a batch; return how many records it held."""
        handled = 0
        stats = self.stats
        tasks = self.tasks
        observer = self.observer
        positions = self._positions
        rekeyed = self.rekeyed
        for message in messages:
            error = message.error()
            topic = message.topic()
            partition = message.partition()
            assert topic is not None and partition is not None
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    if topic in rekeyed:
                        assert self._repartitioner is not None
                        self._repartitioner.at_end(topic, partition)
                        continue
                    task = tasks.get(partition)
                    if task is not None:
                        task.at_end(topic)
                    continue
                if error.fatal():
                    raise BrokerUnreachable(f"fatal consumer error: {error}")
                log.warning("consumer error on %s[%s]: %s", topic, partition, error)
                continue
            if rekeyed and topic in rekeyed:
                handled += 1
                self._rekey(message, topic, partition)
                continue
            task = tasks.get(partition)
            if task is None:  # revoked in this very batch
                continue
            handled += 1
            offset = message.offset()
            assert offset is not None
            positions[(topic, partition)] = offset + 1
            task.caught_up[topic] = False
            value = message.value()
            key = message.key()
            source = SourcePosition(topic, partition, offset)
            topic_stats = stats.topics[topic]
            poison = self._poison.get((topic, partition, offset)) if self._poison else None
            if poison is not None:
                self._dead_letter(message, source, ENGINE_ERROR, poison, None)
                topic_stats.dead_lettered[ENGINE_ERROR] += 1
                continue
            if task.merged and topic in task.merged:  # a repartition topic
                try:
                    if value and value[0] == MARK_TAG:
                        task.mark(topic, value)
                        continue
                    event = decode_event(value or b"", source)
                except (ValueError, TypeError):  # not written by the re-keying stage
                    detail = "not a record of the re-keying stage"
                    self._dead_letter(message, source, "malformed_json", detail, None)
                    topic_stats.dead_lettered["malformed_json"] += 1
                    continue
                if observer is not None:
                    observer.received(message, event)
                deltas = task.process(event)
                if deltas:
                    self._emit(deltas, partition)
                continue
            for outcome in self.decoders[topic].decode_all(value, key, source):
                if isinstance(outcome, Event):
                    topic_stats.decoded += 1
                    if observer is not None:
                        observer.received(message, outcome)
                    deltas = task.process(outcome)
                    if deltas:
                        self._emit(deltas, partition)
                elif isinstance(outcome, DecodeError):
                    self._dead_letter(
                        message,
                        source,
                        outcome.reason.value,
                        outcome.detail,
                        getattr(outcome, "index", None),
                    )
                    topic_stats.dead_lettered[outcome.reason.value] += 1
                else:
                    topic_stats.skipped[outcome.reason] += 1
        return handled

    def _rekey(self, message: Message, topic: str, partition: int) -> None:
        """Decode a record of a topic not keyed by customer and produce its events to
        the repartition topic, keyed by customer (see :mod:`.repartition`)."""
        stage = self._repartitioner
        assert stage is not None
        offset = message.offset()
        assert offset is not None
        self._positions[(topic, partition)] = offset + 1
        source = SourcePosition(topic, partition, offset)
        topic_stats = self.stats.topics[topic]
        target = self.rekeyed[topic]
        raw = message.headers()  # kept, as Kafka Streams does (trace context)
        headers = list(raw.items()) if isinstance(raw, dict) else raw
        newest: int | None = None
        for outcome in self.decoders[topic].decode_all(message.value(), message.key(), source):
            if isinstance(outcome, Event):
                topic_stats.decoded += 1
                key, number, value = stage.route(outcome)
                self._produce(target, key, value, partition=number, headers=headers)
                if newest is None or outcome.timestamp_ms > newest:
                    newest = outcome.timestamp_ms
            elif isinstance(outcome, DecodeError):
                reason = outcome.reason.value
                index = getattr(outcome, "index", None)
                self._dead_letter(message, source, reason, outcome.detail, index)
                topic_stats.dead_lettered[reason] += 1
            else:
                topic_stats.skipped[outcome.reason] += 1
        stage.seen(topic, partition, newest)

    def _advance(self) -> None:
        now_ms = int(time.time() * 1000)
        for task in self.tasks.values():
            deltas = task.advance(now_ms)
            if deltas:
                self._emit(deltas, task.partition)

    def _finish(self) -> None:
        newest = max(
            (ts for task in self.tasks.values() for ts in task.newest.values()),
            default=None,
        )
        if newest is None:
            return
        for task in self.tasks.values():
            deltas = task.finish(newest)
            if deltas:
                self._emit(deltas, task.partition)

    # -- output ----------------------------------------------------------------------------------

    def _begin(self) -> Producer:
        producer = self._producer
        assert producer is not None
        if not self._in_txn:
            producer.begin_transaction()
            self._in_txn = True
        return producer

    def _produce(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        *,
        partition: int | None = None,
        headers: list[tuple[str, str | bytes | None]] | None = None,
        on_delivery: Callable[[KafkaError | None, Message], None] | None = None,
    ) -> None:
        producer = self._begin()
        kwargs: dict[str, Any] = {}
        if partition is not None:
            kwargs["partition"] = partition
        if headers is not None:
            kwargs["headers"] = headers
        if on_delivery is not None:
            kwargs["on_delivery"] = on_delivery
        while True:
            try:
                producer.produce(topic, value=value, key=key, **kwargs)
                return
            except BufferError:  # local queue full: let deliveries drain
                producer.poll(0.05)

    def _emit(self, deltas: list[MembershipDelta], partition: int) -> None:
        """Produce the deltas of task ``partition``, each with the trace context of the
        records that qualified it when the observer follows traces."""
        topic = self.config.deltas.topic
        encode = self._encode
        counts = self.stats.delta_counts
        observer = self.observer
        trace = None
        if observer is not None:
            observer.emitted(deltas, partition)
            if observer.tracing:
                trace = observer.trace_headers
        for delta in deltas:
            headers = None if trace is None else trace(delta)
            self._produce(topic, delta.customer_id.encode(), encode(delta), headers=headers)
            counts[(delta.audience, delta.op)] += 1
        self.stats.deltas += len(deltas)

    def _dead_letter(
        self,
        message: Message,
        source: SourcePosition,
        reason: str,
        detail: str,
        index: int | None,
    ) -> None:
        kind, timestamp = message.timestamp()
        headers = dead_letter_headers(
            reason, detail, source, None if kind == TIMESTAMP_NOT_AVAILABLE else timestamp, index
        )
        key = message.key()
        value = fit_dead_letter(message.value(), key, headers, self._dead_letter_max)
        self._produce(self.config.ingest.dead_letter_topic, key, value, headers=headers)

    # -- commit ----------------------------------------------------------------------------------

    def _commit(self, timeout_s: float | None = None) -> bool:
        """One exactly-once cycle (see the module docstring); ``False`` if it had to be
        aborted (the tasks were then rewound to the last commit)."""
        producer, consumer = self._producer, self._consumer
        assert producer is not None and consumer is not None
        # Retriable errors (a broker restarting) are retried within the transaction
        # timeout (the coordinator aborts the transaction after it anyway); a revoke has
        # its own budget.
        if timeout_s is None:
            timeout_s = self.settings.transaction_timeout_ms / 1000
        timeout = timeout_s
        changelog = self.settings.changelog
        if self._purger is not None:  # deletes what earlier cycles committed, when due
            self._purger.tick()
        batches: list[tuple[Task, dict[bytes, bytes | None]]] = []
        self._changelog_offsets.clear()
        for task in self.tasks.values():
            changes = task.changes()
            if not changes:
                continue
            batches.append((task, changes))
            last = len(changes) - 1
            for i, (key, value) in enumerate(changes.items()):
                self._produce(
                    changelog,
                    key,
                    value,
                    partition=task.partition,
                    on_delivery=self._on_changelog_delivery if i == last else None,
                )
        stage = self._repartitioner
        if stage is not None:  # progress marks of the raw partitions, after their events
            for target, number, value in stage.marks():
                self._produce(target, None, value, partition=number)
        if not self._in_txn and not self._positions:
            return True
        offsets = [TopicPartition(t, p, o) for (t, p), o in self._positions.items()]
        deadline = time.monotonic() + timeout
        watchdog = self._watchdog
        assert watchdog is not None
        last_error = ""
        while True:
            try:
                self._begin()
                if offsets:
                    watchdog.arm("send_offsets_to_transaction")
                    producer.send_offsets_to_transaction(
                        offsets, consumer.consumer_group_metadata(), min(timeout, 10.0)
                    )
                    offsets = []
                watchdog.arm("commit_transaction")
                producer.commit_transaction(min(timeout, 10.0))
                watchdog.disarm()
                break
            except KafkaException as exc:
                watchdog.disarm()
                error = exc.args[0] if exc.args else None
                if not isinstance(error, KafkaError) or error.fatal():
                    raise
                if error.retriable() and time.monotonic() < deadline:
                    if error.str() != last_error:
                        last_error = error.str()
                        log.info("commit not done yet (%s); retrying", last_error)
                    time.sleep(0.1)
                    continue
                log.warning("transaction aborted (%s); rewinding to the last commit", error)
                self._rewind()
                return False
        self._in_txn = False
        if self._purger is not None:
            self._purger.committed(self._positions)
        self._positions.clear()
        if stage is not None:
            stage.committed()
        self.stats.commits += 1
        self._committed_stats = copy.deepcopy(self.stats)
        keep = self.settings.cache_customers // max(1, len(self.tasks))
        for task, changes in batches:
            task.persist(changes, self._changelog_offsets.get(task.partition), keep=keep)
        if self.observer is not None:
            self.observer.committed(self.stats)
        return True

    def _on_changelog_delivery(self, error: KafkaError | None, message: Message) -> None:
        partition, offset = message.partition(), message.offset()
        if error is None and partition is not None and offset is not None:
            self._changelog_offsets[partition] = offset

    def _abort(self) -> None:
        producer = self._producer
        assert producer is not None
        if self._in_txn:
            watchdog = self._watchdog
            if watchdog is not None:
                watchdog.arm("abort_transaction")
            try:
                producer.abort_transaction(self.settings.transaction_timeout_ms / 1000)
            except KafkaException as exc:
                raise RestartRequired(f"the open transaction cannot be aborted: {exc}") from None
            finally:
                if watchdog is not None:
                    watchdog.disarm()
            self._in_txn = False
        # Counts go back with the records: they will be read and counted again.
        aborts, errors = self.stats.aborts + 1, self.stats.engine_errors
        self.stats = copy.deepcopy(self._committed_stats)
        self.stats.aborts, self.stats.engine_errors = aborts, errors
        self._positions.clear()
        if self._repartitioner is not None:
            self._repartitioner.reset()
        if self.observer is not None:
            self.observer.aborted()

    def _rewind(self) -> None:
        """Abort, drop every task's in-memory state and resume from the last commit:
        the consumer seeks back to the committed offsets, the tasks are restored."""
        self._abort()
        consumer = self._consumer
        assert consumer is not None
        numbers = sorted(self.tasks)
        for task in self.tasks.values():
            if task.store is not None:
                task.store.close()
        self.tasks.clear()
        gc_policy.rescan()
        assignment = consumer.assignment()
        if not assignment:
            return
        deadline = time.monotonic() + self.settings.broker_timeout_ms / 1000
        while True:
            try:
                committed = consumer.committed(assignment, timeout=10)
                break
            except KafkaException:
                if time.monotonic() >= deadline:
                    raise
        for tp in committed:
            offset = tp.offset if tp.offset >= 0 else OFFSET_BEGINNING
            try:
                consumer.seek(TopicPartition(tp.topic, tp.partition, offset))
            except KafkaException as exc:
                log.warning("seek %s[%s]: %s", tp.topic, tp.partition, exc)
        for number in numbers:
            self.tasks[number] = self._open_task(number)

    def _on_engine_error(self, exc: Exception) -> None:
        """A record made the engine raise: rewind, and dead-letter that record when it
        comes round again. The error is not retried: the same record raises every time."""
        source = _poison_position(exc.__traceback__)
        if source is None:
            raise exc
        log.error(
            "the engine raised %s on %s[%s]@%s; that record will be dead-lettered",
            type(exc).__name__,
            source.topic,
            source.partition,
            source.offset,
        )
        self.stats.engine_errors += 1
        self._poison[(source.topic, source.partition, source.offset)] = (
            f"the audience engine raised {type(exc).__name__} applying this record"
        )
        self._rewind()

    # -- rebalance -----------------------------------------------------------------------------

    def _task_dir(self, partition: int) -> Path:
        return self.settings.state_dir / self.settings.changelog / str(partition)

    def _changelog_end(self, partition: int) -> int:
        assert self._restorer is not None
        _, high = self._restorer.get_watermark_offsets(
            TopicPartition(self.settings.changelog, partition), timeout=30, cached=False
        )
        return int(high)

    def _open_task(self, partition: int) -> Task:
        """The task for ``partition``, its state restored from the local copy plus the
        changelog tail (or reused as parked if nobody wrote its changelog since)."""
        parked = self._parked.pop(partition, None)
        if parked is not None:
            task, end = parked
            if self._changelog_end(partition) == end:
                task.reopened()
                if self.observer is not None:
                    self.observer.task_opened(task)
                return task
            if task.store is not None:
                task.store.close()
        settings = self.settings
        task = Task(
            partition,
            self.task_topics,
            self.audiences,
            allowed_lateness_ms=settings.allowed_lateness_ms,
            dedup_horizon_ms=settings.dedup_horizon_ms,
            wall_clock=settings.wall_clock,
            idle_grace_ms=settings.idle_grace_ms,
            merged=self._merged_sources(),
        )
        store = PartitionStore(self._task_dir(partition))
        assert self._restorer is not None
        observer = self.observer
        restore_partition(
            self._restorer,
            store,
            settings.changelog,
            partition,
            on_offsets=None
            if observer is None
            else lambda done, total: observer.restore_progress(partition, done, total),
        )
        customers = task.load(store, f"{settings.changelog}[{partition}]")
        self.stats.restored_customers += customers
        if customers:
            log.info("partition %d: %d customers restored", partition, customers)
        if observer is not None:
            observer.task_opened(task)
        return task

    def _merged_sources(self) -> dict[str, frozenset[str]]:
        stage = self._repartitioner
        if stage is None:
            return {}
        return {target: stage.sources(raw) for raw, target in self.rekeyed.items()}

    def _task_numbers(self, partitions: list[TopicPartition]) -> list[int]:
        """The tasks of ``partitions``: raw partitions of re-keyed topics have none."""
        return sorted({tp.partition for tp in partitions if tp.topic not in self.rekeyed})

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        try:
            # Wait for offsets of transactions still in flight (a previous owner's last
            # commit) before reading the changelog, so state and offsets agree.
            consumer.committed(partitions, timeout=60)
            numbers = self._task_numbers(partitions)
            if self.observer is not None:
                self.observer.restoring(numbers)
            for number in list(self._parked):
                if number not in numbers:
                    task, _ = self._parked.pop(number)
                    if task.store is not None:
                        task.store.close()
            for number in numbers:
                if number not in self.tasks:
                    self.tasks[number] = self._open_task(number)
            log.info("assigned partitions %s", numbers)
            gc_policy.rescan()  # tasks may have been dropped or replaced
            if self.observer is not None:
                self.observer.assigned()
        except BaseException as exc:
            self._error = exc

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        try:
            numbers = self._task_numbers(partitions)
            committed = not self._failed and self._commit(self.settings.revoke_budget_ms / 1000)
            for number in numbers:
                task = self.tasks.pop(number, None)
                if task is None:
                    continue
                if committed:
                    self._parked[number] = (task, self._changelog_end(number))
                elif task.store is not None:
                    task.store.close()
            revoked = {(tp.topic, tp.partition) for tp in partitions}
            for key in [k for k in self._positions if k[1] in numbers or k in revoked]:
                del self._positions[key]
            if self._repartitioner is not None:
                self._repartitioner.reset([tp for tp in revoked if tp[0] in self.rekeyed])
            if self.observer is not None:
                self.observer.revoked(numbers)
        except BaseException as exc:
            self._error = exc

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Partitions taken away without a chance to commit: the open transaction can
        no longer commit their offsets, so all uncommitted work is dropped."""
        try:
            for number in self._task_numbers(partitions):
                task = self.tasks.pop(number, None)
                if task is not None and task.store is not None:
                    task.store.close()
            gc_policy.rescan()
            if self.observer is not None:
                self.observer.revoked(self._task_numbers(partitions))
            if not self._failed:
                self._rewind()
        except BaseException as exc:
            self._error = exc
