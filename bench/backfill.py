"""Backfill benchmark: a new Braze destination receives N current members.

A destination added to a running pipeline starts from the membership table
(``<deltas>.members``), not from the deltas: deliver reads the table, filters it to the
destination's audiences and sends every member the destination has not acknowledged.
This measures that path end to end on a real broker (``KAFKA_BOOTSTRAP_SERVERS``, or a
local broker started for the run) against the Braze stand-in at its documented limit
(``/users/track``: 75 attribute objects per request, 3,000 requests per 3 s).

Measured in one run, side by side:

* *ceiling* - the documented limit, computed: one attribute object per profile, 75
  objects x 1,000 requests/s;
* *baseline* - a bare sender: the same attribute objects, 75 per request, posted with
  aiohttp under the same fixed-window limit with the same concurrency, no Kafka, no
  state: what the stand-in and this machine allow at best;
* *streamsync* - ``DeliverLoop`` with a fresh group: from start to the last
  acknowledgement (reading the table included), changes/s, objects per request,
  requests, 429s; then the stand-in's profiles are compared with the desired state.

Run: ``.venv/bin/python bench/backfill.py [--members 1000000] [--audiences 4]``.
"""

from __future__ import annotations

import argparse
import asyncio
import shlex
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import aiohttp
import orjson
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from streamsync.config import AppConfig, parse_config
from streamsync.deltas.membership import member_key, member_partitioner
from streamsync.destinations.client import Change
from streamsync.destinations.deliver import DeliverLoop
from streamsync.dev.broker import kafka_bootstrap
from streamsync.dev.standins import StandInAdmin
from streamsync.dev.standins.runner import DEFAULT_BRAZE_KEY
from streamsync.resources import project_path

#: the documented /users/track limits
OBJECTS_PER_REQUEST = 75
REQUESTS_PER_WINDOW = 3000
WINDOW_S = 3.0
#: requests in flight, for the baseline and deliver alike
CONCURRENCY = 8
#: example audiences (examples/audiences) the members are spread over
AUDIENCES = (
    "ACT__CartAbandon__90m",
    "ACT__Winback__60to120d",
    "SUP__VIP__LTV500",
    "ACT__ViewedTwiceNoPurchase__7d",
    "SUP__RecentPurchasers__7d",
    "ACT__DueForReorder__7d",
)


def member_value(audience: str, customer: str, seq: int) -> bytes:
    return orjson.dumps(
        {
            "audience": audience, "version": 1, "customer_id": customer, "id_kind": "id",
            "identifiers": {}, "since": "2026-11-01T00:00:00.000Z",
            "since_ms": 1_793_491_200_000, "seq": seq, "holdout": False,
        }
    )  # fmt: skip


def members(count: int, audiences: Sequence[str]) -> Iterator[tuple[str, str]]:
    """``count`` (audience, customer) pairs: customers ``b0000000..`` each in one audience
    after another, round robin, so a customer holds at most one value per audience."""
    for index in range(count):
        yield audiences[index % len(audiences)], f"b{index // len(audiences):07d}"


@contextmanager
def standins() -> Iterator[str]:
    """The stand-ins in a process of their own (as in production, the destination does not
    share this process's CPU); yields the Braze URL."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamsync", "dev", "stand-ins"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        urls = dict(proc.stdout.readline().decode().strip().split("=", 1) for _ in range(2))
        yield urls["BRAZE_URL"]
    finally:
        proc.terminate()
        proc.wait(20)


def create_topics(bootstrap: str, partitions: int) -> str:
    deltas = f"bench-backfill-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics(
        [
            NewTopic(deltas, partitions, 1),
            NewTopic(f"{deltas}.members", partitions, 1, config={"cleanup.policy": "compact"}),
        ]
    )
    for future in futures.values():
        future.result(30)
    return deltas


def config_for(bootstrap: str, deltas: str, url: str, audiences: Sequence[str]) -> AppConfig:
    return parse_config(
        {
            "kafka": {"bootstrap_servers": bootstrap},
            "ingest": {"topics": [{"name": "unused", "format": "pipelines_json"}]},
            "deltas": {"topic": deltas, "audiences": str(project_path("examples", "audiences"))},
            "destinations": {
                "braze": {
                    "kind": "braze", "base_url": url,
                    "credentials": {"env": "BENCH_BRAZE_KEY"},
                    "group_id": f"bench-{uuid.uuid4().hex[:8]}",
                    "rate_limit": {"limit": REQUESTS_PER_WINDOW, "window_s": WINDOW_S},
                    "audiences": list(audiences),
                    "consumer": {"session.timeout.ms": 6000},
                }
            },
        }
    )  # fmt: skip


def load_table(bootstrap: str, config: AppConfig, table: str, pairs: list[tuple[str, str]],
               partitions: int) -> float:  # fmt: skip
    """Write the membership table as evaluate does (transactions, the table's partitioner);
    returns the seconds it took."""
    started = time.monotonic()
    partition_of = member_partitioner(config, partitions)
    producer = Producer(
        {"bootstrap.servers": bootstrap, "transactional.id": f"bench-{uuid.uuid4().hex[:8]}",
         "linger.ms": 20, "batch.size": 1_000_000}
    )  # fmt: skip
    producer.init_transactions(30)
    for start in range(0, len(pairs), 50_000):
        producer.begin_transaction()
        for seq, (audience, customer) in enumerate(pairs[start : start + 50_000], start + 1):
            while True:
                try:
                    producer.produce(
                        table, key=member_key(audience, customer),
                        value=member_value(audience, customer, seq),
                        partition=partition_of(customer.encode()),
                    )  # fmt: skip
                    break
                except BufferError:
                    producer.poll(0.05)
            producer.poll(0)
        producer.commit_transaction(120)
    return time.monotonic() - started


class Acks:
    def __init__(self) -> None:
        self.first = 0.0
        self.last = 0.0
        self.changes = 0

    def __call__(self, changes: list[Change], at: float) -> None:
        if changes:
            self.first = self.first or at
            self.last = at
            self.changes += len(changes)


def deliver(config: AppConfig, expected: int, timeout_s: float) -> dict[str, Any]:
    acks = Acks()
    loop = DeliverLoop(config, "braze", env={"BENCH_BRAZE_KEY": DEFAULT_BRAZE_KEY}, on_ack=acks)
    holder: dict[str, Any] = {}
    started = time.time()
    thread = threading.Thread(target=lambda: holder.setdefault("r", loop.run(drain_timeout_s=2)))
    thread.start()
    deadline = time.monotonic() + timeout_s
    last_print = time.monotonic()
    while time.monotonic() < deadline and acks.changes < expected:
        time.sleep(0.05)
        if time.monotonic() - last_print >= 10:
            last_print = time.monotonic()
            print(f"  streamsync: {acks.changes:,} of {expected:,} acknowledged", flush=True)
    loop.stop()
    thread.join()
    stats = holder["r"].stats
    return {
        "seconds": (acks.last or time.time()) - started,
        "first_ack_s": (acks.first or time.time()) - started,
        "changes": acks.changes,
        "requests": stats.requests,
        "objects": stats.objects,
    }


class Window:
    """The stand-in's fixed window from the client side: at most ``limit`` requests per
    ``window_s``, then wait for the next window."""

    def __init__(self, limit: int, window_s: float) -> None:
        self.limit, self.window_s = limit, window_s
        self.start, self.used = time.monotonic(), 0

    async def take(self) -> None:
        while True:
            now = time.monotonic()
            if now - self.start >= self.window_s:
                self.start, self.used = now, 0
            if self.used < self.limit:
                self.used += 1
                return
            await asyncio.sleep(self.start + self.window_s - now)


async def bare_send(url: str, pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """The baseline: the same attribute objects deliver sends (one per profile, its
    audiences added together), posted 75 per request."""
    by_customer: dict[str, list[str]] = {}
    for audience, customer in pairs:
        by_customer.setdefault(customer, []).append(audience)
    objects = [
        {"external_id": customer, "_update_existing_only": False,
         "streamsync_audiences": {"add": audiences}}
        for customer, audiences in by_customer.items()
    ]  # fmt: skip
    bodies = [
        orjson.dumps({"attributes": objects[start : start + OBJECTS_PER_REQUEST]})
        for start in range(0, len(objects), OBJECTS_PER_REQUEST)
    ]
    headers = {"Authorization": f"Bearer {DEFAULT_BRAZE_KEY}", "Content-Type": "application/json"}
    window = Window(REQUESTS_PER_WINDOW, WINDOW_S)
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)
    counts = {"requests": 0, "429s": 0}

    async def worker(session: aiohttp.ClientSession) -> None:
        while not queue.empty():
            body = queue.get_nowait()
            while True:
                await window.take()
                async with session.post(f"{url}/users/track", data=body, headers=headers) as r:
                    await r.read()
                    counts["requests"] += 1
                    if r.status == 429:
                        counts["429s"] += 1
                        await asyncio.sleep(1.0)
                        continue
                    break

    started = time.monotonic()
    async with aiohttp.ClientSession() as session:
        await asyncio.gather(*(worker(session) for _ in range(CONCURRENCY)))
    return {"seconds": time.monotonic() - started, **counts}


def profiles_equal(admin: StandInAdmin, pairs: list[tuple[str, str]]) -> tuple[int, int]:
    """(profiles that differ from the desired state, desired profiles)."""
    desired: dict[str, set[str]] = {}
    for audience, customer in pairs:
        desired.setdefault(customer, set()).add(audience)
    profiles = admin.profiles()
    users = profiles.get("users", profiles) if isinstance(profiles, dict) else {}
    wrong = 0
    for customer, audiences in desired.items():
        profile = users.get(f"external_id:{customer}", {})
        if set(profile.get("streamsync_audiences", [])) != audiences:
            wrong += 1
    wrong += sum(1 for key in users if key.split(":", 1)[-1] not in desired)
    return wrong, len(desired)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=1_000_000)
    parser.add_argument(
        "--audiences",
        type=int,
        default=1,
        help=f"audiences per customer, 1..{len(AUDIENCES)} (1: one object per member)",
    )
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per run")
    args = parser.parse_args(argv)
    shown = sys.argv[1:] if argv is None else list(argv)
    print("$ .venv/bin/python bench/backfill.py " + shlex.join(shown), flush=True)
    audiences = AUDIENCES[: max(1, min(args.audiences, len(AUDIENCES)))]
    pairs = list(members(args.members, audiences))
    profiles = len({customer for _, customer in pairs})
    # the limit counts objects: one per profile, whatever number of audiences it carries
    ceiling_s = profiles / OBJECTS_PER_REQUEST / (REQUESTS_PER_WINDOW / WINDOW_S)
    with kafka_bootstrap() as bootstrap, standins() as url:
        admin = StandInAdmin(url)
        deltas = create_topics(bootstrap, args.partitions)
        config = config_for(bootstrap, deltas, url, audiences)
        loaded = load_table(bootstrap, config, f"{deltas}.members", pairs, args.partitions)
        print(f"{args.members:,} members of {len(audiences)} audiences "
              f"({profiles:,} customers) written to the table in "
              f"{loaded:.1f} s", flush=True)  # fmt: skip
        admin.reset()
        admin.faults(strict=True)
        base = asyncio.run(bare_send(url, pairs))
        base_wrong, desired = profiles_equal(admin, pairs)
        admin.reset()
        admin.faults(strict=True)
        ours = deliver(config, args.members, args.timeout)
        report = admin.report()
        wrong, _ = profiles_equal(admin, pairs)
    limited = report["counters"].get("rate_limited", 0)
    rows = [
        ("documented ceiling (75 x 3,000 / 3 s)", ceiling_s, args.members, 75.0,
         -(-profiles // OBJECTS_PER_REQUEST), 0, "-"),
        ("baseline: bare aiohttp sender", base["seconds"], args.members, 75.0,
         base["requests"], base["429s"], f"{base_wrong} of {desired:,}"),
        ("streamsync deliver (table read included)", ours["seconds"], ours["changes"],
         ours["objects"] / max(ours["requests"], 1), ours["requests"], limited,
         f"{wrong} of {desired:,}"),
    ]  # fmt: skip
    print(f"{'run':<44} {'seconds':>8} {'changes/s':>10} {'obj/req':>8} {'requests':>9} "
          f"{'429s':>6}  profiles wrong")  # fmt: skip
    for label, seconds, changes, per_request, requests, n429, wrong_text in rows:
        print(f"{label:<44} {seconds:8.1f} {changes / max(seconds, 1e-9):10,.0f} "
              f"{per_request:8.1f} {requests:9,.0f} {n429:6}  {wrong_text}")  # fmt: skip
    print(f"streamsync: first acknowledgement {ours['first_ack_s']:.1f} s after start; "
          f"{ours['seconds'] / ceiling_s:.2f}x the ceiling's time, "
          f"{ours['seconds'] / max(base['seconds'], 1e-9):.2f}x the baseline's")  # fmt: skip
    print(f"strict stand-in violations: {len(report['violations'])}")
    converged = ours["changes"] == args.members and wrong == 0 and not report["violations"]
    print(f"converged: {'yes' if converged else 'NO'}")
    return 0 if converged else 1


if __name__ == "__main__":
    sys.exit(main())
