"""The console's store: sizes are enters minus exits at each bucket's end whatever the
order deltas arrive in, history beyond the window folds into the base, and identifiers
are found however they are written."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from streamsync.console.store import DAY_MS, HOUR_MS, ConsoleStore
from tests.console.support import T0, delta


def _expected(deltas: list, ends: list[int]) -> list[int]:  # type: ignore[type-arg]
    return [sum(1 if d.op == "enter" else -1 for d in deltas if d.at_ms < end) for end in ends]


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(0, 30 * DAY_MS), min_size=1, max_size=60), st.randoms())
def test_sizes_are_the_fold_of_the_deltas_in_any_order(
    offsets: list[int], rnd: random.Random
) -> None:
    deltas = []
    for i, offset in enumerate(sorted(offsets)):
        customer = f"c{i % 7}"
        seq = sum(1 for d in deltas if d.customer_id == customer) + 1
        deltas.append(delta(customer, "enter" if seq % 2 else "exit", T0 + offset, seq))
    shuffled = list(deltas)
    rnd.shuffle(shuffled)
    store = ConsoleStore(history_days=90)
    for start in range(0, len(shuffled), 5):
        store.apply(shuffled[start : start + 5])
    for resolution in ("hour", "day"):
        series = store.sizes("ACT__CartAbandon__90m", resolution)
        assert series.sizes == _expected(deltas, series.times_ms)
        assert series.times_ms[-1] > max(d.at_ms for d in deltas)
    assert store.stats("ACT__CartAbandon__90m").size == _expected(deltas, [2**62])[0]


def test_history_older_than_the_window_is_folded_into_the_base() -> None:
    store = ConsoleStore(history_days=7)
    store.apply([delta("a", "enter", T0, 1), delta("b", "enter", T0 + HOUR_MS, 1)])
    store.apply([delta("a", "exit", T0 + 10 * DAY_MS, 2)])
    series = store.sizes("ACT__CartAbandon__90m", "hour")
    assert len(series.sizes) == 7 * 24
    assert series.sizes[0] == 2 and series.sizes[-1] == 1
    # A late delta from before the window still counts.
    store.apply([delta("c", "enter", T0, 1)])
    assert store.sizes("ACT__CartAbandon__90m", "hour").sizes[-1] == 2
    stats = store.stats("ACT__CartAbandon__90m")
    assert stats.size == 2
    assert stats.changes["hour"] == (0, 1) and stats.changes["week"] == (0, 1)


def test_customers_are_found_by_email_and_phone_however_written() -> None:
    store = ConsoleStore()
    store.apply(
        [
            delta("c1", "enter", T0, 1, identifiers={"email": "Ann@Example.com"}),
            delta("c2", "enter", T0, 1, identifiers={"phone": "+1 (555) 010-0000"}),
        ]
    )
    assert store.customers_with("email", " ann@example.COM") == ["c1"]
    assert store.customers_with("phone", "+15550100000") == ["c2"]
    assert store.customers_with("email", "nobody@example.com") == []
