"""Confluent-framed Avro with a real Confluent-compatible Schema Registry (Apicurio
Registry on loopback, fetched from Maven Central and started by
:mod:`streamsync.dev.registry`): schemas are registered under a subject with
``confluent_kafka.schema_registry``, records framed with the id it gave decode as
their JSON twins do, an id the registry does not hold is a bad record (until
``unknown_id_retry`` has passed: then it is asked for again), lookups of ids not yet
known are bounded, a writer schema with references to other subjects decodes, and a
registry that does not answer stops the service in one line instead; Avro deltas are
framed with the id of the schema registered under their subject. What a real registry
will not hold (a reference cycle, a referenced version a lagging replica lacks) is
answered at the client boundary from recorded answers shaped as the Confluent API's."""

from __future__ import annotations

import io
import json
import re
import time
from pathlib import Path
from typing import cast

import fastavro
import pytest
import yaml
from confluent_kafka.schema_registry import (
    RegisteredSchema,
    Schema,
    SchemaReference,
    SchemaRegistryClient,
)
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.schema_registry.error import SchemaRegistryError
from confluent_kafka.serialization import MessageField, SerializationContext

from streamsync.config import ConfigError, load_config
from streamsync.deltas.codec import decode_avro_framed
from streamsync.deltas.record import ENTER, MembershipDelta
from streamsync.ingest.avro import (
    PIPELINES_SCHEMA_PATH,
    AvroRecordDecoder,
    BadSchemaError,
    UnknownSchemaError,
    confluent_frame,
    encode_avro,
    pipelines_to_avro,
)
from streamsync.ingest.config import IngestConfig, SchemaRegistryConfig
from streamsync.ingest.errors import DecodeError, DecodeReason
from streamsync.ingest.pipelines import pipelines_event
from streamsync.ingest.registry_client import (
    MAX_REFERENCES,
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


class _Clock:
    """A monotonic clock the test moves by hand: expiry and the lookup budget are
    exercised without sleeping and without asserting on real time."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _counting(registry: ConfluentSchemaRegistry, method: str) -> list[object]:
    """Record every ``method`` call the registry makes on its client (the real one,
    which still answers)."""
    calls: list[object] = []
    original = getattr(registry._client, method)

    def counted(*args: object, **kwargs: object) -> object:
        calls.append(args)
        return original(*args, **kwargs)

    setattr(registry._client, method, counted)
    return calls


def _writer_with(extra: list[dict[str, object]]) -> dict[str, object]:
    """The in-repo Data Pipelines schema with ``extra`` fields, as a producer team's
    own writer schema that grew fields streamsync does not read."""
    schema = json.loads(PIPELINES_SCHEMA_PATH.read_text("utf-8"))
    schema["fields"] = [*schema["fields"], *extra]
    return dict(schema)


def _body(writer: dict[str, object], record: dict[str, object], **extra: object) -> bytes:
    buffer = io.BytesIO()
    datum = {**pipelines_to_avro(record), **extra}
    fastavro.schemaless_writer(buffer, fastavro.parse_schema(writer), datum)
    return buffer.getvalue()


def test_an_id_registered_after_its_first_lookup_decodes_once_the_retry_interval_passed(
    tmp_path: Path, registry_url: str
) -> None:
    """A registry replica that lags behind a producer's registration: the first record
    with the new id is dead-lettered ``unknown_schema_id``, the answer is remembered for
    ``unknown_id_retry`` (no new lookup, even though the id now exists), and the first
    record after the interval asks again and decodes, without a restart."""
    client = SchemaRegistryClient({"url": registry_url})
    tag = time.time_ns()

    def register(name: str) -> tuple[int, dict[str, object]]:
        writer = _writer_with([{"name": name, "type": ["null", "string"], "default": None}])
        schema = Schema(json.dumps(writer), "AVRO")
        return int(client.register_schema(f"late-{name}-value", schema)), writer

    before, _ = register(f"before_{tag}")
    clock = _Clock()
    config = load_config(_config(tmp_path, {"url": registry_url, "unknown_id_retry": "5s"}))
    assert config.ingest.schema_registry is not None
    registry = ConfluentSchemaRegistry.from_config(config.ingest.schema_registry, clock=clock)
    lookups = _counting(registry, "get_schema")
    decoder = AvroRecordDecoder("pipelines", "confluent", registry)
    expected = pipelines_event(json.loads(json.dumps(ORDER_COMPLETED)))

    with pytest.raises(DecodeError) as info:  # the id the next registration will get
        decoder.decode(confluent_frame(before + 1, b""))
    assert info.value.reason == DecodeReason.UNKNOWN_SCHEMA_ID
    assert "is not in the registry" in info.value.detail
    late, writer = register(f"late_{tag}")
    assert late == before + 1, "another schema was registered between the two"
    framed = confluent_frame(late, _body(writer, ORDER_COMPLETED))

    clock.now += 4.9
    with pytest.raises(DecodeError) as info:
        decoder.decode(framed)
    assert info.value.reason == DecodeReason.UNKNOWN_SCHEMA_ID
    assert len(lookups) == 1  # remembered: the registry was not asked again

    clock.now += 0.1
    assert expected is not None and pipelines_event(decoder.decode(framed)) == expected
    assert len(lookups) == 2
    clock.now += 3600
    assert pipelines_event(decoder.decode(framed)) == expected
    assert len(lookups) == 2  # a schema is kept for good


def test_a_flood_of_one_bad_id_costs_one_lookup_per_retry_interval(registry_url: str) -> None:
    """1,000 records with an id the registry does not hold, over 30 s of the test's
    clock, with the default 10 s interval: asked at 0, 10 and 20 s, and nothing is
    remembered once an answer is older than the interval."""
    clock = _Clock()
    registry = ConfluentSchemaRegistry.from_config(
        SchemaRegistryConfig(url=registry_url), clock=clock
    )
    lookups = _counting(registry, "get_schema")
    decoder = AvroRecordDecoder("pipelines", "confluent", registry)
    start = clock.now
    for index in range(1000):
        clock.now = start + index * 0.03
        with pytest.raises(DecodeError) as info:
            decoder.decode(confluent_frame(987_654, b""))
        assert info.value.reason == DecodeReason.UNKNOWN_SCHEMA_ID
    assert len(lookups) == 3
    clock.now += 10
    with pytest.raises(UnknownSchemaError):
        registry.schema(987_655)
    assert list(registry._unknown) == [987_655]  # the expired answer was dropped


def test_lookups_of_ids_not_yet_known_are_bounded_and_a_record_never_waits(
    registry_url: str, pipelines_id: int
) -> None:
    """``max_lookups_per_s: 2``: of a burst of distinct ids at one instant two are
    asked for, the others are bad records at once whose dead letter says the registry
    was not asked, and a real id refused that way decodes at a later record, when the
    budget has refilled. Known ids never count."""
    clock = _Clock()
    config = SchemaRegistryConfig.model_validate({"url": registry_url, "max_lookups_per_s": 2})
    registry = ConfluentSchemaRegistry.from_config(config, clock=clock)
    lookups = _counting(registry, "get_schema")
    decoder = AvroRecordDecoder("pipelines", "confluent", registry)
    body = encode_avro("pipelines", ORDER_COMPLETED)
    reasons = []
    for schema_id in (900_001, 900_002, 900_003, pipelines_id):
        with pytest.raises(DecodeError) as info:
            decoder.decode(confluent_frame(schema_id, body))
        assert info.value.reason == DecodeReason.UNKNOWN_SCHEMA_ID
        reasons.append("was not looked up" in info.value.detail)
    assert reasons == [False, False, True, True] and len(lookups) == 2

    clock.now += 0.5  # one more lookup
    expected = pipelines_event(json.loads(json.dumps(ORDER_COMPLETED)))
    assert expected is not None
    assert pipelines_event(decoder.decode(confluent_frame(pipelines_id, body))) == expected
    for _ in range(100):  # a known id costs nothing
        decoder.decode(confluent_frame(pipelines_id, body))
    assert len(lookups) == 3


def test_the_retry_interval_and_the_bound_are_checked() -> None:
    for settings, message in [
        ({"unknown_id_retry": "10"}, "is not a duration"),
        ({"unknown_id_retry": "10ms"}, "greater than or equal to 100"),
        ({"unknown_id_retry": "2h"}, "less than or equal to 3600000"),
        ({"max_lookups_per_s": 0}, "greater than 0"),
    ]:
        with pytest.raises(ValueError, match=message):
            SchemaRegistryConfig.model_validate({"url": "http://r", **settings})
    defaults = SchemaRegistryConfig(url="http://r")
    assert (defaults.unknown_id_retry_ms, defaults.max_lookups_per_s) == (10_000, 50)


def test_a_writer_schema_with_references_to_other_subjects_decodes(registry_url: str) -> None:
    """A producer's writer schema names types registered under other subjects
    (Confluent ``references``): ``Device`` under one subject references ``Os`` under
    another, and the writer references both (the same version reached twice). The
    records, written by confluent_kafka's own AvroSerializer (which registers the
    writer with its references), decode as their JSON twins do; each referenced
    subject version is asked for once, also for a second writer id that shares them."""
    client = SchemaRegistryClient({"url": registry_url})
    tag = time.time_ns()
    namespace = f"io.example.t{tag}"
    os_schema = {
        "type": "record",
        "name": "Os",
        "namespace": namespace,
        "fields": [{"name": "name", "type": "string"}],
    }
    device = {
        "type": "record",
        "name": "Device",
        "namespace": namespace,
        "fields": [{"name": "os", "type": f"{namespace}.Os"}, {"name": "model", "type": "string"}],
    }
    os_subject, device_subject = f"os-{tag}", f"device-{tag}"
    client.register_schema(os_subject, Schema(json.dumps(os_schema), "AVRO"))
    os_ref = SchemaReference(f"{namespace}.Os", os_subject, 1)
    client.register_schema(device_subject, Schema(json.dumps(device), "AVRO", [os_ref]))
    device_ref = SchemaReference(f"{namespace}.Device", device_subject, 1)

    registry = ConfluentSchemaRegistry.from_config(SchemaRegistryConfig(url=registry_url))
    versions = _counting(registry, "get_version")
    decoder = AvroRecordDecoder("pipelines", "confluent", registry)
    expected = pipelines_event(json.loads(json.dumps(ORDER_COMPLETED)))
    assert expected is not None
    datum = {
        **pipelines_to_avro(ORDER_COMPLETED),
        "device": {"os": {"name": "android"}, "model": "p9"},
        "os": {"name": "ios"},
    }
    for topic in (f"refs-a-{tag}", f"refs-b-{tag}"):
        fields = [
            {"name": "device", "type": f"{namespace}.Device"},
            {"name": "os", "type": f"{namespace}.Os"},
        ]
        if topic.startswith("refs-b"):  # a second writer schema: another id, same references
            fields.append({"name": "extra", "type": ["null", "string"], "default": None})
            datum["extra"] = None
        writer = Schema(json.dumps(_writer_with(fields)), "AVRO", [device_ref, os_ref])
        serializer = AvroSerializer(client, writer)
        framed = serializer(datum, SerializationContext(topic, MessageField.VALUE))
        assert framed is not None
        assert client.get_schema(int.from_bytes(framed[1:5], "big")).references
        assert pipelines_event(decoder.decode(framed)) == expected
    assert sorted(call[:2] for call in versions) == [(device_subject, 1), (os_subject, 1)]


class _RecordedRegistry:
    """The client boundary answering from recorded answers shaped as the Confluent
    Schema Registry API documents them (``GET /schemas/ids/{id}``: ``schema`` and
    ``references`` of ``name``, ``subject``, ``version``; ``GET
    /subjects/{subject}/versions/{version}``), for what a real registry will not hold:
    a reference cycle, or a referenced version a lagging replica lacks."""

    def __init__(self, ids: dict[int, dict[str, object]]) -> None:
        self.ids = ids
        self.versions: dict[tuple[str, int], dict[str, object]] = {}

    def get_schema(self, schema_id: int) -> Schema:
        if schema_id not in self.ids:
            raise SchemaRegistryError(404, 40403, "Schema not found")
        return Schema.from_dict(self.ids[schema_id])

    def get_version(self, subject: str, version: int) -> RegisteredSchema:
        answer = self.versions.get((subject, version))
        if answer is None:
            raise SchemaRegistryError(404, 40402, "Version not found")
        return RegisteredSchema.from_dict(answer)


def _recorded(schema: dict[str, object], refs: list[tuple[str, str]]) -> dict[str, object]:
    return {
        "schema": json.dumps(schema),
        "references": [{"name": name, "subject": subject, "version": 1} for name, subject in refs],
    }


def test_a_referenced_version_not_yet_held_is_unknown_until_the_retry_interval() -> None:
    """A replica that has the writer schema but not yet the version it references: the
    id is unknown (the answer names the missing subject version; its records are
    dead-lettered ``unknown_schema_id``) for the retry interval, and decodes once asked
    again after it."""
    os_schema = {
        "type": "record",
        "name": "Os",
        "namespace": "n",
        "fields": [{"name": "name", "type": "string"}],
    }
    writer = _writer_with([{"name": "os", "type": "n.Os"}])
    recorded = _RecordedRegistry({7: _recorded(writer, [("n.Os", "os-value")])})
    clock = _Clock()
    registry = ConfluentSchemaRegistry(
        cast(SchemaRegistryClient, recorded), "http://r", unknown_id_retry_s=10, clock=clock
    )
    with pytest.raises(UnknownSchemaError, match="references subject os-value version 1"):
        registry.schema(7)
    recorded.versions[("os-value", 1)] = {
        "subject": "os-value",
        "version": 1,
        "id": 6,
        "schema": json.dumps(os_schema),
    }
    clock.now += 9.9
    with pytest.raises(UnknownSchemaError):
        registry.schema(7)
    clock.now += 0.1
    decoder = AvroRecordDecoder("pipelines", "confluent", registry)
    framed = confluent_frame(7, _referenced_body(writer, os_schema))
    expected = pipelines_event(json.loads(json.dumps(ORDER_COMPLETED)))
    assert expected is not None and pipelines_event(decoder.decode(framed)) == expected


def _referenced_body(writer: dict[str, object], os_schema: dict[str, object]) -> bytes:
    named: dict[str, object] = {}
    fastavro.parse_schema(os_schema, named_schemas=named)
    buffer = io.BytesIO()
    datum = {**pipelines_to_avro(ORDER_COMPLETED), "os": {"name": "ios"}}
    fastavro.schemaless_writer(buffer, fastavro.parse_schema(writer, named_schemas=named), datum)
    return buffer.getvalue()


def test_a_reference_cycle_is_a_bad_schema_not_a_hang() -> None:
    """References that lead back to a version already being resolved (a registry that
    accepted them, or a recorded answer) end the lookup as a bad schema."""
    a = {"type": "record", "name": "A", "fields": [{"name": "b", "type": "B"}]}
    b = {"type": "record", "name": "B", "fields": [{"name": "a", "type": "A"}]}
    recorded = _RecordedRegistry({1: _recorded(a, [("B", "b")])})
    recorded.versions[("b", 1)] = {
        "subject": "b",
        "version": 1,
        "id": 2,
        **_recorded(b, [("A", "a")]),
    }
    recorded.versions[("a", 1)] = {
        "subject": "a",
        "version": 1,
        "id": 1,
        **_recorded(a, [("B", "b")]),
    }
    registry = ConfluentSchemaRegistry(cast(SchemaRegistryClient, recorded), "http://r")
    decoder = AvroRecordDecoder("pipelines", "confluent", registry)
    with pytest.raises(DecodeError) as info:
        decoder.decode(confluent_frame(1, b""))
    assert info.value.reason == DecodeReason.BAD_SCHEMA
    with pytest.raises(BadSchemaError, match="form a cycle"):
        registry.schema(1)


def test_the_readme_shows_every_schema_registry_setting_with_its_default() -> None:
    """The README's configuration reference (the commented ``schema_registry:`` block)
    is valid, names every setting, and shows the defaults the code has."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text("utf-8")
    block = readme.split("  # schema_registry:", 1)[1].split("\n  topics:", 1)[0]
    settings = {
        key: yaml.safe_load(value)
        for key, value in re.findall(r"^  #   (\w+): (.+?)(?:\s+#.*)?$", block, re.MULTILINE)
    }
    shown = SchemaRegistryConfig.model_validate(settings)
    fields = SchemaRegistryConfig.model_fields
    names = {field.alias or name for name, field in fields.items()}
    assert names == set(settings)
    defaults = SchemaRegistryConfig(url=shown.url)
    assert shown.unknown_id_retry_ms == defaults.unknown_id_retry_ms
    assert shown.max_lookups_per_s == defaults.max_lookups_per_s


def test_a_chain_of_references_longer_than_the_bound_is_a_bad_schema() -> None:
    """Resolving recurses once per level: a chain longer than ``MAX_REFERENCES`` is
    refused as a bad schema, before Python's own stack limit could turn it into a
    traceback."""
    length = MAX_REFERENCES + 1
    recorded = _RecordedRegistry({1: _recorded({"type": "string"}, [("T0", "s0")])})
    for level in range(length):
        refs = [(f"T{level + 1}", f"s{level + 1}")] if level + 1 < length else []
        schema = {"type": "fixed", "name": f"T{level}", "size": 1}
        recorded.versions[(f"s{level}", 1)] = {
            "subject": f"s{level}",
            "version": 1,
            "id": level + 2,
            **_recorded(schema, refs),
        }
    registry = ConfluentSchemaRegistry(cast(SchemaRegistryClient, recorded), "http://r")
    with pytest.raises(BadSchemaError, match=f"more than {MAX_REFERENCES} references"):
        registry.schema(1)
