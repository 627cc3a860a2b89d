"""The web console: page render time at N audiences and M deltas, and how fast its store
is built from a deltas topic.

Measured in the same run:

* ``render``: the Audiences, One audience and Customer pages through the console's own
  aiohttp application (sign-in, CSRF and security headers, the audience files re-read,
  the store's sizes and changes, the template) with ``--audiences`` definitions and
  ``--deltas`` deltas spread over 90 days, the membership table and a customer's
  deltas served from memory (no broker): p50 and p95 over ``--repeat`` requests, next
  to a bare Jinja2 render of the same template with the same context (the floor: what
  the page costs beyond its template);
* ``store build``: a deltas topic of ``--build-deltas`` deltas (3 partitions) on a real
  broker read by the console's feed into its store until it says ``live``, next to a
  bare :class:`~streamsync.kafka.reader.TopicReader` read of the same topic (no
  decoding: the floor).

``KAFKA_BOOTSTRAP_SERVERS`` selects the broker (default: a local one is started);
``--no-broker`` measures the pages only.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import jinja2
from aiohttp.test_utils import TestClient, TestServer
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from streamsync.audiences.definition import Audience
from streamsync.audiences.diff import DiffReport
from streamsync.config import AppConfig, parse_config
from streamsync.console.acknowledged_counts import AcknowledgedCounts
from streamsync.console.customer_destinations import CustomerAcknowledged
from streamsync.console.dead_letters import DeadLetters
from streamsync.console.feed import DeltasFeed, wait_live
from streamsync.console.server import create_console
from streamsync.console.store import ConsoleStore
from streamsync.deltas.audit import CustomerAudit
from streamsync.deltas.codec import encode_json
from streamsync.deltas.membership import Member, MembershipTable
from streamsync.deltas.record import MembershipDelta
from streamsync.destinations.desired import DesiredFilter
from streamsync.dev.broker import kafka_bootstrap
from streamsync.kafka.reader import TopicReader

PARTITIONS = 3
DAY_MS = 86_400_000
TOKEN = "bench-console-token-0123456789"
NOW_MS = 1_796_000_000_000


def _definitions(directory: Path, audiences: int) -> list[str]:
    names = [f"ACT__Bench__{i}" for i in range(audiences)]
    lines = ["audiences:"]
    for name in names:
        lines += [
            f"  - name: {name}",
            "    version: 1",
            "    owner: retention@example.com",
            "    description: Added to cart, no order for 90 minutes.",
            "    entry:",
            "      since_last: {event: Product Added, at_least: 90m, less_than: 7d}",
            "    exit:",
            "      occurred_since_last: {event: Order Completed, since: {event: Product Added}}",
        ]
    (directory / "bench.yaml").write_text("\n".join(lines) + "\n")
    return names


def _deltas(names: list[str], count: int, customers: int) -> list[MembershipDelta]:
    """``count`` deltas over 90 days ending at NOW_MS, each (audience, customer)
    alternating enter and exit as evaluate writes them."""
    seq: dict[tuple[int, int], int] = {}
    out = []
    start = NOW_MS - 90 * DAY_MS
    step = max(1, 90 * DAY_MS // max(count, 1))
    for i in range(count):
        audience, customer = i % len(names), (i * 7919) % customers
        n = seq.get((audience, customer), 0) + 1
        seq[(audience, customer)] = n
        out.append(
            MembershipDelta(
                audience=names[audience],
                version=1,
                customer_id=f"cus_{customer}",
                op="enter" if n % 2 else "exit",
                at_ms=start + i * step,
                seq=n,
                identifiers={"email": f"cus_{customer}@example.com"},
            )
        )
    return out


class _MemorySources:
    """The pages' Kafka reads, from the generated deltas (so only the console is timed)."""

    def __init__(self, deltas: list[MembershipDelta]) -> None:
        self.deltas = deltas
        self.table = MembershipTable("bench.members", [0])
        for d in deltas:
            if d.op == "enter":
                self.table.members[(d.audience, d.customer_id)] = Member.from_enter(d)
            else:
                self.table.members.pop((d.audience, d.customer_id), None)

    async def members(self) -> MembershipTable:
        return self.table

    async def customer_members(self, customer: str) -> MembershipTable | None:
        table = MembershipTable("bench.members", [0])
        table.members = {k: v for k, v in self.table.members.items() if k[1] == customer}
        return table

    async def audit(self, customer: str) -> CustomerAudit:
        audit = CustomerAudit(customer, "bench.deltas", [0], input_topics=["in"])
        audit.deltas = [d for d in self.deltas if d.customer_id == customer]
        return audit

    async def acknowledged(self, destination: str) -> AcknowledgedCounts:
        return AcknowledgedCounts(destination, f"{destination}.acknowledged", exists=False)

    async def customer_acknowledged(self, destination: str, customer: str) -> CustomerAcknowledged:
        return CustomerAcknowledged(destination, f"{destination}.acknowledged", exists=False)

    async def desired_filter(self, destination: str) -> tuple[DesiredFilter, str]:
        return DesiredFilter(None, "skip"), ""

    async def diff(self, current: list[Audience], new: list[Audience]) -> DiffReport:
        return DiffReport([], "bench", [], [])

    async def dead_letters(self) -> DeadLetters:
        return DeadLetters()


class _Recording(jinja2.Template):
    """A template that keeps the context of its last render (for the floor)."""

    last: dict[str, Any] = {}

    def render(self, *args: Any, **kwargs: Any) -> str:
        _Recording.last = dict(*args, **kwargs)
        return super().render(*args, **kwargs)


def _config(tmp: Path, bootstrap: str, deltas_topic: str) -> AppConfig:
    return parse_config(
        {
            "kafka": {"bootstrap_servers": bootstrap},
            "ingest": {"topics": [{"name": "in", "format": "pipelines_json"}]},
            "deltas": {"topic": deltas_topic},
            "console": {
                "auth": {"users": [{"name": "b", "token": {"env": "BENCH_TOKEN"}}]},
                "audiences": str(tmp),
            },
        },
        base_dir=tmp,
        env={},
    )


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def _render_rows(
    tmp: Path, audiences: int, count: int, repeat: int
) -> list[tuple[str, float, float, float, float]]:
    names = _definitions(tmp, audiences)
    deltas = _deltas(names, count, customers=max(50, count // (4 * audiences) + 1))
    console = create_console(
        _config(tmp, "127.0.0.1:1", "bench.deltas"),
        sources=_MemorySources(deltas),
        feed=False,
        env={"BENCH_TOKEN": TOKEN},
    )
    console.store.apply(deltas)
    console.store.set_state("live")
    console.state.env.template_class = _Recording
    customer = deltas[-1].customer_id
    pages = [
        ("Audiences", "/audiences", "audiences.html"),
        ("One audience", f"/audiences/{names[0]}", "audience.html"),
        ("Customer", f"/customers?q={customer}", "customer.html"),
    ]
    rows = []

    async def run() -> None:
        async with TestClient(TestServer(console.app)) as client:
            headers = {"Authorization": f"Bearer {TOKEN}"}
            for label, path, template in pages:
                times = []
                for _ in range(repeat + 1):
                    started = time.perf_counter()
                    response = await client.get(path, headers=headers)
                    await response.read()
                    times.append(time.perf_counter() - started)
                    assert response.status == 200, (path, response.status)
                times = times[1:]  # the first compiles the template
                context = _Recording.last
                bare = console.state.env.get_template(template)
                floor = []
                for _ in range(repeat):
                    started = time.perf_counter()
                    jinja2.Template.render(bare, **context)
                    floor.append(time.perf_counter() - started)
                rows.append(
                    (
                        label,
                        statistics.median(times),
                        _percentile(times, 0.95),
                        statistics.median(floor),
                        _percentile(floor, 0.95),
                    )
                )

    asyncio.run(run())
    return rows


def _produce(bootstrap: str, count: int) -> str:
    topic = f"bench-console-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(topic, PARTITIONS, 1)]).values():
        future.result(30)
    names = [f"ACT__Bench__{i}" for i in range(200)]
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20})
    for delta in _deltas(names, count, customers=max(50, count // 800 + 1)):
        value = encode_json(delta)
        while True:
            try:
                producer.produce(topic, value, delta.customer_id.encode())
                break
            except BufferError:
                producer.poll(0.1)
    assert producer.flush(60) == 0
    return topic


def _build_rows(tmp: Path, bootstrap: str, count: int) -> list[tuple[str, int, float]]:
    topic = _produce(bootstrap, count)
    config = _config(tmp, bootstrap, topic)
    reader = TopicReader(config, time.monotonic() + 600, name="bench-console")
    read = 0

    def handle(_message: Any) -> bool:
        nonlocal read
        read += 1
        return False

    started = time.perf_counter()
    assert reader.read([(topic, p) for p in range(PARTITIONS)], handle, lambda: None) is None
    floor = time.perf_counter() - started
    reader.close()
    store = ConsoleStore()
    feed = DeltasFeed(config, store)
    started = time.perf_counter()
    feed.start()
    assert wait_live(store, 600), store.status()
    built = time.perf_counter() - started
    feed.stop()
    assert store.status().deltas == count, store.status()
    return [("bare TopicReader read (floor)", read, floor), ("console store build", count, built)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--audiences", type=int, default=200)
    parser.add_argument("--deltas", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--build-deltas", type=int, default=500_000)
    parser.add_argument("--no-broker", action="store_true", help="measure the pages only")
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        rows = _render_rows(Path(tmp), args.audiences, args.deltas, args.repeat)
        built = []
        if not args.no_broker:
            with kafka_bootstrap() as bootstrap:
                built = _build_rows(Path(tmp), bootstrap, args.build_deltas)
    print(f"command: .venv/bin/python bench/console.py {' '.join(argv)}".rstrip())
    print(f"pages at {args.audiences:,} audiences and {args.deltas:,} deltas over 90 days:")
    print(f"| {'page':<13} | p50 ms | p95 ms | bare Jinja2 p50 ms | bare Jinja2 p95 ms |")
    print(f"|{'-' * 15}|--------|--------|--------------------|--------------------|")
    for label, p50, p95, f50, f95 in rows:
        print(
            f"| {label:<13} | {p50 * 1000:>6.1f} | {p95 * 1000:>6.1f} "
            f"| {f50 * 1000:>18.1f} | {f95 * 1000:>18.1f} |"
        )
    if built:
        floor = built[0][1] / built[0][2]
        print(f"store build from a deltas topic of {args.build_deltas:,} deltas:")
        print(f"| {'read':<30} | {'records':>9} | seconds | records/s | vs floor |")
        print(f"|{'-' * 32}|{'-' * 11}|---------|-----------|----------|")
        for label, count, elapsed in built:
            rate = count / elapsed
            print(
                f"| {label:<30} | {count:>9,} | {elapsed:>7.2f} | {rate:>9,.0f} "
                f"| {rate / floor:.2f}x |"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
