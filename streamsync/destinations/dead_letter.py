"""Dead letters of delivery: deltas a destination refused or could not address.

The value is the delta's JSON form (whatever the deltas topic's format), keyed by
customer id, with these headers (UTF-8):

* ``streamsync.error.reason`` - ``rejected`` (the destination refused it), ``unmatched``
  (no identifier the destination is configured to use) or ``malformed_delta``;
* ``streamsync.destination`` - the destination's configured name;
* ``streamsync.http.status``, ``streamsync.request_id``, ``streamsync.vendor.message`` -
  what the destination answered (status 0 when nothing was sent);
* ``streamsync.source.topic`` / ``.partition`` / ``.offset`` - the delta's position.

:meth:`DeliveryDeadLetters.flush` must succeed before offsets covering a dead letter
are committed; it raises :class:`DeadLetterFailed` otherwise.
"""

from __future__ import annotations

from typing import Any

from confluent_kafka import KafkaError, Message, Producer

from streamsync.deltas.codec import encode_json
from streamsync.deltas.record import MembershipDelta
from streamsync.destinations.errors import Rejection

REASON_HEADER = "streamsync.error.reason"
DESTINATION_HEADER = "streamsync.destination"
STATUS_HEADER = "streamsync.http.status"
REQUEST_ID_HEADER = "streamsync.request_id"
MESSAGE_HEADER = "streamsync.vendor.message"
TOPIC_HEADER = "streamsync.source.topic"
PARTITION_HEADER = "streamsync.source.partition"
OFFSET_HEADER = "streamsync.source.offset"


class DeadLetterFailed(RuntimeError):
    """A dead letter was not written; offsets must not be committed past it."""


class DeliveryDeadLetters:
    def __init__(self, producer: Producer | None, topic: str, source_topic: str) -> None:
        self._producer = producer
        self.topic = topic
        self.source_topic = source_topic
        self.written = 0
        self._failures: list[str] = []
        self._pending = 0

    def _on_delivery(self, error: KafkaError | None, _message: Message) -> None:
        self._pending -= 1
        if error is not None:
            self._failures.append(f"{error.name()}: {error.str()}")

    def _produce(self, value: bytes | None, key: bytes | None, headers: list[Any]) -> None:
        if self._producer is None:  # dry run: nothing leaves the process
            self.written += 1
            return
        while True:
            try:
                self._producer.produce(
                    self.topic, value=value, key=key, headers=headers, on_delivery=self._on_delivery
                )
                break
            except BufferError:
                self._producer.poll(0.1)
        self._pending += 1
        self.written += 1
        self._producer.poll(0)

    def write(
        self,
        delta: MembershipDelta,
        partition: int,
        offset: int,
        *,
        reason: str,
        destination: str,
        rejection: Rejection,
    ) -> None:
        headers = [
            (REASON_HEADER, reason.encode()),
            (DESTINATION_HEADER, destination.encode()),
            (STATUS_HEADER, str(rejection.status).encode()),
            (REQUEST_ID_HEADER, rejection.request_id.encode()),
            (MESSAGE_HEADER, rejection.message.encode()),
            (TOPIC_HEADER, self.source_topic.encode()),
            (PARTITION_HEADER, str(partition).encode()),
            (OFFSET_HEADER, str(offset).encode()),
        ]
        self._produce(encode_json(delta), delta.customer_id.encode(), headers)

    def write_raw(
        self, value: bytes | None, key: bytes | None, partition: int, offset: int, detail: str
    ) -> None:
        """An undecodable delta record, byte for byte."""
        headers = [
            (REASON_HEADER, b"malformed_delta"),
            (MESSAGE_HEADER, detail.encode()),
            (TOPIC_HEADER, self.source_topic.encode()),
            (PARTITION_HEADER, str(partition).encode()),
            (OFFSET_HEADER, str(offset).encode()),
        ]
        self._produce(value, key, headers)

    def flush(self, timeout_s: float = 30.0) -> None:
        if self._producer is None:
            return
        remaining = self._producer.flush(timeout_s) if self._pending else 0
        failures, self._failures = self._failures, []
        if remaining:
            failures.append(f"{remaining} dead letters undelivered after {timeout_s}s")
        if failures:
            raise DeadLetterFailed(f"dead letters to {self.topic} failed: " + "; ".join(failures))
