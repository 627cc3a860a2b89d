"""Delta encodings: JSON (orjson) and Avro (schemas/membership_delta.avsc)."""

from __future__ import annotations

import io
from collections.abc import Callable
from functools import cache
from typing import Any, cast

import fastavro
import orjson

from streamsync.deltas.record import MembershipDelta, datetime_to_ms, format_rfc3339_ms
from streamsync.resources import project_path

SCHEMA_PATH = project_path("schemas", "membership_delta.avsc")


@cache
def delta_schema() -> Any:
    """The parsed Avro schema (read once)."""
    return fastavro.parse_schema(orjson.loads(SCHEMA_PATH.read_bytes()))


def encode_json(delta: MembershipDelta) -> bytes:
    """:meth:`MembershipDelta.to_json`, serialised: the same keys in the same order, but
    without the copies of ``record_ids`` and ``identifiers`` that ``to_json`` makes for
    a caller who may change its result (orjson only reads them). Once per delta."""
    return orjson.dumps(
        {
            "audience": delta.audience,
            "version": delta.version,
            "customer_id": delta.customer_id,
            "op": delta.op,
            "at": format_rfc3339_ms(delta.at_ms),
            "at_ms": delta.at_ms,
            "seq": delta.seq,
            "record_ids": delta.record_ids,
            "identifiers": delta.identifiers,
            "holdout": delta.holdout,
            "id_kind": delta.id_kind,
            "correction": delta.correction,
            "definition_change": delta.definition_change,
            "stitched": delta.stitched,
        }
    )


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


def decode_avro_framed(value: bytes) -> MembershipDelta:
    """A delta in the Confluent wire format (magic 0, 4-byte schema id, Avro body), as
    ``evaluate`` writes it when ``deltas.format`` is ``avro``."""
    if len(value) < 5 or value[0] != 0:
        raise ValueError("not Confluent-framed Avro")
    return decode_avro(value[5:])


def delta_decoder(fmt: str) -> Callable[[bytes], MembershipDelta]:
    """The decoder for a deltas topic's ``deltas.format`` (``json`` or ``avro``)."""
    return decode_avro_framed if fmt == "avro" else decode_json
