"""Confluent-framed Avro with a real Confluent-compatible Schema Registry (Apicurio
Registry on loopback, fetched from Maven Central and started by
:mod:`streamsync.dev.registry`): schemas are registered under a subject with
``confluent_kafka.schema_registry``, records framed with the id it gave decode as
their JSON twins do, an id the registry does not hold is a bad record, and a registry
that does not answer stops the service in one line instead; Avro deltas are framed
with the id of the schema registered under their subject."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient

from streamsync.config import ConfigError, load_config
from streamsync.deltas.codec import decode_avro_framed
from streamsync.deltas.record import ENTER, MembershipDelta
from streamsync.ingest.avro import (
    PIPELINES_SCHEMA_PATH,
    AvroRecordDecoder,
    confluent_frame,
    encode_avro,
)
from streamsync.ingest.config import IngestConfig, SchemaRegistryConfig
from streamsync.ingest.errors import DecodeError, DecodeReason
from streamsync.ingest.pipelines import pipelines_event
from streamsync.ingest.registry_client import (
    ConfluentSchemaRegistry,
    RegistryUnavailable,
    configured_registry,
)
from streamsync.runtime.collector import delta_encoder
from tests.ingest.samples import IDENTIFY, ORDER_COMPLETED

pytestmark = pytest.mark.schema_registry


@pytest.fixture(scope="module")
def pipelines_id(registry_url: str) -> int:
    client = SchemaRegistryClient({"url": registry_url})
    schema = Schema(PIPELINES_SCHEMA_PATH.read_text("utf-8"), "AVRO")
    return int(client.register_schema("customerio.pipelines-value", schema))


def _config(tmp_path: Path, registry: dict[str, object]) -> Path:
    config = {
        "ingest": {
            "topics": [{"name": "in", "format": "pipelines_avro", "framing": "confluent"}],
            "schema_registry": registry,
        }
    }
    path = tmp_path / "config.yaml"
    path.write_text(json.dumps(config))
    return path


@pytest.mark.parametrize("record", [ORDER_COMPLETED, IDENTIFY], ids=["track", "identify"])
def test_records_framed_with_a_registered_id_decode_as_their_json_twins(
    tmp_path: Path, registry_url: str, pipelines_id: int, record: dict[str, object]
) -> None:
    config = load_config(_config(tmp_path, {"url": registry_url}))
    registry = configured_registry(config.ingest)
    assert isinstance(registry, ConfluentSchemaRegistry)
    decoder = AvroRecordDecoder("pipelines", "confluent", registry)
    framed = confluent_frame(pipelines_id, encode_avro("pipelines", record))
    expected = pipelines_event(json.loads(json.dumps(record)))
    assert expected is not None and pipelines_event(decoder.decode(framed)) == expected


def test_basic_auth_comes_from_a_credential(
    tmp_path: Path, registry_url: str, pipelines_id: int
) -> None:
    """The password is read from its source (an environment variable here); this
    registry runs without auth, so what is proved is that the configured client still
    answers and that both halves are required."""
    registry = ConfluentSchemaRegistry.from_config(
        SchemaRegistryConfig.model_validate(
            {"url": registry_url, "username": "svc", "password_from": {"env": "SR_PASSWORD"}}
        ),
        env={"SR_PASSWORD": "s3cret"},
    )
    assert registry.schema(pipelines_id) is not None
    with pytest.raises(ValueError, match="both username and password_from"):
        SchemaRegistryConfig.model_validate({"url": registry_url, "username": "svc"})


def test_an_id_the_registry_does_not_hold_is_a_bad_record(
    registry_url: str, pipelines_id: int
) -> None:
    registry = ConfluentSchemaRegistry.from_config(SchemaRegistryConfig(url=registry_url))
    decoder = AvroRecordDecoder("pipelines", "confluent", registry)
    body = encode_avro("pipelines", ORDER_COMPLETED)
    for _ in range(2):  # the second answer comes from the cache
        with pytest.raises(DecodeError) as info:
            decoder.decode(confluent_frame(pipelines_id + 4242, body))
        assert info.value.reason == DecodeReason.UNKNOWN_SCHEMA_ID


def test_a_registry_that_does_not_answer_stops_with_one_line() -> None:
    registry = ConfluentSchemaRegistry.from_config(SchemaRegistryConfig(url="http://127.0.0.1:1"))
    with pytest.raises(RegistryUnavailable) as info:
        registry.schema(1)
    assert info.value.exit_status == 1 and "\n" not in str(info.value)
    assert "schema registry http://127.0.0.1:1 did not answer" in str(info.value)


def test_the_registry_and_the_folder_are_exclusive() -> None:
    topics = [{"name": "in", "format": "pipelines_avro", "framing": "confluent"}]
    with pytest.raises(ValueError, match="not both"):
        IngestConfig.model_validate(
            {"topics": topics, "schema_registry": {"url": "http://r"}, "schema_registry_dir": "."}
        )
    with pytest.raises(ValueError, match="neither schema_registry nor"):
        IngestConfig.model_validate({"topics": topics})


def test_avro_deltas_are_framed_with_the_id_of_their_subject(
    tmp_path: Path, registry_url: str
) -> None:
    """``deltas.subject``: evaluate registers membership_delta.avsc under it and frames
    every delta with the id the registry gave; a reader finds the writer schema there."""
    path = tmp_path / "config.yaml"
    path.write_text(
        json.dumps(
            {
                "ingest": {
                    "topics": [{"name": "in", "format": "pipelines_json"}],
                    "schema_registry": {"url": registry_url},
                },
                "deltas": {"topic": "d", "format": "avro", "subject": "d-value"},
            }
        )
    )
    config = load_config(path)
    change = MembershipDelta("ACT__A", 1, "c1", ENTER, 1_767_000_000_000, 1)
    value = delta_encoder(config)(change)
    client = SchemaRegistryClient({"url": registry_url})
    registered = client.get_latest_version("d-value")
    assert int.from_bytes(value[1:5], "big") == registered.schema_id
    assert json.loads(registered.schema.schema_str or "")["name"] == "MembershipDelta"
    assert decode_avro_framed(value) == change
    assert delta_encoder(config)(change) == value  # registered once: the same id again


def test_a_subject_needs_avro_deltas_and_a_registry(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(
        json.dumps(
            {
                "ingest": {"topics": [{"name": "in", "format": "pipelines_json"}]},
                "deltas": {"format": "avro", "subject": "d-value"},
            }
        )
    )
    with pytest.raises(ConfigError, match=r"deltas\.subject needs"):
        load_config(path)


def test_an_id_of_a_schema_that_is_not_avro_is_a_bad_schema(registry_url: str) -> None:
    """A producer's JSON Schema under some subject: its id is answered, but no Avro
    body can be read with it (asked once: the second answer comes from the cache)."""
    client = SchemaRegistryClient({"url": registry_url})
    draft = "http://json-schema.org/draft-07/schema#"
    json_schema = Schema(json.dumps({"$schema": draft, "type": "object"}), "JSON")
    schema_id = int(client.register_schema("not-avro-value", json_schema))
    registry = ConfluentSchemaRegistry.from_config(SchemaRegistryConfig(url=registry_url))
    decoder = AvroRecordDecoder("pipelines", "confluent", registry)
    for _ in range(2):
        with pytest.raises(DecodeError) as info:
            decoder.decode(confluent_frame(schema_id, encode_avro("pipelines", ORDER_COMPLETED)))
        assert info.value.reason == DecodeReason.BAD_SCHEMA
