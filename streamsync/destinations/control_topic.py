"""The control topic on Kafka: following it (every deliver replica) and writing it (the
``streamsync destinations`` command, the console).

Every replica follows the whole topic (one partition, assign-only: not in the deliver
group, so it is read by all replicas, not shared among them) from its oldest record, and
polls it without blocking from the deliver loop; the commands are in
:mod:`~streamsync.destinations.commands`. The topic is compacted with one partition:
a few records per destination, and one order for them all.
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any

import orjson
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient

from streamsync.config import AppConfig
from streamsync.destinations.acknowledged import ensure_topic
from streamsync.destinations.commands import (
    Command,
    ControlKey,
    ControlView,
    decode_key,
    encode_key,
    fold,
)
from streamsync.kafka.config import admin_config, consumer_config, producer_config
from streamsync.kafka.health import QUIET_CLIENT, ClientHealth, KafkaUnavailable, client_settings

log = logging.getLogger("streamsync.deliver")

#: How long the first read of the topic (at start-up, or by a command) may take.
READ_TIMEOUT_S = 30.0
_NO_TOPIC = (
    KafkaError.UNKNOWN_TOPIC_OR_PART,
    KafkaError._UNKNOWN_TOPIC,
    KafkaError._UNKNOWN_PARTITION,
)


def ensure_control_topic(
    config: AppConfig,
    topic: str,
    timeout_s: float = READ_TIMEOUT_S,
    health: ClientHealth | None = None,
) -> None:
    """Create the (compacted, one partition) control topic unless it exists;
    :class:`KafkaUnavailable` when Kafka does not answer within ``timeout_s``. With
    ``health`` (a loop's), the client's errors go there, so a cluster that refuses the
    client (credentials) is told apart from one that does not answer."""
    settings = config.kafka.client_config()
    if health is not None:
        settings = client_settings(settings, health)
    admin = AdminClient(admin_config(config.kafka.bootstrap_servers, settings))
    try:
        ensure_topic(admin, topic, 1, timeout_s)
    except KafkaException as exc:
        admin.poll(0)  # serve the error callback: what the cluster said, for ``health``
        raise KafkaUnavailable(
            f"cannot reach Kafka at {config.kafka.bootstrap_servers} for {topic}: {exc}"
        ) from None


class ControlFollower:
    """The control records of one destination as they are now, kept current by
    :meth:`poll` (no blocking). :meth:`start` reads the topic to its end first, so the
    first assignment already sees what the operators asked for."""

    def __init__(self, config: AppConfig, topic: str, health: ClientHealth | None = None) -> None:
        self.topic = topic
        self._records: dict[ControlKey, bytes] = {}
        self.view = ControlView()
        settings = {**config.kafka.client_config(), **QUIET_CLIENT}
        if health is not None:  # the loop's: a refused client stops it (see ClientHealth)
            settings = client_settings(settings, health)
        self.consumer = Consumer(
            consumer_config(
                config.kafka.bootstrap_servers,
                f"streamsync-control-{uuid.uuid4().hex}",
                extra={**settings, "enable.partition.eof": True},
            )
        )  # fmt: skip

    def start(self, timeout_s: float = READ_TIMEOUT_S) -> ControlView:
        """Read the topic to its end; :class:`KafkaUnavailable` past ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        where = TopicPartition(self.topic, 0)
        try:
            low, high = self.consumer.get_watermark_offsets(where, timeout=timeout_s)
        except KafkaException as exc:
            error = exc.args[0] if exc.args else None
            if isinstance(error, KafkaError) and error.code() in _NO_TOPIC:
                return self.view  # nothing was ever written: nothing is asked for
            raise KafkaUnavailable(f"reading {self.topic}: {exc}") from None
        self.consumer.assign([TopicPartition(self.topic, 0, OFFSET_BEGINNING)])
        at_end = high <= low  # empty: nothing to wait for
        while not at_end:
            if time.monotonic() >= deadline:
                raise KafkaUnavailable(f"reading {self.topic} took over {timeout_s:.0f}s")
            for message in self.consumer.consume(500, 0.2):
                if self._take(message):
                    at_end = True
        self.view = fold(self._records)
        return self.view

    def _take(self, message: Message) -> bool:
        """Apply one record; True at the partition's end."""
        error = message.error()
        if error is not None:
            if error.code() == KafkaError._PARTITION_EOF:
                return True
            if error.code() != KafkaError.UNKNOWN_TOPIC_OR_PART:
                log.warning("%s: %s", self.topic, error)
            return False
        raw = message.key()
        if raw is None:
            return False
        try:
            key = decode_key(raw)
        except ValueError:
            return False
        value = message.value()
        if value is None:
            self._records.pop(key, None)
        else:
            self._records[key] = value
        return False

    def poll(self) -> ControlView:
        """The view with any records written since (returns at once)."""
        changed = False
        for message in self.consumer.consume(100, 0):
            self._take(message)
            changed = changed or message.error() is None
        if changed:
            self.view = fold(self._records)
        return self.view

    def close(self) -> None:
        self.consumer.close()


class ControlWriter:
    """Writes control records of one destination (the command line and the console use
    the same one), each flushed before :meth:`write` returns."""

    def __init__(self, config: AppConfig, topic: str, *, by: str = "") -> None:
        self.topic = topic
        self.by = by
        self.producer = Producer(
            producer_config(config.kafka.bootstrap_servers,
                            extra={**config.kafka.client_config(), **QUIET_CLIENT})
        )  # fmt: skip
        self._errors: list[KafkaError] = []

    def write(self, command: Command, scope: str | None, value: dict[str, Any] | None) -> None:
        """One record (``None``: undo); :class:`KafkaUnavailable` unless written."""
        body = None
        if value is not None:
            body = orjson.dumps({**value, "at_ms": int(time.time() * 1000), "by": self.by})
        self.producer.produce(
            self.topic, key=encode_key(command, scope), value=body, partition=0,
            on_delivery=self._delivered,
        )  # fmt: skip
        left = self.producer.flush(READ_TIMEOUT_S)
        if left or self._errors:
            error = self._errors.pop() if self._errors else "timed out"
            raise KafkaUnavailable(f"writing to {self.topic}: {error}")

    def _delivered(self, error: KafkaError | None, _message: Message) -> None:
        if error is not None:
            self._errors.append(error)

    def close(self) -> None:
        self.producer.flush(5)
