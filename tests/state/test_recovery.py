"""Restoring a partition store from its changelog on the real broker: a local copy is
an accelerator, never trusted over the changelog it came from."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from streamsync.state.recovery import ChangelogLost, restore_partition
from streamsync.state.store import PartitionStore
from tests.topics import create_topics

pytestmark = pytest.mark.kafka


def _restorer(bootstrap: str) -> Consumer:
    return Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"restore-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
            "enable.partition.eof": True,
        }
    )


def _write(bootstrap: str, topic: str, records: dict[bytes, bytes]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    for key, value in records.items():
        producer.produce(topic, value, key, partition=0)
    assert producer.flush(30) == 0


def _recreate(admin: AdminClient, topic: str) -> None:
    for future in admin.delete_topics([topic]).values():
        future.result(30)
    deadline = time.monotonic() + 60
    while True:  # the deletion completes in the background
        try:
            for future in admin.create_topics([NewTopic(topic, 1, 1)]).values():
                future.result(30)
            break
        except KafkaException as exc:
            error = exc.args[0]
            assert isinstance(error, KafkaError)
            assert error.code() == KafkaError.TOPIC_ALREADY_EXISTS, error
            assert time.monotonic() < deadline, "the topic was not deleted"
            time.sleep(0.2)
    create_topics(admin, [NewTopic(topic, 1, 1)])  # waits for the metadata


def test_a_recreated_changelog_next_to_a_local_copy_stops_with_a_clear_error(
    kafka_bootstrap_servers: str, new_topic: Callable[..., str], tmp_path: Path
) -> None:
    topic = new_topic("changelog")
    _write(kafka_bootstrap_servers, topic, {f"c:{i}".encode(): b"x" for i in range(5)})
    restorer = _restorer(kafka_bootstrap_servers)
    store = PartitionStore(tmp_path / "p0")
    assert restore_partition(restorer, store, topic, 0) == 5
    assert store.changelog_offset == 4
    store.close()

    restorer.close()
    _recreate(AdminClient({"bootstrap.servers": kafka_bootstrap_servers}), topic)
    # A new client, as a restarted process has: the old one's metadata still knows the
    # deleted topic's partition and would be told it is unknown.
    restorer = _restorer(kafka_bootstrap_servers)
    store = PartitionStore(tmp_path / "p0")
    with pytest.raises(ChangelogLost, match="deleted or recreated"):
        restore_partition(restorer, store, topic, 0)
    assert store.get(b"c:1") == b"x"  # nothing discarded: the operator decides
    store.close()
    restorer.close()


def test_a_local_copy_of_another_partition_is_discarded_not_trusted(
    kafka_bootstrap_servers: str, new_topic: Callable[..., str], tmp_path: Path
) -> None:
    topic = new_topic("changelog", partitions=1)
    other = new_topic("changelog", partitions=1)
    # The moved copy's offset (0) is inside this changelog's range (0..2): only the
    # copy's own record of where it came from tells them apart.
    _write(kafka_bootstrap_servers, topic, {b"c:mine": b"1", b"c:a": b"4", b"c:b": b"5"})
    _write(kafka_bootstrap_servers, other, {b"c:theirs": b"2"})
    restorer = _restorer(kafka_bootstrap_servers)
    store = PartitionStore(tmp_path / "p0")
    restore_partition(restorer, store, other, 0)
    assert store.get(b"c:theirs") == b"2"
    store.close()

    store = PartitionStore(tmp_path / "p0")  # the directory, moved into another's place
    assert restore_partition(restorer, store, topic, 0) == 3
    assert store.get(b"c:theirs") is None
    assert store.get(b"c:mine") == b"1"
    store.close()
    restorer.close()
