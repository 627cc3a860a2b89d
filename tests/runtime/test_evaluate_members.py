"""The membership table on the real broker: after ``evaluate`` over a generated log the
compacted topic's latest value per key is replay's final membership of the same
records, also when ``streamsync evaluate`` was SIGKILLed mid-stream (the table is
written in the deltas' transactions and read ``read_committed``)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient, ConfigResource

from streamsync.config import load_config
from streamsync.deltas.membership import read_customer_members, read_members
from streamsync.runtime.app import Application
from tests.runtime.evaluate_support import (
    Instance,
    Stream,
    check_final_deltas,
    final_members,
    read_deltas,
    replay_deltas,
    synthetic,
    wait_until_committed,
)

pytestmark = pytest.mark.kafka


def _topic_config(bootstrap: str, topic: str) -> dict[str, str]:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
    entries = admin.describe_configs([resource])[resource].result(30)
    return {name: entry.value for name, entry in entries.items()}


def test_the_table_after_evaluate_is_replays_final_membership(
    kafka_bootstrap_servers: str, tmp_path: Path
) -> None:
    stream = Stream(kafka_bootstrap_servers)
    stream.produce(synthetic(200, 6000, seed=17))
    config = load_config(stream.config(tmp_path))
    Application(config).run(idle_timeout_s=2.0)
    expected = final_members(replay_deltas(stream.lines, until_ms=int(time.time() * 1000)))
    assert len(expected) > 100 and any(m.identifiers for m in expected.values())

    table = read_members(config, timeout_s=60)
    assert table.complete and not table.undecodable
    assert table.topic == f"{stream.deltas}.members"
    assert table.partitions == list(range(stream.partitions))
    assert table.members == expected
    # The table is what the committed deltas add up to, and compacted like the changelog.
    assert table.members == final_members(read_deltas(kafka_bootstrap_servers, stream.deltas))
    assert _topic_config(kafka_bootstrap_servers, table.topic)["cleanup.policy"] == "compact"

    # One customer's memberships are read from the one partition their id hashes to.
    customers = [*sorted({c for _, c in expected})[:5], "nobody-at-all"]
    for customer in customers:
        mine = read_customer_members(config, customer, timeout_s=60)
        assert len(mine.partitions) == 1 and mine.complete
        assert mine.members == {k: m for k, m in expected.items() if k[1] == customer}
        assert mine.audiences_of(customer) == sorted(
            mine.members.values(), key=lambda m: m.audience
        )


@pytest.mark.slow
def test_the_table_is_exact_after_sigkills_mid_stream(
    kafka_bootstrap_servers: str, tmp_path: Path
) -> None:
    """Killed right after a commit of each of the first chunks (the rest of the chunk
    then in an open transaction), restarted, and finished: the table holds exactly the
    members replay ends with, no aborted enter or tombstone showing."""
    stream = Stream(kafka_bootstrap_servers, partitions=3)
    records = synthetic(200, 9000, seed=23)
    chunks = [records[i : i + 3000] for i in range(0, len(records), 3000)]
    settings = {"wall_clock": False, "session_timeout": "6s", "cache_customers": 40}
    path = stream.config(tmp_path, **settings)
    instance = Instance(path, tmp_path / "evaluate.log", kafka_bootstrap_servers)
    instance.start()
    starts = 1
    try:
        instance.wait_assigned(starts)
        for number, chunk in enumerate(chunks):
            before = sum(stream.committed().values())
            stream.produce(chunk)
            if number == len(chunks) - 1:
                break
            deadline = time.monotonic() + 60
            while sum(stream.committed().values()) <= before:  # some of it committed
                assert time.monotonic() < deadline, instance.log.read_text()
                time.sleep(0.05)
            instance.kill()
            instance.start()
            starts += 1
            instance.wait_assigned(starts)
        wait_until_committed(stream, 120)
        assert instance.stop() == 0
    finally:
        if instance.process is not None and instance.process.poll() is None:
            instance.process.kill()
    assert starts == len(chunks)
    check_final_deltas(kafka_bootstrap_servers, stream, more_than=500)
    # The end of the input, as replay's: every deadline up to the newest record fires.
    config = load_config(path)
    Application(config).run(idle_timeout_s=2.0, finish=True)
    table = read_members(config, timeout_s=60)
    assert table.complete and not table.undecodable
    expected = final_members(replay_deltas(stream.lines))
    assert len(expected) > 100
    assert table.members == expected
    assert table.members == final_members(read_deltas(kafka_bootstrap_servers, stream.deltas))
