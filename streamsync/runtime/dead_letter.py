"""Dead letters: bad records, byte for byte, with why and where they came from.

The dead-letter record carries the ORIGINAL key and value bytes (so a fixed record can be
replayed as is) and these headers (UTF-8 strings):

* ``streamsync.error.reason`` - the :class:`~streamsync.ingest.errors.DecodeReason` code;
* ``streamsync.error.detail`` - a sentence naming fields and types, never values;
* ``streamsync.source.topic`` / ``.partition`` / ``.offset`` / ``.timestamp`` - the
  source record's position and its Kafka timestamp (epoch ms, ``-1`` if it had none).

Delivery is asynchronous; :meth:`DeadLetterWriter.flush` waits and raises
:class:`~streamsync.ingest.errors.DeadLetterError` if any dead letter was not delivered,
so the caller does not commit the offsets of records that would then be lost.
"""

from __future__ import annotations

from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AdminClient,
    ConfigResource,
    ResourceType,
)

from streamsync.ingest.errors import DeadLetterError, DecodeError
from streamsync.ingest.event import SourcePosition

REASON_HEADER = "streamsync.error.reason"
DETAIL_HEADER = "streamsync.error.detail"
TOPIC_HEADER = "streamsync.source.topic"
PARTITION_HEADER = "streamsync.source.partition"
OFFSET_HEADER = "streamsync.source.offset"
TIMESTAMP_HEADER = "streamsync.source.timestamp"
#: Position inside a batch envelope of the record that failed (absent for single records).
INDEX_HEADER = "streamsync.source.index"
#: Present when the value was cut to fit the dead-letter topic: the original size in bytes.
TRUNCATED_HEADER = "streamsync.error.truncated"

#: Room left for Kafka's own record and batch framing under a topic's max.message.bytes.
_FRAMING_BYTES = 1024

Headers = list[tuple[str, str | bytes | None]]


def dead_letter_headers(
    reason: str,
    detail: str,
    source: SourcePosition,
    source_timestamp_ms: int | None,
    index: int | None = None,
) -> Headers:
    """The headers of one dead letter (see the module docstring)."""
    headers: Headers = [
        (REASON_HEADER, reason.encode()),
        (DETAIL_HEADER, detail.encode()),
        (TOPIC_HEADER, source.topic.encode()),
        (PARTITION_HEADER, str(source.partition).encode()),
        (OFFSET_HEADER, str(source.offset).encode()),
        (
            TIMESTAMP_HEADER,
            str(-1 if source_timestamp_ms is None else source_timestamp_ms).encode(),
        ),
    ]
    if index is not None:
        headers.append((INDEX_HEADER, str(index).encode()))
    return headers


#: Kafka's default ``max.message.bytes``, assumed when a topic's cannot be read.
DEFAULT_MAX_MESSAGE_BYTES = 1_048_588


def topic_max_message_bytes(admin: AdminClient, topic: str, timeout_s: float = 10.0) -> int:
    """The topic's ``max.message.bytes`` (the broker default if it cannot be read: a
    missing topic, an ACL, an old broker)."""
    try:
        resource = ConfigResource(ResourceType.TOPIC, topic)
        futures = admin.describe_configs([resource], request_timeout=timeout_s)
        entries = futures[resource].result(timeout_s)
        return int(entries["max.message.bytes"].value)
    except Exception:
        return DEFAULT_MAX_MESSAGE_BYTES


def fit_dead_letter(
    value: bytes | None, key: bytes | None, headers: Headers, max_bytes: int | None
) -> bytes | None:
    """``value``, cut so the whole dead letter fits in ``max_bytes`` (the dead-letter
    topic's ``max.message.bytes``); when cut, :data:`TRUNCATED_HEADER` is appended to
    ``headers`` with the original size. A record too large for its dead letter would
    otherwise fail on every retry and block its partition."""
    if max_bytes is None or value is None:
        return value
    size = sum(len(k) + len(v or b"") for k, v in headers) + len(TRUNCATED_HEADER) + 20
    room = max_bytes - _FRAMING_BYTES - size - (len(key) if key else 0)
    if len(value) <= room:
        return value
    headers.append((TRUNCATED_HEADER, str(len(value)).encode()))
    return value[: max(room, 0)]


#: Producer overrides for dead letters: the librdkafka default ``message.max.bytes`` (1 MB)
#: is below the broker's and the default ``max_record_bytes``, and an oversized record is
#: exactly the kind that gets dead-lettered. The dead-letter topic's own
#: ``max.message.bytes`` must then be at least the source topics'.
DEAD_LETTER_PRODUCER_OVERRIDES: dict[str, Any] = {"message.max.bytes": 16 * 1024 * 1024}


class DeadLetterWriter:
    """Produces dead letters to one topic through a producer the caller owns."""

    def __init__(self, producer: Producer, topic: str, max_bytes: int | None = None) -> None:
        self._producer = producer
        self.topic = topic
        self.max_bytes = max_bytes
        self.pending = 0
        self.delivered = 0
        self._failures: list[str] = []

    def _on_delivery(self, error: KafkaError | None, _message: Message) -> None:
        self.pending -= 1
        if error is None:
            self.delivered += 1
        else:
            self._failures.append(f"{error.name()}: {error.str()}")

    def write(
        self,
        value: bytes | None,
        key: bytes | None,
        source: SourcePosition,
        source_timestamp_ms: int | None,
        error: DecodeError,
    ) -> None:
        """Queue one dead letter (``value``/``key`` exactly as consumed)."""
        headers = dead_letter_headers(
            error.reason.value,
            error.detail,
            source,
            source_timestamp_ms,
            getattr(error, "index", None),
        )
        value = fit_dead_letter(value, key, headers, self.max_bytes)
        while True:
            try:
                self._producer.produce(
                    self.topic, value=value, key=key, headers=headers, on_delivery=self._on_delivery
                )
                break
            except BufferError:  # local queue full: let deliveries drain, then retry
                self._producer.poll(0.1)
            except KafkaException as exc:  # e.g. larger than message.max.bytes
                self._failures.append(str(exc.args[0] if exc.args else exc))
                return
        self.pending += 1
        self._producer.poll(0)

    def flush(self, timeout_s: float = 30.0) -> None:
        """Wait for every queued dead letter; raise ``DeadLetterError`` if any failed or is
        still undelivered after ``timeout_s``. Failures are reported once, then cleared."""
        remaining = self._producer.flush(timeout_s) if self.pending or self._failures else 0
        failures, self._failures = self._failures, []
        if remaining:
            failures.append(f"{remaining} dead letters still undelivered after {timeout_s}s")
        if failures:
            raise DeadLetterError(
                f"{len(failures)} dead letters to {self.topic} failed: " + "; ".join(failures[:5])
            )
