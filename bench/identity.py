"""Identity resolution in replay: events/s with 30% of the Data Pipelines records
anonymous and half of the anonymous ids linked by an identify, against the same log
with every record keyed by its person, timed alternately in the same run.

The stream is the seeded synthetic one (``streamsync.dev.synthetic``). Each customer's
anonymous id is ``anon-<userId>``; 30% of its track/page/screen records lose their
``userId`` and carry that id instead, and the identifies of half of the customers
(chosen by a CRC of the id) carry it beside the ``userId``, linking it; no other record
carries an ``anonymousId`` beside a ``userId``. Decoding is done
once, before timing: what is timed is ``replay`` (resolver and engine).

The evaluate service does not resolve identity yet, so this is the engine path only.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
import zlib
from pathlib import Path
from typing import Any

import orjson

from streamsync.audiences.loader import load_audiences
from streamsync.audiences.replay import ReplaySummary, replay
from streamsync.dev.synthetic import generate_records
from streamsync.identity.config import IdentityConfig
from streamsync.ingest.event import Event
from streamsync.ingest.jsonl import LineError, Skipped, read_events

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "audiences"


def _logs(customers: int, events: int, anonymous: float) -> tuple[list[bytes], list[bytes]]:
    rng = random.Random(1)
    keyed: list[bytes] = []
    stitched: list[bytes] = []
    for record in generate_records(customers, events, seed=3, anonymous_fraction=0.0):
        keyed.append(orjson.dumps(record))
        user = record.get("userId")
        if "type" in record and isinstance(user, str) and user:
            changed: dict[str, Any] = dict(record)
            changed.pop("anonymousId", None)  # only the identifies below link
            if record["type"] == "identify":
                if zlib.crc32(user.encode()) % 2 == 0:
                    changed["anonymousId"] = f"anon-{user}"
            elif rng.random() < anonymous:
                del changed["userId"]
                changed["anonymousId"] = f"anon-{user}"
            record = changed
        stitched.append(orjson.dumps(record))
    return keyed, stitched


def _decoded(lines: list[bytes], links: bool) -> list[Event | LineError | Skipped]:
    return list(read_events(lines, "bench", links=links))


def _run(
    records: list[Event | LineError | Skipped], identity: IdentityConfig | None
) -> tuple[float, int, ReplaySummary]:
    audiences = load_audiences(EXAMPLES)
    summary = ReplaySummary()
    started = time.perf_counter()
    deltas = sum(
        1
        for _ in replay(audiences, iter(records), identity=identity, progress=None, summary=summary)
    )
    return time.perf_counter() - started, deltas, summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--customers", type=int, default=10_000)
    parser.add_argument("--anonymous", type=float, default=0.3)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    keyed_lines, stitched_lines = _logs(args.customers, args.events, args.anonymous)
    keyed = _decoded(keyed_lines, links=False)
    stitched = _decoded(stitched_lines, links=True)
    times: dict[str, list[float]] = {"keyed by person": [], "identity resolved": []}
    results: dict[str, tuple[int, ReplaySummary]] = {}
    for _ in range(args.repeat):
        for name, records, identity in (
            ("keyed by person", keyed, None),
            ("identity resolved", stitched, IdentityConfig()),
        ):
            seconds, deltas, summary = _run(records, identity)
            times[name].append(seconds)
            results[name] = (deltas, summary)
    print(
        f"bench/identity.py --events {args.events} --customers {args.customers} "
        f"--anonymous {args.anonymous} --repeat {args.repeat}"
    )
    for name, seconds in times.items():
        deltas, summary = results[name]
        best = statistics.median(seconds)
        print(
            f"  {name:<18} {summary.events / best:>10,.0f} events/s (median of "
            f"{len(seconds)}), {deltas:,} deltas"
        )
    stats = results["identity resolved"][1].identity
    print(
        f"  identity: {stats.ids_linked:,} ids linked, {stats.records_forwarded:,} records "
        f"forwarded, {stats.ids_held:,} ids never linked ({stats.records_held:,} records), "
        f"{stats.records_expired:,} held records dropped at the horizon"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
