"""The dead-letters page: the newest dead letters of every stage's topic with their
reasons and the vendor's message, read from a real broker; a ``<script>`` customer id is
text, and nothing of it is shown without signing in."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from streamsync.config import parse_config
from streamsync.console.dead_letters import DeadLetter, dead_letter_topics, read_dead_letters
from streamsync.dead_letter import DETAIL_HEADER, DeadLetterWriter, dead_letter_headers
from streamsync.destinations.dead_letter import DeliveryDeadLetters
from streamsync.destinations.errors import Rejection
from streamsync.ingest.event import SourcePosition
from tests.console.support import EVIL, T0, VIEWER_TOKEN, bearer, delta, make_console, run_client
from tests.topics import create_topics

Client = TestClient[Any, Any]


def _entry(key: str, reason: str, message: str) -> DeadLetter:
    return DeadLetter(
        topic="streamsync.deliver.dead-letter", stage="deliver", partition=0, offset=4,
        timestamp_ms=T0, reason=reason, message=message, destination="braze", status="400",
        key=key, source="d[0]@9", truncated=False,
    )  # fmt: skip


def test_the_page_shows_reasons_and_escapes_the_customer_id(tmp_path: Path) -> None:
    console = make_console(tmp_path)
    fake = console.state.sources
    fake.dead.entries = [_entry(EVIL, "rejected", f"bad external_id {EVIL}")]  # type: ignore[attr-defined]

    async def work(client: Client) -> None:
        response = await client.get("/dead-letters", headers=bearer(VIEWER_TOKEN))
        body = await response.text()
        assert response.status == 200
        assert 'data-reason="rejected"' in body
        assert "<script>alert" not in body
        assert body.count("&lt;script&gt;alert") == 2  # the key and the vendor's message
        assert 'href="/dead-letters"' in body  # in the navigation
        anonymous = await client.get("/dead-letters")
        assert anonymous.status == 401
        assert "alert" not in await anonymous.text()

    run_client(console, work)


@pytest.mark.kafka
def test_the_newest_dead_letters_of_every_stage_are_read_with_their_headers(
    kafka_bootstrap_servers: str,
) -> None:
    run = uuid.uuid4().hex[:8]
    ingest_topic, deliver_topic = f"dl-in-{run}", f"dl-deliver-{run}"
    create_topics(
        AdminClient({"bootstrap.servers": kafka_bootstrap_servers}),
        [NewTopic(ingest_topic, 2, 1), NewTopic(deliver_topic, 1, 1)],
    )
    config = parse_config(
        {
            "kafka": {"bootstrap_servers": kafka_bootstrap_servers},
            "ingest": {
                "topics": [{"name": "in", "format": "pipelines_json"}],
                "dead_letter_topic": ingest_topic,
            },
            "deltas": {"topic": "d"},
            "destinations": {
                "braze": {
                    "kind": "braze",
                    "base_url": "http://127.0.0.1:1",
                    "credentials": {"env": "K"},
                    "dead_letter_topic": deliver_topic,
                },
            },
        },
        env={},
    )
    assert dead_letter_topics(config) == {ingest_topic: "ingest", deliver_topic: "deliver"}
    producer = Producer({"bootstrap.servers": kafka_bootstrap_servers})
    ingest = DeadLetterWriter(producer, ingest_topic)
    for i in range(150):
        headers = dead_letter_headers(
            "malformed_json",
            SourcePosition("in", i % 2, i),
            ((DETAIL_HEADER, "the record is not a JSON object"),),
            timestamp_ms=T0 + i,
        )
        ingest.write(b"{", f"c{i}".encode(), headers)
    ingest.flush()
    deliver = DeliveryDeadLetters(producer, deliver_topic, "d")
    deliver.delta(
        delta(EVIL, "enter", T0, 1),
        0,
        9,
        reason="rejected",
        destination="braze",
        rejection=Rejection(400, "external_id is not valid", "req-1"),
    )
    deliver.flush()
    found = read_dead_letters(config, timeout_s=60)
    assert found.complete and not found.missing
    assert len(found.entries) == 100
    # newest first: the delivery one was written last
    newest = found.entries[0]
    assert (newest.stage, newest.reason, newest.key) == ("deliver", "rejected", EVIL)
    assert (newest.destination, newest.status) == ("braze", "400")
    assert newest.message == "external_id is not valid"
    assert newest.source == "d[0]@9"
    ingested = [e for e in found.entries if e.stage == "ingest"]
    assert len(ingested) == 99
    assert {e.reason for e in ingested} == {"malformed_json"}
    assert {e.message for e in ingested} == {"the record is not a JSON object"}
    keys = {e.key for e in ingested}
    assert len(keys) == 99 and keys <= {f"c{i}" for i in range(150)}
    assert "c149" in keys  # the newest of them
    assert all(
        a.timestamp_ms >= b.timestamp_ms
        for a, b in zip(found.entries, found.entries[1:], strict=False)
    )
