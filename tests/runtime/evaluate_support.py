"""Helpers for the evaluate service tests: a keyed synthetic stream on co-partitioned
topics, a configuration file, read-committed delta reading, and the replay expectation."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import uuid
import zlib
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from streamsync.audiences.loader import load_audiences
from streamsync.audiences.replay import replay
from streamsync.deltas.codec import decode_json
from streamsync.deltas.membership import Member, MemberKey, decode_member, parse_member_key
from streamsync.deltas.record import ENTER, MembershipDelta
from streamsync.dev.synthetic import generate_records
from streamsync.ingest.jsonl import is_webhook_record, read_events
from streamsync.resources import project_path
from streamsync.runtime.offsets import committed_offsets
from tests.topics import create_topics

EXAMPLE_AUDIENCES = project_path("examples", "audiences")
#: ``evaluate.allowed_lateness`` by default
LATENESS_MS = 5 * 60_000

DeltaKey = tuple[str, str, str, int, int]


def customer_of(record: dict[str, Any]) -> str:
    if is_webhook_record(record):
        return str(record["data"]["customer_id"])
    return str(record.get("userId") or record.get("anonymousId"))


class Stream:
    """A run's topics (pipelines JSON and webhooks, co-partitioned) and what was produced."""

    def __init__(self, bootstrap: str, partitions: int = 3) -> None:
        self.bootstrap = bootstrap
        self.run = uuid.uuid4().hex[:8]
        self.partitions = partitions
        self.pipelines = f"ev-{self.run}.pipelines"
        self.webhooks = f"ev-{self.run}.webhooks"
        self.deltas = f"ev-{self.run}.deltas"
        self.dead_letters = f"ev-{self.run}.dead-letter"
        self.group = f"ev-{self.run}"
        admin = AdminClient({"bootstrap.servers": bootstrap})
        names = [self.pipelines, self.webhooks]
        create_topics(admin, [NewTopic(n, partitions, 1) for n in names])
        self.lines: list[bytes] = []
        #: (topic, partition) -> newest event time produced there
        self.newest: dict[tuple[str, int], int] = {}
        # Idempotent: a retried batch (the topics were created a moment before, a leader
        # may not be known yet) can then not land after later ones, so each partition
        # holds its records in the order they were produced, which replay is given.
        self._producer = Producer(
            {"bootstrap.servers": bootstrap, "linger.ms": 5, "enable.idempotence": True}
        )

    def partition_of(self, customer: str) -> int:
        return zlib.crc32(customer.encode()) % self.partitions

    def produce(self, records: list[dict[str, Any]]) -> None:
        for record in records:
            customer = customer_of(record)
            partition = self.partition_of(customer)
            topic = self.webhooks if is_webhook_record(record) else self.pipelines
            value = orjson.dumps(record)
            self._producer.produce(topic, value, customer.encode(), partition=partition)
            self.lines.append(value)
            for event in read_events([value]):
                ts = getattr(event, "timestamp_ms", None)
                if ts is not None and ts > self.newest.get((topic, partition), -1):
                    self.newest[(topic, partition)] = ts
        assert self._producer.flush(30) == 0

    def config(self, tmp: Path, state: str = "state", **evaluate: Any) -> Path:
        settings = {
            "audiences": str(EXAMPLE_AUDIENCES),
            "group_id": self.group,
            "state_dir": str(tmp / state),
            **evaluate,
        }
        config = {
            "kafka": {"bootstrap_servers": self.bootstrap},
            "ingest": {
                "dead_letter_topic": self.dead_letters,
                "topics": [
                    {"name": self.pipelines, "format": "pipelines_json"},
                    {"name": self.webhooks, "format": "webhook_json"},
                ],
            },
            "deltas": {"topic": self.deltas},
            "evaluate": settings,
            "observability": {"admin": {"port": 0}, "log_format": "text"},
        }
        path = tmp / f"{state}.yaml"
        path.write_bytes(orjson.dumps(config))  # JSON is YAML
        return path

    def end_offsets(self) -> dict[tuple[str, int], int]:
        consumer = Consumer({"bootstrap.servers": self.bootstrap, "group.id": self.group})
        try:
            return {
                (topic, p): consumer.get_watermark_offsets(TopicPartition(topic, p), 10)[1]
                for topic in (self.pipelines, self.webhooks)
                for p in range(self.partitions)
            }
        finally:
            consumer.close()

    def committed(self) -> dict[tuple[str, int], int]:
        """The evaluate group's committed offsets (read without joining the group),
        asked again while a coordinator loads or moves (a broker just restarted: the
        offsets of a transaction it has not resolved yet are not stable)."""
        consumer = Consumer({"bootstrap.servers": self.bootstrap, "group.id": self.group})
        try:
            tps = [
                TopicPartition(topic, p)
                for topic in (self.pipelines, self.webhooks)
                for p in range(self.partitions)
            ]
            answer = committed_offsets(consumer, tps, 60.0)
            return {(tp.topic, tp.partition): tp.offset for tp in answer}
        finally:
            consumer.close()


def synthetic(customers: int, events: int, seed: int) -> list[dict[str, Any]]:
    return [r for r in generate_records(customers, events, seed=seed) if isinstance(r, dict)]


def read_committed(
    bootstrap: str,
    topic: str,
    *,
    quiet_s: float = 3.0,
    timeout_s: float = 60.0,
    count: int | None = None,
) -> list[Message]:
    """Every record committed to ``topic``, read ``read_committed`` until nothing new
    arrives for ``quiet_s`` (or, with ``count``, until that many were read)."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"reader-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    out: list[Message] = []
    started = last = time.monotonic()
    try:
        while (
            time.monotonic() - last < quiet_s
            and time.monotonic() - started < timeout_s
            and (count is None or len(out) < count)
        ):
            for message in consumer.consume(1000, 0.3):
                error = message.error()
                if error is not None:
                    assert error.code() in (KafkaError._PARTITION_EOF,), error
                    continue
                out.append(message)
                last = time.monotonic()
    finally:
        consumer.close()
    return out


def read_deltas(
    bootstrap: str, topic: str, *, quiet_s: float = 3.0, timeout_s: float = 60.0
) -> list[MembershipDelta]:
    """The deltas committed to ``topic`` (see :func:`read_committed`)."""
    return [
        decode_json(m.value())
        for m in read_committed(bootstrap, topic, quiet_s=quiet_s, timeout_s=timeout_s)
    ]


def first_enter_readable_at(reader: Consumer, customer: str, deadline_ms: int) -> float | None:
    """Wall-clock ms at which ``reader`` first sees a delta: it must be ``customer``'s
    enter at ``deadline_ms``. ``None`` if none arrives within 10 s of the deadline."""
    while time.time() * 1000 < deadline_ms + 10_000:
        for message in reader.consume(10, 0.05):
            if message.error() is None:
                delta = decode_json(message.value())
                assert (delta.customer_id, delta.op, delta.at_ms) == (
                    customer,
                    "enter",
                    deadline_ms,
                )
                return time.time() * 1000
    return None


def uncommitted(
    bootstrap: str, group: str, partitions: list[TopicPartition], internal: set[str]
) -> int:
    """Records of ``partitions`` the evaluate ``group`` has not committed yet. The
    ``internal`` topics are written in transactions, so their last offset is a commit
    marker, never consumed."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        committed = {
            (tp.topic, tp.partition): tp.offset for tp in consumer.committed(partitions, 10)
        }
        lag = 0
        for tp in partitions:
            end = consumer.get_watermark_offsets(tp, 10)[1]
            if tp.topic in internal and end > 0:
                end -= 1
            lag += max(0, end - max(0, committed[(tp.topic, tp.partition)]))
        return lag
    finally:
        consumer.close()


def replay_deltas(lines: list[bytes], until_ms: int | None = None) -> list[MembershipDelta]:
    audiences = load_audiences(EXAMPLE_AUDIENCES)
    return list(replay(audiences, read_events(lines, "test"), until_ms=until_ms, progress=None))


def keys(deltas: list[MembershipDelta]) -> Counter[DeltaKey]:
    return Counter((d.audience, d.customer_id, d.op, d.at_ms, d.seq) for d in deltas)


def check_final_deltas(bootstrap: str, stream: Stream, *, more_than: int) -> None:
    """What a ``read_committed`` reader of ``stream``'s deltas sees: no duplicates, ``seq``
    continuous, and, below the lowest task watermark (each task fires everything
    before its own; the evaluate configuration's default lateness), exactly replay's
    transitions of every record produced, of which there are more than ``more_than``."""
    live = read_deltas(bootstrap, stream.deltas)
    check_seq(live)
    counted = keys(live)
    assert max(counted.values()) == 1, "duplicate deltas"
    cut = min(stream.newest.values()) - LATENESS_MS
    expected = {k for k in keys(replay_deltas(stream.lines)) if k[3] < cut}
    assert len(expected) > more_than
    got = {k for k in counted if k[3] < cut}
    assert got == expected, (sorted(got - expected)[:5], sorted(expected - got)[:5])


def check_seq(deltas: list[MembershipDelta]) -> None:
    """Per customer and audience, ``seq`` is 1, 2, 3, ... with alternating ops."""
    by: dict[tuple[str, str], list[MembershipDelta]] = {}
    for delta in deltas:
        by.setdefault((delta.customer_id, delta.audience), []).append(delta)
    for key, items in by.items():
        seqs = sorted(d.seq for d in items)
        assert seqs == list(range(1, len(items) + 1)), (key, seqs)


def final_members(deltas: list[MembershipDelta]) -> dict[MemberKey, Member]:
    """Who is a member after ``deltas`` (in any order: each key's are taken by ``seq``):
    what the membership table must hold."""
    members: dict[MemberKey, Member] = {}
    for delta in sorted(deltas, key=lambda d: d.seq):
        key = (delta.audience, delta.customer_id)
        if delta.op == ENTER:
            members[key] = Member.from_enter(delta)
        else:
            members.pop(key, None)
    return members


def table_of(messages: list[Any]) -> dict[MemberKey, Member]:
    """The latest value of every key of membership-table records (in topic order per
    partition), tombstones removing: what compaction converges to."""
    members: dict[MemberKey, Member] = {}
    for message in messages:
        key = parse_member_key(message.key())
        value = message.value()
        if value is None:
            members.pop(key, None)
        else:
            members[key] = decode_member(value)
    return members


class Instance:
    """One ``streamsync evaluate`` process with its own state directory."""

    def __init__(self, config: Path, log: Path, bootstrap: str) -> None:
        self.config, self.log, self.bootstrap = config, log, bootstrap
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap}
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "streamsync", "evaluate", "--config", str(self.config)],
                stdout=log,
                stderr=log,
                env=env,
            )

    def wait_assigned(self, times: int, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while self.log.read_text().count("assigned partitions") < times:
            assert time.monotonic() < deadline, self.log.read_text()
            time.sleep(0.1)

    def records(self) -> int:
        """Records the last run reported handling when it stopped."""
        found = re.findall(r"stopped \(\w+\) after [\d.]+s: ([\d,]+) records", self.log.read_text())
        return int(found[-1].replace(",", "")) if found else 0

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(30)

    def stop(self) -> int:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(60)


def wait_until_committed(stream: Stream, timeout_s: float) -> None:
    """Until the evaluate group has committed every record produced to ``stream``."""
    end = stream.end_offsets()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        committed = stream.committed()
        if all(committed[tp] >= offset for tp, offset in end.items() if offset > 0):
            return
        time.sleep(0.5)
    raise AssertionError(f"not all input committed: {stream.committed()} < {end}")
