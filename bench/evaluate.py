"""The evaluate service on a real broker: throughput, latency, restore.

* ``throughput``: events/s of one evaluate process (exactly-once, state, changelog, the
  13 example audiences) over a finished topic pair, against a bare transactional
  consume-produce passthrough of the same records (same commit interval) in the same run.
* ``latency``: append -> delta readable ``read_committed``, p50/p99, at offered loads
  (records for fresh customers against an audience that every record enters), against
  the passthrough's append -> copy readable latency at the same load.
* ``restore``: time and peak RSS to restore N customers from the changelog (empty local
  state) and from the local RocksDB copy, against reading the same changelog raw.

``KAFKA_BOOTSTRAP_SERVERS`` selects the broker (default: a local one is started).
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from streamsync.audiences.compiler import CUSTOMER_ID
from streamsync.audiences.loader import load_audiences
from streamsync.config import load_config
from streamsync.deltas.codec import decode_json
from streamsync.dev.broker import kafka_bootstrap
from streamsync.dev.synthetic import generate_records
from streamsync.ingest.event import Event, SourcePosition
from streamsync.observability.metrics import Telemetry
from streamsync.resources import project_path
from streamsync.runtime.app import Application
from streamsync.runtime.observer import EvaluateObserver
from streamsync.runtime.task import Task
from streamsync.state.codec import encode_customer
from streamsync.state.recovery import restore_partition
from streamsync.state.store import PartitionStore

AUDIENCES = project_path("examples", "audiences")
PING_AUDIENCE = """
name: ACT__Pinged__1h
version: 1
owner: bench@example.com
description: A ping in the last hour (every first ping enters at once).
entry:
  count: {event: Ping, at_least: 1, within: 1h}
"""


def _topics(bootstrap: str, names: list[str], partitions: int) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(n, partitions, 1) for n in names]).values():
        future.result(30)


def _config(tmp: Path, bootstrap: str, run: str, topics: list[tuple[str, str]], **ev: Any) -> Path:
    config = {
        "kafka": {"bootstrap_servers": bootstrap},
        "ingest": {
            "dead_letter_topic": f"b-{run}.dead-letter",
            "topics": [{"name": n, "format": f} for n, f in topics],
        },
        "deltas": {"topic": f"b-{run}.deltas"},
        "evaluate": {"group_id": f"b-{run}", "state_dir": str(tmp / f"state-{run}"), **ev},
    }
    path = tmp / f"{run}.yaml"
    path.write_bytes(orjson.dumps(config))
    return path


def passthrough(
    bootstrap: str,
    source: list[str],
    target: str,
    *,
    stop_after: int | None,
    stop: threading.Event | None = None,
) -> tuple[int, float]:
    """A bare transactional consume-produce loop (the baseline): every record copied to
    ``target``, offsets committed in the transaction every 100 ms."""
    group = f"pass-{uuid.uuid4().hex[:8]}"
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
        }
    )
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "transactional.id": group,
            "linger.ms": 2,
            "compression.type": "lz4",
        }
    )
    producer.init_transactions(30)
    consumer.subscribe(source)
    seen = 0
    started = None
    positions: dict[tuple[str, int], int] = {}
    in_txn = False
    next_commit = time.monotonic() + 0.1
    while (stop_after is None or seen < stop_after) and not (stop and stop.is_set()):
        for m in consumer.consume(2000, 0.1):
            if m.error():
                continue
            started = started or time.monotonic()
            if not in_txn:
                producer.begin_transaction()
                in_txn = True
            producer.produce(target, m.value(), m.key())
            positions[(m.topic(), m.partition())] = m.offset() + 1
            seen += 1
        if in_txn and time.monotonic() >= next_commit:
            offsets = [TopicPartition(t, p, o) for (t, p), o in positions.items()]
            producer.send_offsets_to_transaction(offsets, consumer.consumer_group_metadata())
            producer.commit_transaction()
            in_txn = False
            next_commit = time.monotonic() + 0.1
    if in_txn:
        offsets = [TopicPartition(t, p, o) for (t, p), o in positions.items()]
        producer.send_offsets_to_transaction(offsets, consumer.consumer_group_metadata())
        producer.commit_transaction()
    elapsed = time.monotonic() - (started or time.monotonic())
    consumer.close()
    return seen, elapsed


def bench_throughput(bootstrap: str, tmp: Path, events: int, customers: int) -> None:
    run = uuid.uuid4().hex[:8]
    pipelines, webhooks = f"b-{run}.pipelines", f"b-{run}.webhooks"
    _topics(bootstrap, [pipelines, webhooks, f"b-{run}.copy"], 3)
    # Idempotent: no retry can reorder a partition, so every run reads the same
    # records in the same order per partition (keys decide the partition).
    producer = Producer(
        {"bootstrap.servers": bootstrap, "linger.ms": 20, "enable.idempotence": True}
    )
    count = 0
    for record in generate_records(customers, events, seed=1):
        if "event_id" in record and "metric" in record:
            topic, key = webhooks, record["data"]["customer_id"]
        else:
            topic, key = pipelines, record.get("userId") or record.get("anonymousId")
        value, encoded_key = orjson.dumps(record), str(key).encode()
        while True:
            try:
                producer.produce(topic, value, encoded_key)
                break
            except BufferError:  # the local queue is full: let deliveries drain
                producer.poll(0.05)
        count += 1
        if count % 10_000 == 0:
            producer.poll(0)
    producer.flush(60)
    print(f"produced {count:,} records to {pipelines} and {webhooks} (3 partitions each)")

    cpu0 = _cpu_s()
    seen, elapsed = passthrough(bootstrap, [pipelines, webhooks], f"b-{run}.copy", stop_after=count)
    cpu = _cpu_s() - cpu0
    base = seen / elapsed
    print(
        f"passthrough (transactional consume-produce): {seen:,} records in {elapsed:.1f}s "
        f"= {base:,.0f}/s, {cpu / seen * 1000:.4f} CPU-s per 1,000 records"
    )

    # The same records three times, each under its own group and state: plain, reporting
    # to a Telemetry (what `streamsync evaluate` does), so the cost of telemetry shows, and
    # with a tenth of the customers held in memory, so the cost of reading the others
    # back from the state store shows.
    cache = max(1, customers // 10)
    variants: list[tuple[str, bool, dict[str, Any]]] = [
        ("evaluate", False, {}),
        ("evaluate + telemetry", True, {}),
        (f"evaluate, {cache:,} customers in memory", False, {"cache_customers": cache}),
    ]
    for number, (label, observed, extra) in enumerate(variants):
        name = f"{run}-{number}"
        config = load_config(
            _config(
                tmp,
                bootstrap,
                name,
                [(pipelines, "pipelines_json"), (webhooks, "webhook_json")],
                audiences=str(AUDIENCES),
                wall_clock=False,
                **extra,
            )
        )
        app = Application(config)
        telemetry = Telemetry(role="evaluate") if observed else None
        if telemetry is not None:
            app.telemetry = EvaluateObserver.for_settings(telemetry, app.settings, app.audiences)
        first: list[float] = []

        def progress(stats: Any, first: list[float] = first) -> None:
            if stats.records and not first:
                first.extend((time.monotonic(), _cpu_s()))

        app.progress, app.progress_interval_s = progress, 0.05
        started = time.monotonic()
        cpu0 = _cpu_s()
        stats = app.run(idle_timeout_s=1.0)
        cpu = _cpu_s() - (first[1] if first else cpu0)  # from the first record on
        ended = time.monotonic() - 1.0  # the idle second at the end is not work
        begin = first[0] if first else started
        rate = stats.records / (ended - begin)
        print(
            f"{label} (exactly-once, 13 audiences): {stats.records:,} records, "
            f"{stats.deltas:,} deltas, {stats.commits:,} commits in {ended - begin:.1f}s "
            f"= {rate:,.0f}/s ({rate / base:.2f}x passthrough), "
            f"{cpu / max(stats.records, 1) * 1000:.4f} CPU-s per 1,000 records "
            "(every thread, from the first record to the end)"
        )
        if telemetry is not None:
            telemetry.shutdown()


def _cpu_s() -> float:
    """CPU seconds of this process so far, every thread (the Kafka client's included)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _ping(customer: str, ms: int) -> bytes:
    stamp = datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    return orjson.dumps(
        {
            "type": "track",
            "messageId": str(uuid.uuid4()),
            "userId": customer,
            "event": "Ping",
            "timestamp": stamp,
            "properties": {},
        }
    )


def _offer(bootstrap: str, topic: str, rate: int, seconds: float, sent: dict[str, float]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 1})
    start = time.monotonic()
    n = 0
    total = int(rate * seconds)
    while n < total:
        due = start + n / rate
        now = time.monotonic()
        if due > now:
            time.sleep(min(due - now, 0.01))
            continue
        customer = f"c{n}-{uuid.uuid4().hex[:6]}"
        sent[customer] = time.time()
        producer.produce(topic, _ping(customer, int(time.time() * 1000)), customer.encode())
        producer.poll(0)
        n += 1
    producer.flush(30)


def _read_latencies(
    bootstrap: str,
    topic: str,
    sent: dict[str, float],
    expected: int,
    key_of: Any,
    ready: threading.Event,
) -> list[float]:
    """Read ``topic`` from its current end (what is already there is not measured: the
    evaluate run's topic holds the deltas of the records read while catching up), and
    set ``ready`` once positioned, so the load starts with a reader in place."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"lat-{uuid.uuid4().hex}",
            "isolation.level": "read_committed",
        }
    )
    partitions = consumer.list_topics(topic, timeout=30).topics[topic].partitions
    start = []
    for number in partitions:
        _, high = consumer.get_watermark_offsets(TopicPartition(topic, number), timeout=30)
        start.append(TopicPartition(topic, number, high))
    consumer.assign(start)
    ready.set()
    out: list[float] = []
    deadline = time.monotonic() + 120
    while len(out) < expected and time.monotonic() < deadline:
        for m in consumer.consume(1000, 0.05):
            if m.error():
                continue
            now = time.time()
            key = key_of(m)
            if key in sent:
                out.append((now - sent.pop(key)) * 1000)
    consumer.close()
    return out


def _pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(p / 100 * len(values)))]


def _collect(results: dict[str, list[float]], name: str, *args: Any) -> None:
    results[name] = _read_latencies(*args)


def _copy_key(m: Any) -> str:
    return str(m.key().decode())


def _delta_key(m: Any) -> str:
    return decode_json(m.value()).customer_id


def bench_latency(bootstrap: str, tmp: Path, rates: list[int], seconds: float) -> None:
    (tmp / "ping.yaml").write_text(PING_AUDIENCE)
    for rate in rates:
        run = uuid.uuid4().hex[:8]
        source, copy = f"b-{run}.pings", f"b-{run}.copy"
        _topics(bootstrap, [source, copy], 3)
        total = int(rate * seconds)
        results: dict[str, list[float]] = {}
        # Baseline: the passthrough's append -> copy readable at the same load.
        stop = threading.Event()
        worker = threading.Thread(
            target=passthrough,
            args=(bootstrap, [source], copy),
            kwargs={"stop_after": None, "stop": stop},
        )
        worker.start()
        time.sleep(3)
        sent: dict[str, float] = {}
        ready = threading.Event()
        reader = threading.Thread(
            target=_collect,
            args=(results, "copy", bootstrap, copy, sent, total, _copy_key, ready),
        )
        reader.start()
        ready.wait(60)
        _offer(bootstrap, source, rate, seconds, sent)
        reader.join()
        stop.set()
        worker.join()

        config = load_config(
            _config(
                tmp,
                bootstrap,
                run,
                [(source, "pipelines_json")],
                audiences=str(tmp / "ping.yaml"),
                allowed_lateness="0s",
                idle_grace="0ms",
            )
        )
        app = Application(config)
        runner = threading.Thread(target=app.run)
        runner.start()
        while not (app.tasks and all(all(t.caught_up.values()) for t in list(app.tasks.values()))):
            time.sleep(0.1)
        # The source already holds the baseline's records (read while catching up); only
        # the new ones are measured.
        sent2: dict[str, float] = {}
        deltas = f"b-{run}.deltas"
        ready = threading.Event()
        reader = threading.Thread(
            target=_collect,
            args=(results, "evaluate", bootstrap, deltas, sent2, total, _delta_key, ready),
        )
        reader.start()
        ready.wait(60)
        _offer(bootstrap, source, rate, seconds, sent2)
        reader.join()
        app.stop()
        runner.join()
        for name, label in (("copy", "passthrough copy"), ("evaluate", "evaluate delta")):
            lat = results.get(name, [])
            if not lat:
                print(f"{rate:,}/s {label}: nothing read")
                continue
            print(
                f"{rate:,}/s offered, {label:>16}: {len(lat):,} of {total:,} read, "
                f"p50 {statistics.median(lat):.0f} ms, p99 {_pct(lat, 99):.0f} ms"
            )


def _restore_child(bootstrap: str, changelog: str, state: str, audiences: str) -> None:
    """Run in a fresh process so peak RSS is the restore's own."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "restore-bench",
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
        }
    )
    task = Task(
        0,
        ["bench"],
        load_audiences(audiences),
        allowed_lateness_ms=0,
        dedup_horizon_ms=86_400_000,
        wall_clock=False,
        idle_grace_ms=0,
    )
    t0 = time.monotonic()
    store = PartitionStore(Path(state))
    read = restore_partition(consumer, store, changelog, 0, progress=lambda _m: None)
    t1 = time.monotonic()
    customers = task.load(store, changelog)
    t2 = time.monotonic()
    # What opening no longer does up front: reading a customer back when its next record
    # or deadline comes, 100,000 random ones through the task's own reader.
    sample = random.Random(7).sample(range(customers), min(customers, 100_000))
    t3 = time.monotonic()
    for i in sample:
        assert task._read_customer(f"cus_{i:09d}") is not None
    per_read_us = (time.monotonic() - t3) / max(1, len(sample)) * 1e6
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        orjson.dumps(
            {
                "read": read,
                "changelog_s": t1 - t0,
                "load_s": t2 - t1,
                "customers": customers,
                "read_us": per_read_us,
                "rss_mb": rss,
            }
        ).decode()
    )
    store.close()
    consumer.close()


def bench_restore(bootstrap: str, tmp: Path, customers: int) -> None:
    run = uuid.uuid4().hex[:8]
    changelog = f"b-{run}.changelog"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(changelog, 1, 1, config={"cleanup.policy": "compact"})])[
        changelog
    ].result(30)
    audiences = load_audiences(AUDIENCES)
    task = Task(
        0,
        ["bench"],
        audiences,
        allowed_lateness_ms=0,
        dedup_horizon_ms=86_400_000,
        wall_clock=False,
        idle_grace_ms=0,
    )
    # One realistic customer state per customer id: the synthetic stream's customers,
    # cloned under new ids (building 1M histories record by record would take minutes).
    sample = 2000
    for offset, record in enumerate(generate_records(sample, sample * 25, seed=2)):
        for event in _events(record, offset):
            task.process(event)
    task.engine.finish()
    templates = [c for c in task.engine.customers.values()]
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "linger.ms": 50,
            "compression.type": "lz4",
            "batch.size": 1_000_000,
        }
    )
    t0 = time.monotonic()
    for i in range(customers):
        c = list(templates[i % len(templates)])
        cid = f"cus_{i:09d}"
        c[CUSTOMER_ID] = cid
        while True:
            try:
                producer.produce(changelog, encode_customer(c), b"c:" + cid.encode(), partition=0)
                break
            except BufferError:
                producer.poll(0.1)
        if i % 10_000 == 0:
            producer.poll(0)
    task.customer_count = customers
    meta = task.changes()[b"m"]
    producer.produce(changelog, meta, b"m", partition=0)
    producer.flush(120)
    print(f"wrote {customers:,} customer states to {changelog} in {time.monotonic() - t0:.1f}s")

    # baseline: read the same changelog raw
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"raw-{run}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.assign([TopicPartition(changelog, 0, 0)])
    t0 = time.monotonic()
    n = 0
    while n < customers + 1:
        n += sum(1 for m in consumer.consume(10_000, 1.0) if not m.error())
    raw = time.monotonic() - t0
    consumer.close()
    print(f"baseline: raw read of {n:,} changelog records in {raw:.1f}s")

    state = str(tmp / f"restore-{run}")
    for label in ("empty local state (whole changelog)", "local RocksDB copy (no tail)"):
        out = (
            subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "restore-child",
                    bootstrap,
                    changelog,
                    state,
                    str(AUDIENCES),
                ],
                capture_output=True,
                text=True,
                check=True,
            )
            .stdout.strip()
            .splitlines()[-1]
        )
        r = orjson.loads(out)
        print(
            f"restore from {label}: {r['read']:,} changelog records in {r['changelog_s']:.1f}s, "
            f"partition of {r['customers']:,} customers opened in {r['load_s']:.1f}s, "
            f"a customer read back in {r['read_us']:.0f} us, peak RSS {r['rss_mb']:.0f} MiB"
        )


def _events(record: Any, offset: int) -> list[Event]:
    from streamsync.ingest.jsonl import read_events

    out = []
    for e in read_events([orjson.dumps(record)]):
        if isinstance(e, Event):
            e.source = SourcePosition("bench", 0, offset)
            out.append(e)
    return out


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "restore-child":
        _restore_child(*sys.argv[2:6])
        return
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("what", nargs="*", default=["throughput", "latency", "restore"])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--customers", type=int, default=20_000)
    parser.add_argument("--rates", default="1000,10000")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--restore-customers", type=int, default=1_000_000)
    args = parser.parse_args()
    print("command:", " ".join([os.path.relpath(sys.executable), *sys.argv]))
    with kafka_bootstrap() as bootstrap, tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        if "throughput" in args.what:
            bench_throughput(bootstrap, tmp, args.events, args.customers)
        if "latency" in args.what:
            bench_latency(bootstrap, tmp, [int(r) for r in args.rates.split(",")], args.seconds)
        if "restore" in args.what:
            bench_restore(bootstrap, tmp, args.restore_customers)


if __name__ == "__main__":
    main()
