"""Dead letters, for every stage: the reasons, the headers and the one writer.

A dead letter is a record a stage could not use, written to that stage's dead-letter
topic with why and where it came from. Evaluate and ingest dead-letter input records
byte for byte (the ORIGINAL key and value, so a fixed record can be replayed as is);
deliver dead-letters deltas (the delta's JSON form keyed by customer id, or an
undecodable delta record byte for byte). The headers (UTF-8 strings) of all three:

* ``streamsync.error.reason`` - why (see *Reasons* below);
* ``streamsync.error.detail`` - evaluate and ingest: a sentence naming fields and types,
  never values;
* ``streamsync.destination``, ``streamsync.http.status``, ``streamsync.request_id``,
  ``streamsync.vendor.message`` - deliver: the destination and what it answered (status
  0 when nothing was sent; the message of an undecodable delta says what failed);
* ``streamsync.source.topic`` / ``.partition`` / ``.offset`` - the source record's
  position; evaluate and ingest add ``.timestamp`` (its Kafka timestamp, epoch ms, ``-1``
  if it had none) and, for an item of a batch envelope, ``.index``;
* ``streamsync.error.truncated`` - present when the value was cut to fit the dead-letter
  topic's ``max.message.bytes``: the original size in bytes; with it
  ``streamsync.error.sha256``, the original value's SHA-256 (hex). The original record
  stays addressable by its ``streamsync.source.*`` position (while the source topic's
  retention keeps it), and the hash says whether a copy found there is the same record.

Reasons: a :class:`~streamsync.ingest.errors.DecodeReason` code (a record the decoder
refused; a repartition record not written by the re-keying stage is ``malformed_json``),
:data:`ENGINE_ERROR` (evaluate: the audience engine raised applying the record), and for
deliver :data:`REJECTED`, :data:`UNMATCHED`, :data:`MALFORMED_DELTA` and
:data:`ATTRIBUTE_REJECTED`.

:class:`DeadLetterWriter` builds the headers, fits the value and produces. Through a
plain producer, delivery is asynchronous: :meth:`DeadLetterWriter.flush` waits and
raises :class:`DeadLetterFailed` if any dead letter was not delivered, so the caller
does not commit the offsets of records that would then be lost. Evaluate writes through
its open transaction instead (``send``), whose commit says whether they were written.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import Any

from confluent_kafka import TIMESTAMP_NOT_AVAILABLE, KafkaError, KafkaException, Message, Producer
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AdminClient,
    ConfigResource,
    ResourceType,
)

from streamsync.errors import Unavailable
from streamsync.ingest.event import SourcePosition

REASON_HEADER = "streamsync.error.reason"
DETAIL_HEADER = "streamsync.error.detail"
DESTINATION_HEADER = "streamsync.destination"
STATUS_HEADER = "streamsync.http.status"
REQUEST_ID_HEADER = "streamsync.request_id"
MESSAGE_HEADER = "streamsync.vendor.message"
TOPIC_HEADER = "streamsync.source.topic"
PARTITION_HEADER = "streamsync.source.partition"
OFFSET_HEADER = "streamsync.source.offset"
TIMESTAMP_HEADER = "streamsync.source.timestamp"
#: Position inside a batch envelope of the record that failed (absent for single records).
INDEX_HEADER = "streamsync.source.index"
#: Present when the value was cut to fit the dead-letter topic: the original size in bytes.
TRUNCATED_HEADER = "streamsync.error.truncated"
#: With :data:`TRUNCATED_HEADER`: the SHA-256 (hex) of the original, uncut value.
SHA256_HEADER = "streamsync.error.sha256"

#: Evaluate: the audience engine raised applying the record.
ENGINE_ERROR = "engine_error"
#: Deliver: the destination refused the change.
REJECTED = "rejected"
#: Deliver: the delta has no identifier the destination is configured to use.
UNMATCHED = "unmatched"
#: Deliver: the deltas-topic record cannot be decoded as a delta.
MALFORMED_DELTA = "malformed_delta"
#: Deliver: a ride-along attribute of the delta could not be written; the membership
#: change itself was delivered without it.
ATTRIBUTE_REJECTED = "attribute_rejected"

#: Room left for Kafka's own record and batch framing under a topic's max.message.bytes.
_FRAMING_BYTES = 1024

Headers = list[tuple[str, str | bytes | None]]
#: Produces one record (topic, key, value, headers) into an open transaction.
Send = Callable[..., None]


class DeadLetterFailed(Unavailable):
    """Dead letters could not be delivered, so the offsets of their source records must
    not be committed: one line, exit status 1."""


def dead_letter_headers(
    reason: str,
    source: SourcePosition,
    about: Sequence[tuple[str, str]] = (),
    *,
    timestamp_ms: int | None = None,
    index: int | None = None,
) -> Headers:
    """The headers of one dead letter (see the module docstring): the reason, what the
    stage says about it (``about``: header name and text), the source position, then its
    timestamp and index when given."""
    headers: Headers = [(REASON_HEADER, reason.encode())]
    headers.extend((name, text.encode()) for name, text in about)
    headers.append((TOPIC_HEADER, source.topic.encode()))
    headers.append((PARTITION_HEADER, str(source.partition).encode()))
    headers.append((OFFSET_HEADER, str(source.offset).encode()))
    if timestamp_ms is not None:
        headers.append((TIMESTAMP_HEADER, str(timestamp_ms).encode()))
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
    ``headers`` with the original size, and :data:`SHA256_HEADER` with the original's
    hash. A record too large for its dead letter would otherwise fail on every retry and
    block its partition."""
    if max_bytes is None or value is None:
        return value
    added = len(TRUNCATED_HEADER) + 20 + len(SHA256_HEADER) + 64
    size = sum(len(k) + len(v or b"") for k, v in headers) + added
    room = max_bytes - _FRAMING_BYTES - size - (len(key) if key else 0)
    if len(value) <= room:
        return value
    headers.append((TRUNCATED_HEADER, str(len(value)).encode()))
    headers.append((SHA256_HEADER, hashlib.sha256(value).hexdigest().encode()))
    return value[: max(room, 0)]


#: Producer overrides for dead letters: the librdkafka default ``message.max.bytes`` (1 MB)
#: is below the broker's and the default ``max_record_bytes``, and an oversized record is
#: exactly the kind that gets dead-lettered. The dead-letter topic's own
#: ``max.message.bytes`` must then be at least the source topics'.
DEAD_LETTER_PRODUCER_OVERRIDES: dict[str, Any] = {"message.max.bytes": 16 * 1024 * 1024}


class DeadLetterWriter:
    """Writes dead letters to ``topic``: through ``producer`` (the caller's), tracking
    each delivery for :meth:`flush`, or through ``send`` (a transaction's), or - with
    neither, a dry run - nowhere, only counted. Values are cut to ``max_bytes``."""

    def __init__(
        self,
        producer: Producer | None,
        topic: str,
        max_bytes: int | None = None,
        *,
        send: Send | None = None,
    ) -> None:
        self._producer = producer
        self._send = send
        self.topic = topic
        self.max_bytes = max_bytes
        #: dead letters written (queued, sent into the transaction, or counted in a dry run)
        self.written = 0
        self.pending = 0
        self.delivered = 0
        self._failures: list[str] = []

    def _on_delivery(self, error: KafkaError | None, _message: Message) -> None:
        self.pending -= 1
        if error is None:
            self.delivered += 1
        else:
            self._failures.append(f"{error.name()}: {error.str()}")

    def write(self, value: bytes | None, key: bytes | None, headers: Headers) -> None:
        """Queue one dead letter with ``headers`` (from :func:`dead_letter_headers`)."""
        value = fit_dead_letter(value, key, headers, self.max_bytes)
        self.written += 1
        if self._send is not None:
            self._send(self.topic, key, value, headers=headers)
            return
        producer = self._producer
        if producer is None:  # dry run: nothing leaves the process
            return
        while True:
            try:
                producer.produce(
                    self.topic, value=value, key=key, headers=headers, on_delivery=self._on_delivery
                )
                break
            except BufferError:  # local queue full: let deliveries drain, then retry
                producer.poll(0.1)
            except KafkaException as exc:  # e.g. larger than message.max.bytes
                self._failures.append(str(exc.args[0] if exc.args else exc))
                return
        self.pending += 1
        producer.poll(0)

    def record(
        self,
        message: Message,
        source: SourcePosition,
        reason: str,
        detail: str,
        index: int | None = None,
    ) -> None:
        """The consumed record ``message`` (at ``source``), byte for byte, with why."""
        kind, timestamp = message.timestamp()
        headers = dead_letter_headers(
            reason,
            source,
            ((DETAIL_HEADER, detail),),
            timestamp_ms=-1 if kind == TIMESTAMP_NOT_AVAILABLE else timestamp,
            index=index,
        )
        self.write(message.value(), message.key(), headers)

    def flush(self, timeout_s: float = 30.0) -> None:
        """Wait for every queued dead letter; raise :class:`DeadLetterFailed` if any
        failed or is still undelivered after ``timeout_s``. Failures are reported once,
        then cleared."""
        producer = self._producer
        if producer is None:
            return
        remaining = producer.flush(timeout_s) if self.pending or self._failures else 0
        failures, self._failures = self._failures, []
        if remaining:
            failures.append(f"{remaining} dead letters still undelivered after {timeout_s}s")
        if failures:
            raise DeadLetterFailed(
                f"{len(failures)} dead letters to {self.topic} failed: " + "; ".join(failures[:5])
            )
