"""The console's store fed from the deltas topic: read whole on start, then followed.

One assign-only, ``read_committed`` consumer (no group, no commits: the console changes
nothing on the cluster) on every partition of ``deltas.topic`` from its oldest retained
record. Until it reaches the end the topic had when the build started the store says
``building`` with its progress; from then on ``live``, and new deltas show up on the next
page view. A topic that does not exist yet (evaluate creates it) is waited for. It runs in
a daemon thread, so a slow or unreachable cluster never blocks a page.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    TopicPartition,
)

from streamsync.config import AppConfig
from streamsync.console.store import ConsoleStore
from streamsync.deltas.codec import delta_decoder
from streamsync.deltas.record import MembershipDelta
from streamsync.kafka.config import consumer_config
from streamsync.kafka.health import QUIET_CLIENT

log = logging.getLogger("streamsync.console")

#: How often a missing topic or an unreachable cluster is tried again.
RETRY_S = 5.0


class DeltasFeed:
    """Fill ``store`` from ``config``'s deltas topic in a background thread."""

    def __init__(self, config: AppConfig, store: ConsoleStore) -> None:
        self.config = config
        self.store = store
        self._stop = threading.Event()
        self._restart = threading.Event()
        self._thread: threading.Thread | None = None
        self._decode = delta_decoder(config.deltas.format)

    def start(self) -> DeltasFeed:
        self._thread = threading.Thread(target=self._run, name="console-deltas", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def rebuild(self) -> None:
        """Read the topic again from its oldest record (an operator's action)."""
        self._restart.set()

    def _consumer(self) -> Consumer:
        kafka = self.config.kafka
        return Consumer(
            consumer_config(
                kafka.bootstrap_servers,
                f"streamsync-console-{uuid.uuid4().hex}",
                extra={**kafka.client_config(), **QUIET_CLIENT, "enable.partition.eof": True},
            )
        )

    def _run(self) -> None:
        while not self._stop.is_set():
            self._restart.clear()
            self.store.clear()
            consumer = self._consumer()
            try:
                self._follow(consumer)
            except KafkaException as exc:
                error = exc.args[0] if exc.args else None
                detail = error.str() if isinstance(error, KafkaError) else str(exc)
                self.store.set_state("waiting", error=f"Kafka: {detail}")
                log.warning("console: reading %s failed: %s", self.config.deltas.topic, detail)
                self._stop.wait(RETRY_S)
            finally:
                consumer.close()

    def _partitions(self, consumer: Consumer) -> list[int] | None:
        topic = self.config.deltas.topic
        metadata = consumer.list_topics(topic, timeout=10)
        found = metadata.topics.get(topic)
        if found is None or found.error is not None or not found.partitions:
            return None
        return sorted(found.partitions)

    def _follow(self, consumer: Consumer) -> None:
        topic = self.config.deltas.topic
        partitions = self._partitions(consumer)
        while partitions is None:
            self.store.set_state(
                "waiting", error=f"topic {topic} does not exist yet (evaluate creates it)"
            )
            if self._stop.wait(RETRY_S) or self._restart.is_set():
                return
            partitions = self._partitions(consumer)
        ends: dict[int, int] = {}
        target = 0
        for p in partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            if high > low:
                ends[p] = high
                target += high - low
        self.store.set_state("building" if ends else "live", target=target)
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        while not self._stop.is_set() and not self._restart.is_set():
            batch: list[MembershipDelta] = []
            undecodable = 0
            for message in consumer.consume(1000, 0.5):
                error = message.error()
                partition = message.partition() or 0
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        ends.pop(partition, None)
                    elif error.fatal():
                        raise KafkaException(error)
                    continue
                try:
                    batch.append(self._decode(message.value() or b""))
                except (ValueError, KeyError, TypeError, EOFError, IndexError):
                    undecodable += 1
                offset = message.offset() or 0
                if partition in ends and offset >= ends[partition] - 1:
                    del ends[partition]
            if batch:
                self.store.apply(batch)
            if undecodable:
                self.store.count_undecodable(undecodable)
            if not ends and self.store.status().state == "building":
                self.store.set_state("live")
                log.info("console: %s read to its end; following it", topic)


def wait_live(store: ConsoleStore, timeout_s: float) -> bool:
    """Whether the store reached ``live`` within ``timeout_s`` (for tests and the demo)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if store.status().state == "live":
            return True
        time.sleep(0.05)
    return False
