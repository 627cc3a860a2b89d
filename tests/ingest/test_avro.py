"""Avro twins: plain and Confluent-framed bodies decode to the same Event as the JSON."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import fastavro
import orjson
import pytest

from streamsync.ingest.avro import (
    AvroRecordDecoder,
    BadSchemaError,
    FileSchemaRegistry,
    UnknownSchemaError,
    confluent_frame,
    encode_avro,
    pipelines_schema,
)
from streamsync.ingest.errors import DecodeError, DecodeReason
from streamsync.ingest.pipelines import pipelines_event
from streamsync.ingest.webhooks import webhook_event
from tests.ingest.conftest import BROKEN_ID, PIPELINES_ID, WEBHOOK_ID
from tests.ingest.samples import IDENTIFY, ORDER_COMPLETED, PAGE, WEBHOOK_SENT

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("record", [ORDER_COMPLETED, IDENTIFY, PAGE])
def test_pipelines_twins_decode_equal(record: dict[str, Any], registry: FileSchemaRegistry) -> None:
    body = encode_avro("pipelines", record)
    json_twin = orjson.loads(orjson.dumps(record))
    plain = AvroRecordDecoder("pipelines", "plain").decode(body)
    framed = AvroRecordDecoder("pipelines", "confluent", registry).decode(
        confluent_frame(PIPELINES_ID, body)
    )
    expected = pipelines_event(json_twin)
    assert expected is not None
    assert pipelines_event(plain) == expected
    assert pipelines_event(framed) == expected


def test_webhook_twins_decode_equal(registry: FileSchemaRegistry) -> None:
    body = encode_avro("webhook", WEBHOOK_SENT)
    plain = AvroRecordDecoder("webhook", "plain").decode(body)
    framed = AvroRecordDecoder("webhook", "confluent", registry).decode(
        confluent_frame(WEBHOOK_ID, body)
    )
    expected = webhook_event(WEBHOOK_SENT)
    assert expected is not None
    assert webhook_event(plain) == expected
    assert webhook_event(framed) == expected


def reason_of(decoder: AvroRecordDecoder, data: bytes) -> DecodeReason:
    with pytest.raises(DecodeError) as info:
        decoder.decode(data)
    return info.value.reason


def test_framing_errors(registry: FileSchemaRegistry) -> None:
    decoder = AvroRecordDecoder("pipelines", "confluent", registry)
    body = encode_avro("pipelines", ORDER_COMPLETED)
    assert reason_of(decoder, b"{" + body) == DecodeReason.BAD_MAGIC_BYTE
    assert reason_of(decoder, b"\x00\x00\x00") == DecodeReason.TRUNCATED_AVRO
    assert reason_of(decoder, confluent_frame(4242, body)) == DecodeReason.UNKNOWN_SCHEMA_ID
    assert reason_of(decoder, confluent_frame(BROKEN_ID, body)) == DecodeReason.BAD_SCHEMA
    # A webhook schema id on a Data Pipelines topic: the writer cannot be resolved to ours.
    webhook_body = encode_avro("webhook", WEBHOOK_SENT)
    assert reason_of(decoder, confluent_frame(WEBHOOK_ID, webhook_body)) == DecodeReason.BAD_SCHEMA


def test_body_errors() -> None:
    decoder = AvroRecordDecoder("pipelines", "plain")
    body = encode_avro("pipelines", ORDER_COMPLETED)
    assert reason_of(decoder, body[: len(body) // 2]) == DecodeReason.TRUNCATED_AVRO
    assert reason_of(decoder, body + b"\x00") == DecodeReason.MALFORMED_AVRO
    # "type" is a string of length 2 whose bytes are not UTF-8.
    assert reason_of(decoder, b"\x04\xff\xfe" + body[6:]) == DecodeReason.MALFORMED_AVRO


def test_bad_union_index_is_malformed() -> None:
    datum = {"type": "track", "messageId": "m", "timestamp": "2024-05-01T00:00:00Z"}
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, pipelines_schema(), datum)
    data = buffer.getvalue()
    # After the three strings comes userId's union index (0 = null, zigzag 0x00); 0x0e is 7.
    head = len(data) - 7
    broken = data[:head] + b"\x0e" + data[head + 1 :]
    assert reason_of(AvroRecordDecoder("pipelines", "plain"), broken) == (
        DecodeReason.MALFORMED_AVRO
    )


def test_json_string_field_must_be_json() -> None:
    datum = {"type": "track", "messageId": "m", "timestamp": "t", "properties": "{nope"}
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, pipelines_schema(), datum)
    decoder = AvroRecordDecoder("pipelines", "plain")
    assert reason_of(decoder, buffer.getvalue()) == DecodeReason.MALFORMED_JSON


def test_registry_mapping_file_in_repo() -> None:
    registry = FileSchemaRegistry.from_path(REPO / "schemas" / "registry")
    assert registry.ids == {1, 2}
    assert registry.schema(1)["name"] == "io.streamsync.customerio.PipelinesEvent"
    assert registry.schema(1) is registry.schema(1)  # cached
    with pytest.raises(UnknownSchemaError):
        registry.schema(3)


def test_registry_caches_failures(registry: FileSchemaRegistry, tmp_path: Path) -> None:
    with pytest.raises(BadSchemaError):
        registry.schema(BROKEN_ID)
    (tmp_path / f"{BROKEN_ID}.avsc").unlink()
    with pytest.raises(BadSchemaError):
        registry.schema(BROKEN_ID)


def test_confluent_framing_needs_a_registry() -> None:
    with pytest.raises(ValueError, match="registry"):
        AvroRecordDecoder("pipelines", "confluent")
