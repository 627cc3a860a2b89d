"""IngestLoop against the real broker: decode, dead-letter, count, commit.

Records are produced with a plain confluent-kafka Producer (independent of streamsync),
the loop runs until idle, and the dead-letter topic is read back with a separate Consumer.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from streamsync import dead_letter as dl
from streamsync.dead_letter import DeadLetterFailed
from streamsync.ingest.avro import confluent_frame, encode_avro
from streamsync.ingest.config import IngestConfig, TopicConfig
from streamsync.ingest.event import Event
from streamsync.ingest.pipelines import pipelines_event
from streamsync.kafka.config import KafkaConfig
from streamsync.kafka.health import KafkaUnavailable
from streamsync.runtime.ingest_loop import IngestLoop, IngestStats
from tests.ingest.samples import IDENTIFY, ORDER_COMPLETED, WEBHOOK_SENT, sample

pytestmark = pytest.mark.kafka

REGISTRY = Path(__file__).resolve().parents[2] / "schemas" / "registry"
IDLE_S = 4.0
BASE_TS = 1_714_566_896_000


@dataclass
class Produced:
    topic: str
    key: bytes | None
    value: bytes | None
    timestamp: int
    outcome: str  # "event", "skipped" or a DecodeReason value
    partition: int = -1
    offset: int = -1


def produce_all(producer: Producer, records: list[Produced]) -> None:
    def delivered(record: Produced) -> Callable[[Any, Any], None]:
        def callback(error: Any, message: Any) -> None:
            assert error is None, error
            record.partition, record.offset = message.partition(), message.offset()

        return callback

    for record in records:
        producer.produce(
            record.topic,
            value=record.value,
            key=record.key,
            timestamp=record.timestamp,
            on_delivery=delivered(record),
        )
    assert producer.flush(30) == 0
    assert all(r.offset >= 0 for r in records)


def read_all(bootstrap: str, topic: str, expected: int, timeout_s: float = 30.0) -> list[Any]:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"reader-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    out: list[Any] = []
    try:
        deadline = time.monotonic() + timeout_s
        while len(out) < expected and time.monotonic() < deadline:
            for message in consumer.consume(100, 0.5):
                assert message.error() is None, message.error()
                out.append(message)
        # Nothing more than expected arrives.
        out.extend(m for m in consumer.consume(100, 1.0) if m.error() is None)
    finally:
        consumer.close()
    return out


def committed_equals_end(
    bootstrap: str, group: str, topics: list[str]
) -> dict[str, tuple[int, int]]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        result = {}
        for tp in consumer.committed([TopicPartition(t, 0) for t in topics], timeout=10):
            _low, high = consumer.get_watermark_offsets(tp, timeout=10)
            result[tp.topic] = (tp.offset, high)
        return result
    finally:
        consumer.close()


def test_ingest_loop_end_to_end(
    kafka_bootstrap_servers: str, new_topic: Callable[..., str], producer: Producer
) -> None:
    pipelines = new_topic("cio.pipelines")
    webhooks = new_topic("cio.webhooks")
    avro = new_topic("cio.pipelines.avro")
    dead = new_topic("dead")
    group = f"ingest-{uuid.uuid4().hex[:8]}"
    config = IngestConfig(
        topics=[
            TopicConfig(name=pipelines, format="pipelines_json", max_record_bytes=4096),
            TopicConfig(name=webhooks, format="webhook_json"),
            TopicConfig(name=avro, format="pipelines_avro", framing="confluent"),
        ],
        dead_letter_topic=dead,
        group_id=group,
        schema_registry_dir=REGISTRY,
    )
    body = encode_avro("pipelines", ORDER_COMPLETED)
    good_tracks = [
        sample(ORDER_COMPLETED, messageId=f"m-{i}", userId=f"cust-{i}") for i in range(40)
    ]
    big = sample(ORDER_COMPLETED, properties={"blob": "x" * 5000})

    def js(record: Any) -> bytes:
        return orjson.dumps(record)

    plan: list[tuple[str, bytes | None, bytes | None, str]] = [
        *[(pipelines, b"k", js(r), "event") for r in good_tracks],
        (pipelines, None, js(IDENTIFY), "event"),
        (pipelines, b"bad-1", b'{"type": "track", "userId": ', "malformed_json"),
        (pipelines, b"bad-2", js(sample(ORDER_COMPLETED, userId={"id": 42})), "wrong_type"),
        (pipelines, b"bad-3", js(sample(ORDER_COMPLETED, properties="x=1")), "wrong_type"),
        (pipelines, b"bad-4", js(big), "oversized"),
        (pipelines, None, js(sample(ORDER_COMPLETED, userId=None)), "skipped"),
        (pipelines, b"bad-5", js(sample(ORDER_COMPLETED, event=None)), "missing_field"),
        (pipelines, b"bad-6", None, "empty_record"),
        (webhooks, None, js(WEBHOOK_SENT), "event"),
        (webhooks, b"bad-7", js(sample(WEBHOOK_SENT, timestamp="soon")), "wrong_type"),
        (avro, None, confluent_frame(1, body), "event"),
        (avro, b"bad-8", confluent_frame(4242, body), "unknown_schema_id"),
        (avro, b"bad-9", confluent_frame(1, body[:-4]), "truncated_avro"),
        (avro, b"bad-10", b"\x07" + body, "bad_magic_byte"),
    ]
    records = [
        Produced(topic, key, value, BASE_TS + i, outcome)
        for i, (topic, key, value, outcome) in enumerate(plan)
    ]
    produce_all(producer, records)

    events: list[Event] = []
    progress: list[IngestStats] = []
    loop = IngestLoop(
        config,
        KafkaConfig(bootstrap_servers=kafka_bootstrap_servers),
        events.append,
        batch_size=7,  # several batches, several commits
        progress=progress.append,
        progress_interval_s=0.0,
    )
    stats = loop.run(idle_timeout_s=IDLE_S)

    assert stats.stopped_by == "idle_timeout"
    bad = [r for r in records if r.outcome not in ("event", "skipped")]
    assert stats.decoded == len(events) == sum(r.outcome == "event" for r in records)
    assert stats.skipped_no_customer == 1
    assert stats.dead_lettered == len(bad)
    assert stats.decoded + stats.skipped_no_customer + stats.dead_lettered == len(records)
    expected_reasons: dict[str, int] = {}
    for r in bad:
        expected_reasons[r.outcome] = expected_reasons.get(r.outcome, 0) + 1
    assert dict(stats.dead_letters_by_reason) == expected_reasons
    assert stats.topics[webhooks].decoded == 1
    assert dict(stats.topics[avro].dead_lettered) == {
        "unknown_schema_id": 1,
        "truncated_avro": 1,
        "bad_magic_byte": 1,
    }
    assert progress, "progress callback never ran"

    # Good events keep their source position; the Avro twin equals its JSON original.
    avro_event = next(e for e in events if e.source is not None and e.source.topic == avro)
    assert avro_event == pipelines_event(ORDER_COMPLETED, None, avro_event.source)

    letters = read_all(kafka_bootstrap_servers, dead, len(bad))
    assert len(letters) == len(bad)
    by_position = {(r.topic, r.partition, r.offset): r for r in bad}
    for letter in letters:
        headers = {k: v.decode() for k, v in letter.headers()}
        assert set(headers) == {
            dl.REASON_HEADER,
            dl.DETAIL_HEADER,
            dl.TOPIC_HEADER,
            dl.PARTITION_HEADER,
            dl.OFFSET_HEADER,
            dl.TIMESTAMP_HEADER,
        }
        original = by_position[
            (
                headers[dl.TOPIC_HEADER],
                int(headers[dl.PARTITION_HEADER]),
                int(headers[dl.OFFSET_HEADER]),
            )
        ]
        assert headers[dl.REASON_HEADER] == original.outcome
        assert int(headers[dl.TIMESTAMP_HEADER]) == original.timestamp
        assert letter.value() == original.value
        assert letter.key() == original.key
        assert "ada@example.com" not in headers[dl.DETAIL_HEADER]

    offsets = committed_equals_end(kafka_bootstrap_servers, group, [pipelines, webhooks, avro])
    for topic, (committed, end) in offsets.items():
        assert committed == end, topic

    # A restart resumes after the commit: nothing is read twice.
    again = IngestLoop(config, KafkaConfig(bootstrap_servers=kafka_bootstrap_servers)).run(
        idle_timeout_s=IDLE_S
    )
    assert again.records == 0


def test_max_records_commits_exactly_what_was_handled(
    kafka_bootstrap_servers: str, new_topic: Callable[..., str], producer: Producer
) -> None:
    topic = new_topic("cio.webhooks")
    group = f"ingest-{uuid.uuid4().hex[:8]}"
    config = IngestConfig(
        topics=[TopicConfig(name=topic, format="webhook_json")],
        dead_letter_topic=new_topic("dead"),
        group_id=group,
    )
    records = [
        Produced(
            topic, None, orjson.dumps(sample(WEBHOOK_SENT, event_id=f"e{i}")), BASE_TS, "event"
        )
        for i in range(10)
    ]
    produce_all(producer, records)
    loop = IngestLoop(config, KafkaConfig(bootstrap_servers=kafka_bootstrap_servers), batch_size=4)
    stats = loop.run(max_records=6, idle_timeout_s=30)
    assert (stats.stopped_by, stats.decoded) == ("max_records", 6)
    assert committed_equals_end(kafka_bootstrap_servers, group, [topic])[topic] == (6, 10)


def test_undeliverable_dead_letter_stops_without_commit(
    kafka_bootstrap_servers: str,
    new_topic: Callable[..., str],
    topic_with_config: Callable[[str, dict[str, str]], str],
    producer: Producer,
) -> None:
    topic = new_topic("cio.pipelines")
    # The dead-letter topic refuses anything but tiny records, so delivery fails.
    dead = topic_with_config("dead-tiny", {"max.message.bytes": "64"})
    group = f"ingest-{uuid.uuid4().hex[:8]}"
    config = IngestConfig(
        topics=[TopicConfig(name=topic, format="pipelines_json")],
        dead_letter_topic=dead,
        group_id=group,
    )
    produce_all(
        producer,
        [
            Produced(topic, None, orjson.dumps(ORDER_COMPLETED), BASE_TS, "event"),
            Produced(topic, None, b"{not json" + b" " * 200, BASE_TS, "malformed_json"),
        ],
    )
    loop = IngestLoop(
        config,
        KafkaConfig(bootstrap_servers=kafka_bootstrap_servers),
        producer_extra={"message.timeout.ms": 5000},
    )
    with pytest.raises(DeadLetterFailed):
        loop.run(idle_timeout_s=IDLE_S)
    committed, _end = committed_equals_end(kafka_bootstrap_servers, group, [topic])[topic]
    assert committed < 0  # nothing committed: a restart re-reads both records


def test_cli_ingest_runs_and_summarises(
    kafka_bootstrap_servers: str,
    new_topic: Callable[..., str],
    producer: Producer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from streamsync.cli import main

    topic = new_topic("cio.pipelines")
    produce_all(
        producer,
        [
            Produced(topic, None, orjson.dumps(ORDER_COMPLETED), BASE_TS, "event"),
            Produced(topic, None, b"[", BASE_TS, "malformed_json"),
        ],
    )
    config = tmp_path / "streamsync.yaml"
    config.write_text(
        f"ingest:\n  group_id: cli-{uuid.uuid4().hex[:8]}\n"
        f"  dead_letter_topic: {new_topic('dead')}\n"
        f"  topics: [{{name: {topic}, format: pipelines_json}}]\n"
    )
    rc = main(
        ["ingest", "--config", str(config), "--bootstrap-servers", kafka_bootstrap_servers,
         "--idle-timeout", "3"]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert rc == 0
    assert "malformed_json" in out
    assert topic in out


def test_an_unreachable_broker_is_an_error_not_an_idle_success() -> None:
    """No broker ever answers: the group never joins, so the idle timer never runs, and
    after the broker timeout the loop stops with an error instead of "0 records"."""
    config = IngestConfig(topics=[TopicConfig(name="x", format="pipelines_json")])
    loop = IngestLoop(config, KafkaConfig(bootstrap_servers="127.0.0.1:1"), broker_timeout_s=3)
    with pytest.raises(KafkaUnavailable, match=r"cannot reach Kafka at 127\.0\.0\.1:1"):
        loop.run(idle_timeout_s=1)


def test_a_dead_letter_too_large_for_its_topic_is_truncated_not_fatal(
    kafka_bootstrap_servers: str,
    new_topic: Callable[..., str],
    topic_with_config: Callable[[str, dict[str, str]], str],
    producer: Producer,
) -> None:
    """A malformed record just under the input limit: its dead letter (value plus
    headers) would not fit the dead-letter topic, so it is cut to fit and says so, and
    the good record behind it is read and committed."""
    topic = new_topic("cio.pipelines")
    dead = topic_with_config("dead-small", {"max.message.bytes": "65536"})
    group = f"ingest-{uuid.uuid4().hex[:8]}"
    config = IngestConfig(
        topics=[TopicConfig(name=topic, format="pipelines_json", max_record_bytes=65_000)],
        dead_letter_topic=dead,
        group_id=group,
    )
    malformed = b"{" + b"x" * 64_900
    produce_all(
        producer,
        [
            Produced(topic, None, malformed, BASE_TS, "malformed_json"),
            Produced(topic, None, orjson.dumps(ORDER_COMPLETED), BASE_TS, "event"),
        ],
    )
    stats = IngestLoop(config, KafkaConfig(bootstrap_servers=kafka_bootstrap_servers)).run(
        idle_timeout_s=IDLE_S
    )
    assert stats.decoded == 1 and stats.dead_lettered == 1
    [letter] = read_all(kafka_bootstrap_servers, dead, 1)
    headers = dict(letter.headers())
    assert headers[dl.TRUNCATED_HEADER] == str(len(malformed)).encode()
    assert malformed.startswith(letter.value())
    committed, end = committed_equals_end(kafka_bootstrap_servers, group, [topic])[topic]
    assert committed == end == 2
