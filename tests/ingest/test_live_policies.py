"""The input policies on the live path: a real broker, the ingest loop, the dead-letter
topic. Batches split item by item, group and alias counted as skipped, and poison records
(year 9999, 1e308, JSON 10,000 deep) dead-lettered with their reason."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from confluent_kafka import Producer

from streamsync.ingest.config import IngestConfig, TopicConfig
from streamsync.ingest.event import Event
from streamsync.kafka.config import KafkaConfig
from streamsync.runtime.ingest_loop import IngestLoop
from tests.ingest.samples import ORDER_COMPLETED, WEBHOOK_SENT, sample
from tests.runtime.test_ingest_loop import read_all

pytestmark = pytest.mark.kafka

IDLE_S = 4.0


def test_policies_on_the_live_path(
    kafka_bootstrap_servers: str, new_topic: Callable[..., str], producer: Producer
) -> None:
    pipelines, webhooks, dead = (
        new_topic("cio.pipelines"),
        new_topic("cio.webhooks"),
        new_topic("dl"),
    )
    good = sample(ORDER_COMPLETED, messageId="b-1")
    batch = {
        "batch": [
            good,
            sample(ORDER_COMPLETED, messageId="b-2", event=None),  # item 1: missing event
            {"type": "alias", "userId": "cust-42", "previousId": "anon-9"},
            sample(ORDER_COMPLETED, messageId=None, userId="cust-43"),  # a content id
        ]
    }
    deep = b'{"type":"track","properties":' + b"[" * 10_000 + b"]" * 10_000 + b"}"
    values: list[bytes] = [
        orjson.dumps(batch),
        orjson.dumps({"type": "group", "userId": "cust-42", "groupId": "acme"}),
        orjson.dumps(
            sample(ORDER_COMPLETED, messageId="p-1", timestamp="9999-12-31T23:59:59.999Z")
        ),
        orjson.dumps(sample(ORDER_COMPLETED, messageId="p-2", properties={"total": 1e308})),
        deep,
    ]
    for value in values:
        producer.produce(pipelines, value)
    deleted = sample(WEBHOOK_SENT)
    deleted["data"] = {**deleted["data"], "customer_id": ""}
    producer.produce(webhooks, orjson.dumps(deleted))
    producer.flush(30)

    events: list[Event] = []
    config = IngestConfig(
        topics=[
            TopicConfig(name=pipelines, format="pipelines_json"),
            TopicConfig(name=webhooks, format="webhook_json"),
        ],
        dead_letter_topic=dead,
        group_id=f"policies-{uuid.uuid4().hex[:8]}",
    )
    loop = IngestLoop(config, KafkaConfig(bootstrap_servers=kafka_bootstrap_servers), events.append)
    stats = loop.run(idle_timeout_s=IDLE_S)

    topic = stats.topics[pipelines]
    assert topic.decoded == 2
    assert dict(topic.skipped) == {"alias": 1, "group": 1}
    assert dict(topic.dead_lettered) == {
        "missing_field": 1,
        "bad_timestamp": 1,
        "out_of_range": 1,
        "too_deep": 1,
    }
    assert stats.topics[webhooks].decoded == 1
    by_kind = {e.kind: e for e in events if e.customer_id != "cust-43"}
    assert (by_kind["webhook"].customer_id, by_kind["webhook"].id_kind) == ("cust-42", "id")
    [derived] = [e for e in events if e.customer_id == "cust-43"]
    assert derived.record_id is not None and len(derived.record_id) == 36
    letters: list[Any] = read_all(kafka_bootstrap_servers, dead, 4)
    assert len(letters) == 4
    # The batch's dead letter is the whole Kafka record, as read.
    assert letters[0].value() == values[0]
