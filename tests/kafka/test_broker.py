"""The local broker is a real Kafka: transactions, read_committed and groups work on it."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from streamsync.dev.broker import default_kafka_version, server_properties
from streamsync.kafka.config import consumer_config, producer_config

pytestmark = pytest.mark.kafka


def _drain(consumer: Consumer, expected: int, timeout_polls: int = 60) -> list[bytes]:
    values: list[bytes] = []
    for _ in range(timeout_polls):
        msg = consumer.poll(0.5)
        if msg is None:
            if len(values) >= expected:
                break
            continue
        assert msg.error() is None, msg.error()
        values.append(msg.value())
    return values


def test_pinned_version_is_kafka_4() -> None:
    assert default_kafka_version().startswith("4.")


def test_internal_topics_fit_one_broker(tmp_path: object) -> None:
    props = server_properties(port=1, controller_port=2, log_dir=tmp_path)  # type: ignore[arg-type]
    assert props["transaction.state.log.replication.factor"] == "1"
    assert props["transaction.state.log.min.isr"] == "1"
    assert props["offsets.topic.replication.factor"] == "1"
    assert props["listeners"].startswith("PLAINTEXT://127.0.0.1:")


def test_transactions_hide_aborted_records(
    kafka_bootstrap_servers: str, new_topic: Callable[..., str]
) -> None:
    topic = new_topic("txn")
    producer = Producer(
        producer_config(kafka_bootstrap_servers, transactional_id=f"test-{uuid.uuid4().hex}")
    )
    producer.init_transactions(30)
    producer.begin_transaction()
    producer.produce(topic, b"aborted")
    producer.abort_transaction(30)
    producer.begin_transaction()
    producer.produce(topic, b"committed")
    producer.commit_transaction(30)

    consumer = Consumer(consumer_config(kafka_bootstrap_servers, f"g-{uuid.uuid4().hex}"))
    consumer.subscribe([topic])
    try:
        assert _drain(consumer, 1) == [b"committed"]
    finally:
        consumer.close()


def test_consumer_group_offsets_resume(
    kafka_bootstrap_servers: str, new_topic: Callable[..., str], producer: Producer
) -> None:
    topic = new_topic("grp")
    for i in range(10):
        producer.produce(topic, str(i).encode())
    producer.flush(30)
    group = f"g-{uuid.uuid4().hex}"

    first = Consumer(consumer_config(kafka_bootstrap_servers, group))
    first.subscribe([topic])
    got = _drain(first, 10)
    assert got == [str(i).encode() for i in range(10)]
    first.commit(offsets=[TopicPartition(topic, 0, 6)], asynchronous=False)
    first.close()

    second = Consumer(consumer_config(kafka_bootstrap_servers, group))
    second.subscribe([topic])
    try:
        assert _drain(second, 4) == [str(i).encode() for i in range(6, 10)]
    finally:
        second.close()
