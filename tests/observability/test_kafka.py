"""Observability on the real broker: consumer lag per partition read back from /metrics,
and trace context through real Kafka headers."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from streamsync.kafka.config import consumer_config
from streamsync.observability.admin import AdminServer
from streamsync.observability.lag import forget_partitions, report_consumer_lag
from streamsync.observability.metrics import Telemetry
from tests.observability.scrape import scrape, value

pytestmark = pytest.mark.kafka


def test_lag_per_partition_follows_consumption(
    kafka_bootstrap_servers: str, new_topic: Callable[..., str], producer: Producer
) -> None:
    topic = new_topic("lag", partitions=2)
    for i in range(10):
        producer.produce(topic, value=b"x%d" % i, partition=0)
    for i in range(4):
        producer.produce(topic, value=b"y%d" % i, partition=1)
    producer.flush(30)

    group = f"lag-{uuid.uuid4().hex[:8]}"
    consumer = Consumer(
        consumer_config(kafka_bootstrap_servers, group, extra={"fetch.wait.max.ms": 50})
    )
    telemetry = Telemetry(role="evaluate")
    try:
        assert report_consumer_lag(telemetry, consumer, group) == {}  # nothing assigned
        # Explicit start offsets: no committed-offset lookup in the group coordinator.
        partitions = [TopicPartition(topic, 0, 0), TopicPartition(topic, 1, 0)]
        consumer.assign(partitions)
        # Read 3 records of partition 0 and 1 of partition 1 (fetches fill the cache of
        # both partitions' ends).
        consumer.pause([TopicPartition(topic, 1)])
        got = _consume(consumer, 3)
        consumer.resume([TopicPartition(topic, 1)])
        consumer.pause([TopicPartition(topic, 0)])
        got += _consume(consumer, 1)
        assert [(m.partition(), m.offset()) for m in got] == [(0, 0), (0, 1), (0, 2), (1, 0)]
        consumer.pause(partitions)  # polls below only serve fetch responses, no records

        lags = _report_until(telemetry, consumer, group, {(topic, 0): 7, (topic, 1): 3})
        assert lags == {(topic, 0): 7, (topic, 1): 3}
        with AdminServer(telemetry, port=0) as admin:
            s = scrape(admin.url)
            assert value(s, "streamsync_consumer_lag", group=group, topic=topic, partition="0") == 7
            assert value(s, "streamsync_consumer_lag", group=group, topic=topic, partition="1") == 3

            forget_partitions(telemetry, [TopicPartition(topic, 1)])
            s = scrape(admin.url)
            assert value(s, "streamsync_consumer_lag", group=group, topic=topic, partition="0") == 7
            assert (
                value(s, "streamsync_consumer_lag", group=group, topic=topic, partition="1") is None
            )
    finally:
        consumer.close()
        telemetry.shutdown()


def _consume(consumer: Consumer, count: int) -> list:  # type: ignore[type-arg]
    got = []
    deadline = time.monotonic() + 60
    while len(got) < count and time.monotonic() < deadline:
        message = consumer.poll(0.2)
        if message is not None and message.error() is None:
            got.append(message)
    return got


def _report_until(
    telemetry: Telemetry,
    consumer: Consumer,
    group: str,
    expected: dict[tuple[str, int], int],
) -> dict[tuple[str, int], int]:
    """Report until the cached watermarks of both partitions are known (the first fetch
    response of a partition carries them)."""
    deadline = time.monotonic() + 60
    lags = report_consumer_lag(telemetry, consumer, group)
    while lags != expected and time.monotonic() < deadline:
        consumer.poll(0.1)
        lags = report_consumer_lag(telemetry, consumer, group)
    return lags


def test_trace_context_survives_a_kafka_round_trip(
    kafka_bootstrap_servers: str, new_topic: Callable[..., str], producer: Producer
) -> None:
    """Input record (with the producer's traceparent) -> evaluate's span -> delta record:
    the headers confluent-kafka hands back are what the helpers read and write."""
    from opentelemetry import trace

    from streamsync.observability.tracing import Tracing, extract_trace_context

    source, deltas = new_topic("trace-in"), new_topic("trace-out")
    traceparent = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    producer.produce(source, value=b"{}", headers=[("traceparent", traceparent), ("x", b"1")])
    producer.flush(30)
    tracing = Tracing(role="evaluate")
    consumer = Consumer(consumer_config(kafka_bootstrap_servers, f"trace-{uuid.uuid4().hex[:8]}"))
    try:
        consumer.assign([TopicPartition(source, 0, 0)])
        (record,) = _consume(consumer, 1)
        with tracing.span("streamsync.evaluate", headers=record.headers()):
            producer.produce(deltas, value=b"{}", headers=tracing.headers([("op", b"enter")]))
        producer.flush(30)
        consumer.assign([TopicPartition(deltas, 0, 0)])
        (delta,) = _consume(consumer, 1)
    finally:
        consumer.close()
        tracing.shutdown()
    headers = delta.headers()
    assert ("op", b"enter") in headers
    context = trace.get_current_span(extract_trace_context(headers)).get_span_context()
    assert context.trace_id == 0x4BF92F3577B34DA6A3CE929D0E0E4736
    assert context.span_id != 0x00F067AA0BA902B7  # a span of ours, child of the producer's
