"""The evaluate application: input topics -> tasks (engine + state) -> deltas, exactly once.

One :class:`Application` runs what the service does; ``streamsync evaluate`` and
``streamsync demo`` both run it. It only wires the parts, each a module of its own
(Kafka Streams' roles in brackets):

* :mod:`~streamsync.runtime.topics` - the topic plan and its creation;
* :mod:`~streamsync.runtime.clients` - the Kafka clients, built once from an injected
  :class:`KafkaClients` factory;
* :mod:`~streamsync.runtime.router` - each message to its task, the re-keying stage, or
  a dead letter (StreamTask's input side);
* :mod:`~streamsync.runtime.task_manager` - tasks through rebalances and rewinds
  (TaskManager); :mod:`~streamsync.runtime.task` - one task (StreamTask);
* :mod:`~streamsync.runtime.collector` - writes into the open transaction
  (RecordCollector), the deltas with the membership table
  (:mod:`~streamsync.deltas.membership`);
* :mod:`~streamsync.runtime.checkpoint` - commit, abort, rewind (StreamsProducer);
* :mod:`~streamsync.runtime.telemetry` - what is reported, to whom it may concern.

:meth:`Application.run` connects (waiting for the cluster and the topics), builds the
clients, then the :class:`Runtime` on them, and runs the cycle (StreamThread): every
``commit_interval`` (default 100 ms) the records received are routed and evaluated,
every task's time moves on, and the cycle's deltas (with their membership-table
records), dead letters, state changes and consumed offsets commit in one transaction
(see :mod:`~streamsync.runtime.checkpoint`).

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

import functools
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from confluent_kafka import Consumer, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from streamsync.audiences.definition import Audience
from streamsync.audiences.loader import load_audiences
from streamsync.config import AppConfig
from streamsync.dead_letter import topic_max_message_bytes
from streamsync.deltas.membership import member_partitioner
from streamsync.deltas.record import MembershipDelta
from streamsync.ingest.avro import SchemaRegistry
from streamsync.ingest.decoder import Decoder
from streamsync.ingest.outcomes import TopicStats
from streamsync.ingest.registry_client import configured_registry
from streamsync.kafka.health import ClientHealth
from streamsync.runtime import gc_policy
from streamsync.runtime.checkpoint import Checkpoint, Watchdog, watchdog_for
from streamsync.runtime.clients import (
    ConfluentClients,
    EvaluateClients,
    KafkaClients,
    check_state_dir,
    instance_id,
    open_admin,
    open_clients,
    wait_for_cluster,
)
from streamsync.runtime.collector import Collector, delta_encoder
from streamsync.runtime.config import EvaluateConfig
from streamsync.runtime.errors import (
    RESTART_EXIT_STATUS,
    RestartRequired,
    StartupError,
)
from streamsync.runtime.identity_stage import IdentityStage
from streamsync.runtime.offsets import committed_offsets, end_offset
from streamsync.runtime.repartition import Purger, Repartitioner
from streamsync.runtime.router import ENGINE_ERROR, Router
from streamsync.runtime.stats import EvaluateStats
from streamsync.runtime.task import Task
from streamsync.runtime.task_manager import TaskManager
from streamsync.runtime.telemetry import EvaluateTelemetry, NoTelemetry
from streamsync.runtime.topics import TopicPlan, ensure_topics, topic_names
from streamsync.state.directory_lock import StateDirLock
from streamsync.state.recovery import RestoreStopped

__all__ = [
    "ENGINE_ERROR",
    "RESTART_EXIT_STATUS",
    "Application",
    "ConfluentClients",
    "EvaluateClients",
    "EvaluateStats",
    "KafkaClients",
    "RestartRequired",
    "Runtime",
    "StartupError",
    "Watchdog",
    "instance_id",
]

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    """The parts of one run, built on its clients (see :meth:`build`); what the loop of
    :meth:`Application.run` (or a test's driver) calls."""

    collector: Collector
    router: Router
    manager: TaskManager
    checkpoint: Checkpoint
    health: ClientHealth
    #: the run failed: closing must not try to commit a doomed transaction
    failed: bool = False

    @classmethod
    def build(
        cls,
        *,
        config: AppConfig,
        plan: TopicPlan,
        audiences: Sequence[Audience],
        decoders: Mapping[str, Decoder],
        tasks: dict[int, Task],
        stats: EvaluateStats,
        telemetry: EvaluateTelemetry,
        consumer: Consumer,
        producer: Producer,
        restorer: Consumer,
        admin: AdminClient | None,
        health: ClientHealth,
        watchdog: Watchdog,
        dead_letter_max: int | None,
        encode: Callable[[MembershipDelta], bytes] | None = None,
        stopping: Callable[[], bool] = lambda: False,
    ) -> Runtime:
        """Wire the parts; ``admin`` (for purging repartition topics) may be ``None``."""
        settings = _settings(config)
        names = plan.names
        repartitioner = None
        purger = None
        if names.rekeyed:
            repartitioner = Repartitioner(
                names.rekeyed,
                plan.partitions,
                plan.raw_partitions,
                settings.repartition_partitioner,
            )
        internal = [*names.rekeyed.values(), *names.identity_topics]
        if internal and admin is not None:
            interval_s = settings.repartition_purge_interval_ms / 1000
            purger = Purger(admin, internal, interval_s)
        identity = None
        if names.identity:
            identity = IdentityStage(
                config.identity,
                identity_topic=names.identity,
                forward_topic=names.forward,
                partitions=plan.partitions,
                input_partitions={
                    topic: plan.raw_partitions.get(topic, plan.partitions) for topic in names.inputs
                },
                partitioner=settings.repartition_partitioner,
            )
        positions: dict[tuple[str, int], int] = {}
        collector = Collector(
            producer,
            deltas_topic=names.deltas,
            members_topic=names.members,
            member_partition=member_partitioner(config, plan.members_partitions),
            dead_letter_topic=names.dead_letters,
            encode=encode or delta_encoder(config),
            dead_letter_max=dead_letter_max,
            stats=stats,
            telemetry=telemetry,
        )
        manager = TaskManager(
            settings=settings,
            names=names,
            audiences=audiences,
            tasks=tasks,
            restorer=restorer,
            collector=collector,
            stats=stats,
            telemetry=telemetry,
            repartitioner=repartitioner,
            decoders=decoders,
            stopping=stopping,
            identity=identity,
        )
        router = Router(
            decoders=decoders,
            rekeyed=names.rekeyed,
            tasks=tasks,
            collector=collector,
            stats=stats,
            telemetry=telemetry,
            positions=positions,
            repartitioner=repartitioner,
            end_offset=functools.partial(end_offset, consumer, cached=True),
            # The restore consumer: its connection is idle, while a request on the group
            # consumer's waits behind the fetch long-poll in flight (up to 500 ms).
            query_end=functools.partial(end_offset, restorer, cached=False),
            lateness_ms=settings.allowed_lateness_ms,
            identity=identity,
        )
        checkpoint = Checkpoint(
            settings=settings,
            consumer=consumer,
            producer=producer,
            collector=collector,
            manager=manager,
            stats=stats,
            telemetry=telemetry,
            positions=positions,
            repartitioner=repartitioner,
            purger=purger,
            watchdog=watchdog,
        )
        return cls(collector, router, manager, checkpoint, health)

    def advance(self, now_ms: int) -> bool:
        """Move the tasks' time on; ``False`` when a record made the engine raise (the
        work since the last commit was then rewound, that record to be dead-lettered)."""
        try:
            self.manager.advance(now_ms)
        except Exception as exc:  # a record the engine cannot apply
            self.router.poisoned(exc)
            self.checkpoint.rewind()
            return False
        return True

    # -- rebalance callbacks (errors are raised by the loop: librdkafka swallows them) ----

    def on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        try:
            # Wait for offsets of transactions still in flight (a previous owner's last
            # commit) before reading the changelog, so state and offsets agree.
            committed = committed_offsets(consumer, partitions, 60.0)
            self.manager.assign(self.manager.numbers(partitions))
            self.manager.place(committed)
        except BaseException as exc:
            self.health.failed(exc)

    def on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        try:
            numbers = self.manager.numbers(partitions)
            budget_s = self.checkpoint.settings.revoke_budget_ms / 1000
            committed = not self.failed and self.checkpoint.commit(budget_s)
            self.manager.revoke(numbers, committed=committed)
            self.checkpoint.forget(numbers, {(tp.topic, tp.partition) for tp in partitions})
        except BaseException as exc:
            self.health.failed(exc)

    def on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Partitions taken away without a chance to commit: the open transaction can
        no longer commit their offsets, so all uncommitted work is dropped."""
        try:
            self.manager.lost(self.manager.numbers(partitions))
            if not self.failed:
                self.checkpoint.rewind(lost=partitions)
        except BaseException as exc:
            self.health.failed(exc)


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
        telemetry: EvaluateTelemetry | None = None,
    ) -> None:
        self.config = config
        self.settings: EvaluateConfig = _settings(config)
        check_state_dir(self.settings.state_dir)  # a file there: one line, before any work
        self.audiences = (
            list(audiences) if audiences is not None else load_audiences(self.settings.audiences)
        )
        self.clients = clients or ConfluentClients()
        ingest = config.ingest
        if registry is None:
            registry = configured_registry(ingest)
        links = config.identity.resolves_live  # anonymous records and aliases decoded
        self.decoders = {
            topic.name: Decoder(topic, registry, links=links) for topic in ingest.topics
        }
        self.names = topic_names(config)
        #: the configured input topics
        self.topics = self.names.inputs
        #: topics not keyed by customer -> the internal topics they are re-keyed through
        self.rekeyed = self.names.rekeyed
        self.batch_size = batch_size
        self.progress = progress
        self.progress_interval_s = progress_interval_s
        self.stats = EvaluateStats({name: TopicStats() for name in self.names.subscription})
        #: the open tasks, by partition number (filled while running)
        self.tasks: dict[int, Task] = {}
        #: where the run reports (``streamsync evaluate`` sets the process telemetry)
        self.telemetry: EvaluateTelemetry = telemetry or NoTelemetry()
        self._stop = False

    def stop(self) -> None:
        """Finish the current batch, commit and return from :meth:`run` (signal-safe)."""
        self._stop = True

    def run(self, *, idle_timeout_s: float | None = None, finish: bool = False) -> EvaluateStats:
        """Evaluate until :meth:`stop` (or, with ``idle_timeout_s``, until every task is
        caught up and no record arrived for that long, counted only once partitions are
        assigned). ``finish`` then fires every deadline up to the newest record before
        the last commit, as ``replay`` does at the end of its input. The state directory
        is locked for the run (:mod:`streamsync.state.directory_lock`): a second process
        on it stops at once instead of fencing this one."""
        with StateDirLock(self.settings.state_dir):
            return self._run(idle_timeout_s, finish)

    def _run(self, idle_timeout_s: float | None, finish: bool) -> EvaluateStats:
        config, settings = self.config, self.settings
        health = ClientHealth(config.kafka.bootstrap_servers)
        admin = open_admin(self.clients, config, health)
        plan = ensure_topics(admin, config, wait_for_cluster(admin, settings, health))
        dead_letter_max = topic_max_message_bytes(admin, plan.names.dead_letters)
        clients = open_clients(self.clients, config, settings, admin, health)
        runtime = Runtime.build(
            config=config,
            plan=plan,
            audiences=self.audiences,
            decoders=self.decoders,
            tasks=self.tasks,
            stats=self.stats,
            telemetry=self.telemetry,
            consumer=clients.consumer,
            producer=clients.producer,
            restorer=clients.restorer,
            admin=admin,
            health=health,
            watchdog=watchdog_for(settings),
            dead_letter_max=dead_letter_max,
            stopping=lambda: self._stop,
        )
        started = time.monotonic()
        try:
            self._loop(clients, runtime, started, idle_timeout_s, finish)
        except RestoreStopped as stopped:
            # A stop during a restore (a rebalance's, a rewind's): nothing was evaluated
            # since the last commit (a revoke commits, a rewind aborted), so nothing is
            # committed now, and the tasks not restored are never opened.
            log.info("%s", stopped)
            self.stats.stopped_by = "stop"
            runtime.failed = True
        except BaseException:
            runtime.failed = True  # closing must not try to commit a doomed transaction
            raise
        finally:
            self.stats.elapsed_s = time.monotonic() - started
            _close(clients, runtime)
        return self.stats

    def _loop(
        self,
        clients: EvaluateClients,
        runtime: Runtime,
        started: float,
        idle_timeout_s: float | None,
        finish: bool,
    ) -> None:
        consumer = clients.consumer
        router, checkpoint, health = runtime.router, runtime.checkpoint, runtime.health
        telemetry, stats, tasks = self.telemetry, self.stats, self.tasks
        broker_timeout_s = self.settings.broker_timeout_ms / 1000
        interval = self.settings.commit_interval_ms / 1000
        next_commit = started + interval
        last_progress = started
        idle_since: float | None = None
        consumer.subscribe(
            self.names.subscription,
            on_assign=runtime.on_assign,
            on_revoke=runtime.on_revoke,
            on_lost=runtime.on_lost,
        )
        while not self._stop:
            timeout = max(0.0, min(interval, next_commit - time.monotonic()))
            messages = self._receive(consumer, timeout)
            health.check()
            now = time.monotonic()
            if messages and router.route(messages):
                idle_since = None
                health.outage.clear()
            if not runtime.advance(int(time.time() * 1000)):
                continue
            if now >= next_commit:
                # The interval runs from the start of a commit, so that the commit's own
                # round trips do not lengthen every cycle.
                next_commit = time.monotonic() + interval
                checkpoint.commit()
                gc_policy.settle()
            health.watch(now, broker_timeout_s, consumer)
            telemetry.tick(consumer, tasks.values())
            if idle_timeout_s is not None:
                if tasks and all(all(t.caught_up.values()) for t in tasks.values()):
                    idle_since = idle_since or now
                    if now - idle_since >= idle_timeout_s:
                        stats.stopped_by = "idle_timeout"
                        break
                else:
                    idle_since = None
            if self.progress is not None and now - last_progress >= self.progress_interval_s:
                last_progress = now
                stats.elapsed_s = now - started
                self.progress(stats)
        else:
            stats.stopped_by = "stop"
        if finish:
            runtime.manager.finish()
        checkpoint.commit()

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


def _settings(config: AppConfig) -> EvaluateConfig:
    if config.evaluate is None:
        raise StartupError("the configuration has no evaluate section")
    return config.evaluate


def _close(clients: EvaluateClients, runtime: Runtime) -> None:
    try:
        clients.consumer.close()  # revokes: commits (nothing left) and parks the tasks
    except Exception as exc:
        log.warning("closing the consumer: %s", exc)
    runtime.checkpoint.close()
    runtime.manager.close()
    clients.restorer.close()
    gc_policy.rescan()
