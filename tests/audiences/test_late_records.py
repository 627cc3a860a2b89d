"""Late records, as ../shared/audiences.md ("Live clock and late records") defines them.

The engine is driven the way a live task drives it: ``auto_advance`` off and the clock
moved with :meth:`Engine.advance_to`, so a record can arrive behind the clock. A record
behind it by at most the allowed lateness is applied at its own event time; transitions
it causes at instants already emitted come out at once, at the clock's instant, marked
``correction``. A record further behind is applied at the clock and counted as too late.
"""

from __future__ import annotations

import textwrap
from collections import defaultdict
from itertools import pairwise
from pathlib import Path

from hypothesis import HealthCheck, given, settings

from streamsync.audiences.definition import Audience
from streamsync.audiences.engine import Engine
from streamsync.audiences.loader import load_audiences
from streamsync.deltas.record import MembershipDelta
from streamsync.ingest.event import Event
from tests.audiences.cases import T0, M, S, ev, kit
from tests.audiences.oracle import AUDIENCES, dedup_and_sort, member, split_by_customer
from tests.audiences.strategies import event_logs

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples" / "audiences"
LATENESS = 5 * M


def cart_audience(tmp_path: Path, window: str) -> list[Audience]:
    path = tmp_path / "cart.yaml"
    path.write_text(
        textwrap.dedent(
            f"""\
            audiences:
              - name: ACT__Cart__{window}
                version: 1
                owner: retention@example.com
                description: Added to cart, no order for {window}.
                entry:
                  since_last: {{event: Product Added, at_least: {window}, less_than: 7d}}
                exit:
                  occurred_since_last: {{event: Order Completed, since: {{event: Product Added}}}}
            """
        ),
        "utf-8",
    )
    return load_audiences(path)


def live(audiences: list[Audience]) -> Engine:
    return Engine(audiences, allowed_lateness_ms=LATENESS, auto_advance=False)


def ops(deltas: list[MembershipDelta]) -> list[tuple[int, str, bool]]:
    return [(d.at_ms - T0, d.op, d.correction) for d in deltas]


def test_a_cart_30s_late_in_a_60s_window_enters_as_if_on_time(tmp_path: Path) -> None:
    engine = live(cart_audience(tmp_path, "60s"))
    assert engine.advance_to(T0 + 30 * S) == []  # the clock is past the cart already
    assert engine.process(ev("c1", "Product Added", 0, rid="cart")) == []
    out = engine.advance_to(T0 + 59 * S)
    out += engine.advance_to(T0 + 61 * S)
    assert ops(out) == [(60 * S, "enter", False)]
    assert out[0].record_ids == ["cart"]
    assert (engine.stats.late, engine.stats.too_late) == (1, 0)


def test_a_cart_2m_late_in_a_10s_window_enters_at_once_as_a_correction(tmp_path: Path) -> None:
    engine = live(cart_audience(tmp_path, "10s"))
    engine.advance_to(T0 + 2 * M)
    engine.process(ev("c1", "Product Added", 0, rid="cart"))
    out = engine.advance_to(T0 + 2 * M + 1)
    # Applied at the clock's instant (the first one still open), not at cart + 10 s.
    assert ops(out) == [(2 * M + 1, "enter", True)]
    assert out[0].record_ids == ["cart"]
    # The window still runs from the cart's own time: it expires 7 days after it.
    more = engine.advance_to(T0 + 7 * 24 * 60 * M)
    assert ops(more) == [(7 * 24 * 60 * M, "exit", False)]


def test_an_order_after_the_enter_it_should_have_prevented_exits_as_a_correction(
    tmp_path: Path,
) -> None:
    """The spec's example: a 90-minute cart at 10:00 enters at 11:30; the order at 11:29
    arrives at 11:31, after the enter went out, and exits at 11:31 as a correction."""
    engine = live(load_audiences(EXAMPLES))
    engine.process(ev("c1", "Product Added", 0, rid="cart"))
    entered = engine.advance_to(T0 + 91 * M)
    assert ("ACT__CartAbandon__90m", 90 * M, "enter", False) in [
        (d.audience, d.at_ms - T0, d.op, d.correction) for d in entered
    ]
    engine.process(ev("c1", "Order Completed", 89 * M, rid="order", order_id="o1", total=5))
    out = engine.advance_to(T0 + 91 * M + 1)
    cart = [d for d in out if d.audience == "ACT__CartAbandon__90m"]
    assert ops(cart) == [(91 * M + 1, "exit", True)]
    assert cart[0].record_ids == ["order"]
    # The purchase window runs from the order's own time: 7 days after 11:29.
    purchasers = [d for d in out if d.audience == "SUP__RecentPurchasers__7d"]
    assert ops(purchasers) == [(91 * M + 1, "enter", True)]
    later = engine.advance_to(T0 + 89 * M + 7 * 24 * 60 * M)
    assert [(d.audience, d.at_ms - T0, d.correction) for d in later] == [
        ("SUP__RecentPurchasers__7d", 89 * M + 7 * 24 * 60 * M, False)
    ]


def test_a_record_later_than_the_lateness_is_applied_at_the_clock(tmp_path: Path) -> None:
    engine = live(cart_audience(tmp_path, "10s"))
    engine.advance_to(T0 + 10 * M)
    engine.process(ev("c1", "Product Added", 0, rid="cart"))
    out = engine.advance_to(T0 + 10 * M + 1)
    out += engine.advance_to(T0 + 10 * M + 11 * S)
    # Too late: as if the cart had happened at the clock's instant (the first one open).
    assert ops(out) == [(10 * M + 1 + 10 * S, "enter", False)]
    assert (engine.stats.late, engine.stats.too_late) == (0, 1)


def test_an_older_cart_arriving_late_does_not_replace_the_newer_one(tmp_path: Path) -> None:
    engine = live(cart_audience(tmp_path, "60s"))
    engine.process(ev("c1", "Product Added", 2 * M, rid="new"))
    engine.advance_to(T0 + 2 * M + 10 * S)
    engine.process(ev("c1", "Product Added", 0, rid="old"))
    out = engine.advance_to(T0 + 4 * M)
    assert ops(out) == [(3 * M, "enter", False)]
    assert out[0].record_ids == ["new"]


def test_a_late_starter_kit_order_starts_its_sticky_period_at_its_own_time() -> None:
    """``happened`` holds only at its record's instant; a record that arrives late is
    applied after that instant was emitted, so it holds at the instant it is applied,
    and the sticky period it starts runs from the order's own time (30 days from the
    order, not from its arrival)."""
    kit_audience = [a for a in load_audiences(EXAMPLES) if a.name.startswith("ACT__StarterKit")]
    engine = live(kit_audience)
    engine.advance_to(T0 + 2 * M)
    late = kit("c1", 0)  # the clock is 2 minutes past it
    engine.process(late)
    out = engine.advance_to(T0 + 2 * M + 1)
    assert ops(out) == [(2 * M + 1, "enter", True)]
    day = 24 * 60 * M
    assert engine.advance_to(T0 + 30 * day - 1) == []
    assert ops(engine.advance_to(T0 + 30 * day)) == [(30 * day, "exit", False)]


def test_an_order_in_time_is_not_taken_for_a_late_one_by_a_later_late_record() -> None:
    kit_audience = [a for a in load_audiences(EXAMPLES) if a.name.startswith("ACT__StarterKit")]
    engine = live(kit_audience)
    engine.process(ev("c1", "Order Completed", 0, rid="plain", total=5, products=[]))
    engine.advance_to(T0 + 2 * M)
    engine.process(ev("c1", "Product Viewed", M, rid="late-view", product_id="p"))
    assert engine.advance_to(T0 + 2 * M + 1) == []


def _final_members(events: list[Event], until_ms: int) -> set[tuple[str, str]]:
    """(audience, customer) pairs the oracle says are members at ``until_ms``."""
    return {
        (audience, customer)
        for customer, log in split_by_customer(dedup_and_sort(events)).items()
        for audience in AUDIENCES
        if member(audience, log, until_ms)
    }


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(event_logs(lateness_ms=2 * LATENESS))
def test_after_late_records_membership_is_what_the_records_give_in_time_order(
    generated: tuple[list[Event], int],
) -> None:
    """Records up to twice the lateness out of order (so some arrive behind the clock):
    each customer's deltas still alternate enter/exit with ``seq`` 1, 2, ..., and once
    everything has arrived membership is the oracle's over all the records."""
    events, until_ms = generated
    engine = Engine(load_audiences(EXAMPLES), allowed_lateness_ms=LATENESS)
    deltas: list[MembershipDelta] = []
    for event in events:
        deltas.extend(engine.process(event))
    deltas.extend(engine.finish(until_ms))
    assert engine.stats.too_late == 0
    state: dict[tuple[str, str], list[MembershipDelta]] = defaultdict(list)
    for delta in deltas:
        state[(delta.audience, delta.customer_id)].append(delta)
    for key, changes in state.items():
        assert [d.seq for d in changes] == list(range(1, len(changes) + 1)), key
        assert [d.op for d in changes] == ["enter", "exit"] * (len(changes) // 2) + (
            ["enter"] if len(changes) % 2 else []
        ), key
        assert all(a.at_ms <= b.at_ms for a, b in pairwise(changes)), key
    members = {key for key, changes in state.items() if changes[-1].op == "enter"}
    assert {k for k in members if k[0] in AUDIENCES} == _final_members(events, until_ms)
    if engine.stats.late == 0:
        assert not any(d.correction for d in deltas)
