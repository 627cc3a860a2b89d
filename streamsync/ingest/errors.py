"""What ingest raises, grouped by what the caller should do about it.

``RecordError`` - this one record cannot be used. Recovery: dead-letter it with its
reason and keep consuming. Bad input must never stop the stream. What stops consuming
(a dead letter not delivered, the cluster unreachable or refusing us) is not a record's
fault: it is :class:`~streamsync.dead_letter.DeadLetterFailed` or one of
:mod:`streamsync.kafka.health`'s errors, each in its recovery group
(:mod:`streamsync.errors`); the loop stops *without* committing offsets and a restart
resumes from the last committed offset, so nothing is lost.

Messages (``detail``) name fields and types, never payload values: dead-letter headers and
log lines must not leak emails, phone numbers or anything else a record carries.
"""

from __future__ import annotations

from enum import StrEnum


class DecodeReason(StrEnum):
    """Machine-readable reason a record was dead-lettered (the ``streamsync.error.reason``
    header). Stable strings: dashboards and replay tools filter on them."""

    EMPTY_RECORD = "empty_record"
    """The Kafka value is null or zero bytes (a tombstone on an event topic)."""
    OVERSIZED = "oversized"
    """The value is larger than ``max_record_bytes``; it is not parsed at all."""
    MALFORMED_JSON = "malformed_json"
    """The value, or a JSON-encoded Avro field, is not valid JSON."""
    WRONG_TYPE = "wrong_type"
    """A field (or the record itself) has the wrong JSON/Avro type."""
    MISSING_FIELD = "missing_field"
    """A field the record shape requires is absent or null."""
    UNKNOWN_TYPE = "unknown_type"
    """A Data Pipelines ``type`` that is not a documented call type (track, identify,
    page, screen, group, alias)."""
    BAD_TIMESTAMP = "bad_timestamp"
    """The timestamp has the right type but is not a usable instant, cannot be derived
    from ``originalTimestamp``/``sentAt``/``receivedAt`` or the Kafka record's own
    timestamp (a file record with no time at all), or lies beyond the allowed clock skew
    (see :mod:`streamsync.ingest.bounds`)."""
    OUT_OF_RANGE = "out_of_range"
    """A number in the record is not finite or lies outside the documented range (see
    :mod:`streamsync.ingest.bounds`): the engine sums, compares and offsets by numbers,
    and must never see one it cannot handle."""
    TOO_DEEP = "too_deep"
    """The record nests objects or arrays deeper than the documented limit."""
    BAD_MAGIC_BYTE = "bad_magic_byte"
    """A Confluent-framed topic carried a value whose first byte is not 0."""
    UNKNOWN_SCHEMA_ID = "unknown_schema_id"
    """The Confluent schema id is not in the schema registry."""
    BAD_SCHEMA = "bad_schema"
    """The registry holds the schema id, but the schema cannot be used."""
    TRUNCATED_AVRO = "truncated_avro"
    """The Avro payload ends before the schema says it should."""
    MALFORMED_AVRO = "malformed_avro"
    """The Avro payload does not match its schema (bad union index, bad UTF-8, trailing
    bytes)."""


_JSON_TYPE_NAMES = {
    dict: "object",
    list: "array",
    str: "string",
    int: "integer",
    float: "number",
    bool: "boolean",
    type(None): "null",
}


def type_name(value: object) -> str:
    """The JSON name of ``value``'s type, for error details (never the value itself)."""
    return _JSON_TYPE_NAMES.get(type(value), type(value).__name__)


class IngestError(Exception):
    """Root of everything ingest raises on purpose."""


class RecordError(IngestError):
    """One record cannot be used; dead-letter it and carry on."""


class DecodeError(RecordError):
    """A record could not be decoded into an ``Event``.

    ``reason`` is the machine code, ``detail`` the sentence for a human. ``detail`` must
    not quote payload values (see the module docstring). ``index`` is the record's
    position in a batch envelope (``{"batch": [...]}``), ``None`` for a record on its own,
    so a dead letter can say which item of the Kafka record failed.
    """

    __slots__ = ("detail", "index", "reason")

    def __init__(self, reason: DecodeReason, detail: str, index: int | None = None) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail
        self.index = index

    def at_index(self, index: int) -> DecodeError:
        """This error for item ``index`` of a batch (a new error; the reason and detail
        are kept)."""
        return DecodeError(self.reason, self.detail, index)
