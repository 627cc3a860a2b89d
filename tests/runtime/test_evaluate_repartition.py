"""Topics not keyed by customer, re-keyed through repartition topics, on the real broker:
evaluate equals replay over the same records, and a SIGKILL mid-stream loses and
duplicates nothing."""

from __future__ import annotations

import random
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from streamsync.config import load_config
from streamsync.ingest.event import Event
from streamsync.ingest.jsonl import is_webhook_record, read_events
from streamsync.runtime.app import Application, StartupError
from streamsync.runtime.repartition import partition_for, repartition_topic
from tests.runtime.evaluate_support import (
    Stream,
    check_final_deltas,
    check_seq,
    customer_of,
    first_enter_readable_at,
    keys,
    read_committed,
    read_deltas,
    replay_deltas,
    synthetic,
    uncommitted,
)
from tests.runtime.test_evaluate_app import CART_WAIT, _track
from tests.runtime.test_evaluate_faults import Instance
from tests.topics import create_topic, create_topics

pytestmark = pytest.mark.kafka


class MixedStream(Stream):
    """The keyed topics of :class:`Stream` plus two topics not keyed by customer: one
    with null keys (4 partitions) and one keyed by something else (2 partitions)."""

    def __init__(self, bootstrap: str, partitions: int = 3) -> None:
        super().__init__(bootstrap, partitions)
        self.null_keyed = f"ev-{self.run}.nullkey"
        self.other_keyed = f"ev-{self.run}.otherkey"
        admin = AdminClient({"bootstrap.servers": bootstrap})
        new = [NewTopic(self.null_keyed, 4, 1), NewTopic(self.other_keyed, 2, 1)]
        create_topics(admin, new)
        self.rng = random.Random(self.run)
        #: the share of pipelines records written to the keyed topic
        self.keyed_share = 0.3
        self.routed: dict[str, int] = {}
        self._choices: dict[tuple[str, int | None], float] = {}

    @property
    def inputs(self) -> list[str]:
        return [self.pipelines, self.webhooks, self.null_keyed, self.other_keyed]

    def produce(self, records: list[dict[str, Any]]) -> None:
        """Each record to a keyed, null-keyed or other-keyed topic at random, except that
        one customer's records of the same instant (and their duplicates) go to one
        place: across partitions their order is the order they are read in, and the
        engine orders records of the same instant by arrival."""
        producer = self._producer
        for record in records:
            value = orjson.dumps(record)
            customer = customer_of(record)
            events = [e for e in read_events([value]) if isinstance(e, Event)]
            instant = (customer, min((e.timestamp_ms for e in events), default=None))
            choice = self._choices.setdefault(instant, self.rng.random())
            rng = random.Random(f"{instant}")
            key: bytes | None
            if is_webhook_record(record) or choice < self.keyed_share:
                topic = self.webhooks if is_webhook_record(record) else self.pipelines
                key, partition = customer.encode(), self.partition_of(customer)
            elif choice < (1 + self.keyed_share) / 2:
                topic, key, partition = self.null_keyed, None, rng.randrange(4)
            else:
                topic, key, partition = self.other_keyed, uuid.uuid4().bytes, rng.randrange(2)
            producer.produce(topic, value, key, partition=partition)
            self.routed[topic] = self.routed.get(topic, 0) + 1
            self.lines.append(value)
            for event in events:
                if event.timestamp_ms > self.newest.get((topic, partition), -1):
                    self.newest[(topic, partition)] = event.timestamp_ms
        assert producer.flush(30) == 0

    def config(self, tmp: Path, state: str = "state", **evaluate: Any) -> Path:
        path = super().config(tmp, state, **evaluate)
        data = orjson.loads(path.read_bytes())
        data["ingest"]["topics"] += [
            {"name": self.null_keyed, "format": "pipelines_json", "repartition": True},
            {"name": self.other_keyed, "format": "pipelines_json", "repartition": True},
        ]
        path.write_bytes(orjson.dumps(data))
        return path

    def lag(self) -> int:
        """Records of every input and repartition topic not yet committed by the
        evaluate group. A repartition topic is written in transactions, so its last
        offset is a commit marker, never consumed."""
        internal = [repartition_topic(self.group, t) for t in (self.null_keyed, self.other_keyed)]
        consumer = Consumer({"bootstrap.servers": self.bootstrap, "group.id": self.group})
        try:
            tps = [
                TopicPartition(topic, p)
                for topic in self.inputs + internal
                for p in range(len(consumer.list_topics(topic, 10).topics[topic].partitions))
            ]
        finally:
            consumer.close()
        return uncommitted(self.bootstrap, self.group, tps, set(internal))


def _collect(sink: list[tuple[Any, Any]]) -> Any:
    return lambda error, message: sink.append((error, message))


def test_partition_for_matches_the_clients_partitioners(kafka_bootstrap_servers: str) -> None:
    """The repartition topic must put a customer where the keyed topics' producers do:
    librdkafka's ``consistent`` (CRC-32) and the Java client's ``murmur2``."""
    topic = f"ev-part-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap_servers})
    create_topic(admin, NewTopic(topic, 7, 1))
    customers = [f"cust-{i}" for i in range(60)] + ["", "é-ü", "x" * 37]
    for partitioner in ("consistent", "murmur2"):
        producer = Producer(
            {"bootstrap.servers": kafka_bootstrap_servers, "partitioner": partitioner}
        )
        delivered: list[tuple[Any, Any]] = []
        for customer in customers:
            producer.produce(topic, b"v", customer.encode(), on_delivery=_collect(delivered))
        assert producer.flush(30) == 0
        assert all(error is None for error, _ in delivered)
        got = {m.key().decode(): m.partition() for _, m in delivered}
        assert len(set(got.values())) > 3
        for customer in customers:
            assert partition_for(customer.encode(), 7, partitioner) == got[customer], (
                partitioner,
                customer,
            )


def test_evaluate_with_rekeyed_topics_equals_replay(
    kafka_bootstrap_servers: str, tmp_path: Path
) -> None:
    stream = MixedStream(kafka_bootstrap_servers)
    stream.produce(synthetic(300, 8000, seed=21))
    assert min(stream.routed.values()) > 400
    # An existing repartition topic of the right size is used; a record in it that the
    # re-keying stage did not write is dead-lettered, not a crash.
    internal = repartition_topic(stream.group, stream.null_keyed)
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap_servers})
    create_topic(admin, NewTopic(internal, 3, 1))
    producer = Producer({"bootstrap.servers": kafka_bootstrap_servers})
    producer.produce(internal, b"not ours", b"cus_0000001", partition=1)
    assert producer.flush(30) == 0
    # Purging is kept off: the repartition topic is read from its start below.
    config = load_config(stream.config(tmp_path, repartition_purge_interval="1h"))
    app = Application(config)
    stats = app.run(idle_timeout_s=2.0)
    # Each input record counted once, at the topic it was read from.
    assert stats.records == len(stream.lines) + 1
    for topic, count in stream.routed.items():
        assert stats.topics[topic].records == count, topic
    assert stats.topics[internal].dead_lettered == {"malformed_json": 1}
    live = read_deltas(kafka_bootstrap_servers, stream.deltas)
    expected = replay_deltas(stream.lines, until_ms=int(time.time() * 1000))
    assert len(expected) > 1000
    assert keys(live) == keys(expected)
    check_seq(live)
    # The repartition topic holds each re-keyed event once, keyed by customer, in the
    # customer's partition of the keyed topics.
    reader = Consumer(
        {
            "bootstrap.servers": kafka_bootstrap_servers,
            "group.id": f"reader-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
        }
    )
    reader.subscribe([internal])
    events = 0
    deadline = time.monotonic() + 20
    try:
        while events < stats.topics[stream.null_keyed].decoded and time.monotonic() < deadline:
            for message in reader.consume(1000, 0.3):
                if message.error() is None and message.key() is not None:
                    if message.value() == b"not ours":
                        continue
                    events += 1
                    assert message.partition() == stream.partition_of(message.key().decode())
    finally:
        reader.close()
    assert events == stats.topics[stream.null_keyed].decoded > 400


def test_only_keyed_topics_must_be_co_partitioned(
    kafka_bootstrap_servers: str, tmp_path: Path
) -> None:
    """The re-keyed topics (4 and 2 partitions) pass next to 3-partition keyed topics;
    a repartition_partitions that disagrees with the keyed topics is named."""
    stream = MixedStream(kafka_bootstrap_servers)
    path = stream.config(tmp_path, repartition_partitions=5)
    with pytest.raises(StartupError, match="repartition_partitions is 5"):
        Application(load_config(path)).run(idle_timeout_s=1)


@pytest.mark.slow
def test_sigkill_and_scaling_mid_stream_with_rekeyed_topics_lose_and_duplicate_nothing(
    kafka_bootstrap_servers: str, tmp_path: Path
) -> None:
    """Raw partitions and tasks move between two processes and back, and one process
    is SIGKILLed twice while re-keying and evaluating."""
    rng = random.Random(22)
    stream = MixedStream(kafka_bootstrap_servers)
    records = synthetic(300, 12_000, seed=22)
    chunks = [records[i : i + 3000] for i in range(0, len(records), 3000)]
    # Purging often: records consumed and committed are deleted while processes die and
    # partitions move, and nothing is lost.
    settings = {"wall_clock": False, "session_timeout": "6s", "repartition_purge_interval": "200ms"}
    main, extra = (
        Instance(
            stream.config(tmp_path, f"state-{i}", **settings),
            tmp_path / f"{i}.log",
            kafka_bootstrap_servers,
        )
        for i in range(2)
    )
    main.start()
    main.wait_assigned(1)
    kills = 0
    try:
        for number, chunk in enumerate(chunks):
            stream.produce(chunk)
            if number == 0:  # scale out: raw partitions and tasks are shared
                extra.start()
                extra.wait_assigned(1)
            elif number in (1, 2):  # while that chunk is being re-keyed and evaluated
                time.sleep(rng.uniform(0.1, 0.8))
                main.kill()
                kills += 1
                assigned = main.log.read_text().count("assigned partitions")
                main.start()
                main.wait_assigned(assigned + 1)
            else:  # and back to one process
                assert extra.stop() == 0
        deadline = time.monotonic() + 60
        while stream.lag() > 0:
            assert time.monotonic() < deadline, main.log.read_text()[-3000:]
            time.sleep(0.5)
        assert main.stop() == 0
    finally:
        for instance in (main, extra):
            if instance.process is not None and instance.process.poll() is None:
                instance.process.kill()
    assert kills == 2
    assert extra.records() > 0, extra.log.read_text()
    reader = Consumer({"bootstrap.servers": kafka_bootstrap_servers, "group.id": stream.group})
    try:  # the repartition topics were purged meanwhile
        for raw in (stream.null_keyed, stream.other_keyed):
            internal = repartition_topic(stream.group, raw)
            for p in range(stream.partitions):
                tp = TopicPartition(internal, p)
                assert reader.get_watermark_offsets(tp, 10, cached=False)[0] > 0, tp
    finally:
        reader.close()
    check_final_deltas(kafka_bootstrap_servers, stream, more_than=1000)


def test_idle_deadline_of_a_rekeyed_record_fires_within_a_second(
    kafka_bootstrap_servers: str, tmp_path: Path
) -> None:
    """A cart add on a null-keyed topic, then nothing: the raw partitions' marks say
    they are at their end, so the task follows the wall clock and the enter delta is
    readable within 1 s of its deadline."""
    (tmp_path / "audiences.yaml").write_text(CART_WAIT)
    stream = MixedStream(kafka_bootstrap_servers, partitions=2)
    path = stream.config(
        tmp_path,
        audiences=str(tmp_path / "audiences.yaml"),
        repartition_purge_interval="1h",  # the re-keyed record is read back below
    )
    app = Application(load_config(path))
    thread = threading.Thread(target=app.run, daemon=True)
    thread.start()
    reader = Consumer(
        {
            "bootstrap.servers": kafka_bootstrap_servers,
            "group.id": f"reader-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
        }
    )
    try:
        deadline = time.monotonic() + 30
        while not (app.tasks and all(all(t.caught_up.values()) for t in list(app.tasks.values()))):
            assert time.monotonic() < deadline, "the application did not catch up"
            time.sleep(0.05)
        reader.subscribe([stream.deltas])
        added = int(time.time() * 1000)
        record = _track("idle-rk", "Product Added", added, sku="A")
        producer = Producer({"bootstrap.servers": kafka_bootstrap_servers})
        trace = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        producer.produce(
            stream.null_keyed,
            orjson.dumps(record),
            None,
            partition=3,
            headers=[("traceparent", trace)],
        )
        assert producer.flush(30) == 0
        deadline_ms = added + 3000
        seen_at = first_enter_readable_at(reader, "idle-rk", deadline_ms)
    finally:
        reader.close()
        app.stop()
        thread.join(30)
    assert seen_at is not None, "no enter delta"
    assert seen_at - deadline_ms < 1000, f"enter readable {seen_at - deadline_ms:.0f} ms late"
    # The re-keyed record keeps the raw record's headers (its trace context).
    [rekeyed] = [
        m
        for m in read_committed(
            kafka_bootstrap_servers, repartition_topic(stream.group, stream.null_keyed)
        )
        if m.key() == b"idle-rk"
    ]
    assert ("traceparent", trace) in (rekeyed.headers() or [])


def test_every_input_rekeyed_uses_the_configured_task_count(
    kafka_bootstrap_servers: str, tmp_path: Path
) -> None:
    """No keyed topic at all: the repartition topic and the tasks take
    ``evaluate.repartition_partitions``."""
    stream = MixedStream(kafka_bootstrap_servers)
    pipelines = [r for r in synthetic(100, 2500, seed=23) if not is_webhook_record(r)]
    stream.keyed_share = 0.0
    stream.produce(pipelines)
    assert stream.pipelines not in stream.routed
    path = stream.config(tmp_path, repartition_partitions=2)
    data = orjson.loads(path.read_bytes())
    data["ingest"]["topics"] = data["ingest"]["topics"][2:]
    path.write_bytes(orjson.dumps(data))
    app = Application(load_config(path))
    stats = app.run(idle_timeout_s=2.0)
    assert stats.records == len(stream.lines)
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap_servers})
    internal = repartition_topic(stream.group, stream.other_keyed)
    assert len(admin.list_topics(internal, timeout=10).topics[internal].partitions) == 2
    live = read_deltas(kafka_bootstrap_servers, stream.deltas)
    expected = replay_deltas(stream.lines, until_ms=int(time.time() * 1000))
    assert len(expected) > 200
    assert keys(live) == keys(expected)
    check_seq(live)
