"""Delta encodings: JSON (orjson) and Avro (schemas/membership_delta.avsc)."""

from __future__ import annotations

import io
from functools import cache
from typing import Any, cast

import fastavro
import orjson

from streamsync.deltas.record import MembershipDelta, datetime_to_ms
from streamsync.resources import project_path

SCHEMA_PATH = project_path("schemas", "membership_delta.avsc")


@cache
def delta_schema() -> Any:
    """The parsed Avro schema (read once)."""
    return fastavro.parse_schema(orjson.loads(SCHEMA_PATH.read_bytes()))


def encode_json(delta: MembershipDelta) -> bytes:
    return orjson.dumps(delta.to_json())


def decode_json(data: bytes) -> MembershipDelta:
    return MembershipDelta.from_json(orjson.loads(data))


def encode_avro(delta: MembershipDelta) -> bytes:
    buf = io.BytesIO()
    record = delta.to_json()
    record.pop("at")
    fastavro.schemaless_writer(buf, delta_schema(), record)
    return buf.getvalue()


def decode_avro(data: bytes) -> MembershipDelta:
    record = cast(
        "dict[str, Any]", fastavro.schemaless_reader(io.BytesIO(data), delta_schema(), None)
    )
    at = record["at_ms"]
    if not isinstance(at, int):  # timestamp-millis may come back as a datetime
        record["at_ms"] = datetime_to_ms(at)
    return MembershipDelta.from_json(record)
