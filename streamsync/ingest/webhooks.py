"""Customer.io reporting webhooks -> ``Event``.

A reporting webhook says what Customer.io did to a customer (``metric`` = sent, opened,
clicked, bounced...) for one message ``object_type`` (email, push, sms...). The event keeps
the metric as its name and ``data`` whole as properties (minus the identity fields), so
audiences can say "sent an email in campaign 7" or filter on nested values such as
``recipients[].device_platform`` of a push.

Who the webhook is about follows the topic's identity policy
(:mod:`streamsync.ingest.identity`): ``data.identifiers.id`` first, ``data.customer_id``
(deprecated by Customer.io) only as the last fallback.

Like :mod:`streamsync.ingest.pipelines`, input is an already-parsed dict (from JSON or from
the Avro twin), validated with plain dict access.
"""

from __future__ import annotations

from typing import Any

from streamsync.ingest.bounds import check_skew, check_values
from streamsync.ingest.errors import DecodeError, DecodeReason
from streamsync.ingest.event import NO_CUSTOMER, WEBHOOK, Event, Skipped, SourcePosition
from streamsync.ingest.identity import WEBHOOK_RULE, CustomerKeyRule
from streamsync.ingest.pipelines import (
    missing,
    optional_object,
    optional_str,
    require_str,
    wrong_type,
)
from streamsync.ingest.record_ids import derived_record_id

#: The webhook identity policy's first choice (see :mod:`streamsync.ingest.identity`).
DEFAULT_CUSTOMER_KEY = "data.identifiers.id"
DEFAULT_RULE = WEBHOOK_RULE
#: ``data.identifiers`` entries copied into ``Event.identifiers``; ``id`` is the
#: workspace's own id, which the customer key already is (or should be).
IDENTIFIER_FIELDS = ("email", "cio_id")
#: ``data`` fields that are identity, not message properties.
_NOT_PROPERTIES = ("customer_id", "identifiers")
#: Epoch seconds must be before year 10000; a millisecond value sent by mistake lands far
#: beyond that and is rejected rather than read as a date in the year 55000.
_MAX_EPOCH_SECONDS = 253_402_300_800
_NO_CUSTOMER = Skipped(NO_CUSTOMER)


def webhook_timestamp_ms(value: object, record_ms: int | None = None) -> int:
    """Epoch seconds (an integer) -> epoch milliseconds.

    No ``timestamp`` falls back to ``record_ms``, the Kafka record's timestamp, as a
    Data Pipelines record does (see :func:`streamsync.ingest.pipelines.event_time_ms`);
    with neither (a file record) it is ``bad_timestamp``.
    """
    if type(value) is not int:
        if value is None:
            if record_ms is not None:
                return record_ms
            raise DecodeError(
                DecodeReason.BAD_TIMESTAMP,
                "no timestamp, and no Kafka record timestamp to fall back to",
            )
        raise wrong_type("timestamp", "an integer (epoch seconds)", value)
    if not 0 <= value < _MAX_EPOCH_SECONDS:
        raise DecodeError(DecodeReason.BAD_TIMESTAMP, "timestamp is not epoch seconds in range")
    return value * 1000


def webhook_event(
    record: object,
    kafka_key: bytes | None = None,
    source: SourcePosition | None = None,
    rule: CustomerKeyRule = DEFAULT_RULE,
    latest_ms: int | None = None,
    record_ms: int | None = None,
) -> Event | Skipped:
    """Validate one reporting webhook and build its ``Event``; ``Skipped("no_customer")``
    when the identity policy finds no key. ``latest_ms`` bounds the event time (see
    :mod:`streamsync.ingest.bounds`); ``None``: no bound. ``record_ms`` is the Kafka
    record's timestamp, used when the webhook has none; ``None``: none (a file)."""
    if type(record) is not dict:
        raise wrong_type("record", "an object", record)
    record_id = record.get("event_id")
    if type(record_id) is not str or not record_id:
        if record_id is not None and record_id != "":
            raise wrong_type("event_id", "a string", record_id)
        record_id = derived_record_id(record)
    name = require_str(record, "metric")
    timestamp_ms = webhook_timestamp_ms(record.get("timestamp"), record_ms)
    if latest_ms is not None and timestamp_ms > latest_ms:
        check_skew(timestamp_ms, latest_ms)
    object_type = optional_str(record, "object_type")
    data = record.get("data")
    if type(data) is not dict:
        if data is None:
            raise missing("data")
        raise wrong_type("data", "an object", data)
    check_values(data, "data")
    identifiers_in = optional_object(data, "identifiers", "data.identifiers")
    identifiers: dict[str, str] = {}
    for field in IDENTIFIER_FIELDS:
        value = identifiers_in.get(field)
        if value is None:
            continue
        if type(value) is not str:
            raise wrong_type(f"data.identifiers.{field}", "a string", value)
        if value:
            identifiers[field] = value
    properties: dict[str, Any] = dict(data)
    for field in _NOT_PROPERTIES:
        properties.pop(field, None)
    if object_type is not None:
        properties["object_type"] = object_type
    key = rule.resolve(record, kafka_key)
    if key is None:
        return _NO_CUSTOMER
    return Event(
        customer_id=key[0],
        kind=WEBHOOK,
        name=name,
        timestamp_ms=timestamp_ms,
        record_id=record_id,
        properties=properties,
        identifiers=identifiers,
        source=source,
        id_kind=key[1],
        received_ms=record_ms,
    )
