"""The ingest loop: Kafka records -> ``Event`` callback, bad records -> dead-letter topic.

Per batch (``Consumer.consume``): decode every record; hand good events to ``on_event``;
count valid records without a customer key as skipped; queue bad ones as dead letters.
Then flush the dead letters and only after that commit the batch's offsets synchronously.
A crash anywhere before the commit re-reads the batch (at-least-once): no bad record is
lost, and duplicates are harmless because events carry their ``record_id``.

Fatal conditions propagate without committing: a dead letter not delivered
(:class:`~streamsync.dead_letter.DeadLetterFailed`), a fatal client error, a refused
client or no broker for ``broker_timeout_s`` (:mod:`streamsync.kafka.health`, shared
with evaluate and deliver), an exception from ``on_event``.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from streamsync.dead_letter import (
    DEAD_LETTER_PRODUCER_OVERRIDES,
    DeadLetterWriter,
    topic_max_message_bytes,
)
from streamsync.ingest.avro import SchemaRegistry
from streamsync.ingest.config import IngestConfig
from streamsync.ingest.decoder import Decoder, record_time_ms
from streamsync.ingest.event import Event, SourcePosition
from streamsync.ingest.outcomes import Outcomes, TopicStats
from streamsync.ingest.registry_client import configured_registry
from streamsync.kafka.config import KafkaConfig, admin_config, consumer_config, producer_config
from streamsync.kafka.health import ClientHealth, KafkaUnavailable, client_settings

log = logging.getLogger(__name__)

EventCallback = Callable[[Event], None]


class PartitionListener(Protocol):
    """Told which partitions this consumer reads and when one is caught up, so the
    evaluate stage can tell a quiet partition from a slow one."""

    def assigned(self, partitions: list[tuple[str, int]]) -> None: ...

    def revoked(self, partitions: list[tuple[str, int]]) -> None: ...

    def caught_up(self, topic: str, partition: int) -> None: ...


@dataclass
class IngestStats:
    """Counts per topic, and why and when the run stopped."""

    topics: dict[str, TopicStats]
    elapsed_s: float = 0.0
    stopped_by: str = ""

    @property
    def records(self) -> int:
        return sum(t.records for t in self.topics.values())

    @property
    def decoded(self) -> int:
        return sum(t.decoded for t in self.topics.values())

    @property
    def skipped_no_customer(self) -> int:
        return sum(t.skipped_no_customer for t in self.topics.values())

    @property
    def dead_letters_by_reason(self) -> Counter[str]:
        total: Counter[str] = Counter()
        for topic in self.topics.values():
            total.update(topic.dead_lettered)
        return total

    @property
    def dead_lettered(self) -> int:
        return sum(self.dead_letters_by_reason.values())


def _ignore(_event: Event) -> None:
    pass


class IngestLoop:
    """Consumes the configured topics until a stop condition; see the module docstring.

    ``registry`` defaults to the one the configuration names (``schema_registry`` or
    ``schema_registry_dir``).
    ``progress`` is called about every ``progress_interval_s`` with the running stats.
    """

    def __init__(
        self,
        config: IngestConfig,
        kafka: KafkaConfig,
        on_event: EventCallback | None = None,
        *,
        registry: SchemaRegistry | None = None,
        batch_size: int = 1000,
        poll_timeout_s: float = 0.5,
        progress: Callable[[IngestStats], None] | None = None,
        progress_interval_s: float = 5.0,
        consumer_extra: Mapping[str, Any] | None = None,
        producer_extra: Mapping[str, Any] | None = None,
        partitions: PartitionListener | None = None,
        broker_timeout_s: float = 60.0,
    ) -> None:
        if registry is None:
            registry = configured_registry(config)
        self.config = config
        self.kafka = kafka
        self.on_event = on_event or _ignore
        self.decoders = {topic.name: Decoder(topic, registry) for topic in config.topics}
        self.batch_size = batch_size
        self.poll_timeout_s = poll_timeout_s
        self.progress = progress
        self.progress_interval_s = progress_interval_s
        self.partitions = partitions
        self._consumer_extra = dict(consumer_extra or {})
        if partitions is not None:
            # End-of-partition events say "caught up", which the listener needs.
            self._consumer_extra.setdefault("enable.partition.eof", True)
        self._producer_extra = dict(producer_extra or {})
        self._stop = False
        self._last_activity = 0.0
        self._assigned = False
        #: the clients' errors, the outage and when to give up (shared with evaluate)
        self.health = ClientHealth(kafka.bootstrap_servers, logger=log)
        self.broker_timeout_s = broker_timeout_s

    def stop(self) -> None:
        """Ask the loop to finish its current batch, commit and return (signal-safe)."""
        self._stop = True

    def _on_assign(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # A group join can take seconds; it must not count as idleness.
        self._last_activity = time.monotonic()
        self._assigned = True
        self.health.outage.clear()
        log.info("assigned %d partitions", len(partitions))
        if self.partitions is not None:
            self.partitions.assigned([(p.topic, p.partition) for p in partitions])

    def _on_revoke(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._assigned = False
        if self.partitions is not None:
            self.partitions.revoked([(p.topic, p.partition) for p in partitions])

    def _clients(self) -> tuple[Consumer, Producer]:
        base = client_settings(self.kafka.client_config(), self.health)
        bootstrap = self.kafka.bootstrap_servers
        consumer = Consumer(
            consumer_config(bootstrap, self.config.group_id, extra={**base, **self._consumer_extra})
        )
        producer = Producer(
            producer_config(
                bootstrap,
                extra={**base, **DEAD_LETTER_PRODUCER_OVERRIDES, **self._producer_extra},
            )
        )
        return consumer, producer

    def run(
        self, *, max_records: int | None = None, idle_timeout_s: float | None = None
    ) -> IngestStats:
        """Consume until ``max_records`` records were handled, no record arrived for
        ``idle_timeout_s`` seconds, or :meth:`stop` was called; return the counts."""
        stats = IngestStats({name: TopicStats() for name in self.decoders})
        consumer, producer = self._clients()
        # A dead letter larger than its topic accepts would fail on every retry: it is
        # truncated to fit (with a header saying so) instead.
        admin = AdminClient(
            admin_config(
                self.kafka.bootstrap_servers,
                client_settings(self.kafka.client_config(), self.health),
            )
        )
        dead_letters = DeadLetterWriter(
            producer,
            self.config.dead_letter_topic,
            topic_max_message_bytes(
                admin, self.config.dead_letter_topic, min(10.0, self.broker_timeout_s)
            ),
        )
        started = self._last_activity = last_progress = time.monotonic()
        handled = 0
        health = self.health
        outcomes = Outcomes(dead_letters.record)
        try:
            consumer.subscribe(
                list(self.decoders), on_assign=self._on_assign, on_revoke=self._on_revoke
            )
            while True:
                if self._stop:
                    stats.stopped_by = "stop"
                    break
                if max_records is not None and handled >= max_records:
                    stats.stopped_by = "max_records"
                    break
                want = self.batch_size
                if max_records is not None:
                    want = min(want, max_records - handled)
                messages = consumer.consume(num_messages=want, timeout=self.poll_timeout_s)
                health.check()
                now = time.monotonic()
                count = self._handle(messages, stats, outcomes)
                if not self._assigned:  # still joining the group: not idle
                    self._last_activity = now
                health.watch(now, self.broker_timeout_s)
                if count:
                    handled += count
                    self._last_activity = now
                    health.outage.clear()
                    dead_letters.flush()
                    self._commit(consumer)
                elif idle_timeout_s is not None and now - self._last_activity >= idle_timeout_s:
                    stats.stopped_by = "idle_timeout"
                    break
                if self.progress is not None and now - last_progress >= self.progress_interval_s:
                    last_progress = now
                    stats.elapsed_s = now - started
                    self.progress(stats)
        finally:
            stats.elapsed_s = time.monotonic() - started
            consumer.close()
            producer.flush(5)
        return stats

    def _handle(self, messages: list[Any], stats: IngestStats, outcomes: Outcomes) -> int:
        handled = 0
        on_event = self.on_event
        dispatch = outcomes.dispatch
        for message in messages:
            error = message.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    if self.partitions is not None:
                        self.partitions.caught_up(message.topic(), message.partition())
                    continue
                if error.fatal():
                    raise KafkaUnavailable(f"fatal consumer error: {error}")
                log.warning("consumer error on %s: %s", message.topic(), error)
                continue
            handled += 1
            topic = message.topic()
            topic_stats = stats.topics[topic]
            value = message.value()
            key = message.key()
            source = SourcePosition(topic, message.partition(), message.offset())
            decoded = self.decoders[topic].decode_all(value, key, source, record_time_ms(message))
            dispatch(decoded, message, source, topic_stats, on_event)
        return handled

    @staticmethod
    def _commit(consumer: Consumer) -> None:
        try:
            consumer.commit(asynchronous=False)
        except KafkaException as exc:
            error = exc.args[0] if exc.args else None
            if isinstance(error, KafkaError) and error.code() == KafkaError._NO_OFFSET:
                return
            raise KafkaUnavailable(f"offset commit failed: {exc}") from exc
