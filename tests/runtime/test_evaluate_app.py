"""The evaluate application against the real broker: replay equality, the idle deadline,
start-up checks, poison records, oversized dead letters."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from streamsync.config import load_config
from streamsync.dead_letter import REASON_HEADER, TRUNCATED_HEADER
from streamsync.runtime.app import Application, StartupError
from tests.runtime.evaluate_support import (
    Stream,
    check_seq,
    first_enter_readable_at,
    keys,
    read_deltas,
    replay_deltas,
    synthetic,
)
from tests.topics import create_topic, create_topics

pytestmark = pytest.mark.kafka

CART_WAIT = """
name: ACT__CartWait__3s
version: 1
owner: retention@example.com
description: Added to cart, nothing else for three seconds.
entry:
  since_last: {event: Product Added, at_least: 3s, less_than: 1h}
exit:
  occurred_since_last: {event: Order Completed, since: {event: Product Added}}
"""


def _rfc3339(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _track(customer: str, event: str, ms: int, **properties: Any) -> dict[str, Any]:
    return {
        "type": "track",
        "messageId": str(uuid.uuid4()),
        "userId": customer,
        "event": event,
        "timestamp": _rfc3339(ms),
        "properties": properties,
    }


@pytest.fixture
def running() -> Iterator[list[tuple[Application, threading.Thread]]]:
    """Applications run in threads by the test; stopped (and joined) at the end."""
    apps: list[tuple[Application, threading.Thread]] = []
    yield apps
    for app, thread in apps:
        app.stop()
        thread.join(30)


def _start(app: Application, apps: list[tuple[Application, threading.Thread]]) -> None:
    thread = threading.Thread(target=app.run, daemon=True)
    thread.start()
    apps.append((app, thread))
    deadline = time.monotonic() + 30
    while not (app.tasks and all(all(t.caught_up.values()) for t in list(app.tasks.values()))):
        assert time.monotonic() < deadline, "the application did not catch up"
        time.sleep(0.05)


@pytest.mark.parametrize("cache", [None, 25], ids=["every-customer-held", "cache-of-25"])
def test_evaluate_over_a_finished_topic_equals_replay(
    kafka_bootstrap_servers: str, tmp_path: Path, cache: int | None
) -> None:
    stream = Stream(kafka_bootstrap_servers)
    stream.produce(synthetic(300, 8000, seed=11))
    settings = {} if cache is None else {"cache_customers": cache}
    app = Application(load_config(stream.config(tmp_path, **settings)))
    stats = app.run(idle_timeout_s=2.0)
    assert stats.records == len(stream.lines)
    live = read_deltas(kafka_bootstrap_servers, stream.deltas)
    expected = replay_deltas(stream.lines, until_ms=int(time.time() * 1000))
    assert len(expected) > 1000
    assert keys(live) == keys(expected)
    check_seq(live)


@pytest.mark.parametrize("cache", [None, 1], ids=["customer-held", "customer-evicted"])
def test_idle_deadline_fires_within_a_second(
    kafka_bootstrap_servers: str,
    tmp_path: Path,
    running: list[tuple[Application, threading.Thread]],
    cache: int | None,
) -> None:
    """Also when the customer left memory at the commit after its record (a cache of one
    customer over two tasks holds none): the deadline comes from the store's index."""
    (tmp_path / "audiences.yaml").write_text(CART_WAIT)
    stream = Stream(kafka_bootstrap_servers, partitions=2)
    settings = {} if cache is None else {"cache_customers": cache}
    config = load_config(
        stream.config(tmp_path, audiences=str(tmp_path / "audiences.yaml"), **settings)
    )
    app = Application(config)
    _start(app, running)
    reader = Consumer(
        {
            "bootstrap.servers": kafka_bootstrap_servers,
            "group.id": f"reader-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
        }
    )
    reader.subscribe([stream.deltas])
    try:
        added = int(time.time() * 1000)
        stream.produce([_track("idle-1", "Product Added", added, sku="A")])
        deadline_ms = added + 3000
        if cache is not None:  # out of memory well before its deadline
            while app.stats.records < 1 or any(
                t.engine.customers for t in list(app.tasks.values())
            ):
                assert time.time() * 1000 < deadline_ms - 500, "the customer stayed in memory"
                time.sleep(0.02)
        seen_at = first_enter_readable_at(reader, "idle-1", deadline_ms)
    finally:
        reader.close()
    assert seen_at is not None, "no enter delta"
    assert seen_at - deadline_ms < 1000, f"enter readable {seen_at - deadline_ms:.0f} ms late"


def test_topics_that_are_not_co_partitioned_are_named(
    kafka_bootstrap_servers: str, tmp_path: Path
) -> None:
    stream = Stream(kafka_bootstrap_servers, partitions=2)
    other = f"ev-{stream.run}.other"
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap_servers})
    create_topic(admin, NewTopic(other, 3, 1))
    path = stream.config(tmp_path)
    data = orjson.loads(path.read_bytes())
    data["ingest"]["topics"][1]["name"] = other
    path.write_bytes(orjson.dumps(data))
    app = Application(load_config(path))
    with pytest.raises(StartupError) as error:
        app.run(idle_timeout_s=1)
    message = str(error.value)
    assert "co-partitioned" in message
    assert f"{stream.pipelines} has 2" in message and f"{other} has 3" in message


def _dead_letters(bootstrap: str, topic: str, count: int) -> list[Any]:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"reader-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
        }
    )
    consumer.subscribe([topic])
    out: list[Any] = []
    deadline = time.monotonic() + 30
    try:
        while len(out) < count and time.monotonic() < deadline:
            out.extend(m for m in consumer.consume(100, 0.3) if m.error() is None)
    finally:
        consumer.close()
    return out


def test_a_record_the_engine_cannot_apply_is_dead_lettered_and_the_rest_evaluated(
    kafka_bootstrap_servers: str, tmp_path: Path
) -> None:
    stream = Stream(kafka_bootstrap_servers, partitions=1)
    good = synthetic(60, 1500, seed=5)
    t0 = 1_767_225_600_000 + 5 * 86_400_000
    poison = _track("poison-1", "Order Completed", t0, order_id="o-1", total=1e308)
    stream.produce(good[:700])
    stream.produce([poison])
    stream.produce(good[700:])
    app = Application(load_config(stream.config(tmp_path)))
    stats = app.run(idle_timeout_s=2.0)
    assert stats.records == len(stream.lines)
    letters = _dead_letters(kafka_bootstrap_servers, stream.dead_letters, 1)
    poisoned = [m for m in letters if orjson.loads(m.value()).get("userId") == "poison-1"]
    assert len(poisoned) == 1
    reason = dict(poisoned[0].headers())[REASON_HEADER].decode()
    assert reason in {"engine_error", "out_of_range"}
    live = read_deltas(kafka_bootstrap_servers, stream.deltas)
    good_lines = [line for line in stream.lines if b"poison-1" not in line]
    expected = replay_deltas(good_lines, until_ms=int(time.time() * 1000))
    assert keys(live) == keys(expected)


def test_a_dead_letter_too_large_for_its_topic_is_truncated_and_says_so(
    kafka_bootstrap_servers: str, tmp_path: Path
) -> None:
    stream = Stream(kafka_bootstrap_servers, partitions=1)
    limit = 64 * 1024
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap_servers})
    topic = NewTopic(stream.dead_letters, 1, 1, config={"max.message.bytes": str(limit)})
    create_topic(admin, topic)
    producer = Producer({"bootstrap.servers": kafka_bootstrap_servers})
    malformed = b"{" + b"x" * (limit - 100)  # under the input limit, not JSON
    producer.produce(stream.pipelines, malformed, b"k", partition=0)
    after = _track("after-1", "Product Added", 1_767_225_600_000, sku="A")
    producer.produce(stream.pipelines, orjson.dumps(after), b"after-1", partition=0)
    assert producer.flush(30) == 0
    app = Application(load_config(stream.config(tmp_path)))
    stats = app.run(idle_timeout_s=2.0)
    assert stats.records == 2
    assert stats.topics[stream.pipelines].decoded == 1
    [letter] = _dead_letters(kafka_bootstrap_servers, stream.dead_letters, 1)
    headers = dict(letter.headers())
    assert headers[REASON_HEADER] == b"malformed_json"
    assert int(headers[TRUNCATED_HEADER]) == len(malformed)
    assert malformed.startswith(letter.value()) and len(letter.value()) < limit


def test_the_example_configuration_with_avro_deltas(
    kafka_bootstrap_servers: str, tmp_path: Path
) -> None:
    """examples/config/local.yaml as shipped (under unique topic names on the shared
    broker), its three input formats, and deltas in the Avro form with Confluent framing."""
    from streamsync.deltas.codec import decode_avro
    from streamsync.deltas.config import DeltasConfig
    from streamsync.ingest.avro import confluent_frame, encode_avro
    from streamsync.resources import project_path

    config = load_config(project_path("examples", "config", "local.yaml"), env={})
    assert config.evaluate is not None
    run = uuid.uuid4().hex[:8]
    names = [f"ex-{run}.{t.name}" for t in config.ingest.topics]
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap_servers})
    create_topics(admin, [NewTopic(n, 2, 1) for n in names])
    app_config = config.model_copy(
        update={
            "kafka": config.kafka.model_copy(update={"bootstrap_servers": kafka_bootstrap_servers}),
            "ingest": config.ingest.model_copy(
                update={
                    "topics": [
                        t.model_copy(update={"name": n})
                        for t, n in zip(config.ingest.topics, names, strict=True)
                    ],
                    "dead_letter_topic": f"ex-{run}.dead-letter",
                }
            ),
            "deltas": DeltasConfig(topic=f"ex-{run}.deltas", format="avro"),
            "evaluate": config.evaluate.model_copy(
                update={"group_id": f"ex-{run}", "state_dir": tmp_path / "state"}
            ),
        }
    )
    t0 = 1_767_225_600_000
    producer = Producer({"bootstrap.servers": kafka_bootstrap_servers})
    added = _track("ex-1", "Product Added", t0, sku="A")
    later = _track("ex-2", "Page Viewed", t0 + 3 * 3_600_000)
    producer.produce(names[0], orjson.dumps(added), b"ex-1")
    framed = confluent_frame(1, encode_avro("pipelines", later))
    producer.produce(names[2], framed, b"ex-2")
    assert producer.flush(30) == 0
    stats = Application(app_config).run(idle_timeout_s=2.0)
    assert stats.records == 2 and stats.dead_lettered == 0
    reader = Consumer(
        {
            "bootstrap.servers": kafka_bootstrap_servers,
            "group.id": f"reader-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
        }
    )
    reader.subscribe([f"ex-{run}.deltas"])
    got = []
    deadline = time.monotonic() + 20
    try:
        while time.monotonic() < deadline and not got:
            for message in reader.consume(100, 0.3):
                if message.error() is None:
                    value = message.value()
                    assert value[0] == 0 and int.from_bytes(value[1:5], "big") == 3
                    got.append(decode_avro(value[5:]))
    finally:
        reader.close()
    enter = [d for d in got if d.audience == "ACT__CartAbandon__90m"]
    assert enter and enter[0].customer_id == "ex-1" and enter[0].at_ms == t0 + 90 * 60_000


def test_evaluate_equals_the_independent_oracle(
    kafka_bootstrap_servers: str, tmp_path: Path
) -> None:
    """The brute-force evaluator of tests/audiences (not the engine) as the reference:
    the read-committed transitions per customer and audience are the oracle's."""
    from tests.audiences.oracle import decode_record, oracle_transitions

    stream = Stream(kafka_bootstrap_servers, partitions=3)
    raws = synthetic(12, 1500, seed=3)
    stream.produce(raws)
    Application(load_config(stream.config(tmp_path))).run(idle_timeout_s=2.0)
    live = read_deltas(kafka_bootstrap_servers, stream.deltas)
    check_seq(live)
    got: dict[tuple[str, str], list[tuple[int, str]]] = {}
    for delta in sorted(live, key=lambda d: d.seq):
        got.setdefault((delta.audience, delta.customer_id), []).append((delta.at_ms, delta.op))
    decoded = [decode_record(raw) for raw in raws]
    expected = oracle_transitions(
        [e for e in decoded if e is not None], until_ms=int(time.time() * 1000)
    )
    assert len({audience for audience, _ in expected}) >= 10
    assert got == expected


def test_a_deltas_topic_deleted_under_the_running_service_ends_the_run(
    kafka_bootstrap_servers: str, tmp_path: Path
) -> None:
    """Its transactions can no longer commit: the run ends with one line (every
    transaction aborting for broker_timeout: exit 1; or a commit stuck waiting for the
    lost topic: exit 3, to be restarted, which creates the topic again) instead of
    retrying forever while looking healthy."""
    from streamsync.errors import StreamsyncError

    stream = Stream(kafka_bootstrap_servers, partitions=1)
    stream.produce(synthetic(20, 200, seed=4))
    app = Application(load_config(stream.config(tmp_path, broker_timeout="3s")))
    failure: list[BaseException] = []

    def run() -> None:
        try:
            app.run()
        except BaseException as exc:  # the test looks at it
            failure.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap_servers})
    while stream.deltas not in admin.list_topics(timeout=10).topics:  # evaluate creates it
        assert time.monotonic() < deadline, "the deltas topic was not created"
        time.sleep(0.1)
    while not read_deltas(kafka_bootstrap_servers, stream.deltas, quiet_s=0.5):
        assert time.monotonic() < deadline, "no deltas before the topic was deleted"
    for future in admin.delete_topics([stream.deltas]).values():
        future.result(30)
    more = synthetic(20, 400, seed=5)
    while thread.is_alive() and time.monotonic() < deadline + 60:
        stream.produce(more[:20])  # keep cycles coming: each one aborts
        more = more[20:] or synthetic(20, 400, seed=6)
        thread.join(1.0)
    if thread.is_alive():
        app.stop()
        thread.join(30)
        pytest.fail("the run went on with every transaction aborting")
    assert failure and isinstance(failure[0], StreamsyncError), failure
    assert failure[0].exit_status in (1, 3)
