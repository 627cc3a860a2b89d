"""The one entry point from Kafka record bytes to ``Event``: :class:`Decoder`.

A ``Decoder`` is built once per topic from its :class:`~streamsync.ingest.config.TopicConfig` and
then only does plain work per record: a size check, ``orjson.loads`` or a fastavro read,
the value bounds (:mod:`streamsync.ingest.bounds`) and the shared dict validators.
Consumers call :meth:`Decoder.decode_all`, which returns every outcome of one Kafka record
as a list, in record order:

* an ``Event`` - a good record;
* :class:`Skipped` - a valid record that is not evaluated, counted by its reason: no
  customer key (anonymous traffic is normal), a ``group`` or ``alias`` call, an empty
  batch;
* :class:`~streamsync.ingest.errors.DecodeError` - dead-letter it, with its reason (and,
  for an item of a batch, its position in ``DecodeError.index``).

A record without a time field of its own takes the Kafka record's timestamp
(:func:`record_time_ms`, passed by the consumers as ``record_ms``); see
:func:`streamsync.ingest.pipelines.event_time_ms`.

A Data Pipelines batch envelope (``{"batch": [...]}``, the documented bulk call) is split
into its records, each decoded, counted and dead-lettered on its own; the envelope's
``context`` applies to items without their own, as the Segment spec says.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import orjson
from confluent_kafka import TIMESTAMP_NOT_AVAILABLE, Message

from streamsync.ingest import pipelines, webhooks
from streamsync.ingest.avro import AvroRecordDecoder, SchemaRegistry
from streamsync.ingest.bounds import json_error
from streamsync.ingest.config import TopicConfig
from streamsync.ingest.errors import DecodeError, DecodeReason
from streamsync.ingest.event import EMPTY_BATCH, NO_CUSTOMER, Event, Skipped, SourcePosition
from streamsync.ingest.identity import CustomerKeyRule
from streamsync.ingest.pipelines import type_name

__all__ = [
    "EMPTY_BATCH",
    "NO_CUSTOMER",
    "Decoder",
    "Outcome",
    "Skipped",
    "check_size",
    "parse_json_object",
    "record_time_ms",
]

#: What one Customer.io record in a Kafka record became.
Outcome = Event | Skipped | DecodeError

_EMPTY_BATCH = Skipped(EMPTY_BATCH)

_Builder = Callable[
    [object, bytes | None, SourcePosition | None, CustomerKeyRule, int | None, int | None],
    Event | Skipped,
]


def record_time_ms(message: Message) -> int | None:
    """The Kafka record's own timestamp (CreateTime or LogAppendTime, whichever the topic
    keeps) in epoch milliseconds, or ``None`` when it has none: the event time of a
    record that carries no time field."""
    kind, timestamp = message.timestamp()
    if kind == TIMESTAMP_NOT_AVAILABLE or timestamp < 0:
        return None
    return timestamp


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
        raise json_error(exc, "the record") from None
    if type(record) is not dict:
        raise DecodeError(
            DecodeReason.WRONG_TYPE, f"record must be a JSON object, got {type_name(record)}"
        )
    return record


def rule_for(topic: TopicConfig) -> CustomerKeyRule:
    """The topic's identity policy (see :mod:`streamsync.ingest.identity`)."""
    if topic.customer_key is not None:
        return CustomerKeyRule.parse(topic.customer_key, from_kafka_key=topic.key_is_customer_id)
    if topic.record_kind == "pipelines":
        return CustomerKeyRule.parse(
            pipelines.DEFAULT_CUSTOMER_KEY, from_kafka_key=topic.key_is_customer_id
        )
    return CustomerKeyRule.webhook(
        tuple(topic.webhook_identity), from_kafka_key=topic.key_is_customer_id
    )


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


class Decoder:
    """Decodes the records of one topic. Not thread-safe (caches schemas per id).

    ``clock_ms`` is the reference clock for the event-time bound: the wall clock by
    default (the live path); replay passes the clock at its start, so a historical file
    decodes the same on every run. The bound is cached and re-read from the clock only
    when a record exceeds it: while the clock moves forward the cached bound is never
    more lenient than a fresh one, and a rejection is always confirmed with a fresh one
    (a wall clock stepped back keeps the bound it had).

    ``links`` decodes anonymous records and aliases as identity links
    (:func:`streamsync.ingest.pipelines.pipelines_event`), for a consumer that resolves
    them (:mod:`streamsync.identity`); without it they are skipped.
    """

    def __init__(
        self,
        topic: TopicConfig,
        registry: SchemaRegistry | None = None,
        *,
        clock_ms: Callable[[], int] = wall_clock_ms,
        links: bool = False,
    ) -> None:
        self.topic = topic.name
        self.max_record_bytes = topic.max_record_bytes
        self.max_clock_skew_ms = topic.max_clock_skew_s * 1000
        self.clock_ms = clock_ms
        self._latest = clock_ms() + self.max_clock_skew_ms
        self.rule = rule_for(topic)
        self.batches = topic.record_kind == "pipelines" and not topic.is_avro
        self._build: _Builder = (
            (pipelines.linking_event if links else pipelines.pipelines_event)
            if topic.record_kind == "pipelines"
            else webhooks.webhook_event
        )
        self._avro = (
            AvroRecordDecoder(topic.record_kind, topic.framing, registry) if topic.is_avro else None
        )

    def parse(self, value: bytes) -> dict[str, Any]:
        """Bytes -> the record's JSON-shaped dict (no field validation yet)."""
        if self._avro is not None:
            return self._avro.decode(value)
        return parse_json_object(value)

    def decode(
        self,
        value: bytes | None,
        key: bytes | None,
        source: SourcePosition | None,
        record_ms: int | None = None,
    ) -> Event | None:
        """One Kafka record holding one Customer.io record -> ``Event``, ``None`` (not
        evaluated: see :class:`Skipped`), or ``DecodeError`` raised. A batch envelope
        raises ``WRONG_TYPE``: use :meth:`decode_all`, which handles every case.
        """
        if not value:
            raise DecodeError(DecodeReason.EMPTY_RECORD, "the record value is null or empty")
        check_size(value, self.max_record_bytes)
        record = self.parse(value)
        if self.batches and "batch" in record and "type" not in record:
            raise DecodeError(DecodeReason.WRONG_TYPE, "a batch envelope: use decode_all")
        try:
            outcome = self._build(record, key, source, self.rule, self._latest, record_ms)
        except DecodeError as exc:
            if exc.reason is not DecodeReason.BAD_TIMESTAMP or not self._later():
                raise
            outcome = self._build(record, key, source, self.rule, self._latest, record_ms)
        return outcome if type(outcome) is Event else None

    def _later(self) -> bool:
        """Re-read the clock; whether the time bound moved (then a record refused for
        its time is tried once more)."""
        latest = self.clock_ms() + self.max_clock_skew_ms
        if latest > self._latest:
            self._latest = latest
            return True
        return False

    def decode_all(
        self,
        value: bytes | None,
        key: bytes | None,
        source: SourcePosition | None,
        record_ms: int | None = None,
    ) -> list[Outcome]:
        """Every outcome of one Kafka record, in record order; never raises
        :class:`DecodeError` (it is returned, so one bad item cannot hide good ones).
        ``record_ms`` is the Kafka record's timestamp (:func:`record_time_ms`), the event
        time of a record without a time field; ``None``: none (a file record).

        The size is checked before any parsing, so an oversized value costs nothing.
        """
        if not value:
            return [DecodeError(DecodeReason.EMPTY_RECORD, "the record value is null or empty")]
        try:
            check_size(value, self.max_record_bytes)
            record = self.parse(value)
        except DecodeError as exc:
            return [exc]
        return self.decode_record(record, key, source, record_ms)

    def decode_record(
        self,
        record: dict[str, Any],
        key: bytes | None,
        source: SourcePosition | None,
        record_ms: int | None = None,
    ) -> list[Outcome]:
        """The outcomes of one parsed record (a batch envelope gives one per item)."""
        if self.batches and "batch" in record and "type" not in record:
            return self._split(record, key, source, record_ms)
        return [self._one(record, key, source, record_ms)]

    def _one(
        self,
        record: object,
        key: bytes | None,
        source: SourcePosition | None,
        record_ms: int | None,
    ) -> Outcome:
        try:
            return self._build(record, key, source, self.rule, self._latest, record_ms)
        except DecodeError as exc:
            if exc.reason is not DecodeReason.BAD_TIMESTAMP or not self._later():
                return exc
        try:
            return self._build(record, key, source, self.rule, self._latest, record_ms)
        except DecodeError as exc:
            return exc

    def _split(
        self,
        envelope: dict[str, Any],
        key: bytes | None,
        source: SourcePosition | None,
        record_ms: int | None,
    ) -> list[Outcome]:
        items = envelope["batch"]
        if type(items) is not list:
            return [
                DecodeError(
                    DecodeReason.WRONG_TYPE, f"batch must be an array, got {type_name(items)}"
                )
            ]
        if not items:
            return [_EMPTY_BATCH]
        context = envelope.get("context")
        outcomes: list[Outcome] = []
        for index, item in enumerate(items):
            if type(item) is not dict:
                outcomes.append(
                    DecodeError(
                        DecodeReason.WRONG_TYPE,
                        f"batch item must be an object, got {type_name(item)}",
                        index,
                    )
                )
                continue
            if context is not None and "context" not in item:
                item = {**item, "context": context}
            outcome = self._one(item, key, source, record_ms)
            outcomes.append(outcome.at_index(index) if type(outcome) is DecodeError else outcome)
        return outcomes
