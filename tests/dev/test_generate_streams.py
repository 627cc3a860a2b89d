"""``dev generate`` streams: its records are the same as when the whole plan was held
in memory (digests of that implementation's output, taken before it was replaced), and
the memory it holds does not grow with the number of records."""

from __future__ import annotations

import hashlib
import io
import random
import tracemalloc
from collections.abc import Iterator
from typing import Any

import pytest

from streamsync.dev.plan_runs import PlanRuns
from streamsync.dev.synthetic import generate_records, mix_bad_records, write_jsonl

#: (customers, events, seed) -> SHA-256 of ``write_jsonl(mix_bad_records(generate_records(
#: customers, events, seed=seed), 0.01, seed=seed))`` as the in-memory plan wrote it.
DIGESTS = {
    (1, 0, 0): "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    (1, 50, 1): "da82805caa878c8f198e0483f3a8b15755d3392c60e488f58252fa6fd2bcc743",
    (300, 20_000, 3): "c2bcf24561acde7225245aade4de1e2aca1b0de098a8c184afc1537e683a45ed",
    (2_000, 120_000, 0): "7bff2017e2fd25e7f2562171533283cc846bc0255170e6066b4507dbcd772f92",
}


@pytest.mark.parametrize("run_entries", [250_000, 997, 7], ids=["one-run", "runs", "tiny-runs"])
@pytest.mark.parametrize("case", list(DIGESTS), ids=lambda c: f"{c[0]}x{c[1]}-seed{c[2]}")
def test_the_output_is_the_in_memory_plans(case: tuple[int, int, int], run_entries: int) -> None:
    customers, events, seed = case
    if run_entries < 100 and events > 20_000:
        pytest.skip("tiny runs on a large stream only repeat the smaller cases, slowly")
    out = io.BytesIO()
    records = generate_records(customers, events, seed=seed, run_entries=run_entries)
    write_jsonl(mix_bad_records(records, 0.01, seed=seed), out)
    assert hashlib.sha256(out.getvalue()).hexdigest() == DIGESTS[case]


def test_plan_runs_sort_stably_by_time() -> None:
    rng = random.Random(5)
    entries = [(rng.randrange(50), i, (i, i + 1)) for i in range(20_000)]
    runs = PlanRuns(run_entries=333)  # several fan-in merges
    for start in range(0, len(entries), 1_000):
        runs.extend(entries[start : start + 1_000])
    runs.append((0, -1, ()))
    expected = sorted([*entries, (0, -1, ())], key=lambda e: e[0])
    assert list(runs.sorted()) == expected
    assert runs.count == len(expected)


def _peak(records: Iterator[dict[str, Any]]) -> int:
    """The most memory Python held (tracemalloc) while ``records`` were produced."""
    tracemalloc.start()
    try:
        for _ in records:
            pass
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_memory_does_not_grow_with_the_number_of_records() -> None:
    """The in-memory plan needed about 150 bytes a record: 60,000 records more would
    have held about 9 MB more. The timestamp formatter's per-minute cache (bounded, and
    the same for both) is filled first, so that only the generator is measured."""

    def stream(events: int) -> Iterator[dict[str, Any]]:
        return generate_records(100, events, seed=4, run_entries=200)

    for _ in stream(80_000):  # fills the per-minute cache for both runs below
        pass
    small, large = _peak(stream(20_000)), _peak(stream(80_000))
    assert large < small + 2_000_000, (small, large)
