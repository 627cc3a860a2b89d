"""Record ids for records that carry none.

Customer.io adds ``messageId`` (Data Pipelines) and ``event_id`` (webhooks) on ingestion,
but records produced by other tools onto the same topics, or bodies copied from the HTTP
API docs, may lack them. Such a record gets an id derived from its canonical content:
blake2b-128 of its JSON with sorted keys, written as a UUID. An identical retransmission
(the same content, in any key order) therefore gets the same id and is still counted once
by the engine, and the UUID shape lets the engine store it in 16 bytes like real ids.
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

from streamsync.ingest.errors import DecodeError, DecodeReason

#: orjson's serializer refuses deeper nesting.
MAX_ID_DEPTH = 254

_OPTIONS = orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS


def _without_nulls(value: Any) -> Any:
    if type(value) is dict:
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if type(value) is list:
        return [_without_nulls(v) for v in value]
    return value


def derived_record_id(record: dict[str, Any]) -> str:
    """The content id of ``record`` (already checked by
    :func:`~streamsync.ingest.bounds.check_values`, so it serializes and its depth is
    bounded). A null field counts as absent, as everywhere in decoding, so an Avro record
    (whose schema has every optional field, null) gets the same id as its JSON twin."""
    try:
        canonical = orjson.dumps(_without_nulls(record), option=_OPTIONS)
    except (orjson.JSONEncodeError, RecursionError):
        raise DecodeError(
            DecodeReason.TOO_DEEP,
            f"the record has no id and nests deeper than {MAX_ID_DEPTH} levels, too deep "
            "to derive one from its content",
        ) from None
    h = hashlib.blake2b(canonical, digest_size=16).hexdigest()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
