"""The one entry point from Kafka record bytes to ``Event``: :class:`Decoder`.

A ``Decoder`` is built once per topic from its :class:`~streamsync.config.TopicConfig` and
then only does plain work per record: a size check, ``orjson.loads`` or a fastavro read,
and the shared dict validators. Outcomes:

* an ``Event`` - a good record;
* ``None`` - a valid record without a customer key: counted and skipped, not an error
  (anonymous traffic is normal);
* :class:`~streamsync.ingest.errors.DecodeError` - dead-letter it, with its reason.

Consumers call :meth:`Decoder.decode_all`, which returns those outcomes as a list (one
Kafka record may hold several Customer.io records) with skips as :class:`Skipped`
carrying their reason, and errors as values rather than raised.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from streamsync.config import TopicConfig
from streamsync.ingest import pipelines, webhooks
from streamsync.ingest.avro import AvroRecordDecoder, SchemaRegistry
from streamsync.ingest.errors import DecodeError, DecodeReason
from streamsync.ingest.event import Event, SourcePosition
from streamsync.ingest.pipelines import CustomerKeyRule, type_name

#: ``Skipped.reason`` for a valid record that names no customer.
NO_CUSTOMER = "no_customer"


@dataclass(slots=True, frozen=True)
class Skipped:
    """A valid record that is deliberately not evaluated; ``reason`` is counted."""

    reason: str


#: What one Customer.io record in a Kafka record became.
Outcome = Event | Skipped | DecodeError

_NO_CUSTOMER = Skipped(NO_CUSTOMER)

_Builder = Callable[[object, bytes | None, SourcePosition | None, CustomerKeyRule], Event | None]


def check_size(value: bytes, max_record_bytes: int) -> None:
    """Reject a record over the limit before any parsing, so it costs nothing."""
    if len(value) > max_record_bytes:
        raise DecodeError(
            DecodeReason.OVERSIZED, f"{len(value)} bytes is over the limit of {max_record_bytes}"
        )


def parse_json_object(value: bytes) -> dict[str, Any]:
    """Bytes -> a JSON object (no field validation yet)."""
    try:
        record = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise DecodeError(
            DecodeReason.MALFORMED_JSON, f"not valid JSON (at byte {exc.pos})"
        ) from None
    if type(record) is not dict:
        raise DecodeError(
            DecodeReason.WRONG_TYPE, f"record must be a JSON object, got {type_name(record)}"
        )
    return record


class Decoder:
    """Decodes the records of one topic. Not thread-safe (caches schemas per id)."""

    def __init__(self, topic: TopicConfig, registry: SchemaRegistry | None = None) -> None:
        self.topic = topic.name
        self.max_record_bytes = topic.max_record_bytes
        kind = topic.record_kind
        default_key = (
            pipelines.DEFAULT_CUSTOMER_KEY if kind == "pipelines" else webhooks.DEFAULT_CUSTOMER_KEY
        )
        self.rule = CustomerKeyRule.parse(
            topic.customer_key or default_key, from_kafka_key=topic.key_is_customer_id
        )
        self._build: _Builder = (
            pipelines.pipelines_event if kind == "pipelines" else webhooks.webhook_event
        )
        self._avro = AvroRecordDecoder(kind, topic.framing, registry) if topic.is_avro else None

    def parse(self, value: bytes) -> dict[str, Any]:
        """Bytes -> the record's JSON-shaped dict (no field validation yet)."""
        if self._avro is not None:
            return self._avro.decode(value)
        return parse_json_object(value)

    def decode(
        self, value: bytes | None, key: bytes | None, source: SourcePosition | None
    ) -> Event | None:
        """One Kafka record -> ``Event``, ``None`` (no customer key), or ``DecodeError``.

        The size is checked before any parsing, so an oversized value costs nothing.
        """
        if not value:
            raise DecodeError(DecodeReason.EMPTY_RECORD, "the record value is null or empty")
        check_size(value, self.max_record_bytes)
        return self._build(self.parse(value), key, source, self.rule)

    def decode_all(
        self, value: bytes | None, key: bytes | None, source: SourcePosition | None
    ) -> list[Outcome]:
        """Every outcome of one Kafka record, in record order; never raises
        :class:`DecodeError` (it is returned, so one bad item cannot hide good ones)."""
        try:
            event = self.decode(value, key, source)
        except DecodeError as exc:
            return [exc]
        return [_NO_CUSTOMER if event is None else event]
