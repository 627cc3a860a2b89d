"""The key partitioners in :mod:`streamsync.kafka.partitioner` put every key where
librdkafka's own producer does, for each ``partitioner`` setting they claim to know."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from confluent_kafka import KafkaError, Message, Producer

from streamsync.kafka.partitioner import DEFAULT_PARTITIONER, murmur2, partition_for

KEYS = [b"c", b"cu", b"cus", b"cus_", *(f"cus_{n:07d}".encode() for n in range(60))]
KEYS += ["ünïcode-€".encode(), b"user@example.com", b"42", bytes(range(1, 40))]


@pytest.mark.kafka
@pytest.mark.parametrize(
    "partitioner", [DEFAULT_PARTITIONER, "consistent", "murmur2_random", "murmur2", "fnv1a_random"]
)
def test_the_partition_is_the_one_the_producer_chose(
    kafka_bootstrap_servers: str, new_topic: Callable[..., str], partitioner: str
) -> None:
    partitions = 7
    topic = new_topic("partitioner", partitions=partitions)
    producer = Producer(
        {"bootstrap.servers": kafka_bootstrap_servers, "partitioner": partitioner, "linger.ms": 5}
    )
    chosen: dict[bytes, int] = {}

    def delivered(error: KafkaError | None, message: Message) -> None:
        assert error is None, error
        chosen[message.key() or b""] = message.partition() or 0

    for key in KEYS:
        producer.produce(topic, b"v", key, on_delivery=delivered)
    assert producer.flush(30) == 0
    assert len(chosen) == len(KEYS)
    assert {k: partition_for(k, partitions, partitioner) for k in KEYS} == chosen
    assert len(set(chosen.values())) == partitions  # the keys do spread


def test_murmur2_matches_the_java_client() -> None:
    # Values from the Java client's Utils.murmur2 test (org.apache.kafka.common.utils).
    assert murmur2(b"21") & 0xFFFFFFFF == (-973932308) & 0xFFFFFFFF
    assert murmur2(b"foobar") & 0xFFFFFFFF == (-790332482) & 0xFFFFFFFF
    assert murmur2(b"a-little-bit-long-string") & 0xFFFFFFFF == (-985981536) & 0xFFFFFFFF


def test_no_answer_for_a_partitioner_that_is_not_a_key_hash() -> None:
    assert partition_for(b"cus_1", 3, "random") is None
    assert partition_for(b"", 3) is None
