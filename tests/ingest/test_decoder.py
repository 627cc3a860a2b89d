"""The per-topic Decoder: every DecodeReason from a realistic bad record, twins, keys."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from streamsync.ingest.avro import FileSchemaRegistry, confluent_frame, encode_avro
from streamsync.ingest.config import TopicConfig
from streamsync.ingest.decoder import Decoder
from streamsync.ingest.errors import DecodeError, DecodeReason
from streamsync.ingest.event import SourcePosition
from tests.ingest.conftest import BROKEN_ID, PIPELINES_ID
from tests.ingest.samples import ORDER_COMPLETED, WEBHOOK_SENT, sample

SOURCE = SourcePosition("t", 3, 99)


def decoder(fmt: str, registry: FileSchemaRegistry | None = None, **options: Any) -> Decoder:
    return Decoder(TopicConfig(name="t", format=fmt, **options), registry)  # type: ignore[arg-type]


def js(record: Any) -> bytes:
    return orjson.dumps(record)


def test_good_json_records() -> None:
    event = decoder("pipelines_json").decode(js(ORDER_COMPLETED), b"k", SOURCE)
    assert event is not None
    assert (event.customer_id, event.name, event.source) == ("cust-42", "Order Completed", SOURCE)
    hook = decoder("webhook_json").decode(js(WEBHOOK_SENT), None, SOURCE)
    assert hook is not None and hook.customer_id == "cust-42"


def test_json_and_avro_topics_decode_twins_equal(registry: FileSchemaRegistry) -> None:
    body = encode_avro("pipelines", ORDER_COMPLETED)
    from_json = decoder("pipelines_json").decode(js(ORDER_COMPLETED), None, SOURCE)
    plain = decoder("pipelines_avro").decode(body, None, SOURCE)
    framed = decoder("pipelines_avro", registry, framing="confluent").decode(
        confluent_frame(PIPELINES_ID, body), None, SOURCE
    )
    assert from_json is not None
    assert from_json == plain == framed
    hook_body = encode_avro("webhook", WEBHOOK_SENT)
    assert decoder("webhook_avro").decode(hook_body, None, SOURCE) == decoder(
        "webhook_json"
    ).decode(js(WEBHOOK_SENT), None, SOURCE)


def test_key_is_customer_id() -> None:
    anonymous = js(sample(ORDER_COMPLETED, userId=None))
    assert decoder("pipelines_json").decode(anonymous, b"cust-k", SOURCE) is None
    event = decoder("pipelines_json", key_is_customer_id=True).decode(anonymous, b"cust-k", SOURCE)
    assert event is not None and event.customer_id == "cust-k"
    assert (
        decoder("pipelines_json", key_is_customer_id=True).decode(anonymous, None, SOURCE) is None
    )


def test_customer_key_override() -> None:
    record = sample(ORDER_COMPLETED, userId=None)
    record["properties"]["customer_id"] = "p-1"
    event = decoder("pipelines_json", customer_key="properties.customer_id").decode(
        js(record), None, SOURCE
    )
    assert event is not None and event.customer_id == "p-1"


def test_oversized_is_checked_before_parsing() -> None:
    # Not even JSON: the size check must come first.
    with pytest.raises(DecodeError) as info:
        decoder("pipelines_json", max_record_bytes=100).decode(b"{" * 101, None, SOURCE)
    assert info.value.reason == DecodeReason.OVERSIZED
    assert decoder("pipelines_json", max_record_bytes=len(js(ORDER_COMPLETED))).decode(
        js(ORDER_COMPLETED), None, SOURCE
    )


def _bad_records(registry: FileSchemaRegistry) -> list[tuple[Decoder, bytes | None, DecodeReason]]:
    pj = decoder("pipelines_json")
    wj = decoder("webhook_json")
    pa = decoder("pipelines_avro")
    pc = decoder("pipelines_avro", registry, framing="confluent")
    body = encode_avro("pipelines", ORDER_COMPLETED)
    return [
        (pj, None, DecodeReason.EMPTY_RECORD),
        (pj, b"", DecodeReason.EMPTY_RECORD),
        (
            decoder("pipelines_json", max_record_bytes=64),
            js(ORDER_COMPLETED),
            DecodeReason.OVERSIZED,
        ),
        (pj, js(ORDER_COMPLETED)[:-1], DecodeReason.MALFORMED_JSON),
        (pj, b"\xff\xfe{}", DecodeReason.MALFORMED_JSON),
        (pj, b'"just a string"', DecodeReason.WRONG_TYPE),
        (pj, js(sample(ORDER_COMPLETED, userId={"id": 1})), DecodeReason.WRONG_TYPE),
        (pj, js(sample(ORDER_COMPLETED, event=None)), DecodeReason.MISSING_FIELD),
        (pj, js(sample(ORDER_COMPLETED, type="merge")), DecodeReason.UNKNOWN_TYPE),
        (
            pj,
            js(sample(ORDER_COMPLETED, properties={"total": 1e308, "products": []})),
            DecodeReason.OUT_OF_RANGE,
        ),
        (pj, b"[" * 10_000 + b"]" * 10_000, DecodeReason.TOO_DEEP),
        (
            pj,
            js(sample(ORDER_COMPLETED, timestamp="2024-13-01T00:00:00Z")),
            DecodeReason.BAD_TIMESTAMP,
        ),
        (wj, js(sample(WEBHOOK_SENT, metric=None)), DecodeReason.MISSING_FIELD),
        (pc, b"\x01" + body, DecodeReason.BAD_MAGIC_BYTE),
        (pc, confluent_frame(77, body), DecodeReason.UNKNOWN_SCHEMA_ID),
        (pc, confluent_frame(BROKEN_ID, body), DecodeReason.BAD_SCHEMA),
        (pa, body[:-3], DecodeReason.TRUNCATED_AVRO),
        (pa, body + b"\x02", DecodeReason.MALFORMED_AVRO),
    ]


def test_every_reason_is_produced_by_a_realistic_record(registry: FileSchemaRegistry) -> None:
    seen = set()
    for dec, value, reason in _bad_records(registry):
        with pytest.raises(DecodeError) as info:
            dec.decode(value, None, SOURCE)
        assert info.value.reason == reason, (value, info.value)
        assert "ada@example.com" not in info.value.detail
        assert "cust-42" not in info.value.detail
        seen.add(reason)
    assert seen == set(DecodeReason)
