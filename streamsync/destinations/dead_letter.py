"""Dead letters of delivery: deltas a destination refused or could not address.

The value is the delta's JSON form (whatever the deltas topic's format), keyed by
customer id; an undecodable delta record is kept byte for byte. The reasons, the
headers and the writer are every stage's (see :mod:`streamsync.dead_letter`):
``streamsync.error.reason`` (``rejected``, ``unmatched``, ``malformed_delta``, or
``attribute_rejected`` for a ride-along value left out of a change that was delivered),
``streamsync.destination``, ``streamsync.http.status``, ``streamsync.request_id``,
``streamsync.vendor.message`` and the delta's ``streamsync.source.*`` position.

:meth:`DeliveryDeadLetters.flush` must succeed before offsets covering a dead letter
are committed; it raises :class:`~streamsync.dead_letter.DeadLetterFailed` otherwise.
"""

from __future__ import annotations

from confluent_kafka import Producer

from streamsync.dead_letter import (
    DESTINATION_HEADER,
    MALFORMED_DELTA,
    MESSAGE_HEADER,
    REQUEST_ID_HEADER,
    STATUS_HEADER,
    DeadLetterWriter,
    dead_letter_headers,
)
from streamsync.deltas.codec import encode_json
from streamsync.deltas.record import MembershipDelta
from streamsync.destinations.errors import Rejection
from streamsync.ingest.event import SourcePosition


class DeliveryDeadLetters(DeadLetterWriter):
    """The dead letters of one destination (``producer`` ``None``: a dry run, counted
    only), for deltas read from ``source_topic``; values cut to ``max_bytes`` (the
    dead-letter topic's ``max.message.bytes``), so that an oversized malformed record
    on the deltas topic does not fail its dead letter, and delivery, forever."""

    def __init__(
        self,
        producer: Producer | None,
        topic: str,
        source_topic: str,
        max_bytes: int | None = None,
    ) -> None:
        super().__init__(producer, topic, max_bytes)
        self.source_topic = source_topic

    def delta(
        self,
        delta: MembershipDelta,
        partition: int,
        offset: int,
        *,
        reason: str,
        destination: str,
        rejection: Rejection,
    ) -> None:
        """``delta``, which ``destination`` refused or cannot address (``reason``)."""
        about = (
            (DESTINATION_HEADER, destination),
            (STATUS_HEADER, str(rejection.status)),
            (REQUEST_ID_HEADER, rejection.request_id),
            (MESSAGE_HEADER, rejection.message),
        )
        source = SourcePosition(self.source_topic, partition, offset)
        headers = dead_letter_headers(reason, source, about)
        self.write(encode_json(delta), delta.customer_id.encode(), headers)

    def raw(
        self, value: bytes | None, key: bytes | None, partition: int, offset: int, detail: str
    ) -> None:
        """An undecodable delta record, byte for byte."""
        source = SourcePosition(self.source_topic, partition, offset)
        headers = dead_letter_headers(MALFORMED_DELTA, source, ((MESSAGE_HEADER, detail),))
        self.write(value, key, headers)
