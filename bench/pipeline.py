"""The evaluate service's work per record without a broker, phase by phase, to compare
two versions of the code side by side on the same machine in the same minute.

``bench/evaluate.py`` measures the service on a real broker, where the Kafka client,
the broker and the page cache move the figures by 2x between runs. This script runs the
same Python path in one process over the same pre-decoded synthetic records
(``streamsync.dev.synthetic``, as the evaluate bench produces them): per "commit" of
``--batch`` records, ``Task.process`` for each record, ``Task.advance``, the deltas
through the :class:`~streamsync.runtime.collector.Collector` (JSON encoding, the
membership table) into a producer that keeps nothing, the
:class:`~streamsync.runtime.observer.EvaluateObserver` reporting them to a
``Telemetry`` as after a commit, ``Task.changes()`` and ``Task.persist`` into a real
RocksDB partition store. Decoding is left out (``bench/decode.py`` measures it).

``--tree DIR`` runs it against another checkout of streamsync (e.g. the parent commit
exported with ``git archive``), so before and after are timed alternately in one
session::

    .venv/bin/python bench/pipeline.py --repeat 5 --tree /tmp/before

prints, for each tree, the median over the repetitions of each phase's CPU seconds and
of records per CPU second through the whole path, and the state keys and bytes written.
"""

from __future__ import annotations

import argparse
import gc
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

REPO = Path(__file__).resolve().parents[1]
PHASES = ("process", "advance", "collector", "telemetry", "changes", "persist")


class _NullProducer:
    """Takes every record and keeps nothing (the Kafka client is not measured here)."""

    def begin_transaction(self) -> None:
        pass

    def produce(self, topic: str, value: Any = None, key: Any = None, **_: Any) -> None:
        pass

    def poll(self, timeout: float = 0) -> int:
        return 0


def run_once(events: int, customers: int, batch: int) -> dict[str, Any]:
    """One pass in this process (whatever ``streamsync`` imports as); phase seconds."""
    import orjson

    from streamsync.audiences.loader import load_audiences
    from streamsync.dev.synthetic import generate_records
    from streamsync.ingest.event import SourcePosition
    from streamsync.ingest.jsonl import decode_line
    from streamsync.observability.metrics import Telemetry
    from streamsync.runtime.collector import Collector, delta_encoder
    from streamsync.runtime.observer import EvaluateObserver
    from streamsync.runtime.stats import EvaluateStats
    from streamsync.runtime.task import Task
    from streamsync.state.store import PartitionStore

    decoded = []
    for line, record in enumerate(generate_records(customers, events, seed=1), start=1):
        event = decode_line(orjson.dumps(record), SourcePosition("bench", 0, line))
        if event is not None:
            decoded.append(event)
    audiences = load_audiences(REPO / "examples" / "audiences")
    gc.freeze()
    telemetry = Telemetry(role="evaluate")
    observer = EvaluateObserver(
        telemetry, group="bench", audiences=[a.name for a in audiences], stuck_after_ms=0
    )
    stats = EvaluateStats(topics={})
    collector = Collector(
        _NullProducer(),  # type: ignore[arg-type]
        deltas_topic="deltas",
        members_topic="members",
        member_partition=lambda key: 0,
        dead_letter_topic="dead",
        encode=delta_encoder(SimpleNamespace(deltas=SimpleNamespace(format="json"))),  # type: ignore[arg-type]
        dead_letter_max=None,
        stats=stats,
        telemetry=observer,
    )
    task = Task(
        0,
        ["bench"],
        audiences,
        allowed_lateness_ms=5 * 60_000,
        dedup_horizon_ms=24 * 3_600_000,
        wall_clock=False,
        idle_grace_ms=0,
    )
    seconds = dict.fromkeys(PHASES, 0.0)
    deltas_out = 0
    with tempfile.TemporaryDirectory() as tmp:
        store = PartitionStore(Path(tmp) / "state")
        task.load(store, "bench")
        # CPU time of the process (RocksDB's threads included), not the wall clock:
        # the machine is shared, and another process's load then moves it far less.
        clock = time.process_time
        state_keys = state_bytes = 0
        for start in range(0, len(decoded), batch):
            chunk = decoded[start : start + batch]
            t0 = clock()
            out = []
            process = task.process
            for event in chunk:
                found = process(event)
                if found:
                    out.extend(found)
            last = chunk[-1].source
            assert last is not None
            task.place("bench", last.offset + 1, -1)
            task.newest["bench"] = max(task.newest["bench"], chunk[-1].timestamp_ms)
            t1 = clock()
            out.extend(task.advance(0))
            t2 = clock()
            collector.deltas(out, 0)
            t3 = clock()
            observer.committed(stats)
            t4 = clock()
            changes = task.changes()
            t5 = clock()
            task.persist(changes, start, keep=None)
            t6 = clock()
            deltas_out += len(out)
            state_keys += len(changes)
            state_bytes += sum(len(v) for v in changes.values() if v is not None)
            for phase, took in zip(
                PHASES, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4, t6 - t5), strict=True
            ):
                seconds[phase] += took
        store.close()
    telemetry.shutdown()
    total = sum(seconds.values())
    import streamsync

    return {
        "imported": streamsync.__file__,
        "records": len(decoded),
        "deltas": deltas_out,
        "state_keys": state_keys,
        "state_bytes": state_bytes,
        "seconds": seconds,
        "total": total,
        "rate": len(decoded) / total,
    }


def _child(tree: Path, events: int, customers: int, batch: int) -> dict[str, Any]:
    """One pass in a fresh interpreter importing streamsync from ``tree``."""
    env = dict(os.environ, PYTHONPATH=str(tree))
    out = subprocess.run(
        [
            sys.executable,
            str(Path(__file__).resolve()),
            "--child",
            *map(str, (events, customers, batch)),
        ],
        cwd=tree,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    import json

    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        import json

        events, customers, batch = (int(x) for x in sys.argv[2:5])
        print(json.dumps(run_once(events, customers, batch)))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--customers", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=2_000, help="records per commit")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--tree", action="append", default=[], help="another checkout to time alternately"
    )
    args = parser.parse_args()
    print("command:", shlex.join([os.path.relpath(sys.executable), *sys.argv]))
    trees = [REPO, *(Path(t).resolve() for t in args.tree)]
    results: dict[Path, list[dict[str, Any]]] = {tree: [] for tree in trees}
    for _ in range(args.repeat):
        for tree in trees:  # alternately, so both see the same machine load
            results[tree].append(_child(tree, args.events, args.customers, args.batch))
    header = f"{'tree':<28} {'records/s':>10} " + " ".join(f"{p:>10}" for p in PHASES)
    print(f"median of {args.repeat}; records per CPU second; phase columns in CPU seconds")
    print(header)
    for tree, runs in results.items():
        rate = statistics.median(r["rate"] for r in runs)
        phases = [statistics.median(r["seconds"][p] for r in runs) for p in PHASES]
        label = str(tree)[-28:]
        print(f"{label:<28} {rate:>10,.0f} " + " ".join(f"{s:>10.3f}" for s in phases))
        print(
            f"{'':<28} {runs[0]['records']:,} records, {runs[0]['deltas']:,} deltas, "
            f"{runs[0]['state_keys']:,} state keys ({runs[0]['state_bytes']:,} bytes) written "
            f"({runs[0]['imported']}); "
            "rates " + ", ".join(f"{r['rate']:,.0f}" for r in runs)
        )


if __name__ == "__main__":
    main()
