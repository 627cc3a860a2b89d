"""One exactly-once cycle: what the tasks wrote, their state and the consumed offsets
commit together, or are rolled back together.

Like Kafka Streams' StreamsProducer under exactly-once v2, :meth:`Checkpoint.commit`:

1. produces each task's state changes (changed customers, still-buffered records,
   clock) to the compacted changelog, partition = task, and the re-keying stage's
   progress marks, into the transaction the deltas and dead letters of this cycle are
   already in (see :mod:`streamsync.runtime.collector`);
2. adds the consumed offsets with ``send_offsets_to_transaction`` and commits: deltas,
   dead letters, state and offsets become visible together or not at all;
3. then writes each task's local RocksDB copy, with the changelog offset it is now up
   to date with, and takes a :func:`~streamsync.runtime.stats.snapshot` of the counts.

Retriable errors (a broker restarting) are retried within the transaction timeout; any
other failure aborts, and :meth:`Checkpoint.rewind` drops every task's in-memory state,
seeks the consumer back to the committed offsets and restores the tasks as of the last
commit; the counts go back to the snapshot. A transaction that cannot even be aborted
raises :class:`RestartRequired`, and a transactional call that hangs past its budget
ends the process (:class:`Watchdog`).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Collection

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)

from streamsync.kafka.health import KafkaUnavailable
from streamsync.runtime import stats as counts
from streamsync.runtime.collector import Collector
from streamsync.runtime.config import EvaluateConfig
from streamsync.runtime.errors import RESTART_EXIT_STATUS, RestartRequired
from streamsync.runtime.offsets import committed_offsets
from streamsync.runtime.repartition import Purger, Repartitioner
from streamsync.runtime.stats import EvaluateStats
from streamsync.runtime.task import Task
from streamsync.runtime.task_manager import TaskManager
from streamsync.runtime.telemetry import EvaluateTelemetry

log = logging.getLogger(__name__)

Position = tuple[str, int]


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


def watchdog_for(settings: EvaluateConfig) -> Watchdog:
    """The watchdog of a service with ``settings``: three transaction timeouts, at
    least 30 s (a commit retries retriable errors for one)."""
    return Watchdog(max(30.0, 3 * settings.transaction_timeout_ms / 1000))


class Checkpoint:
    """Commits, aborts and rewinds the work of ``manager``'s tasks; see the module
    docstring."""

    def __init__(
        self,
        *,
        settings: EvaluateConfig,
        consumer: Consumer,
        producer: Producer,
        collector: Collector,
        manager: TaskManager,
        stats: EvaluateStats,
        telemetry: EvaluateTelemetry,
        positions: dict[Position, int],
        repartitioner: Repartitioner | None,
        purger: Purger | None,
        watchdog: Watchdog,
    ) -> None:
        self.settings = settings
        self.consumer = consumer
        self.producer = producer
        self.collector = collector
        self.manager = manager
        self.stats = stats
        self.telemetry = telemetry
        #: (topic, partition) -> the offset after the last consumed record (the router's)
        self.positions = positions
        self.repartitioner = repartitioner
        self.purger = purger
        self.watchdog = watchdog
        self._committed = counts.snapshot(stats)
        self._changelog_offsets: dict[int, int] = {}
        #: when the current run of aborted transactions began (``None``: the last
        #: transaction committed)
        self._failing_since: float | None = None

    def commit(self, timeout_s: float | None = None) -> bool:
        """One exactly-once cycle (see the module docstring); ``False`` if it had to be
        aborted (the tasks were then rewound to the last commit). Retriable errors are
        retried for ``timeout_s`` (the transaction timeout by default: the coordinator
        aborts the transaction after it anyway; a revoke has its own budget)."""
        timeout = self.settings.transaction_timeout_ms / 1000 if timeout_s is None else timeout_s
        collector = self.collector
        changelog = self.manager.names.changelog
        if self.purger is not None:  # deletes what earlier cycles committed, when due
            self.purger.tick()
        batches: list[tuple[Task, dict[bytes, bytes | None]]] = []
        self._changelog_offsets.clear()
        for task in self.manager.tasks.values():
            changes = task.changes()
            if not changes:
                continue
            batches.append((task, changes))
            last = len(changes) - 1
            for i, (key, value) in enumerate(changes.items()):
                collector.send(
                    changelog,
                    key,
                    value,
                    partition=task.partition,
                    on_delivery=self._on_changelog_delivery if i == last else None,
                )
        stage = self.repartitioner
        if stage is not None:  # progress marks of the raw partitions, after their events
            for target, number, value in stage.marks():
                collector.send(target, None, value, partition=number)
        identity = self.manager.identity
        if identity is not None:  # and of the identity topics, after theirs
            for target, number, value in identity.marks():
                collector.send(target, None, value, partition=number)
        if not collector.in_txn and not self.positions:
            return True
        offsets = [TopicPartition(t, p, o) for (t, p), o in self.positions.items()]
        deadline = time.monotonic() + timeout
        producer, watchdog = self.producer, self.watchdog
        last_error = ""
        while True:
            try:
                collector.begin()
                if offsets:
                    watchdog.arm("send_offsets_to_transaction")
                    producer.send_offsets_to_transaction(
                        offsets, self.consumer.consumer_group_metadata(), min(timeout, 10.0)
                    )
                    offsets = []
                watchdog.arm("commit_transaction")
                producer.commit_transaction(min(timeout, 10.0))
                watchdog.disarm()
                break
            except KafkaException as exc:
                watchdog.disarm()
                error = exc.args[0] if exc.args else None
                if not isinstance(error, KafkaError):
                    raise
                if error.fatal():  # fenced, or the coordinator bumped the epoch
                    raise RestartRequired(
                        f"the transactional producer cannot go on: {error.str()}"
                    ) from None
                if error.retriable() and time.monotonic() < deadline:
                    if error.str() != last_error:
                        last_error = error.str()
                        log.info("commit not done yet (%s); retrying", last_error)
                    time.sleep(0.1)
                    continue
                log.warning("transaction aborted (%s); rewinding to the last commit", error)
                self._aborted_since(error)
                self.rewind()
                return False
        collector.in_txn = False
        self._failing_since = None
        if self.purger is not None:
            self.purger.committed(self.positions)
        self.positions.clear()
        if stage is not None:
            stage.committed()
        if identity is not None:
            identity.committed()
        stats = self.stats
        stats.commits += 1
        for task in self.manager.tasks.values():
            within, beyond = task.take_late()
            stats.late += within
            stats.too_late += beyond
        self._committed = counts.snapshot(stats)
        keep = self.settings.cache_customers // max(1, len(self.manager.tasks))
        for task, changes in batches:
            task.persist(changes, self._changelog_offsets.get(task.partition), keep=keep)
        self.telemetry.committed(self.stats)
        return True

    def _aborted_since(self, error: KafkaError) -> None:
        """One more transaction aborted. Aborts that go on for ``broker_timeout`` with
        no commit in between (an output topic deleted under the running service) end
        the run with one line instead of retrying forever while looking healthy."""
        now = time.monotonic()
        if self._failing_since is None:
            self._failing_since = now
            return
        if now - self._failing_since > self.settings.broker_timeout_ms / 1000:
            raise KafkaUnavailable(
                f"every transaction has aborted for {now - self._failing_since:.0f}s, "
                f"the last with: {error.str()}"
            )

    def _on_changelog_delivery(self, error: KafkaError | None, message: Message) -> None:
        partition, offset = message.partition(), message.offset()
        if error is None and partition is not None and offset is not None:
            self._changelog_offsets[partition] = offset

    def abort(self) -> None:
        """Abort the open transaction; the counts, positions and re-keying progress go
        back to the last commit (the records will be read and counted again)."""
        if self.collector.in_txn:
            self.watchdog.arm("abort_transaction")
            try:
                self.producer.abort_transaction(self.settings.transaction_timeout_ms / 1000)
            except KafkaException as exc:
                raise RestartRequired(f"the open transaction cannot be aborted: {exc}") from None
            finally:
                self.watchdog.disarm()
            self.collector.in_txn = False
        counts.rollback(self.stats, self._committed)
        self.positions.clear()
        if self.repartitioner is not None:
            self.repartitioner.reset()
        if self.manager.identity is not None:
            self.manager.identity.reset()
        self.telemetry.aborted()

    def rewind(self, lost: Collection[TopicPartition] = ()) -> None:
        """Abort, drop every task's in-memory state and resume from the last commit:
        the consumer seeks back to the committed offsets, the tasks are restored.

        Partitions in ``lost`` (taken away by a rebalance) are not asked for: they are
        no longer this member's, and their next owner, this one included, reads their
        committed offsets when it is assigned them. Asking would only wait on a
        coordinator that is often the reason they were lost (a broker restart)."""
        self.abort()
        consumer = self.consumer
        numbers = self.manager.drop()
        gone = {(tp.topic, tp.partition) for tp in lost}
        owned = [tp for tp in consumer.assignment() if (tp.topic, tp.partition) not in gone]
        if not owned:
            return
        committed = committed_offsets(consumer, owned, self.settings.broker_timeout_ms / 1000)
        for tp in committed:
            offset = tp.offset if tp.offset >= 0 else OFFSET_BEGINNING
            try:
                consumer.seek(TopicPartition(tp.topic, tp.partition, offset))
            except KafkaException as exc:
                log.warning("seek %s[%s]: %s", tp.topic, tp.partition, exc)
        self.manager.reopen(numbers)
        self.manager.place(committed)

    def forget(self, numbers: list[int], revoked: set[Position]) -> None:
        """Partitions went to another member: their positions are not ours to commit,
        and another member reads their raw partitions now."""
        for key in [k for k in self.positions if k[1] in numbers or k in revoked]:
            del self.positions[key]
        if self.repartitioner is not None:
            rekeyed = self.manager.names.rekeyed
            self.repartitioner.reset([tp for tp in revoked if tp[0] in rekeyed])
        if self.manager.identity is not None:
            self.manager.identity.reset(sorted(revoked), numbers)

    def close(self) -> None:
        """Abort a transaction still open (the run failed), quietly; stop the purger
        and the watchdog."""
        if self.collector.in_txn:
            try:
                self.producer.abort_transaction(5)
            except Exception as exc:
                log.warning("aborting the open transaction: %s", exc)
        if self.purger is not None:
            self.purger.settle(2.0)  # to report a failure of the last purge
        self.watchdog.close()
