"""The tasks one process holds, through rebalances and rewinds.

Like Kafka Streams' TaskManager: a task is opened when its partition number is
assigned (its state restored from the local copy plus the changelog tail), parked when
it is revoked after a commit (if the same partition comes back and nobody wrote its
changelog meanwhile, the parked task is reused without a restore), closed when it is
lost or when its work is rolled back, and opened again after a rewind. Partition ``p``
of every task input is task ``p``; raw partitions of re-keyed topics have no task.

The manager also moves every task's time on (:meth:`TaskManager.advance`,
:meth:`TaskManager.finish`), producing what fires through the collector.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

import orjson
from confluent_kafka import Consumer, TopicPartition

from streamsync.audiences.compiler import Customer
from streamsync.audiences.definition import Audience
from streamsync.dead_letter import DETAIL_HEADER, dead_letter_headers
from streamsync.errors import NeedsOperator
from streamsync.ingest.decoder import Decoder
from streamsync.ingest.event import SourcePosition
from streamsync.runtime import gc_policy
from streamsync.runtime.collector import Collector
from streamsync.runtime.config import EvaluateConfig
from streamsync.runtime.history import Coverage, read_history, uncovered
from streamsync.runtime.identity_stage import IdentityStage
from streamsync.runtime.repartition import Repartitioner
from streamsync.runtime.stats import EvaluateStats
from streamsync.runtime.task import Task
from streamsync.runtime.telemetry import EvaluateTelemetry
from streamsync.runtime.topics import TopicNames
from streamsync.state.recovery import RestoreStopped, partition_range, restore_partition
from streamsync.state.store import PartitionStore, StoreDamaged

log = logging.getLogger(__name__)


#: The dead-letter reason of a customer whose per-key facts hit the cap.
CUSTOMER_CAPPED = "customer_capped"


class RebuildRefused(NeedsOperator):
    """Changed definitions would be rebuilt from incomplete history and the operator
    asked to hold such changes (``inexact_rebuilds: refuse``): exit status 1."""


class TaskManager:
    """Opens, parks and closes the tasks of ``tasks``; see the module docstring."""

    def __init__(
        self,
        *,
        settings: EvaluateConfig,
        names: TopicNames,
        audiences: Sequence[Audience],
        tasks: dict[int, Task],
        restorer: Consumer,
        collector: Collector,
        stats: EvaluateStats,
        telemetry: EvaluateTelemetry,
        repartitioner: Repartitioner | None,
        decoders: Mapping[str, Decoder],
        stopping: Callable[[], bool] = lambda: False,
        identity: IdentityStage | None = None,
    ) -> None:
        self.settings = settings
        #: whether a stop was asked for: checked between restore steps (see ``open``)
        self.stopping = stopping
        self.decoders = decoders
        #: audiences whose definition change was reported already (once per process)
        self._reported: set[str] = set()
        #: customers whose capped facts were logged (once each, for the first thousand)
        self._capped_logged: set[str] = set()
        self.names = names
        self.audiences = list(audiences)
        #: partition number -> its open task (shared with the router: changed in place)
        self.tasks = tasks
        #: partition number -> (task revoked after a commit, its changelog end then)
        self.parked: dict[int, tuple[Task, int]] = {}
        self.restorer = restorer
        self.collector = collector
        self.stats = stats
        self.telemetry = telemetry
        self.merged = (
            {}
            if repartitioner is None
            else {target: repartitioner.sources(raw) for raw, target in names.rekeyed.items()}
        )
        #: identity resolution (``identity.live``), or ``None``
        self.identity = identity
        if identity is not None:
            self.merged.update(identity.merged())

    def numbers(self, partitions: Iterable[TopicPartition]) -> list[int]:
        """The tasks of ``partitions``: raw partitions of re-keyed topics have none."""
        rekeyed = self.names.rekeyed
        return sorted({tp.partition for tp in partitions if tp.topic not in rekeyed})

    # -- rebalances ----------------------------------------------------------------------

    def assign(self, numbers: list[int]) -> None:
        """Open the tasks of ``numbers`` not open yet; close parked tasks not among them.
        A stop asked for meanwhile raises :class:`RestoreStopped` before the next task
        (or inside a restore), instead of after every partition was restored."""
        self.telemetry.restoring(numbers)
        for number in list(self.parked):
            if number not in numbers:
                _close(self.parked.pop(number)[0])
        for number in numbers:
            if number not in self.tasks:
                if self.stopping():
                    raise RestoreStopped(f"stopped before restoring partition {number}")
                self.tasks[number] = self.open(number)
        log.info("assigned partitions %s", numbers)
        gc_policy.rescan()  # tasks may have been dropped or replaced
        self.telemetry.assigned()

    def revoke(self, numbers: list[int], *, committed: bool) -> None:
        """Give up the tasks of ``numbers``: parked when their work was ``committed``
        (to be reused if they come back), else closed."""
        for number in numbers:
            task = self.tasks.pop(number, None)
            if task is None:
                continue
            if committed:
                self.parked[number] = (task, self._changelog_end(number))
            else:
                _close(task)
        self.telemetry.revoked(numbers)

    def lost(self, numbers: list[int]) -> None:
        """The tasks of ``numbers`` were taken away without a chance to commit."""
        for number in numbers:
            task = self.tasks.pop(number, None)
            if task is not None:
                _close(task)
        gc_policy.rescan()
        self.telemetry.revoked(numbers)

    def drop(self) -> list[int]:
        """Close every open task (their in-memory state is past the last commit);
        return their numbers, for :meth:`reopen`."""
        numbers = sorted(self.tasks)
        for task in self.tasks.values():
            _close(task)
        self.tasks.clear()
        gc_policy.rescan()
        return numbers

    def reopen(self, numbers: Iterable[int]) -> None:
        """Open the tasks of ``numbers`` again, restored as of the last commit."""
        for number in numbers:
            self.tasks[number] = self.open(number)

    def place(self, committed: Iterable[TopicPartition]) -> None:
        """Tell each task where its inputs will be read from (the ``committed`` offsets,
        or the start of the partition when none is) and the end offset the broker
        reports now, asked for each partition: a task knows from offsets alone whether
        an input has more to give (see :mod:`.task`). Raw partitions of re-keyed topics
        have no task; the re-keying stage learns their ends from the consumer."""
        rekeyed = self.names.rekeyed
        #: task -> input -> (oldest offset held, committed position): its history
        ranges: dict[int, dict[str, tuple[int, int]]] = {}
        for tp in committed:
            task = self.tasks.get(tp.partition)
            if task is None or tp.topic in rekeyed or tp.topic not in task.caught_up:
                continue
            low, high = partition_range(self.restorer, tp.topic, tp.partition)
            position = tp.offset if tp.offset >= 0 else int(low)
            task.place(tp.topic, position, int(high))
            ranges.setdefault(tp.partition, {})[tp.topic] = (int(low), position)
        for number, task in self.tasks.items():
            if task.migration is not None:
                self._migrate(task, ranges.get(number, {}))

    # -- changed definitions -------------------------------------------------------------

    def _migrate(self, task: Task, ranges: Mapping[str, tuple[int, int]]) -> None:
        """Apply changed definitions to ``task``'s stored customers (see
        :mod:`streamsync.audiences.migration`): facts the state lacks are rebuilt from
        the input history still on the broker; what that cannot cover is reported once
        per audience, or, with ``inexact_rebuilds: refuse``, stops the service."""
        migration = task.migration
        assert migration is not None
        history: dict[str, Customer] = {}
        coverage: list[Coverage] = []
        keyed = {topic: r for topic, r in ranges.items() if topic not in task.merged}
        if migration.history_facts and not migration.same_layout:
            skip = {
                (e.source.topic, e.source.offset)
                for _, _, e in task.engine.buffered
                if e.source is not None
            }
            history, coverage = read_history(
                self.restorer,
                keyed,
                task.partition,
                self.decoders,
                migration,
                skip=skip,
                timeout_s=self.settings.rebuild_timeout_ms / 1000,
            )
        clock = task.engine.watermark - 1
        for change in migration.changes.values():
            if change.history:
                change.missing.extend(uncovered(change, coverage, sorted(task.merged), clock))
        inexact = [
            c for c in migration.changes.values() if c.kind in ("changed", "added") and c.missing
        ]
        if inexact and self.settings.inexact_rebuilds == "refuse":
            raise RebuildRefused(
                "changed audiences cannot be rebuilt exactly (inexact_rebuilds: refuse): "
                + "; ".join(migration.describe(c) for c in inexact)
            )
        for change in migration.changes.values():
            if change.name not in self._reported and change.kind != "unchanged":
                self._reported.add(change.name)
                line = migration.describe(change)
                (log.warning if change.missing else log.info)("definition change: %s", line)
        self.telemetry.definitions_changed(migration)
        deltas = task.migrate(history)
        if deltas:
            self.stats.definition_changes += len(deltas)
            self.collector.deltas(deltas, task.partition)

    def close(self) -> None:
        """Close every task, open or parked."""
        for task in [*self.tasks.values(), *(t for t, _ in self.parked.values())]:
            _close(task)
        self.tasks.clear()
        self.parked.clear()

    # -- opening -------------------------------------------------------------------------

    def open(self, partition: int) -> Task:
        """The task for ``partition``, its state restored from the local copy plus the
        changelog tail (or reused as parked if nobody wrote its changelog since)."""
        parked = self.parked.pop(partition, None)
        if parked is not None:
            task, end = parked
            if self._changelog_end(partition) == end:
                task.reopened()
                self.telemetry.task_opened(task)
                return task
            _close(task)
        task = self._new_task(partition)
        telemetry = self.telemetry
        for attempt in (1, 2):
            store = PartitionStore(self.task_dir(partition))
            try:
                restore_partition(
                    self.restorer,
                    store,
                    self.names.changelog,
                    partition,
                    on_offsets=lambda done, total: telemetry.restore_progress(
                        partition, done, total
                    ),
                    stopping=self.stopping,
                )
                customers = task.load(store, f"{self.names.changelog}[{partition}]")
                break
            except RestoreStopped:
                store.close()  # what was read is written: the next start goes on from it
                raise
            except StoreDamaged as exc:
                store.close()
                if attempt == 2:
                    raise
                log.warning("partition %d: %s; restoring it again", partition, exc)
                task = self._new_task(partition)
        self.stats.restored_customers += customers
        if customers:
            log.info("partition %d: %d customers restored", partition, customers)
        telemetry.task_opened(task)
        return task

    def _new_task(self, partition: int) -> Task:
        """A task for ``partition`` with no state yet (:meth:`Task.load` gives it some)."""
        settings = self.settings
        return Task(
            partition,
            self.names.task_topics,
            self.audiences,
            allowed_lateness_ms=settings.allowed_lateness_ms,
            dedup_horizon_ms=settings.dedup_horizon_ms,
            wall_clock=settings.wall_clock,
            idle_grace_ms=settings.idle_grace_ms,
            merged=self.merged,
            max_keys=settings.max_keys_per_customer,
            identity=None if self.identity is None else self.identity.config,
            identity_topic=self.names.identity,
        )

    def task_dir(self, partition: int) -> Path:
        return self.settings.state_dir / self.names.changelog / str(partition)

    def _changelog_end(self, partition: int) -> int:
        _, high = partition_range(self.restorer, self.names.changelog, partition)
        return high

    # -- time ----------------------------------------------------------------------------

    def advance(self, now_ms: int) -> None:
        """Move every task's watermark to what ``now_ms`` allows; produce what fires."""
        emit = self.collector.deltas
        identity = self.identity
        for task in self.tasks.values():
            if identity is not None:
                identity.decide(task, now_ms, self.collector.send)
            deltas = task.advance(now_ms)
            if deltas:
                emit(deltas, task.partition)
            if task.engine.program.context.capped:
                self._report_capped(task)

    def finish(self) -> None:
        """Fire every deadline up to the newest record of any task, as ``replay`` does
        at the end of its input."""
        newest = max(
            (ts for task in self.tasks.values() for ts in task.newest.values()),
            default=None,
        )
        if newest is None:
            return
        for task in self.tasks.values():
            deltas = task.finish(newest)
            if deltas:
                self.collector.deltas(deltas, task.partition)
            if task.engine.program.context.capped:
                self._report_capped(task)

    def _report_capped(self, task: Task) -> None:
        """Customers whose per-key facts hit ``max_keys_per_customer``: counted, one
        dead letter each (naming the customer, the cap and the record that made the
        fact drop its least recent keys) in the cycle's transaction, and logged."""
        cap = self.settings.max_keys_per_customer
        for cid, (dropped, event) in task.engine.take_capped().items():
            self.stats.keys_dropped += dropped
            source = event.source or SourcePosition("", task.partition, -1)
            detail = (
                f"customer {cid!r} has more than {cap} keys in one per-key fact; its "
                f"{dropped} least recent were dropped (evaluate.max_keys_per_customer)"
            )
            headers = dead_letter_headers(
                CUSTOMER_CAPPED, source, ((DETAIL_HEADER, detail),), timestamp_ms=event.timestamp_ms
            )
            value = orjson.dumps({"customer_id": cid, "cap": cap, "dropped": dropped})
            self.collector.dead_letters.write(value, cid.encode(), headers)
            if len(self._capped_logged) < 1_000 and cid not in self._capped_logged:
                self._capped_logged.add(cid)
                log.warning("partition %d: %s", task.partition, detail)


def _close(task: Task) -> None:
    if task.store is not None:
        task.store.close()
