"""Audience engine throughput and per-customer state size, next to baselines.

A synthetic D2C stream (``streamsync.dev.synthetic``: sessions, carts, orders with
``days_supply`` and starter kits, refunds, tickets, identifies, reporting webhooks, 1% of
records up to 2 minutes late, 0.5% duplicates) is generated and decoded up front, then
timed in this process on one core:

* ``streamsync engine`` - all 13 example audiences, reorder buffer, dedup, timers and
  delta objects included, then ``finish()`` so every deadline in the stream fires;
* ``floor: append to history`` - per record, a dict lookup and a list append per
  customer: the least any per-record Python loop can cost, so the engine's own cost
  reads as a multiple of it;
* ``naive: rescan history`` - keep every customer's records and, on each record,
  recompute all 13 audiences from the customer's whole history (the brute-force
  reference evaluator in tests/audiences/oracle.py, without deadlines). Its cost grows
  with history, so it is timed on the stream's last records only, with the histories
  of everything before them already in memory.

State size is measured by walking each customer's state objects (lists, tuples, dicts,
sets, ints, strings) with ``sys.getsizeof``, counting objects shared by all customers
(``None``, small ints, the NEVER sentinel) once for nobody.

Run: ``.venv/bin/python bench/engine.py [--events N] [--customers N] [--profile]``.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import pstats
import resource
import shlex
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import orjson

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # for tests/audiences/oracle.py (the naive baseline)
    sys.path.insert(0, str(REPO))

from streamsync.audiences.compiler import NEVER  # noqa: E402
from streamsync.audiences.engine import Engine  # noqa: E402
from streamsync.audiences.loader import load_audiences  # noqa: E402
from streamsync.dev.synthetic import generate_records  # noqa: E402
from streamsync.ingest.event import Event, SourcePosition  # noqa: E402
from streamsync.ingest.jsonl import decode_line  # noqa: E402

AUDIENCES = REPO / "examples" / "audiences"


def prepare(customers: int, events: int, seed: int) -> tuple[list[Event], float]:
    started = time.perf_counter()
    decoded: list[Event] = []
    for line, record in enumerate(generate_records(customers, events, seed=seed), start=1):
        event = decode_line(orjson.dumps(record), SourcePosition("bench", 0, line))
        if event is not None:
            decoded.append(event)
    return decoded, time.perf_counter() - started


def timed(label: str, run: Callable[[], int], records: int) -> dict[str, Any]:
    gc.collect()
    started = time.perf_counter()
    deltas = run()
    elapsed = time.perf_counter() - started
    return {
        "label": label,
        "records": records,
        "seconds": elapsed,
        "rate": records / elapsed if elapsed else float("inf"),
        "deltas": deltas,
    }


def run_engine(engine: Engine, events: Sequence[Event]) -> int:
    count = 0
    process = engine.process
    for event in events:
        count += len(process(event))
    return count + len(engine.finish())


def adversarial(n: int) -> list[Event]:
    """``n`` records of one customer, alternating a ticket opened and a product viewed,
    every id new (a scraper or a test harness gone wrong), one second apart."""
    start = 1_767_261_600_000
    out = []
    for i in range(n):
        if i % 2:
            name, props = "Product Viewed", {"product_id": f"p{i}"}
        else:
            name, props = "Support Ticket Opened", {"ticket_id": f"t{i}"}
        out.append(Event("bot", "track", name, start + i * 1_000, f"adv{i}", props))
    return out


def run_floor(events: Sequence[Event]) -> int:
    history: dict[str, list[Event]] = {}
    for event in events:
        log = history.get(event.customer_id)
        if log is None:
            history[event.customer_id] = [event]
        else:
            log.append(event)
    return 0


def naive_history(events: Sequence[Event]) -> dict[str, list[Event]]:
    """Every customer's records so far, for the naive baseline (built untimed)."""
    history: dict[str, list[Event]] = {}
    for event in events:
        history.setdefault(event.customer_id, []).append(event)
    for log in history.values():
        log.sort(key=lambda e: e.timestamp_ms)
    return history


def run_naive(history: dict[str, list[Event]], events: Sequence[Event]) -> int:
    from tests.audiences.oracle import AUDIENCES as NAMES
    from tests.audiences.oracle import member

    state: dict[tuple[str, str], bool] = {}
    changes = 0
    for event in events:
        log = history.setdefault(event.customer_id, [])
        log.append(event)
        log.sort(key=lambda e: e.timestamp_ms)
        for name in NAMES:
            now = member(name, log, event.timestamp_ms)
            key = (name, event.customer_id)
            if state.get(key, False) != now:
                state[key] = now
                changes += 1
    return changes


def deep_size(obj: object, seen: set[int]) -> int:
    """Bytes reachable from ``obj`` not already counted (shared singletons excluded)."""
    if obj is None or obj is NEVER or isinstance(obj, bool) or id(obj) in seen:
        return 0
    if isinstance(obj, int) and -5 <= obj <= 256:
        return 0
    seen.add(id(obj))
    size = sys.getsizeof(obj)
    if isinstance(obj, dict):
        size += sum(deep_size(k, seen) + deep_size(v, seen) for k, v in obj.items())
    elif isinstance(obj, list | tuple | set | frozenset):
        size += sum(deep_size(item, seen) for item in obj)
    return size


def state_sizes(engine: Engine) -> tuple[list[int], float]:
    """Per-customer sizes counting every object as that customer's, and the mean with
    objects shared between customers (interned product ids) counted once overall."""
    sizes = []
    shared: set[int] = set()
    unique_total = 0
    for state in engine.customers.values():
        # The key of the customers dict is the same string as the state's id slot;
        # add the dict entry itself (hash, key, value pointers).
        sizes.append(deep_size(state, set()) + 8 * 3)
        unique_total += deep_size(state, shared) + 8 * 3
    return sizes, unique_total / max(len(engine.customers), 1)


def profile_engine(events: Sequence[Event], top: int) -> str:
    engine = Engine(load_audiences(AUDIENCES))
    profiler = cProfile.Profile()
    profiler.enable()
    run_engine(engine, events)
    profiler.disable()
    buffer = io.StringIO()
    pstats.Stats(profiler, stream=buffer).sort_stats("tottime").print_stats(top)
    return buffer.getvalue()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000, help="records to generate")
    parser.add_argument("--customers", type=int, default=100_000, help="distinct customers")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--naive-events", type=int, default=5_000, help="last records the naive baseline runs on"
    )
    parser.add_argument(
        "--adversarial-events",
        type=int,
        default=20_000,
        help="records of one customer with ever-new product and ticket ids (0: skip)",
    )
    parser.add_argument("--profile", action="store_true", help="also print a cProfile top-15")
    args = parser.parse_args(argv)
    command = "python bench/engine.py " + shlex.join(sys.argv[1:] if argv is None else argv)

    print(
        f"generating and decoding {args.events:,} records for {args.customers:,} customers...",
        file=sys.stderr,
        flush=True,
    )
    events, prep = prepare(args.customers, args.events, args.seed)
    audiences = load_audiences(AUDIENCES)
    gc.freeze()  # the prepared events are long-lived: keep them out of GC passes

    engine = Engine(audiences)
    rows = [
        timed("streamsync engine (13 audiences)", lambda: run_engine(engine, events), len(events))
    ]
    rows.append(timed("floor: append to history", lambda: run_floor(events), len(events)))
    # The naive evaluator on the stream's last records, with every customer's history
    # up to there already in memory: what its per-record cost is once histories are real.
    split = max(len(events) - args.naive_events, 0)
    history = naive_history(events[:split])
    naive = events[split:]
    rows.append(
        timed(
            f"naive: rescan history (last {len(naive):,})",
            lambda: run_naive(history, naive),
            len(naive),
        )
    )

    if args.adversarial_events:
        # One customer alternating Support Ticket Opened and Product Viewed with ids never
        # seen before: per-key facts hit evaluate.max_keys_per_customer and stay there.
        flood = adversarial(args.adversarial_events)
        alone = Engine(audiences)
        rows.append(
            timed(
                f"one customer, ever-new ids ({len(flood):,})",
                lambda: run_engine(alone, flood),
                len(flood),
            )
        )

    sizes, unique_mean = state_sizes(engine)
    rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    print(f"command: {command}")
    print(
        f"input: {len(events):,} decoded records, {len(engine.customers):,} customers, "
        f"stream generated+decoded in {prep:.1f}s; engine stats: {engine.stats}"
    )
    print(f"{'':<44} {'records':>10} {'seconds':>8} {'records/s':>11} {'deltas':>9}")
    for row in rows:
        print(
            f"{row['label']:<44} {row['records']:>10,} {row['seconds']:>8.2f} "
            f"{row['rate']:>11,.0f} {row['deltas']:>9,}"
        )
    engine_rate, floor_rate = rows[0]["rate"], rows[1]["rate"]
    print(
        f"engine cost = {floor_rate / engine_rate:.1f}x the floor; "
        f"{rows[0]['rate'] / rows[2]['rate']:.0f}x the naive rescan's rate"
    )
    if args.adversarial_events:
        print(
            f"the ever-new-ids customer costs {engine_rate / rows[3]['rate']:.1f}x a normal "
            f"record ({rows[3]['deltas']:,} deltas)"
        )
    sizes.sort()
    print(
        f"state per customer (bytes): mean {statistics.fmean(sizes):,.0f}, "
        f"median {sizes[len(sizes) // 2]:,}, p99 {sizes[int(len(sizes) * 0.99)]:,}, "
        f"max {sizes[-1]:,}; mean with shared objects counted once {unique_mean:,.0f}; "
        f"{engine.program.width} slots"
    )
    print(f"peak RSS {rss_mib:,.0f} MiB (includes the pre-decoded input)")
    if args.profile:
        print(profile_engine(events[: min(len(events), 200_000)], 15))
    return 0


if __name__ == "__main__":
    sys.exit(main())
