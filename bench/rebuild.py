"""Rebuilding one changed audience from state, against re-reading the input history.

One audience of the 13 examples changes (``ACT__CartAbandon__90m``: ``at_least`` 90m ->
60m, ``version: 2``; ``ACT__CartAbandon__MedIntent`` references it, so it changes too).
A synthetic D2C stream (``streamsync.dev.synthetic``, every customer with at least one
record) is evaluated with the old definitions into one partition's RocksDB store as the
runtime does it (``Task.process`` / ``Task.advance``, a commit every ``--commit-every``
records through ``Task.changes`` and ``Task.persist``, at most ``--keep`` customers in
memory). That is set-up, not timed. Then, in the same run, one after the other, each in
a fresh child process (so its peak RSS is its own):

* ``from state`` - what evaluate does on start-up with the changed definitions: a new
  ``Task`` opens the store (``Task.load`` finds the stored definitions differ and
  compiles a ``Migration``) and ``Task.migrate({})`` converts every stored customer
  (decode, ``Migration.convert`` at the clock's instant, encode), returning only the
  net difference as deltas. No input history is read: the changed facts are in state
  (the run checks ``Migration.history_facts`` is empty). The commit that then writes
  the converted customers to the store is timed on its own line;
* ``from history`` - what a user had before: re-reading the same records with the new
  definitions from scratch, as a new ``evaluate.group_id`` does. Every record is decoded
  from its JSON line again and applied by a fresh ``Engine`` (the clock advanced every
  ``--commit-every`` records as a task would), up to the same instant. It holds every
  customer in memory and writes no state, and the records come from memory, not a
  broker: a lower bound on that path's cost.

Both end at the same instant; the members of every audience are compared (they agree
when the rebuild from state is exact). Wall time, CPU time (``time.process_time``,
RocksDB's threads included) and the peak RSS growth of each step over the RSS before it
(the peak is reset through ``/proc/self/clear_refs`` where Linux allows, else the
process peak counts) are reported side by side. The store was just written, so its
files are in the page cache, as they are on a restart of a running instance.

Run: ``.venv/bin/python bench/rebuild.py [--customers N] [--records-per-customer N]``.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import pstats
import resource
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from streamsync.audiences.definition import STORED, Audience
from streamsync.audiences.engine import Engine
from streamsync.audiences.loader import load_audiences
from streamsync.dev.synthetic import generate_records
from streamsync.ingest.event import Event, SourcePosition
from streamsync.ingest.jsonl import decode_line
from streamsync.resources import project_path
from streamsync.runtime.task import Task
from streamsync.state.codec import CUSTOMER_PREFIX
from streamsync.state.store import PartitionStore

AUDIENCES = project_path("examples", "audiences")
CHANGED = "ACT__CartAbandon__90m"
TOPIC = "bench.pipelines"
#: the evaluate defaults (``allowed_lateness``, ``dedup_horizon``)
LATENESS_MS = 5 * 60_000
HORIZON_MS = 86_400_000
PROGRESS_EVERY_S = 5.0


def changed_definitions(audiences: Sequence[Audience]) -> list[Audience]:
    """The examples with the cart window shortened: 90m -> 60m, version 2."""
    out = []
    for audience in audiences:
        if audience.name == CHANGED:
            data = audience.model_dump(by_alias=True, exclude_unset=True)
            entry = audience.entry.model_dump(by_alias=True, exclude_unset=True)
            entry["since_last"]["at_least"] = 60 * 60_000
            audience = Audience.model_validate(
                {**data, "entry": entry, "version": 2}, context=STORED
            )
        out.append(audience)
    return out


class Progress:
    """``label: done/total`` on stderr every few seconds."""

    def __init__(self, label: str, total: int, unit: str) -> None:
        self.label, self.total, self.unit = label, total, unit
        self.started = self.last = time.monotonic()

    def tick(self, done: int) -> None:
        now = time.monotonic()
        if now - self.last >= PROGRESS_EVERY_S:
            self.last = now
            rate = done / (now - self.started)
            print(
                f"  {self.label}: {done:,}/{self.total:,} {self.unit} ({rate:,.0f}/s)",
                file=sys.stderr,
                flush=True,
            )


# -- memory ---------------------------------------------------------------------------------


def _status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def reset_peak() -> bool:
    """Reset the process's peak RSS (Linux ``clear_refs`` 5); whether that worked."""
    try:
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")
    except OSError:
        return False
    return _status_kib("VmHWM") is not None


def rss_kib() -> int:
    now = _status_kib("VmRSS")
    return now if now is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def peak_kib() -> int:
    peak = _status_kib("VmHWM")
    return peak if peak is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def measure(run: Callable[[], object]) -> dict[str, float]:
    """Wall time, CPU time and peak RSS growth of ``run`` (in MiB)."""
    gc.collect()
    reset_peak()
    before = rss_kib()
    cpu = time.process_time()
    started = time.perf_counter()
    run()
    elapsed = time.perf_counter() - started
    return {
        "seconds": elapsed,
        "cpu_s": time.process_time() - cpu,
        "peak_growth_mib": max(0, peak_kib() - before) / 1024,
    }


# -- input and state ------------------------------------------------------------------------


def generate(customers: int, records: int, seed: int, path: Path) -> None:
    """The stream as JSON lines in ``path``, in arrival order (what the input topic
    would hold). Written as generated: held in memory among the generator's transient
    dicts, the lines would fragment the heap to about 4 KiB each."""
    progress = Progress("generating", records, "records")
    dumps = orjson.dumps
    with path.open("wb", buffering=1 << 20) as out:
        for n, record in enumerate(generate_records(customers, records, seed=seed), start=1):
            out.write(dumps(record, option=orjson.OPT_APPEND_NEWLINE))
            if n % 65_536 == 0:
                progress.tick(n)


def read_lines(path: Path) -> Iterator[bytes]:
    with path.open("rb", buffering=1 << 20) as lines:
        for line in lines:
            yield line.rstrip(b"\n")


def decoded(lines: Iterable[bytes]) -> Iterator[Event]:
    """The lines decoded as the JSON input decoder does, with their offsets."""
    for offset, line in enumerate(lines):
        event = decode_line(line, SourcePosition(TOPIC, 0, offset))
        if event is not None:
            yield event


def new_task(audiences: Sequence[Audience]) -> Task:
    return Task(
        0,
        [TOPIC],
        audiences,
        allowed_lateness_ms=LATENESS_MS,
        dedup_horizon_ms=HORIZON_MS,
        wall_clock=False,
        idle_grace_ms=0,
    )


@dataclass
class Built:
    customers: int
    events: int
    commits: int
    deltas: int
    seconds: float
    #: the clock's instant when the state was written: both rebuilds end there
    instant: int


def build_state(
    path: Path,
    records: int,
    store: PartitionStore,
    audiences: Sequence[Audience],
    *,
    commit_every: int,
    keep: int,
) -> Built:
    """Evaluate ``lines`` with ``audiences`` into ``store``, committing as the runtime
    does, then read the input to its end and let the clock reach its newest record."""
    started = time.perf_counter()
    task = new_task(audiences)
    task.load(store, "bench[0]")
    progress = Progress("building state", records, "records")
    events = deltas = commits = 0
    for event in decoded(read_lines(path)):
        deltas += len(task.process(event))
        events += 1
        if events % commit_every == 0:
            deltas += len(task.advance(0))
            commits += 1
            task.persist(task.changes(), commits, keep=keep)
            progress.tick(events)
    task.at_end(TOPIC, records)
    while True:  # deadlines are read back from the store a bounded number per commit
        deltas += len(task.advance(0))
        commits += 1
        task.persist(task.changes(), commits, keep=keep)
        if task.engine.watermark >= task.watermark(0):
            break
    return Built(
        task.customer_count,
        events,
        commits,
        deltas,
        time.perf_counter() - started,
        task.engine.watermark - 1,
    )


# -- the two rebuilds, each in a fresh process ----------------------------------------------


def rebuild_from_state(state_dir: str, profile: bool) -> dict[str, Any]:
    """Child: open the store with the changed definitions and migrate every customer."""
    audiences = changed_definitions(load_audiences(AUDIENCES))
    store = PartitionStore(Path(state_dir))
    out: dict[str, Any] = {}
    holder: list[Task] = []

    def rebuild() -> None:
        task = new_task(audiences)
        out["customers"] = task.load(store, "bench[0]")
        migration = task.migration
        if migration is None:
            raise SystemExit("the stored definitions were not seen as changed")
        out["history_facts"] = len(migration.history_facts)
        out["describe"] = [
            migration.describe(c) for c in migration.changes.values() if c.kind != "unchanged"
        ]
        out["deltas"] = len(task.migrate({}))
        holder.append(task)

    def commit() -> None:
        task = holder[0]
        changes = task.changes()
        out["converted"] = sum(1 for key in changes if key.startswith(CUSTOMER_PREFIX))
        task.persist(changes, None, keep=0)

    print("rebuilding from state...", file=sys.stderr, flush=True)
    if profile:
        profiler = cProfile.Profile()
        out["rebuild"] = measure(lambda: profiler.runcall(rebuild))
        buffer = io.StringIO()
        pstats.Stats(profiler, stream=buffer).sort_stats("tottime").print_stats(15)
        out["profile"] = buffer.getvalue()
    else:
        out["rebuild"] = measure(rebuild)
    out["sizes"] = holder[0].sizes()
    out["commit"] = measure(commit)
    store.close()
    return out


def rebuild_from_history(input_path: str, commit_every: int, instant: int) -> dict[str, Any]:
    """Child: re-read every record with the changed definitions, a fresh engine."""
    audiences = changed_definitions(load_audiences(AUDIENCES))
    lines = list(read_lines(Path(input_path)))
    gc.freeze()
    out: dict[str, Any] = {"records": len(lines)}
    holder: list[Engine] = []

    def rebuild() -> None:
        engine = Engine(
            audiences,
            allowed_lateness_ms=LATENESS_MS,
            dedup_horizon_ms=HORIZON_MS,
            auto_advance=False,
        )
        process = engine.process
        progress = Progress("re-reading the history", len(lines), "records")
        newest = -(1 << 62)
        events = deltas = 0
        for event in decoded(lines):
            deltas += len(process(event))
            if event.timestamp_ms > newest:
                newest = event.timestamp_ms
            events += 1
            if events % commit_every == 0:
                deltas += len(engine.advance_to(min(newest - LATENESS_MS, instant + 1) - 1))
                progress.tick(events)
        deltas += len(engine.advance_to(instant))
        out.update(events=events, deltas=deltas, customers=len(engine.customers))
        holder.append(engine)

    print("rebuilding from the input history...", file=sys.stderr, flush=True)
    out["rebuild"] = measure(rebuild)
    out["sizes"] = holder[0].member_counts()
    return out


def child(*args: str) -> dict[str, Any]:
    """Run a ``--child`` of this script; its JSON result (its stderr is passed on)."""
    done = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--child", *args],
        stdout=subprocess.PIPE,
        check=True,
    )
    result: dict[str, Any] = orjson.loads(done.stdout.splitlines()[-1])
    return result


def run_child(argv: Sequence[str]) -> int:
    what, *rest = argv
    if what == "state":
        result = rebuild_from_state(rest[0], profile=rest[1] == "1")
    else:
        result = rebuild_from_history(rest[0], int(rest[1]), int(rest[2]))
    sys.stdout.buffer.write(orjson.dumps(result) + b"\n")
    return 0


# -- report ---------------------------------------------------------------------------------


def _disk_mib(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / (1 << 20)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--child"]:
        return run_child(argv[1:])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--customers", type=int, default=1_000_000, help="distinct customers")
    parser.add_argument(
        "--records-per-customer", type=float, default=4.0, help="mean records per customer"
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--commit-every", type=int, default=20_000, help="records between commits")
    parser.add_argument(
        "--keep", type=int, default=500_000, help="customers held in memory while building"
    )
    parser.add_argument(
        "--profile", action="store_true", help="also print a cProfile top-15 of the migration"
    )
    args = parser.parse_args(argv)
    command = shlex.join(["python", "bench/rebuild.py", *argv])
    records = max(args.customers, round(args.customers * args.records_per_customer))
    old = load_audiences(AUDIENCES)

    print(
        f"generating {records:,} records for {args.customers:,} customers...",
        file=sys.stderr,
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="bench-rebuild-") as tmp:
        input_path = Path(tmp) / "input.jsonl"
        t0 = time.perf_counter()
        generate(args.customers, records, args.seed, input_path)
        generated = time.perf_counter() - t0
        state_dir = Path(tmp) / "p0"
        store = PartitionStore(state_dir)
        try:
            print("building state with the old definitions...", file=sys.stderr, flush=True)
            built = build_state(
                input_path, records, store, old, commit_every=args.commit_every, keep=args.keep
            )
        finally:
            store.close()
        disk = _disk_mib(state_dir)
        state = child("state", str(state_dir), "1" if args.profile else "0")
        history = child("history", str(input_path), str(args.commit_every), str(built.instant))

    rebuild, commit, measured = state["rebuild"], state["commit"], history["rebuild"]
    print(f"command: {command}")
    print(
        f"input: {records:,} records ({built.events:,} evaluated after anonymous ones), "
        f"{built.customers:,} customers, generated in {generated:.1f}s; state built with "
        f"the old definitions in {built.seconds:.1f}s ({built.commits:,} commits, "
        f"{built.deltas:,} deltas, store {disk:,.1f} MiB on disk)"
    )
    print(f"change: {CHANGED} since_last at_least 90m -> 60m (version 2)")
    for line in state["describe"]:
        print(f"  {line}")
    read = (
        "none (Migration.history_facts is empty: every fact the changed audiences read is in state)"
        if state["history_facts"] == 0
        else f"NEEDED for {state['history_facts']} facts (not read here: not exact)"
    )
    print(f"input history read by the rebuild from state: {read}")
    print(
        f"{'':<38} {'customers':>10} {'records':>10} {'seconds':>8} {'CPU-s':>7} "
        f"{'customers/s':>12} {'records/s':>10} {'peak RSS +MiB':>14} {'deltas':>10}"
    )
    print(
        f"{'from state (load + migrate)':<38} {state['customers']:>10,} {0:>10,} "
        f"{rebuild['seconds']:>8.2f} {rebuild['cpu_s']:>7.2f} "
        f"{state['customers'] / rebuild['seconds']:>12,.0f} {'-':>10} "
        f"{rebuild['peak_growth_mib']:>14,.0f} {state['deltas']:>10,}"
    )
    print(
        f"{'from history (decode + fresh engine)':<38} {history['customers']:>10,} "
        f"{history['records']:>10,} {measured['seconds']:>8.2f} {measured['cpu_s']:>7.2f} "
        f"{history['customers'] / measured['seconds']:>12,.0f} "
        f"{history['records'] / measured['seconds']:>10,.0f} "
        f"{measured['peak_growth_mib']:>14,.0f} {history['deltas']:>10,}"
    )
    print(
        f"from state: {measured['seconds'] / rebuild['seconds']:.1f}x faster (wall), "
        f"{measured['cpu_s'] / max(rebuild['cpu_s'], 1e-9):.1f}x less CPU; its deltas are "
        "the net difference, those from history every transition since the first record"
    )
    print(
        f"then the commit writes the {state['converted']:,} converted customers to the "
        f"store: {commit['seconds']:.2f}s, {commit['cpu_s']:.2f} CPU-s, peak RSS "
        f"+{commit['peak_growth_mib']:,.0f} MiB"
    )
    mine, theirs = state["sizes"], history["sizes"]
    differ = sorted(name for name in theirs if theirs[name] != mine.get(name))
    members = ", ".join(
        f"{name} {mine[name][0]:,}/{theirs[name][0]:,}"
        for name in sorted(theirs)
        if name.startswith("ACT__CartAbandon")
    )
    verdict = f"all {len(theirs)} audiences agree" if not differ else "DIFFER: " + ", ".join(differ)
    print(f"members at the instant, from state/from history: {members}; {verdict}")
    if args.profile:
        print(state["profile"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
