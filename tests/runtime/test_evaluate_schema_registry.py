"""Evaluate end to end with a real Confluent-compatible Schema Registry on the real
broker: the input is Confluent-framed Avro as a producer team writes it with
``confluent_kafka``'s own serializer (which registers the schema under the topic's
subject), and the deltas are Avro under ``deltas.subject``, read back by
``confluent_kafka``'s own deserializer. Nothing on either side uses streamsync's
encoders, so what is proved is that the ids and bytes agree with the standard client,
not merely with themselves; a writer schema with references to another subject is
resolved as the serializer resolved it. Credentials are checked by a basic-auth gate in front of
the registry (Apicurio 2.6 authenticates only through an OpenID Connect server): the
configured ones are sent, and refused ones stop evaluate with one line."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import Producer
from confluent_kafka.schema_registry import Schema, SchemaReference, SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from streamsync.config import load_config
from streamsync.dead_letter import REASON_HEADER
from streamsync.deltas.audit import audit_customer
from streamsync.deltas.codec import decode_avro_framed
from streamsync.deltas.record import MembershipDelta
from streamsync.ingest.avro import PIPELINES_SCHEMA_PATH
from streamsync.ingest.config import SchemaRegistryConfig
from streamsync.ingest.jsonl import is_webhook_record
from streamsync.ingest.registry_client import (
    ConfluentSchemaRegistry,
    RegistryRefused,
    RegistryUnavailable,
)
from streamsync.runtime.app import Application
from streamsync.runtime.snapshot import read_snapshot
from tests.runtime.evaluate_support import (
    Stream,
    check_seq,
    customer_of,
    keys,
    read_committed,
    replay_deltas,
    synthetic,
    wait_until_committed,
)

pytestmark = [pytest.mark.kafka, pytest.mark.schema_registry]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
#: The Data Pipelines fields the schema carries as JSON text (objects of any shape).
_JSON_TEXT_FIELDS = ("properties", "traits", "context")


def _datum(record: dict[str, Any]) -> dict[str, Any]:
    """A Data Pipelines record in the shape of customerio_pipelines_event.avsc, as a
    producer writes it: the named fields as they are, the free-form objects as JSON."""
    datum: dict[str, Any] = {
        field: record.get(field)
        for field in ("type", "messageId", "timestamp", "userId", "anonymousId", "event", "name")
    }
    for field in _JSON_TEXT_FIELDS:
        value = record.get(field)
        datum[field] = None if value is None else orjson.dumps(value).decode()
    return datum


def _delta(value: dict[str, Any]) -> MembershipDelta:
    """A delta as AvroDeserializer returns it (``timestamp-millis`` as a datetime)."""
    at = value["at_ms"]
    if isinstance(at, datetime):
        value["at_ms"] = (at - _EPOCH) // timedelta(milliseconds=1)
    return MembershipDelta.from_json(value)


def _config(stream: Stream, tmp_path: Path, registry_url: str, subject: str) -> Path:
    path = stream.config(tmp_path)
    config = orjson.loads(path.read_bytes())
    config["ingest"]["topics"] = [
        {"name": stream.pipelines, "format": "pipelines_avro", "framing": "confluent"}
    ]
    config["ingest"]["schema_registry"] = {"url": registry_url}
    config["deltas"] = {"topic": stream.deltas, "format": "avro", "subject": subject}
    path.write_bytes(orjson.dumps(config))
    return path


def test_registry_framed_records_evaluate_as_replay_and_deltas_decode_with_the_standard_client(
    kafka_bootstrap_servers: str, tmp_path: Path, registry_url: str
) -> None:
    """Avro Data Pipelines records framed with the id the registry gave evaluate to
    exactly replay's transitions of the same records; one record framed with an id the
    registry does not hold, in the middle of a partition, is dead-lettered
    ``unknown_schema_id`` and the records after it are evaluated and committed; every
    delta carries the id registered under ``deltas.subject`` and decodes with a plain
    AvroDeserializer."""
    stream = Stream(kafka_bootstrap_servers, partitions=2)
    client = SchemaRegistryClient({"url": registry_url})
    serializer = AvroSerializer(client, PIPELINES_SCHEMA_PATH.read_text("utf-8"))
    context = SerializationContext(stream.pipelines, MessageField.VALUE)
    producer = Producer(
        {"bootstrap.servers": kafka_bootstrap_servers, "linger.ms": 5, "enable.idempotence": True}
    )
    records = [r for r in synthetic(150, 4000, seed=23) if not is_webhook_record(r)]
    unknown: bytes | None = None
    for index, record in enumerate(records):
        customer = customer_of(record)
        value = serializer(_datum(record), context)
        assert value is not None
        partition = stream.partition_of(customer)
        if index == len(records) // 2:
            # The same body under an id the registry has never given out.
            schema_id = int.from_bytes(value[1:5], "big")
            unknown = value[:1] + (schema_id + 4242).to_bytes(4, "big") + value[5:]
            producer.produce(stream.pipelines, unknown, b"unknown-id", partition=partition)
        producer.produce(stream.pipelines, value, customer.encode(), partition=partition)
        stream.lines.append(orjson.dumps(record))
    assert producer.flush(30) == 0 and unknown is not None
    registered = client.get_latest_version(f"{stream.pipelines}-value")
    assert int.from_bytes(value[1:5], "big") == registered.schema_id

    subject = f"{stream.deltas}-value"
    app = Application(load_config(_config(stream, tmp_path, registry_url, subject)))
    stats = app.run(idle_timeout_s=2.0)
    assert stats.records == len(records) + 1 and stats.dead_lettered == 1
    wait_until_committed(stream, timeout_s=30)

    [letter] = read_committed(kafka_bootstrap_servers, stream.dead_letters, count=1)
    assert letter.value() == unknown
    assert dict(letter.headers() or [])[REASON_HEADER] == b"unknown_schema_id"

    delta_id = client.get_latest_version(subject).schema_id
    deserializer = AvroDeserializer(client)
    delta_context = SerializationContext(stream.deltas, MessageField.VALUE)
    live: list[MembershipDelta] = []
    for message in read_committed(kafka_bootstrap_servers, stream.deltas):
        raw = message.value()
        assert raw is not None and int.from_bytes(raw[1:5], "big") == delta_id
        live.append(_delta(deserializer(raw, delta_context)))
    expected = replay_deltas(stream.lines, until_ms=int(time.time() * 1000))
    assert len(expected) > 500
    assert keys(live) == keys(expected)
    check_seq(live)


#: What the registry in front of Apicurio accepts (Apicurio 2.6 authenticates only
#: through an OpenID Connect server; HTTP basic auth is what the client sends).
_USER, _PASSWORD = "svc", "s3cret"


class _BasicAuthProxy(BaseHTTPRequestHandler):
    """Apicurio behind HTTP basic auth: the right credentials are forwarded, any other
    (or none) answered 401 as the Confluent registry does."""

    upstream = ""

    def _handle(self) -> None:
        expected = "Basic " + base64.b64encode(f"{_USER}:{_PASSWORD}".encode()).decode()
        if self.headers.get("Authorization") != expected:
            body = orjson.dumps({"error_code": 40101, "message": "Unauthorized"})
            self._answer(401, body, "application/json")
            return
        length = int(self.headers.get("Content-Length") or 0)
        request = urllib.request.Request(
            self.upstream + self.path,
            data=self.rfile.read(length) if length else None,
            method=self.command,
            headers={"Content-Type": self.headers.get("Content-Type") or "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                status, body, kind = response.status, response.read(), response.headers
        except urllib.error.HTTPError as error:
            status, body, kind = error.code, error.read(), error.headers
        self._answer(status, body, kind.get("Content-Type") or "application/json")

    def _answer(self, status: int, body: bytes, kind: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_DELETE = _handle

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the test reads the service's output, not the proxy's."""


@pytest.fixture(scope="module")
def guarded_url(registry_url: str) -> Iterator[str]:
    """The registry's URL behind basic auth."""
    parts = urllib.parse.urlsplit(registry_url)
    handler = type("Handler", (_BasicAuthProxy,), {"upstream": f"{parts.scheme}://{parts.netloc}"})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}{parts.path}"
    finally:
        server.shutdown()
        thread.join(10)
        server.server_close()


def _guarded(registry: str, password: str) -> SchemaRegistryClient:
    return SchemaRegistryClient({"url": registry, "basic.auth.user.info": f"{_USER}:{password}"})


def test_the_configured_credentials_are_sent(guarded_url: str) -> None:
    """ingest.schema_registry's username and password_from reach the registry as HTTP
    basic auth: the right ones are let through, others refused."""
    settings = {"url": guarded_url, "username": _USER, "password_from": {"env": "SR_PASSWORD"}}
    config = SchemaRegistryConfig.model_validate(settings)
    schema_id = _guarded(guarded_url, _PASSWORD).register_schema(
        f"guarded-{time.time_ns()}-value", Schema(PIPELINES_SCHEMA_PATH.read_text("utf-8"), "AVRO")
    )
    right = ConfluentSchemaRegistry.from_config(config, env={"SR_PASSWORD": _PASSWORD})
    assert right.schema(schema_id) is not None
    wrong = ConfluentSchemaRegistry.from_config(config, env={"SR_PASSWORD": "nope"})
    with pytest.raises(RegistryRefused, match="refused the credentials"):
        wrong.schema(schema_id)


@pytest.mark.parametrize("when", ["registering-the-delta-subject", "reading-an-input-schema"])
def test_refused_credentials_stop_evaluate_with_one_line(
    kafka_bootstrap_servers: str, tmp_path: Path, guarded_url: str, when: str
) -> None:
    """At start-up (``deltas.subject``) or at the first Confluent-framed record, a
    registry that refuses the credentials stops ``streamsync evaluate`` with one line
    naming the registry and exit status 1: a person must fix the credentials, and
    every record would meet the same refusal."""
    stream = Stream(kafka_bootstrap_servers, partitions=1)
    path = _config(stream, tmp_path, guarded_url, f"{stream.deltas}-value")
    config = orjson.loads(path.read_bytes())
    config["ingest"]["schema_registry"].update(
        {"username": _USER, "password_from": {"env": "SR_PASSWORD"}}
    )
    if when == "reading-an-input-schema":
        del config["deltas"]["subject"]
        client = _guarded(guarded_url, _PASSWORD)
        serializer = AvroSerializer(client, PIPELINES_SCHEMA_PATH.read_text("utf-8"))
        context = SerializationContext(stream.pipelines, MessageField.VALUE)
        [record] = [r for r in synthetic(1, 5, seed=3) if not is_webhook_record(r)][:1]
        producer = Producer({"bootstrap.servers": kafka_bootstrap_servers})
        producer.produce(stream.pipelines, serializer(_datum(record), context), b"k")
        assert producer.flush(30) == 0
    path.write_bytes(orjson.dumps(config))
    result = subprocess.run(
        [sys.executable, "-m", "streamsync", "evaluate", "--config", str(path)],
        capture_output=True,
        text=True,
        env={**os.environ, "SR_PASSWORD": "not-the-password"},
        timeout=120,
    )
    assert result.returncode == 1, result.stderr
    lines = result.stderr.splitlines()
    refused = [line for line in lines if "refused the credentials" in line]
    assert refused == [
        f"streamsync evaluate: schema registry {guarded_url} refused the credentials "
        "(HTTP 401); check ingest.schema_registry"
    ], result.stderr
    assert "Traceback" not in result.stderr and "not-the-password" not in result.stderr


def test_a_registry_that_does_not_answer_stops_evaluate_and_loses_no_record(
    kafka_bootstrap_servers: str, tmp_path: Path, registry_url: str
) -> None:
    """Looking up a writer schema the registry does not answer for is not a bad
    record: evaluate stops (exit status 1) with nothing committed and nothing
    dead-lettered, and the next run, with the registry back, evaluates every record as
    replay does."""
    stream = Stream(kafka_bootstrap_servers, partitions=1)
    client = SchemaRegistryClient({"url": registry_url})
    serializer = AvroSerializer(client, PIPELINES_SCHEMA_PATH.read_text("utf-8"))
    context = SerializationContext(stream.pipelines, MessageField.VALUE)
    producer = Producer({"bootstrap.servers": kafka_bootstrap_servers, "enable.idempotence": True})
    records = [r for r in synthetic(40, 800, seed=31) if not is_webhook_record(r)]
    for record in records:
        value = serializer(_datum(record), context)
        producer.produce(stream.pipelines, value, customer_of(record).encode(), partition=0)
        stream.lines.append(orjson.dumps(record))
    assert producer.flush(30) == 0

    def config(url: str) -> Path:
        path = _config(stream, tmp_path, url, "unused")
        settings = orjson.loads(path.read_bytes())
        del settings["deltas"]["subject"]  # the input's lookup is what is tested
        path.write_bytes(orjson.dumps(settings))
        return path

    with pytest.raises(RegistryUnavailable) as stopped:
        Application(load_config(config("http://127.0.0.1:1"))).run(idle_timeout_s=2.0)
    assert stopped.value.exit_status == 1 and "did not answer" in str(stopped.value)
    assert all(offset < 0 for offset in stream.committed().values())

    stats = Application(load_config(config(registry_url))).run(idle_timeout_s=2.0)
    assert stats.records == len(records) and stats.dead_lettered == 0
    wait_until_committed(stream, timeout_s=30)
    live = [
        decode_avro_framed(m.value())
        for m in read_committed(kafka_bootstrap_servers, stream.deltas)
    ]
    expected = replay_deltas(stream.lines, until_ms=int(time.time() * 1000))
    assert len(expected) > 50
    assert keys(live) == keys(expected)


def test_explain_live_and_diff_read_registry_framed_input(
    kafka_bootstrap_servers: str, tmp_path: Path, registry_url: str
) -> None:
    """``audiences explain --live`` (:func:`audit_customer`) and ``diff``
    (:func:`read_snapshot`) read the input topics as evaluate does, with the writer
    schemas of ``ingest.schema_registry``: the records behind a customer's deltas are
    found, and every record read is decoded."""
    stream = Stream(kafka_bootstrap_servers, partitions=1)
    client = SchemaRegistryClient({"url": registry_url})
    serializer = AvroSerializer(client, PIPELINES_SCHEMA_PATH.read_text("utf-8"))
    context = SerializationContext(stream.pipelines, MessageField.VALUE)
    producer = Producer({"bootstrap.servers": kafka_bootstrap_servers, "enable.idempotence": True})
    records = [r for r in synthetic(30, 600, seed=41) if not is_webhook_record(r)]
    for record in records:
        value = serializer(_datum(record), context)
        producer.produce(stream.pipelines, value, customer_of(record).encode(), partition=0)
    assert producer.flush(30) == 0
    config = load_config(_config(stream, tmp_path, registry_url, f"{stream.deltas}-value"))
    assert Application(config).run(idle_timeout_s=2.0).dead_lettered == 0
    deltas = [
        decode_avro_framed(m.value())
        for m in read_committed(kafka_bootstrap_servers, stream.deltas)
    ]
    customer = next(d.customer_id for d in deltas if d.record_ids)

    audit = audit_customer(config, customer, timeout_s=60)
    assert audit.stopped_by is None and audit.deltas and audit.records
    assert not audit.not_found, audit.not_found

    snapshot = read_snapshot(config, timeout_s=60)
    assert snapshot.records_read == len(records) and snapshot.undecodable == 0
    assert sum(len(task.events) for task in snapshot.tasks.values()) > 0


def test_input_whose_writer_schema_references_another_subject_evaluates_as_replay(
    kafka_bootstrap_servers: str, tmp_path: Path, registry_url: str
) -> None:
    """A producer team's writer schema carries a field of a type registered under
    another subject (Confluent ``references``), written by confluent_kafka's own
    AvroSerializer: evaluate resolves the reference, dead-letters nothing and emits
    exactly replay's transitions of the same records."""
    stream = Stream(kafka_bootstrap_servers, partitions=1)
    client = SchemaRegistryClient({"url": registry_url})
    namespace = f"io.example.t{time.time_ns()}"
    device = {
        "type": "record",
        "name": "Device",
        "namespace": namespace,
        "fields": [{"name": "model", "type": "string"}],
    }
    device_subject = f"{stream.pipelines}-device"
    client.register_schema(device_subject, Schema(orjson.dumps(device).decode(), "AVRO"))
    writer = orjson.loads(PIPELINES_SCHEMA_PATH.read_bytes())
    writer["fields"].append({"name": "device", "type": f"{namespace}.Device"})
    reference = SchemaReference(f"{namespace}.Device", device_subject, 1)
    serializer = AvroSerializer(client, Schema(orjson.dumps(writer).decode(), "AVRO", [reference]))
    context = SerializationContext(stream.pipelines, MessageField.VALUE)
    producer = Producer({"bootstrap.servers": kafka_bootstrap_servers, "enable.idempotence": True})
    records = [r for r in synthetic(40, 800, seed=43) if not is_webhook_record(r)]
    for record in records:
        value = serializer({**_datum(record), "device": {"model": "p9"}}, context)
        producer.produce(stream.pipelines, value, customer_of(record).encode(), partition=0)
        stream.lines.append(orjson.dumps(record))
    assert producer.flush(30) == 0
    assert client.get_latest_version(f"{stream.pipelines}-value").schema.references

    config = load_config(_config(stream, tmp_path, registry_url, f"{stream.deltas}-value"))
    stats = Application(config).run(idle_timeout_s=2.0)
    assert stats.records == len(records) and stats.dead_lettered == 0
    wait_until_committed(stream, timeout_s=30)
    live = [
        decode_avro_framed(m.value())
        for m in read_committed(kafka_bootstrap_servers, stream.deltas)
    ]
    expected = replay_deltas(stream.lines, until_ms=int(time.time() * 1000))
    assert len(expected) > 50
    assert keys(live) == keys(expected)
