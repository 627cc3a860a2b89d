"""Engine behaviour users rely on, beyond the oracle comparison: holdouts, lateness and
late and too-late records, duplicates and the dedup horizon, the clock (``advance_to``/``finish``,
``auto_advance``), ``seq``, ``record_ids`` and identifiers, and ``where``/``per`` filters.

Expectations are worked out by hand from README.md and audiences.md.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import textwrap
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest

from streamsync.audiences.definition import Audience
from streamsync.audiences.engine import Engine, in_holdout
from streamsync.audiences.loader import load_audiences
from streamsync.deltas.record import MembershipDelta
from streamsync.dev.synthetic import generate_records
from streamsync.ingest.errors import DecodeError
from streamsync.ingest.event import Event, SourcePosition
from streamsync.ingest.jsonl import decode_line
from tests.audiences.cases import T0, D, H, M, dup, ev
from tests.audiences.oracle import (
    ACTIVE_APP,
    CART_ABANDON,
    CART_MED_INTENT,
    CHECKOUT_ABANDON,
    RECENT_PURCHASERS,
    VIEWED_TWICE,
)

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples" / "audiences"
LATENESS = 5 * M

Key = tuple[str, str]


@pytest.fixture(scope="module")
def examples() -> list[Audience]:
    return load_audiences(EXAMPLES)


def write_audiences(tmp_path: Path, text: str) -> list[Audience]:
    path = tmp_path / "audiences.yaml"
    path.write_text(textwrap.dedent(text), "utf-8")
    return load_audiences(path)


def run(
    engine: Engine, events: Iterable[Event], until_ms: int | None = None
) -> list[MembershipDelta]:
    out: list[MembershipDelta] = []
    for event in events:
        out.extend(engine.process(event))
    out.extend(engine.finish(until_ms))
    return out


def timeline(deltas: Iterable[MembershipDelta]) -> dict[Key, list[tuple[int, str]]]:
    """(audience, customer) -> [(offset from T0, op), ...] in emission order."""
    grouped: dict[Key, list[tuple[int, str]]] = defaultdict(list)
    for d in deltas:
        grouped[(d.audience, d.customer_id)].append((d.at_ms - T0, d.op))
    return dict(grouped)


def full(deltas: Iterable[MembershipDelta]) -> dict[Key, list[tuple[object, ...]]]:
    grouped: dict[Key, list[tuple[object, ...]]] = defaultdict(list)
    for d in deltas:
        grouped[(d.audience, d.customer_id)].append(
            (d.op, d.at_ms, d.seq, tuple(d.record_ids), tuple(sorted(d.identifiers.items())))
        )
    return dict(grouped)


def assert_well_formed(deltas: Sequence[MembershipDelta]) -> None:
    """Per (audience, customer): seq 1, 2, 3, ...; enter/exit alternate from enter; time
    never goes backwards."""
    grouped: dict[Key, list[MembershipDelta]] = defaultdict(list)
    for d in deltas:
        grouped[(d.audience, d.customer_id)].append(d)
    for key, items in grouped.items():
        assert [d.seq for d in items] == list(range(1, len(items) + 1)), key
        assert [d.op for d in items] == ["enter", "exit"] * (len(items) // 2) + ["enter"] * (
            len(items) % 2
        ), key
        stamps = [d.at_ms for d in items]
        assert stamps == sorted(stamps), key


def cart(customer: str, at: int, rid: str | None = None) -> Event:
    if rid is None:
        return ev(customer, "Product Added", at, product_id="p1", cart_id="k1")
    return ev(customer, "Product Added", at, rid=rid, product_id="p1", cart_id="k1")


def app(customer: str, at: int, rid: str | None = None) -> Event:
    if rid is None:
        return ev(customer, "Application Opened", at)
    return ev(customer, "Application Opened", at, rid=rid)


# --------------------------------------------------------------------------- holdouts

HOLDOUT_YAML = """
audiences:
  - name: ACT__AppHalf__10m
    version: 1
    owner: qa@example.com
    description: Opened the app in the last 10 minutes; half held out.
    entry: {since_last: {event: Application Opened, less_than: 10m}}
    holdout: {percent: 50}
  - name: ACT__AppHalfAgain__10m
    version: 1
    owner: qa@example.com
    description: Same membership, another name, so another holdout draw.
    entry: {since_last: {event: Application Opened, less_than: 10m}}
    holdout: {percent: 50}
  - name: ACT__AppNone__10m
    version: 1
    owner: qa@example.com
    description: Holdout of zero percent.
    entry: {since_last: {event: Application Opened, less_than: 10m}}
    holdout: {percent: 0}
  - name: ACT__AppAll__10m
    version: 1
    owner: qa@example.com
    description: Everyone held out.
    entry: {since_last: {event: Application Opened, less_than: 10m}}
    holdout: {percent: 100}
  - name: ACT__AppPlain__10m
    version: 1
    owner: qa@example.com
    description: No holdout declared.
    entry: {since_last: {event: Application Opened, less_than: 10m}}
"""

N_CUSTOMERS = 2000


def _holdout_run(audiences: list[Audience]) -> list[MembershipDelta]:
    events = [app(f"cus_{i:07d}", i * 1000, rid=f"r{i}") for i in range(N_CUSTOMERS)]
    return run(Engine(audiences), events, T0 + 1 * D)


def test_holdout_flags_follow_in_holdout_and_are_stable(tmp_path: Path) -> None:
    audiences = write_audiences(tmp_path, HOLDOUT_YAML)
    first = _holdout_run(audiences)
    second = _holdout_run(audiences)
    assert len(first) == 5 * 2 * N_CUSTOMERS  # everyone enters and exits every audience
    flags: dict[Key, set[bool]] = defaultdict(set)
    for d in first:
        flags[(d.audience, d.customer_id)].add(d.holdout)
    # Enter and exit agree, and the flag is in_holdout for the declared percentage.
    for (audience, customer), seen in flags.items():
        percent = {"ACT__AppHalf__10m": 50, "ACT__AppHalfAgain__10m": 50, "ACT__AppAll__10m": 100}
        assert seen == {in_holdout(audience, customer, percent.get(audience, 0))}
    # Same on another engine instance (a restart, a replay).
    assert [(d.audience, d.customer_id, d.holdout) for d in first] == [
        (d.audience, d.customer_id, d.holdout) for d in second
    ]

    def held(audience: str) -> set[str]:
        return {c for (a, c), seen in flags.items() if a == audience and True in seen}

    half, again = held("ACT__AppHalf__10m"), held("ACT__AppHalfAgain__10m")
    assert 0.4 * N_CUSTOMERS <= len(half) <= 0.6 * N_CUSTOMERS
    assert 0.4 * N_CUSTOMERS <= len(again) <= 0.6 * N_CUSTOMERS
    assert half != again  # the draw depends on the audience, not only the customer
    assert held("ACT__AppNone__10m") == set()
    assert held("ACT__AppPlain__10m") == set()
    assert len(held("ACT__AppAll__10m")) == N_CUSTOMERS


def test_in_holdout_edges() -> None:
    customers = [f"cus_{i}" for i in range(500)]
    assert not any(in_holdout("ACT__X", c, 0) for c in customers)
    assert not any(in_holdout("ACT__X", c, -5) for c in customers)
    assert all(in_holdout("ACT__X", c, 100) for c in customers)
    # Monotone in the percentage: in the 10% holdout implies in the 50% holdout.
    for c in customers:
        if in_holdout("ACT__X", c, 10):
            assert in_holdout("ACT__X", c, 50)


def test_in_holdout_is_the_same_in_another_process() -> None:
    """Not salted per process (``hash()`` would be): every instance agrees."""
    customers = [f"cus_{i:07d}" for i in range(300)]
    here = [in_holdout("ACT__CartAbandon__90m", c, 50) for c in customers]
    code = (
        "import json,sys\n"
        "from streamsync.audiences.engine import in_holdout\n"
        "cs=json.loads(sys.stdin.read())\n"
        "print(json.dumps([in_holdout('ACT__CartAbandon__90m', c, 50) for c in cs]))\n"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    done = subprocess.run(
        [sys.executable, "-c", code],
        input=orjson.dumps(customers).decode(),
        capture_output=True,
        text=True,
        env=env,
        check=True,
        cwd=REPO,
    )
    assert orjson.loads(done.stdout) == here


# ---------------------------------------------------------------------------- lateness


def test_record_exactly_lateness_behind_is_in_order(examples: list[Audience]) -> None:
    engine = Engine(examples, allowed_lateness_ms=LATENESS)
    run(engine, [cart("c1", 0), app("c2", 15 * M), ev("c1", "Order Completed", 10 * M)])
    assert (engine.stats.late, engine.stats.too_late) == (0, 0)


def test_record_four_minutes_behind_gives_the_in_order_result(examples: list[Audience]) -> None:
    in_order = [
        ev("c1", "Checkout Started", 60 * M - 2 * M, rid="k", value=5),
        cart("c1", 60 * M, "a"),
        ev("c1", "Order Completed", 60 * M + 89 * M, rid="o", order_id="o1", total=5),
        app("c2", 60 * M + 90 * M, "x"),
        app("c2", 60 * M + 93 * M, "y"),
    ]
    # The order (at 149m) arrives after c2's record at 153m: 4 minutes behind the newest.
    shuffled = [in_order[0], in_order[1], in_order[3], in_order[4], in_order[2]]
    engine_a = Engine(examples, allowed_lateness_ms=LATENESS)
    engine_b = Engine(examples, allowed_lateness_ms=LATENESS)
    a, b = run(engine_a, in_order), run(engine_b, shuffled)
    assert (engine_b.stats.late, engine_b.stats.too_late) == (0, 0)
    assert full(a) == full(b)
    # And the in-order result itself is what the spec says: the order lands 1 minute
    # before the cart deadline (150m) and 31 minutes after the checkout deadline (118m).
    got = timeline(b)
    assert CART_ABANDON not in {k[0] for k in got}
    assert got[(CHECKOUT_ABANDON, "c1")] == [(118 * M, "enter"), (149 * M, "exit")]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_disorder_within_lateness_equals_in_order_log(examples: list[Audience], seed: int) -> None:
    """Random logs, each record arriving up to 4m59s behind the newest."""
    rng = random.Random(seed)
    names: list[tuple[str, dict[str, Any]]] = [
        ("Product Added", {"product_id": "p1"}),
        ("Checkout Started", {"value": 3}),
        ("Order Completed", {"order_id": "o", "total": 120, "products": [{"sku": "s"}]}),
        ("Product Viewed", {"product_id": "p1"}),
        ("Application Opened", {}),
    ]
    stamps = rng.sample(range(0, 3 * D), 400)  # distinct: no ties to reorder
    in_order = []
    for i, ts in enumerate(sorted(stamps)):
        name, props = rng.choice(names)
        in_order.append(ev(f"c{rng.randrange(8)}", name, ts, rid=f"r{i}", **props))
    arrival = sorted(in_order, key=lambda e: e.timestamp_ms + rng.randrange(0, LATENESS))
    newest = -1
    for e in arrival:
        newest = max(newest, e.timestamp_ms)
        assert newest - e.timestamp_ms < LATENESS
    assert arrival != in_order
    engine_a = Engine(examples, allowed_lateness_ms=LATENESS)
    engine_b = Engine(examples, allowed_lateness_ms=LATENESS)
    until = T0 + 12 * D
    a, b = run(engine_a, in_order, until), run(engine_b, arrival, until)
    assert (engine_b.stats.late, engine_b.stats.too_late) == (0, 0)
    assert a and full(a) == full(b)
    assert_well_formed(b)


def test_record_an_hour_late_is_a_correction_applied_at_the_watermark(
    examples: list[Audience],
) -> None:
    engine = Engine(examples, allowed_lateness_ms=LATENESS)
    deltas = run(
        engine,
        [
            cart("c1", 0, "add"),
            app("c2", 3 * H, "app"),
            ev("c1", "Order Completed", 1 * H, rid="late-order", order_id="o", total=5),
        ],
        T0 + 3 * H,
    )
    assert (engine.stats.late, engine.stats.too_late) == (0, 1)
    watermark = 3 * H - LATENESS
    got = timeline(deltas)
    # Applied at arrival: the cart deadline (90m) had already fired, so the late order
    # makes the customer exit at the watermark rather than never entering at all.
    assert got[(CART_ABANDON, "c1")] == [(90 * M, "enter"), (watermark, "exit")]
    assert got[(RECENT_PURCHASERS, "c1")] == [(watermark, "enter")]
    by_audience = {(d.audience, d.op): d for d in deltas if d.customer_id == "c1"}
    assert by_audience[(CART_ABANDON, "exit")].record_ids == ["late-order"]
    assert by_audience[(RECENT_PURCHASERS, "enter")].record_ids == ["late-order"]
    assert_well_formed(deltas)
    # Its window also runs from the watermark: RecentPurchasers ends 7 days after it.
    more = engine.finish(T0 + 10 * D)
    assert timeline(more)[(RECENT_PURCHASERS, "c1")] == [(watermark + 7 * D, "exit")]


def test_synthetic_stream_never_goes_backwards(examples: list[Audience]) -> None:
    """The generator's late records (up to 2m) are in order with the default lateness and
    corrections with none; either way each customer's deltas move forward in time."""
    events: list[Event] = []
    for n, raw in enumerate(generate_records(60, 4000, seed=11), start=1):
        try:
            event = decode_line(orjson.dumps(raw), SourcePosition("synthetic", 0, n))
        except DecodeError:
            continue
        if event is not None:
            events.append(event)
    lenient = Engine(examples)
    strict = Engine(examples, allowed_lateness_ms=0)
    a, b = run(lenient, events), run(strict, events)
    assert (lenient.stats.late, lenient.stats.too_late) == (0, 0)
    assert strict.stats.too_late > 0
    assert a and b
    assert_well_formed(a)
    assert_well_formed(b)
    # Same as the in-order log (stable sort keeps log order for equal timestamps).
    in_order = sorted(events, key=lambda e: e.timestamp_ms)
    assert full(run(Engine(examples), in_order)) == full(a)


# -------------------------------------------------------------------------- duplicates


def test_same_record_id_counts_once_even_for_another_customer(examples: list[Audience]) -> None:
    engine = Engine(examples)
    first = cart("c1", 0, "same-id")
    deltas = run(
        engine,
        [
            first,
            dup(first),
            ev("c2", "Order Completed", 1 * M, rid="same-id", order_id="o", total=5),
        ],
        T0 + 1 * D,
    )
    assert engine.stats.events == 3
    assert engine.stats.duplicates == 2
    got = timeline(deltas)
    assert got[(CART_ABANDON, "c1")] == [(90 * M, "enter")]
    assert not any(k[1] == "c2" for k in got)  # c2's record was dropped as a duplicate


def test_records_without_id_are_never_duplicates(examples: list[Audience]) -> None:
    engine = Engine(examples)
    views = [
        Event("c1", "track", "Product Viewed", T0, None, {"product_id": "p"}),
        Event("c1", "track", "Product Viewed", T0 + 1, None, {"product_id": "p"}),
    ]
    deltas = run(engine, views, T0 + 1 * H)
    assert engine.stats.duplicates == 0
    assert timeline(deltas)[(VIEWED_TWICE, "c1")] == [(1, "enter")]


def _traffic(until: int) -> list[Event]:
    """Unrelated hourly records that move event time forward."""
    return [app("bystander", t, f"t{t}") for t in range(1 * H, until + 1, 1 * H)]


def test_dedup_horizon_recognises_a_resend_within_the_horizon(examples: list[Audience]) -> None:
    engine = Engine(examples, dedup_horizon_ms=1 * D)
    original = cart("c1", 0, "cart-1")
    deltas = run(engine, [original, *_traffic(20 * H), dup(original)])
    assert engine.stats.duplicates == 1
    assert (engine.stats.late, engine.stats.too_late) == (0, 0)
    assert timeline(deltas)[(CART_ABANDON, "c1")] == [(90 * M, "enter")]


def test_dedup_horizon_forgets_ids_after_two_horizons(examples: list[Audience]) -> None:
    """Documented bound: ids are kept between one and two horizons (event time), so a
    re-send arriving 3 days of event time later is treated as a new (late) record."""
    engine = Engine(examples, dedup_horizon_ms=1 * D)
    original = cart("c1", 0, "cart-1")
    run(engine, [original, *_traffic(3 * D), dup(original)])
    assert engine.stats.duplicates == 0
    assert (engine.stats.late, engine.stats.too_late) == (0, 1)


def test_without_horizon_ids_are_remembered_for_ever(examples: list[Audience]) -> None:
    engine = Engine(examples)
    original = cart("c1", 0, "cart-1")
    run(engine, [original, *_traffic(3 * D), dup(original)])
    assert engine.stats.duplicates == 1
    assert (engine.stats.late, engine.stats.too_late) == (0, 0)


# ------------------------------------------------------------------------------ clock


def test_advance_to_fires_deadlines_at_or_before_t_only(examples: list[Audience]) -> None:
    engine = Engine(examples)
    assert engine.process(cart("c1", 0, "add")) == []
    assert engine.process(ev("c1", "Checkout Started", 0, rid="chk", value=9)) == []
    assert engine.advance_to(T0 + 60 * M - 1) == []
    at_60 = engine.advance_to(T0 + 60 * M)
    assert timeline(at_60) == {(CHECKOUT_ABANDON, "c1"): [(60 * M, "enter")]}
    assert engine.advance_to(T0 + 90 * M - 1) == []
    at_90 = engine.advance_to(T0 + 90 * M)
    assert timeline(at_90) == {(CART_ABANDON, "c1"): [(90 * M, "enter")]}
    # Going back does nothing; finish() defaults to the newest record (T0), already past.
    assert engine.advance_to(T0 + 30 * M) == []
    assert engine.finish() == []
    later = engine.finish(T0 + 8 * D)
    assert timeline(later) == {
        (CHECKOUT_ABANDON, "c1"): [(3 * D, "exit")],
        (CART_MED_INTENT, "c1"): [(3 * D, "enter"), (7 * D, "exit")],
        (CART_ABANDON, "c1"): [(7 * D, "exit")],
    }
    assert engine.finish(T0 + 8 * D) == []
    assert engine.finish() == []
    assert engine.stats.deltas == len(at_60) + len(at_90) + len(later)


def test_finish_twice_does_not_duplicate(examples: list[Audience]) -> None:
    engine = Engine(examples)
    for event in [cart("c1", 0), app("c1", 1 * M), app("c2", 2 * H)]:
        engine.process(event)
    first = engine.finish()
    assert first
    assert engine.finish() == []
    assert engine.finish(None) == []


def test_record_at_or_before_advance_to_becomes_a_correction(examples: list[Audience]) -> None:
    engine = Engine(examples)
    engine.process(cart("c1", 0))
    engine.advance_to(T0 + 2 * H)
    late = [
        *engine.process(ev("c1", "Order Completed", 1 * H, rid="o", order_id="o", total=1)),
        *engine.finish(),
    ]
    assert (engine.stats.late, engine.stats.too_late) == (0, 1)
    # Applied at the first instant still open, 2h + 1 ms: nothing is rewritten before it.
    got = timeline(late)
    assert got[(CART_ABANDON, "c1")] == [(2 * H + 1, "exit")]


def test_without_auto_advance_nothing_is_released_until_advance_to(
    examples: list[Audience],
) -> None:
    engine = Engine(examples, allowed_lateness_ms=0, auto_advance=False)
    for event in [app("c1", 0), cart("c1", 1 * M), app("c2", 10 * D), app("c1", 5 * M)]:
        assert engine.process(event) == []
    # No watermark movement, so a record far behind the newest is not a correction.
    assert (engine.stats.late, engine.stats.too_late) == (0, 0)
    released = engine.advance_to(T0 + 1 * H)
    assert timeline(released) == {(ACTIVE_APP, "c1"): [(0, "enter"), (15 * M, "exit")]}
    rest = engine.advance_to(T0 + 10 * D)
    got = timeline(rest)
    assert got[(CART_ABANDON, "c1")] == [(91 * M, "enter"), (7 * D + 1 * M, "exit")]
    assert got[(ACTIVE_APP, "c2")] == [(10 * D, "enter")]


# ------------------------------------------------------------------ seq and record ids


def test_seq_counts_per_audience_and_customer(examples: list[Audience]) -> None:
    opens = [app("c1", t) for t in (0, 20 * M, 40 * M, 45 * M)] + [app("c2", 1 * H)]
    deltas = run(Engine(examples), opens, T0 + 1 * D)

    def of(customer: str) -> list[tuple[int, str, int]]:
        return [
            (d.seq, d.op, d.at_ms - T0)
            for d in deltas
            if (d.audience, d.customer_id) == (ACTIVE_APP, customer)
        ]

    assert of("c1") == [
        (1, "enter", 0),
        (2, "exit", 10 * M),
        (3, "enter", 20 * M),
        (4, "exit", 30 * M),
        (5, "enter", 40 * M),
        (6, "exit", 55 * M),
    ]
    assert of("c2") == [(1, "enter", 1 * H), (2, "exit", 1 * H + 10 * M)]
    assert_well_formed(deltas)


def test_record_ids_of_deadline_and_order(examples: list[Audience]) -> None:
    deltas = run(
        Engine(examples),
        [
            cart("c1", 0, "add-1"),
            app("c1", 10 * M, "app-1"),
            ev("c1", "Order Completed", 2 * H, rid="ord-1", order_id="o", total=5),
        ],
        T0 + 3 * H,
    )
    by = {(d.audience, d.op): d for d in deltas if d.customer_id == "c1"}
    enter = by[(CART_ABANDON, "enter")]
    assert (enter.at_ms - T0, enter.record_ids) == (90 * M, ["add-1"])
    assert by[(CART_MED_INTENT, "enter")].record_ids == ["add-1"]
    exit_ = by[(CART_ABANDON, "exit")]
    assert (exit_.at_ms - T0, exit_.record_ids) == (2 * H, ["ord-1"])
    assert by[(ACTIVE_APP, "enter")].record_ids == ["app-1"]
    # An expiry deadline points at the record it was computed from.
    assert by[(ACTIVE_APP, "exit")].record_ids == ["app-1"]


def view(customer: str, at: int, rid: str, product: str = "p1") -> Event:
    return ev(customer, "Product Viewed", at, rid=rid, product_id=product)


def test_viewed_twice_cites_both_views_and_the_order_once(examples: list[Audience]) -> None:
    """The window count cites every view it counts, and the order that both the audience
    and its Winback reference read is cited once, only where its deadline is the change."""
    deltas = run(
        Engine(examples),
        [
            ev("c1", "Order Completed", 0, rid="ord-1", order_id="o", total=5),
            view("c1", 1 * H, "v-1"),
            view("c1", 2 * H, "v-other", product="p2"),
            view("c1", 3 * H, "v-2"),
            # c2 (arriving late, within the lateness): the second view is the change.
            view("c2", 3 * H - 5 * M, "w-1"),
            view("c2", 3 * H, "w-2"),
            ev("c2", "Order Completed", 4 * H, rid="ord-2", order_id="o", total=5),
        ],
        T0 + 10 * D,
    )
    deltas.sort(key=lambda d: (d.customer_id, d.at_ms))
    got = [
        (d.customer_id, d.op, d.at_ms - T0, d.record_ids)
        for d in deltas
        if d.audience == VIEWED_TWICE
    ]
    assert got == [
        # The order's 7 days pass while the views of p1 still count.
        ("c1", "enter", 7 * D, ["ord-1", "v-1", "v-2"]),
        # The first view leaves the window: the views are the reason, not the order.
        ("c1", "exit", 7 * D + 1 * H, ["v-1", "v-2"]),
        ("c2", "enter", 3 * H, ["w-1", "w-2"]),
        ("c2", "exit", 4 * H, ["ord-2"]),
    ]
    for d in deltas:
        assert len(d.record_ids) == len(set(d.record_ids)), d


def test_a_count_of_three_cites_all_three(tmp_path: Path) -> None:
    audiences = write_audiences(
        tmp_path,
        """
        name: ACT__ThreeCarts__1d
        version: 3
        owner: qa@example.com
        description: Added to cart three times in a day.
        entry:
          count: {event: Product Added, at_least: 3, within: 1d}
        """,
    )
    carts = [cart("c1", 0, "add-1"), cart("c1", 1 * H, "add-2"), cart("c1", 2 * H, "add-3")]
    # Then a cart at 5h (buffered: the clock stands at 3h) and a late one at 1h30 that
    # takes the place of the oldest in the full block, in time order with its id.
    late = [cart("c1", 5 * H, "add-4"), cart("c1", 90 * M, "add-late")]
    engine = Engine(audiences, allowed_lateness_ms=2 * H)
    deltas = run(engine, [*carts, *late], T0 + 2 * D)
    assert engine.stats.late == 1
    assert [(d.op, d.at_ms - T0, d.record_ids) for d in deltas] == [
        ("enter", 2 * H, ["add-1", "add-2", "add-3"]),
        ("exit", 1 * D + 90 * M, ["add-late", "add-3", "add-4"]),
    ]


def test_a_deadline_at_an_instant_of_other_records_cites_its_own_record(
    examples: list[Audience],
) -> None:
    """A cart's 90 minutes passing at the instant of an app open cites the cart, not the
    app open (which touched other audiences only)."""
    deltas = run(Engine(examples), [cart("c1", 0, "add-1"), app("c1", 90 * M, "app-1")])
    by = {(d.audience, d.op): d.record_ids for d in deltas}
    assert by[(CART_ABANDON, "enter")] == ["add-1"]
    assert by[(CART_MED_INTENT, "enter")] == ["add-1"]
    assert by[(ACTIVE_APP, "enter")] == ["app-1"]


def _decoded(line: dict[str, object], n: int) -> Event:
    event = decode_line(orjson.dumps(line), SourcePosition("t", 0, n))
    assert event is not None
    return event


def test_identifiers_from_identify_appear_on_later_deltas(examples: list[Audience]) -> None:
    identify = _decoded(
        {
            "type": "identify",
            "userId": "c1",
            "messageId": "id-1",
            "timestamp": "2026-01-01T00:05:00.000Z",
            "traits": {"email": "c1@example.com", "phone": "+15550100"},
        },
        2,
    )
    hook = _decoded(
        {
            "event_id": "w-1",
            "object_type": "email",
            "metric": "delivered",
            "timestamp": (T0 + 40 * M) // 1000,
            "data": {"customer_id": "c1", "identifiers": {"id": "c1", "cio_id": "cio-1"}},
        },
        3,
    )
    deltas = run(
        Engine(examples),
        [app("c1", 0, "app-0"), identify, hook, cart("c1", 1 * H, "add")],
        T0 + 4 * H,
    )
    got = {(d.audience, d.op): d.identifiers for d in deltas if d.customer_id == "c1"}
    assert got[(ACTIVE_APP, "enter")] == {}  # before the identify
    assert got[(ACTIVE_APP, "exit")] == {"email": "c1@example.com", "phone": "+15550100"}
    assert got[(CART_ABANDON, "enter")] == {
        "email": "c1@example.com",
        "phone": "+15550100",
        "cio_id": "cio-1",
    }


def test_returned_lists_belong_to_the_caller(examples: list[Audience]) -> None:
    engine = Engine(examples)
    got = engine.process(app("c1", 0))
    other = Engine(examples)
    empty = other.advance_to(T0 - 1)
    try:
        got += engine.finish(T0 + 1 * D)
        assert [d.op for d in got] == ["enter", "exit"]
        assert other.process(app("c9", 0)) == []
        empty.append(got[0])
        assert other.advance_to(T0 - 1) == []
    finally:
        # Undo the damage, or the shared list poisons every later test in this process.
        got.clear()
        empty.clear()


def test_identifiers_belong_to_each_delta(examples: list[Audience]) -> None:
    first = run(Engine(examples), [app("c1", 0)], T0 + 1 * D)
    first[0].identifiers["external_id"] = "c1"
    try:
        later = run(Engine(examples), [app("c2", 0)], T0 + 1 * D)
        assert all(d.identifiers == {} for d in later)
    finally:
        first[0].identifiers.pop("external_id", None)  # the shared dict, if it is shared


# ----------------------------------------------------- where filters, count with per

COUNT_YAML = """
audiences:
  - name: ACT__RepeatSku__30d
    version: 1
    owner: qa@example.com
    description: The same sku on two qualifying orders within 30 days.
    entry:
      count:
        event: Order Completed
        at_least: 2
        within: 30d
        per: "products[].sku"
        where:
          total: {gt: 20}
          channel: {in: [web, app]}
          coupon: {exists: true}
  - name: ACT__KitNoCoupon__1d
    version: 1
    owner: qa@example.com
    description: A starter kit bought without a coupon in the last day.
    entry:
      since_last:
        event: Order Completed
        less_than: 1d
        where:
          "products[].sku": starter-kit
          coupon: {exists: false}
"""


def _order(customer: str, at: int, skus: list[str], **props: Any) -> Event:
    products = [{"sku": s, "category": "c"} for s in skus]
    return ev(customer, "Order Completed", at, products=products, order_id="o", **props)


def test_count_per_path_with_where_filters(tmp_path: Path) -> None:
    audiences = write_audiences(tmp_path, COUNT_YAML)
    good = {"total": 25, "channel": "web", "coupon": "X"}
    events = [
        # c1: the qualifying orders share sku b (5d apart); the rest fail one filter each.
        _order("c1", 0, ["a", "b"], **good),
        _order("c1", 1 * D, ["a"], total=20, channel="web", coupon="X"),  # not > 20
        _order("c1", 2 * D, ["a"], total=30, channel="store", coupon="X"),  # not in
        _order("c1", 3 * D, ["a"], total=30, channel="app"),  # no coupon
        _order("c1", 4 * D, ["a"], total="30", channel="app", coupon="Y"),  # string total
        _order("c1", 5 * D, ["b"], total=21, channel="app", coupon="Y"),
        # c2: two qualifying orders, different skus.
        _order("c2", 0, ["a"], **good),
        _order("c2", 1 * D, ["b"], **good),
        # c3: one order listing the same sku twice is one record.
        _order("c3", 0, ["a", "a"], **good),
        # c4: the same sku 30 days apart: the first has left (t - 30d, t].
        _order("c4", 0, ["a"], **good),
        _order("c4", 30 * D, ["a"], **good),
        # c5: kits with and without a coupon.
        _order("c5", 0, ["starter-kit"], total=49, coupon="K"),
        _order("c5", 2 * D, ["x", "starter-kit"], total=49),
        _order("c5", 4 * D, ["x"], total=49),
    ]
    events.sort(key=lambda e: e.timestamp_ms)
    got = timeline(run(Engine(audiences), events, T0 + 80 * D))
    assert got.get(("ACT__RepeatSku__30d", "c1")) == [(5 * D, "enter"), (30 * D, "exit")]
    for customer in ("c2", "c3", "c4", "c5"):
        assert ("ACT__RepeatSku__30d", customer) not in got
    assert got.get(("ACT__KitNoCoupon__1d", "c5")) == [(2 * D, "enter"), (3 * D, "exit")]
    assert set(got) == {("ACT__RepeatSku__30d", "c1"), ("ACT__KitNoCoupon__1d", "c5")}


def test_count_where_comparisons_are_numeric_and_keep_bools_apart(tmp_path: Path) -> None:
    audiences = write_audiences(
        tmp_path,
        """
        name: ACT__BigOrders__7d
        version: 1
        owner: qa@example.com
        description: Two orders of at least 100 within 7 days, gift flag true.
        entry:
          count:
            event: Order Completed
            at_least: 2
            within: 7d
            where:
              total: {gte: 100}
              gift: true
        """,
    )
    events = [
        _order("c1", 0, ["a"], total=100, gift=True),
        _order("c1", 1 * H, ["a"], total=99.99, gift=True),  # below
        _order("c1", 2 * H, ["a"], total=250.5, gift=1),  # 1 is not true
        _order("c1", 3 * H, ["a"], total=True, gift=True),  # a bool is not a number
        _order("c1", 4 * H, ["a"], total=100.0, gift=True),
    ]
    got = timeline(run(Engine(audiences), events, T0 + 30 * D))
    assert got == {("ACT__BigOrders__7d", "c1"): [(4 * H, "enter"), (7 * D, "exit")]}
