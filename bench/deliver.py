"""Delivery benchmark: streamsync deliver against the stand-ins at the documented limits.

The stand-ins run in their own process (``streamsync dev stand-ins``: Braze 3,000
requests per 3 s; MoEngage 10,000 users per minute) and delivery runs in this process
through the real deliver loop on a real broker (``KAFKA_BOOTSTRAP_SERVERS``, or a local
broker started for the run). Deltas come from offline replay over the synthetic stream.

Measured, each next to a baseline in the same run:

* *throughput* - deltas pre-loaded in a topic, delivered changes per second (net changes
  the destination acknowledged; and deltas settled per second), from the first to the
  last acknowledgement; mean objects per request; 429s received;
  baseline: the same loop unbatched (one object per request, no linger);
* *429s without the limiter* - the unbatched loop with the limit set 10x too high;
* *latency* - deltas produced at ``--rate`` per second in small transactions; for each
  acknowledged change, the time from its delta's transaction commit to the destination's
  acknowledgement (p50, p99); baseline: the unbatched loop at the same rate.

Run: ``.venv/bin/python bench/deliver.py [--deltas N] [--rate R] [--seconds S]``.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import orjson
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from streamsync.audiences.loader import load_audiences
from streamsync.audiences.replay import replay
from streamsync.config import parse_config
from streamsync.deltas.codec import encode_json
from streamsync.deltas.record import MembershipDelta
from streamsync.destinations.client import Change
from streamsync.destinations.deliver import DeliverLoop, DeliverResult
from streamsync.dev.broker import kafka_bootstrap
from streamsync.dev.standins import StandInAdmin
from streamsync.dev.standins.runner import (
    DEFAULT_BRAZE_KEY,
    DEFAULT_MOENGAGE_APP_ID,
    DEFAULT_MOENGAGE_KEY,
)
from streamsync.dev.synthetic import generate_records
from streamsync.ingest.jsonl import read_events
from streamsync.resources import project_path


@contextmanager
def standins() -> Iterator[dict[str, str]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamsync", "dev", "stand-ins"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        urls = dict(proc.stdout.readline().decode().strip().split("=", 1) for _ in range(2))
        yield {"braze": urls["BRAZE_URL"], "moengage": urls["MOENGAGE_URL"]}
    finally:
        proc.terminate()
        proc.wait(20)


def make_deltas(customers: int, events: int) -> list[MembershipDelta]:
    audiences = load_audiences(project_path("examples", "audiences"))
    lines = (orjson.dumps(r) for r in generate_records(customers, events, seed=5))
    return list(replay(audiences, read_events(lines), progress=None))


def new_topic(bootstrap: str, partitions: int = 6) -> str:
    name = f"bench-deltas-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(name, partitions, 1)])[name].result(30)
    return name


def transactional_producer(bootstrap: str) -> Producer:
    producer = Producer(
        {"bootstrap.servers": bootstrap, "transactional.id": f"bench-{uuid.uuid4().hex[:8]}",
         "linger.ms": 2}
    )  # fmt: skip
    producer.init_transactions(30)
    return producer


def preload(bootstrap: str, topic: str, deltas: list[MembershipDelta]) -> None:
    producer = transactional_producer(bootstrap)
    for start in range(0, len(deltas), 5000):
        producer.begin_transaction()
        for delta in deltas[start : start + 5000]:
            producer.produce(topic, key=delta.customer_id.encode(), value=encode_json(delta))
            producer.poll(0)
        producer.commit_transaction(60)


def destination(kind: str, url: str, *, batched: bool, limit_factor: float = 1.0) -> dict[str, Any]:
    common: dict[str, Any] = {
        "base_url": url,
        "batching": {"linger_ms": 100 if batched else 0, "max_buffered": 20_000},
        "consumer": {"session.timeout.ms": 6000},
    }
    if kind == "braze":
        settings = {
            "kind": "braze", "credentials": {"env": "BENCH_BRAZE_KEY"},
            "rate_limit": {"limit": int(3000 * limit_factor), "window_s": 3.0},
            **({} if batched else {"max_objects_per_request": 1}),
        }  # fmt: skip
    else:
        settings = {
            "kind": "moengage", "credentials": {"env": "BENCH_MOE_KEY"},
            "app_id": DEFAULT_MOENGAGE_APP_ID,
            "mode": "bulk_import" if batched else "track_user",
            "rate_limit": {"limit": int(10_000 * limit_factor), "window_s": 60.0},
        }  # fmt: skip
    return {**common, **settings}


class Acks:
    def __init__(self) -> None:
        self.first = 0.0
        self.last = 0.0
        self.changes = 0
        self.deltas = 0
        self.times: dict[tuple[str, str, int], float] = {}

    def __call__(self, changes: list[Change], at: float) -> None:
        if not changes:
            return
        if not self.first:
            self.first = at
        self.last = at
        self.changes += len(changes)
        for change in changes:
            self.deltas += len(change.offsets)
            self.times[(change.customer_id, change.audience, change.delta.seq)] = at


def run_loop(
    bootstrap: str, topic: str, name: str, settings: dict[str, Any], acks: Acks,
    stop_when: Any, timeout_s: float,
) -> DeliverResult:  # fmt: skip
    config = parse_config(
        {
            "kafka": {"bootstrap_servers": bootstrap},
            "ingest": {"topics": [{"name": "unused", "format": "pipelines_json"}]},
            "deltas": {"topic": topic},
            "destinations": {name: {**settings, "group_id": f"bench-{uuid.uuid4().hex[:8]}"}},
        }
    )
    env = {"BENCH_BRAZE_KEY": DEFAULT_BRAZE_KEY, "BENCH_MOE_KEY": DEFAULT_MOENGAGE_KEY}
    loop = DeliverLoop(config, name, env=env, on_ack=acks)
    holder: dict[str, DeliverResult] = {}
    thread = threading.Thread(target=lambda: holder.setdefault("r", loop.run(drain_timeout_s=2)))
    thread.start()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and not stop_when(acks):
        time.sleep(0.05)
    loop.stop()
    thread.join()
    return holder["r"]


def throughput(
    bootstrap: str, urls: dict[str, str], deltas: list[MembershipDelta], kind: str,
    batched: bool, limit_factor: float, timeout_s: float,
) -> dict[str, Any]:  # fmt: skip
    topic = new_topic(bootstrap)
    preload(bootstrap, topic, deltas)
    admin = StandInAdmin(urls[kind])
    admin.reset()
    acks = Acks()
    result = run_loop(
        bootstrap, topic, kind, destination(kind, urls[kind], batched=batched,
                                            limit_factor=limit_factor),
        acks, lambda a: a.deltas >= len(deltas), timeout_s,
    )  # fmt: skip
    span = max(acks.last - acks.first, 1e-9)
    stats = result.stats
    return {
        "changes_per_s": acks.changes / span,
        "deltas_per_s": acks.deltas / span,
        "settled": acks.deltas,
        "objects_per_request": stats.objects / max(stats.requests, 1),
        "requests": stats.requests,
        "429s": admin.report()["counters"].get("rate_limited", 0),
    }


def latency(bootstrap: str, urls: dict[str, str], deltas: list[MembershipDelta], rate: int,
            seconds: float, batched: bool) -> dict[str, Any]:  # fmt: skip
    topic = new_topic(bootstrap)
    StandInAdmin(urls["braze"]).reset()
    acks = Acks()
    committed: dict[tuple[str, str, int], float] = {}
    count = min(len(deltas), int(rate * seconds))
    stream = deltas[:count]
    done = threading.Event()

    def produce() -> None:
        producer = transactional_producer(bootstrap)
        per_tick = max(1, rate // 50)  # a transaction every 20 ms
        started = time.monotonic()
        for index in range(0, len(stream), per_tick):
            target = started + index / rate
            time.sleep(max(0.0, target - time.monotonic()))
            producer.begin_transaction()
            chunk = stream[index : index + per_tick]
            for delta in chunk:
                producer.produce(topic, key=delta.customer_id.encode(), value=encode_json(delta))
            producer.commit_transaction(30)
            now = time.time()
            for delta in chunk:
                committed[(delta.customer_id, delta.audience, delta.seq)] = now
        done.set()

    settings = destination("braze", urls["braze"], batched=batched)
    # warm up: join the group before producing, so the join is not counted as latency
    producer_thread = threading.Thread(target=produce)
    timer = threading.Timer(4.0, producer_thread.start)
    timer.start()
    run_loop(bootstrap, topic, "braze", settings, acks,
             lambda a: done.is_set() and a.deltas >= count, seconds + 60)  # fmt: skip
    producer_thread.join()
    samples = sorted(acks.times[key] - committed[key] for key in acks.times if key in committed)
    if not samples:
        return {"p50_s": float("nan"), "p99_s": float("nan"), "samples": 0}
    return {
        "p50_s": samples[len(samples) // 2],
        "p99_s": samples[min(len(samples) - 1, int(len(samples) * 0.99))],
        "samples": len(samples),
        "settled": acks.deltas,
        "of": count,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=20_000)
    parser.add_argument("--events", type=int, default=150_000)
    parser.add_argument("--rate", type=int, default=1000, help="deltas/s in the latency run")
    parser.add_argument("--seconds", type=float, default=20.0, help="length of the latency run")
    parser.add_argument("--moengage-deltas", type=int, default=3000)
    args = parser.parse_args()
    print("$ .venv/bin/python bench/deliver.py " + shlex.join(sys.argv[1:]), flush=True)
    deltas = make_deltas(args.customers, args.events)
    print(f"{len(deltas):,} deltas from replay ({args.customers:,} customers, "
          f"{args.events:,} records); {os.cpu_count()} CPUs", flush=True)  # fmt: skip
    with kafka_bootstrap() as bootstrap, standins() as urls:
        rows = []
        for label, kind, batched, factor, data in (
            ("braze streamsync (batched, limiter)", "braze", True, 1.0, deltas),
            ("braze baseline (1 object/request, limiter)", "braze", False, 1.0, deltas),
            ("braze baseline (1 object/request, limit x10)", "braze", False, 10.0, deltas),
            ("moengage streamsync (bulk import)", "moengage", True, 1.0,
             deltas[: args.moengage_deltas]),
            ("moengage baseline (track user, 1/request)", "moengage", False, 1.0,
             deltas[: args.moengage_deltas]),
        ):  # fmt: skip
            row = throughput(bootstrap, urls, data, kind, batched, factor, timeout_s=240)
            rows.append((label, row))
            print(f"{label:<48} {row['changes_per_s']:>9,.0f} changes/s "
                  f"{row['deltas_per_s']:>9,.0f} deltas/s  {row['objects_per_request']:6.1f} "
                  f"objects/request  {row['requests']:>6} requests  {row['429s']:>5} 429s  "
                  f"({row['settled']:,} deltas)", flush=True)  # fmt: skip
        latencies = []
        for label, batched in (("braze streamsync", True), ("braze baseline (1/request)", False)):
            row = latency(bootstrap, urls, deltas, args.rate, args.seconds, batched)
            latencies.append(row)
            print(f"latency at {args.rate}/s {label:<28} p50 {row['p50_s'] * 1000:7.0f} ms  "
                  f"p99 {row['p99_s'] * 1000:7.0f} ms  ({row['samples']:,} changes, "
                  f"{row.get('settled', 0):,} of {row.get('of', 0):,} deltas settled)",
                  flush=True)  # fmt: skip
    braze, moe = rows[0][1], rows[3][1]
    checks = [
        ("mean objects per Braze request >= 67.5 (90% of 75)",
         braze["objects_per_request"] >= 67.5, f"{braze['objects_per_request']:.1f}"),
        ("429s with the limiter at the documented limit == 0",
         braze["429s"] == 0 and moe["429s"] == 0, f"{braze['429s']} / {moe['429s']}"),
        (f"p99 committed -> acknowledged at {args.rate}/s < 1 s",
         latencies[0]["p99_s"] < 1.0, f"{latencies[0]['p99_s'] * 1000:.0f} ms"),
    ]  # fmt: skip
    for name, ok, value in checks:
        print(f"target {'met' if ok else 'MISSED'}: {name}: {value}")
    return 0 if all(ok for _, ok, _ in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
