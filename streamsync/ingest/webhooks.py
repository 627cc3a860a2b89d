"""Customer.io reporting webhooks -> ``Event``.

A reporting webhook says what Customer.io did to a customer (``metric`` = sent, opened,
clicked, bounced...) for one message ``object_type`` (email, push, sms...). The event keeps
the metric as its name and the scalar ``data`` fields (``delivery_id``, ``campaign_id``,
...) as properties, so audiences can say "sent an email in campaign 7".

Like :mod:`streamsync.ingest.pipelines`, input is an already-parsed dict (from JSON or from
the Avro twin), validated with plain dict access.
"""

from __future__ import annotations

from typing import Any

from streamsync.ingest.errors import DecodeError, DecodeReason
from streamsync.ingest.event import WEBHOOK, Event, SourcePosition
from streamsync.ingest.pipelines import (
    CustomerKeyRule,
    missing,
    optional_object,
    optional_str,
    require_str,
    wrong_type,
)

DEFAULT_CUSTOMER_KEY = "data.customer_id"
DEFAULT_RULE = CustomerKeyRule(("data", "customer_id"))
#: ``data.identifiers`` entries copied into ``Event.identifiers``; ``id`` is the customer
#: id itself and would add nothing.
IDENTIFIER_FIELDS = ("email", "cio_id")
#: ``data`` fields that are not message properties.
_NOT_PROPERTIES = frozenset({"customer_id", "identifiers"})
_SCALARS = (str, int, float, bool)
#: Epoch seconds must be before year 10000; a millisecond value sent by mistake lands far
#: beyond that and is rejected rather than read as a date in the year 55000.
_MAX_EPOCH_SECONDS = 253_402_300_800


def webhook_timestamp_ms(value: object) -> int:
    """Epoch seconds (an integer) -> epoch milliseconds."""
    if type(value) is not int:
        if value is None:
            raise missing("timestamp")
        raise wrong_type("timestamp", "an integer (epoch seconds)", value)
    if not 0 <= value < _MAX_EPOCH_SECONDS:
        raise DecodeError(DecodeReason.BAD_TIMESTAMP, "timestamp is not epoch seconds in range")
    return value * 1000


def webhook_event(
    record: object,
    kafka_key: bytes | None = None,
    source: SourcePosition | None = None,
    rule: CustomerKeyRule = DEFAULT_RULE,
) -> Event | None:
    """Validate one reporting webhook and build its ``Event``; ``None`` when it has no
    customer key (``data.customer_id`` by default)."""
    if type(record) is not dict:
        raise wrong_type("record", "an object", record)
    record_id = require_str(record, "event_id")
    name = require_str(record, "metric")
    timestamp_ms = webhook_timestamp_ms(record.get("timestamp"))
    object_type = optional_str(record, "object_type")
    data = record.get("data")
    if type(data) is not dict:
        if data is None:
            raise missing("data")
        raise wrong_type("data", "an object", data)
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
    properties: dict[str, Any] = {}
    if object_type is not None:
        properties["object_type"] = object_type
    for field, value in data.items():
        if field not in _NOT_PROPERTIES and isinstance(value, _SCALARS):
            properties[field] = value
    customer_id = rule.resolve(record, kafka_key)
    if customer_id is None:
        return None
    return Event(
        customer_id=customer_id,
        kind=WEBHOOK,
        name=name,
        timestamp_ms=timestamp_ms,
        record_id=record_id,
        properties=properties,
        identifiers=identifiers,
        source=source,
    )
