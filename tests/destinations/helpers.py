"""Deltas for delivery tests: offline replay over the synthetic stream, produced to a
topic with a transactional producer (what the evaluate stage will do)."""

from __future__ import annotations

import uuid
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
import yaml
from confluent_kafka import Consumer, Producer, TopicPartition

from streamsync.deltas.codec import encode_json
from streamsync.deltas.membership import encode_member, member_key
from streamsync.deltas.record import MembershipDelta
from streamsync.dev.synthetic import generate_records
from tests.runtime.evaluate_support import replay_deltas


def synthetic_deltas(customers: int, events: int, seed: int = 11) -> list[MembershipDelta]:
    """Replay's deltas of a seeded synthetic stream (:func:`replay_deltas` of its lines)."""
    lines = [orjson.dumps(r) for r in generate_records(customers, events, seed=seed)]
    return replay_deltas(lines)


def produce_deltas(
    bootstrap: str, topic: str, deltas: Sequence[MembershipDelta], per_transaction: int = 500
) -> None:
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "transactional.id": f"test-deltas-{uuid.uuid4().hex[:8]}",
            "linger.ms": 5,
        }
    )
    producer.init_transactions(30)
    for start in range(0, len(deltas), per_transaction):
        producer.begin_transaction()
        for delta in deltas[start : start + per_transaction]:
            producer.produce(topic, key=delta.customer_id.encode(), value=encode_json(delta))
        producer.commit_transaction(30)
    producer.flush(30)


def produce_with_members(
    bootstrap: str,
    topic: str,
    members_topic: str,
    partitions: int,
    deltas: Sequence[MembershipDelta],
    per_transaction: int = 500,
) -> None:
    """Deltas and the membership table records they make, in the same transactions, as
    evaluate writes them: each table record in the partition of its customer (CRC-32, the
    producer's default partitioner for the deltas' keys), a tombstone on exit."""
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "transactional.id": f"test-members-{uuid.uuid4().hex[:8]}",
            "linger.ms": 5,
        }
    )
    producer.init_transactions(30)
    for start in range(0, len(deltas), per_transaction):
        producer.begin_transaction()
        for delta in deltas[start : start + per_transaction]:
            key = delta.customer_id.encode()
            partition = zlib.crc32(key) % partitions
            producer.produce(topic, key=key, value=encode_json(delta), partition=partition)
            value = encode_member(delta) if delta.op == "enter" else None
            producer.produce(
                members_topic, key=member_key(delta.audience, delta.customer_id), value=value,
                partition=partition,
            )  # fmt: skip
        producer.commit_transaction(30)
    producer.flush(30)


def read_topic(bootstrap: str, topic: str, timeout_s: float = 5.0) -> list[Any]:
    """Every record of ``topic`` (read committed)."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"reader-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
        }
    )
    consumer.subscribe([topic])
    records = []
    idle = 0.0
    while idle < timeout_s:
        batch = consumer.consume(500, 0.5)
        if not batch:
            idle += 0.5
            continue
        idle = 0.0
        records.extend(m for m in batch if m.error() is None)
    consumer.close()
    return records


def uncommitted_records(bootstrap: str, group: str, topic: str, partitions: int) -> int:
    """Records of ``topic`` after ``group``'s committed offsets (read committed)."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
        }
    )
    committed = consumer.committed([TopicPartition(topic, p) for p in range(partitions)], 10)
    consumer.assign(committed)
    count = 0
    idle = 0.0
    while idle < 2.0:
        batch = consumer.consume(500, 0.5)
        if not batch:
            idle += 0.5
            continue
        count += sum(1 for m in batch if m.error() is None)
    consumer.close()
    return count


def write_config(
    path: Path, bootstrap: str, deltas_topic: str, destinations: dict[str, Any]
) -> Path:
    config = {
        "kafka": {"bootstrap_servers": bootstrap},
        "ingest": {"topics": [{"name": "unused.input", "format": "pipelines_json"}]},
        "deltas": {"topic": deltas_topic},
        "destinations": destinations,
        # a free port each: several deliver processes run side by side in the tests
        "observability": {"admin": {"port": 0}, "log_format": "text"},
    }
    path.write_text(yaml.safe_dump(config))
    return path
