"""Purging the repartition topics on the real broker: only records this process has
committed, only of the internal topics, at most once per interval, and a failure is
reported once and never stops anything."""

from __future__ import annotations

import logging
import time
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from streamsync.config import load_config
from streamsync.runtime.app import Application
from streamsync.runtime.repartition import Purger, repartition_topic
from tests.runtime.evaluate_support import check_seq, keys, read_deltas, replay_deltas, synthetic
from tests.runtime.test_evaluate_repartition import MixedStream
from tests.topics import create_topics

pytestmark = pytest.mark.kafka


def _low_watermarks(bootstrap: str, tps: list[tuple[str, int]]) -> dict[tuple[str, int], int]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"w-{uuid.uuid4().hex}"})
    try:
        return {
            (t, p): consumer.get_watermark_offsets(TopicPartition(t, p), 10, cached=False)[0]
            for t, p in tps
        }
    finally:
        consumer.close()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_purger_deletes_committed_offsets_once_per_interval(
    kafka_bootstrap_servers: str, caplog: pytest.LogCaptureFixture
) -> None:
    run = uuid.uuid4().hex[:8]
    internal, other = f"purge-{run}.internal", f"purge-{run}.other"
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap_servers})
    create_topics(admin, [NewTopic(t, 2, 1) for t in (internal, other)])
    producer = Producer({"bootstrap.servers": kafka_bootstrap_servers})
    for topic in (internal, other):
        for partition in range(2):
            for i in range(10):
                producer.produce(topic, b"%d" % i, partition=partition)
    assert producer.flush(30) == 0
    everything = [(t, p) for t in (internal, other) for p in range(2)]
    clock = Clock()
    purger = Purger(admin, [internal], 10.0, clock=clock)

    def low() -> dict[tuple[str, int], int]:
        return _low_watermarks(kafka_bootstrap_servers, everything)

    # Other topics' offsets are ignored; nothing is sent before the interval has passed.
    purger.committed({(internal, 0): 4, (other, 0): 6, (other, 1): 9})
    purger.tick()
    purger.settle(10)
    assert set(low().values()) == {0}
    clock.now += 10
    purger.tick()
    purger.settle(10)
    assert low() == {(internal, 0): 4, (internal, 1): 0, (other, 0): 0, (other, 1): 0}
    assert purger.low_watermarks == {(internal, 0): 4}
    # Offsets committed in between are sent together, once the next interval is due.
    purger.committed({(internal, 0): 6})
    purger.committed({(internal, 0): 7, (internal, 1): 3})
    clock.now += 5
    purger.tick()
    purger.settle(10)
    assert low()[(internal, 0)] == 4
    clock.now += 5
    purger.tick()
    purger.settle(10)
    assert low() == {(internal, 0): 7, (internal, 1): 3, (other, 0): 0, (other, 1): 0}
    # A failing partition (here an offset past its end) is logged once per kind and
    # asked for again; the other partitions of the request are purged.
    caplog.set_level(logging.WARNING, logger="streamsync.runtime.repartition")
    for _ in range(2):
        purger.committed({(internal, 0): 9, (internal, 1): 50})
        clock.now += 10
        purger.tick()
        purger.settle(10)
    assert low()[(internal, 0)] == 9
    warnings = [r for r in caplog.records if "cannot purge" in r.getMessage()]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert f"{internal}[1]" in warnings[0].getMessage()
    assert low()[(internal, 1)] == 3


def test_evaluate_purges_what_it_committed_of_the_repartition_topics(
    kafka_bootstrap_servers: str, tmp_path: Path
) -> None:
    stream = MixedStream(kafka_bootstrap_servers)
    stream.produce(synthetic(200, 4000, seed=24))
    config = load_config(stream.config(tmp_path, repartition_purge_interval="100ms"))
    Application(config).run(idle_timeout_s=2.0)
    live = read_deltas(kafka_bootstrap_servers, stream.deltas)
    expected = replay_deltas(stream.lines, until_ms=int(time.time() * 1000))
    assert len(expected) > 500
    assert keys(live) == keys(expected)
    check_seq(live)
    internal = [repartition_topic(stream.group, t) for t in (stream.null_keyed, stream.other_keyed)]
    tps = [(t, p) for t in internal for p in range(stream.partitions)]
    consumer = Consumer({"bootstrap.servers": kafka_bootstrap_servers, "group.id": stream.group})
    try:
        committed = {
            (tp.topic, tp.partition): tp.offset
            for tp in consumer.committed([TopicPartition(t, p) for t, p in tps], 10)
        }
    finally:
        consumer.close()
    low = _low_watermarks(kafka_bootstrap_servers, tps)
    for tp in tps:
        assert 0 < low[tp] <= committed[tp], (tp, low[tp], committed[tp])
    # The users' own topics are never purged.
    raw = [(t, p) for t, n in ((stream.null_keyed, 4), (stream.other_keyed, 2)) for p in range(n)]
    keyed = [(t, p) for t in (stream.pipelines, stream.webhooks) for p in range(stream.partitions)]
    assert set(_low_watermarks(kafka_bootstrap_servers, raw + keyed).values()) == {0}
