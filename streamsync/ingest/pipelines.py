"""Customer.io Data Pipelines records (Segment spec) -> ``Event``.

The input is an already-parsed JSON object: :mod:`streamsync.ingest.decoder` parses the
bytes with orjson, and :mod:`streamsync.ingest.avro` turns an Avro record into the very
same dict shape, so that JSON and Avro twins go through one validation path and cannot
drift apart.

Validation is plain ``dict`` access and ``type(...) is`` checks rather than a pydantic
model: it runs once per record on the hot path, and the rules are few. Every failure is a
:class:`~streamsync.ingest.errors.DecodeError` whose detail names the field and the type
found, never the value (values are customer data).

The whole record is validated before the customer key is looked at, so a broken record is
dead-lettered even when it also has no customer (bad producers surface early).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from streamsync.ingest.bounds import check_skew, check_values
from streamsync.ingest.errors import DecodeError, DecodeReason, type_name
from streamsync.ingest.event import (
    ALIAS,
    ANONYMOUS,
    GROUP,
    IDENTIFY,
    NO_CUSTOMER,
    PAGE,
    SCREEN,
    TRACK,
    Event,
    Skipped,
    SourcePosition,
)
from streamsync.ingest.identity import PIPELINES_RULE, CustomerKeyRule
from streamsync.ingest.record_ids import derived_record_id

__all__ = [
    "CustomerKeyRule",
    "event_time_ms",
    "linking_event",
    "parse_timestamp_ms",
    "pipelines_event",
    "type_name",
]

PIPELINES_TYPES = frozenset({TRACK, IDENTIFY, PAGE, SCREEN})
#: Documented call types that are counted as skipped, with the type as the reason: a
#: ``group`` associates a person with an account and an ``alias`` merges two ids, and
#: neither is an event an audience can match. Where identity links are resolved
#: (``links=True``) an alias is decoded instead, as the link it is.
SKIPPED_TYPES = {GROUP: Skipped(GROUP), ALIAS: Skipped(ALIAS)}
_NO_CUSTOMER = Skipped(NO_CUSTOMER)
#: Identifier traits copied into ``Event.identifiers`` (first from ``traits``, then from
#: ``context.traits``).
IDENTIFIER_TRAITS = ("email", "phone", "cio_id")
DEFAULT_CUSTOMER_KEY = "userId"

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MILLISECOND = timedelta(milliseconds=1)


def wrong_type(field: str, expected: str, value: object) -> DecodeError:
    return DecodeError(
        DecodeReason.WRONG_TYPE, f"{field} must be {expected}, got {type_name(value)}"
    )


def missing(field: str) -> DecodeError:
    return DecodeError(DecodeReason.MISSING_FIELD, f"{field} is required")


def require_str(record: dict[str, Any], field: str, label: str | None = None) -> str:
    """``record[field]`` as a non-empty string; absent, null or "" is a missing field."""
    value = record.get(field)
    if type(value) is str:
        if value:
            return value
        raise missing(label or field)
    if value is None:
        raise missing(label or field)
    raise wrong_type(label or field, "a string", value)


def optional_str(record: dict[str, Any], field: str, label: str | None = None) -> str | None:
    value = record.get(field)
    if value is None or type(value) is str:
        return value
    raise wrong_type(label or field, "a string", value)


def optional_object(record: dict[str, Any], field: str, label: str | None = None) -> dict[str, Any]:
    """``record[field]`` as a dict; absent or null is ``{}`` (the Segment default)."""
    value = record.get(field)
    if type(value) is dict:
        return value
    if value is None:
        return {}
    raise wrong_type(label or field, "an object", value)


def parse_timestamp_ms(value: object, field: str = "timestamp") -> int:
    """An ISO-8601 string -> epoch milliseconds (truncated, like Java's ``toEpochMilli``).

    ``datetime.fromisoformat`` (Python 3.11+: ``Z``, offsets, any fraction length) is the
    fast path: it is C code, and a measured pure-Python slicing parser for the common
    ``YYYY-MM-DDTHH:MM:SS.fffZ`` shape was several times slower than it. Integer
    ``timedelta`` division keeps milliseconds exact, where ``timestamp() * 1000`` is a
    float and can land one millisecond short. A value without an offset is taken as UTC.
    """
    if type(value) is not str:
        if value is None:
            raise missing(field)
        raise wrong_type(field, "an ISO-8601 string", value)
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise DecodeError(
            DecodeReason.BAD_TIMESTAMP, f"{field} is not an ISO-8601 date-time"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    try:
        return (moment - _EPOCH) // _MILLISECOND
    except OverflowError:  # an offset pushing year 1 or 9999 out of range
        raise DecodeError(DecodeReason.BAD_TIMESTAMP, f"{field} is out of range") from None


def event_time_ms(record: dict[str, Any], record_ms: int | None = None) -> int:
    """The record's event time, per the Segment spec's timestamp fields, then the Kafka
    record's own time.

    ``timestamp`` when present. Otherwise it is derived as the spec does: with
    ``originalTimestamp`` (the device clock when the event happened), ``sentAt`` (the
    device clock when it was sent) and ``receivedAt`` (the server clock on arrival),
    ``receivedAt - (sentAt - originalTimestamp)``, which corrects a device clock that is
    off; with ``receivedAt`` alone, ``receivedAt``.

    Without ``receivedAt``, ``record_ms`` - the Kafka record's timestamp (CreateTime or
    LogAppendTime), ``None`` when there is none (a file) - stands for it: it is a clock
    on the way in, as ``receivedAt`` is, and it is what Kafka Streams' default
    extractor falls back to. The spec's own "typical" examples and Customer.io's
    identify example carry no time field at all, and must not be refused on Kafka.
    No time at all is ``bad_timestamp``, as are time fields that cannot give an instant.
    """
    value = record.get("timestamp")
    if value is not None:
        return parse_timestamp_ms(value)
    received = record.get("receivedAt")
    original = record.get("originalTimestamp")
    sent = record.get("sentAt")
    if received is not None:
        received_ms = parse_timestamp_ms(received, "receivedAt")
    elif record_ms is not None:
        received_ms = record_ms
    elif original is None and sent is None:
        raise DecodeError(
            DecodeReason.BAD_TIMESTAMP,
            "no timestamp, originalTimestamp, sentAt or receivedAt, and no Kafka record "
            "timestamp to fall back to",
        )
    else:
        raise DecodeError(
            DecodeReason.BAD_TIMESTAMP,
            "no timestamp, and no receivedAt or Kafka record timestamp to derive it from "
            "(originalTimestamp and sentAt alone are device clocks)",
        )
    if original is None or sent is None:
        return received_ms
    original_ms = parse_timestamp_ms(original, "originalTimestamp")
    return received_ms - (parse_timestamp_ms(sent, "sentAt") - original_ms)


DEFAULT_RULE = PIPELINES_RULE


# The record-id and time lines every Data Pipelines record shares (track and the other
# call types in pipelines_event, aliases in _alias). Each caller keeps its own order of
# them and of the skew check, so which error a record with several faults gets is as it
# was; the common case (a messageId, a timestamp) is a dict lookup and a type check.


def _record_id(record: dict[str, Any]) -> str:
    """``messageId``, or the content-derived id when it is absent or empty."""
    record_id = record.get("messageId")
    if type(record_id) is str and record_id:
        return record_id
    if record_id is not None and record_id != "":
        raise wrong_type("messageId", "a string", record_id)
    return derived_record_id(record)


def _event_ms(record: dict[str, Any], record_ms: int | None) -> int:
    """The event time: ``timestamp`` at once, else the spec's derivation
    (:func:`event_time_ms`)."""
    timestamp = record.get("timestamp")
    if timestamp is not None:
        return parse_timestamp_ms(timestamp)
    return event_time_ms(record, record_ms)


def _received_ms(record: dict[str, Any], record_ms: int | None) -> int | None:
    """When the record reached the server: ``receivedAt``, else the Kafka record's time
    (``None`` for a file record without one)."""
    received = record.get("receivedAt")
    return record_ms if received is None else parse_timestamp_ms(received, "receivedAt")


def _identifiers(
    traits: dict[str, Any], context_traits: dict[str, Any], prefix: str
) -> dict[str, str]:
    found: dict[str, str] = {}
    for name in IDENTIFIER_TRAITS:
        value = traits.get(name)
        label = f"{prefix}.{name}"
        if value is None:
            value = context_traits.get(name)
            label = f"context.traits.{name}"
        if value is None:
            continue
        if type(value) is not str:
            raise wrong_type(label, "a string", value)
        if value:
            found[name] = value
    return found


def pipelines_event(
    record: object,
    kafka_key: bytes | None = None,
    source: SourcePosition | None = None,
    rule: CustomerKeyRule = DEFAULT_RULE,
    latest_ms: int | None = None,
    record_ms: int | None = None,
    *,
    links: bool = False,
) -> Event | Skipped:
    """Validate one Data Pipelines record and build its ``Event``.

    With ``links`` (where identity links are resolved, :mod:`streamsync.identity`) a
    record without a customer key but with an ``anonymousId`` is an ``Event`` of kind
    :data:`ANONYMOUS` keyed by that id, a record with both carries the ``anonymousId`` as
    ``linked_id``, and an alias is an ``Event`` of kind ``alias`` (``userId`` the
    customer, ``previousId`` the ``linked_id``). Without it they are skipped as before:
    a consumer that does not resolve links must not evaluate an anonymous id as a
    customer.

    ``name``: track -> ``event``; page/screen -> ``name`` (``""`` when unnamed, so an
    unnamed page never collides with a page literally called "page"); identify ->
    ``"identify"``. ``traits`` are ``context.traits`` overlaid with top-level ``traits``
    (identify carries them top-level, track usually in the context). Returns
    ``Skipped("no_customer")`` when the record is valid but has no customer key, and
    ``Skipped("group")``/``Skipped("alias")`` for those call types. ``latest_ms`` bounds
    the event time (see :mod:`streamsync.ingest.bounds`); ``None``: no bound.
    ``record_ms`` is the Kafka record's timestamp, the last fallback of the event time
    (see :func:`event_time_ms`); ``None``: none (a file record).
    """
    if type(record) is not dict:
        raise wrong_type("record", "an object", record)
    kind = record.get("type")
    if type(kind) is not str:
        if kind is None:
            raise missing("type")
        raise wrong_type("type", "a string", kind)
    if kind not in PIPELINES_TYPES:
        if links and kind == ALIAS:
            return _alias(record, kafka_key, source, rule, latest_ms, record_ms)
        skipped = SKIPPED_TYPES.get(kind)
        if skipped is not None:
            return skipped
        raise DecodeError(
            DecodeReason.UNKNOWN_TYPE,
            "type is not one of track, identify, page, screen, group, alias",
        )
    # Each field is read with its common case first; the helpers only run for the
    # unusual cases (absent, null, wrong type), which keeps the hot path to dict lookups.
    record_id = _record_id(record)
    timestamp_ms = _event_ms(record, record_ms)
    received_ms = _received_ms(record, record_ms)
    if latest_ms is not None and timestamp_ms > latest_ms:
        check_skew(timestamp_ms, latest_ms)
    anonymous_id = record.get("anonymousId")
    if anonymous_id is not None and type(anonymous_id) is not str:
        raise wrong_type("anonymousId", "a string", anonymous_id)
    if kind == TRACK:
        name = record.get("event")
        if type(name) is not str or not name:
            name = require_str(record, "event")
    elif kind == IDENTIFY:
        name = IDENTIFY
    else:
        name = optional_str(record, "name") or ""
    properties = record.get("properties")
    if type(properties) is not dict:
        properties = optional_object(record, "properties")
    traits = record.get("traits")
    if type(traits) is not dict:
        traits = optional_object(record, "traits")
    context = record.get("context")
    if context is None:
        context_traits: dict[str, Any] = {}
    else:
        if type(context) is not dict:
            raise wrong_type("context", "an object", context)
        context_traits = optional_object(context, "traits", "context.traits")
    if properties:
        check_values(properties, "properties")
    if traits:
        check_values(traits, "traits")
    if context_traits:
        check_values(context_traits, "context.traits")
    identifiers = _identifiers(traits, context_traits, "traits")
    if context_traits:
        traits = {**context_traits, **traits}
    key = rule.resolve(record, kafka_key)
    linked = ""
    if key is None:
        if not links or not anonymous_id:
            return _NO_CUSTOMER
        key = (anonymous_id, ANONYMOUS)
    elif links and anonymous_id and anonymous_id != key[0]:
        linked = anonymous_id
    return Event(
        customer_id=key[0],
        kind=kind,
        name=name,
        timestamp_ms=timestamp_ms,
        record_id=record_id,
        properties=properties,
        traits=traits,
        identifiers=identifiers,
        source=source,
        id_kind=key[1],
        linked_id=linked,
        received_ms=received_ms,
    )


def linking_event(
    record: object,
    kafka_key: bytes | None = None,
    source: SourcePosition | None = None,
    rule: CustomerKeyRule = DEFAULT_RULE,
    latest_ms: int | None = None,
    record_ms: int | None = None,
) -> Event | Skipped:
    """:func:`pipelines_event` with ``links``: the decoder of a stage that resolves
    identity links."""
    return pipelines_event(record, kafka_key, source, rule, latest_ms, record_ms, links=True)


def _alias(
    record: dict[str, Any],
    kafka_key: bytes | None,
    source: SourcePosition | None,
    rule: CustomerKeyRule,
    latest_ms: int | None,
    record_ms: int | None,
) -> Event | Skipped:
    """An alias as a link: ``previousId`` becomes an id of ``userId`` at the record's
    time. Validated like any record (id, time, bound); an alias naming no customer, or
    itself, links nothing and is skipped as an alias."""
    record_id = _record_id(record)
    timestamp_ms = _event_ms(record, record_ms)
    if latest_ms is not None and timestamp_ms > latest_ms:
        check_skew(timestamp_ms, latest_ms)
    previous = require_str(record, "previousId")
    key = rule.resolve(record, kafka_key)
    if key is None or key[0] == previous:
        return SKIPPED_TYPES[ALIAS]
    return Event(
        customer_id=key[0],
        kind=ALIAS,
        name=ALIAS,
        timestamp_ms=timestamp_ms,
        record_id=record_id,
        source=source,
        id_kind=key[1],
        linked_id=previous,
        received_ms=_received_ms(record, record_ms),
    )
