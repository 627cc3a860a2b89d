"""Live explain on a real broker: how fast the input topics are scanned for a customer's
qualifying records.

One Data Pipelines topic (3 partitions, keyed by customer) holds ``--records`` synthetic
records, then one record for each of two customers; a deltas topic holds one delta for
each naming that last record and one that is nowhere, so every scan reads the whole
topic. Measured in the same
run:

* ``explain, plain id``: :func:`streamsync.deltas.audit.audit_customer` for ``cus_...``,
  whose records are found by their bytes before decoding (the prefilter);
* ``explain, id with '/'``: the same for an id JSON may escape, so every record is
  decoded (what the scan costs without the prefilter);
* ``raw read``: a plain read_committed consumer over the same topic, no decoding (the
  floor).

``KAFKA_BOOTSTRAP_SERVERS`` selects the broker (default: a local one is started).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import Consumer, KafkaError, Producer
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from streamsync.config import load_config
from streamsync.deltas.audit import audit_customer
from streamsync.deltas.record import MembershipDelta
from streamsync.dev.broker import kafka_bootstrap
from streamsync.dev.synthetic import generate_records

PARTITIONS = 3


def _produce(bootstrap: str, records: int) -> tuple[str, str, dict[str, str]]:
    run = uuid.uuid4().hex[:8]
    topic, deltas = f"bench-explain-{run}", f"bench-explain-{run}.deltas"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics(
        [NewTopic(topic, PARTITIONS, 1), NewTopic(deltas, PARTITIONS, 1)]
    ).values():
        future.result(30)
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20})
    count = 0
    for record in generate_records(max(records // 50, 1), records, seed=7):
        if not isinstance(record, dict) or record.get("type") is None:
            continue
        key = str(record.get("userId") or record.get("anonymousId") or "").encode()
        while True:
            try:
                producer.produce(topic, orjson.dumps(record), key)
                break
            except BufferError:
                producer.poll(0.1)
        count += 1
    targets = {"plain": "cus_bench_plain", "escaped": "cus/bench/escaped"}
    last_ms = int(time.time() * 1000) - 60_000
    for customer in targets.values():
        rid = f"last-{customer}"
        record = {
            "type": "track",
            "userId": customer,
            "event": "Order Completed",
            "messageId": rid,
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(last_ms / 1000)),
        }
        producer.produce(topic, orjson.dumps(record), customer.encode())
        named = [rid, f"nowhere-{customer}"]
        delta = MembershipDelta("ACT__Bench__1d", 1, customer, "enter", last_ms, 1, named)
        producer.produce(deltas, orjson.dumps(delta.to_json()), customer.encode())
    assert producer.flush(60) == 0
    print(f"produced {count + 2:,} records to {topic}", file=sys.stderr)
    return topic, deltas, targets


def _raw_read(bootstrap: str, topic: str) -> tuple[int, float]:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"bench-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
            "enable.partition.eof": True,
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    done: set[int] = set()
    count = 0
    started = time.perf_counter()
    while len(done) < PARTITIONS:
        for message in consumer.consume(500, 0.2):
            error = message.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    done.add(message.partition() or 0)
                continue
            count += 1
    elapsed = time.perf_counter() - started
    consumer.close()
    return count, elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=200_000)
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    with kafka_bootstrap() as bootstrap, tempfile.TemporaryDirectory() as tmp:
        topic, deltas, targets = _produce(bootstrap, args.records)
        config: dict[str, Any] = {
            "kafka": {"bootstrap_servers": bootstrap},
            "ingest": {"topics": [{"name": topic, "format": "pipelines_json"}]},
            "deltas": {"topic": deltas},
        }
        path = Path(tmp) / "config.yaml"
        path.write_bytes(orjson.dumps(config))
        settings = load_config(path)
        rows = []
        count, elapsed = _raw_read(bootstrap, topic)
        rows.append(("raw read (floor, no decoding)", count, elapsed))
        for label, customer in (
            ("explain, plain id (prefilter)", targets["plain"]),
            ("explain, id with '/' (decodes every record)", targets["escaped"]),
        ):
            started = time.perf_counter()
            audit = audit_customer(settings, customer, timeout_s=600)
            elapsed = time.perf_counter() - started
            assert len(audit.records) == 1 and audit.stopped_by is None, audit
            assert audit.records_read == count, (audit.records_read, count)
            rows.append((label, audit.records_read, elapsed))
    print(f"command: .venv/bin/python bench/explain.py {' '.join(argv)}".rstrip())
    floor = rows[0][1] / rows[0][2]
    print(f"| {'scan':<46} | {'records':>9} | {'seconds':>7} | {'records/s':>10} | vs floor |")
    print(f"|{'-' * 48}|{'-' * 11}|{'-' * 9}|{'-' * 12}|----------|")
    for label, count, elapsed in rows:
        rate = count / elapsed
        ratio = rate / floor
        print(f"| {label:<46} | {count:>9,} | {elapsed:>7.2f} | {rate:>10,.0f} | {ratio:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
