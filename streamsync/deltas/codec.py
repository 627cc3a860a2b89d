"""Delta encodings: JSON (orjson) and Avro (schemas/membership_delta.avsc)."""

from __future__ import annotations

import io
from functools import cache
from pathlib import Path
from typing import Any, cast

import fastavro
import orjson

from streamsync.deltas.record import MembershipDelta

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "schemas" / "membership_delta.avsc"


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
        record["at_ms"] = int(at.timestamp() * 1000)
    return MembershipDelta.from_json(record)
