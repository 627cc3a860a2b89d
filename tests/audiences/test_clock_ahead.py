"""A record stamped far ahead of when it was received does not move anyone else's time.

One customer's device clock set 8 hours ahead (inside the decoders' clock-skew bound)
used to close every other customer's instants 8 hours early: a customer who added to
cart and ordered 2 seconds later entered the cart-abandonment audience at once, and the
partition's other customers then got no delta for 8 hours. A record's time now moves the
clock at most the allowed lateness past when it was received (``receivedAt``, or the
Kafka record's timestamp); the record itself is applied at its own time.
"""

from __future__ import annotations

from streamsync.audiences.engine import Engine
from streamsync.audiences.loader import load_audiences
from streamsync.ingest.event import Event, SourcePosition
from streamsync.resources import project_path
from streamsync.runtime.task import Task

AUDIENCES = [a for a in load_audiences(project_path("examples", "audiences"))]
CART = "ACT__CartAbandon__90m"
T = 1_767_261_600_000  # 2026-01-01T10:00:00Z
MINUTE, HOUR = 60_000, 3_600_000


def _track(
    customer: str, name: str, at: int, received: int | None = None, offset: int = 0
) -> Event:
    return Event(
        customer,
        "track",
        name,
        at,
        f"{customer}-{name}-{at}",
        source=SourcePosition("a", 0, offset),
        received_ms=at if received is None else received,
    )


def _log() -> list[Event]:
    return [
        _track("a", "Product Added", T, offset=0),
        _track("b", "Page Viewed", T + 8 * HOUR, received=T + 1_000, offset=1),  # clock ahead
        _track("a", "Order Completed", T + 2_000, offset=2),
        _track("c", "Product Added", T + 3_000, offset=3),
        _track("d", "Application Opened", T + 100 * MINUTE, offset=4),
    ]


def test_a_record_far_ahead_does_not_move_the_clock_for_the_others() -> None:
    engine = Engine(AUDIENCES)
    deltas = [d for event in _log() for d in engine.process(event)]
    deltas += engine.finish(T + 100 * MINUTE)
    carts = [(d.customer_id, d.op, d.at_ms) for d in deltas if d.audience == CART]
    # a ordered 2 s after the cart: never a member; c's deadline fires at its time.
    assert carts == [("c", "enter", T + 3_000 + 90 * MINUTE)]
    assert engine.stats.ahead == 1
    assert engine.stats.too_late == 0  # nobody's record was made late by b's
    # b's record is still b's, at its own time: held until the clock gets there.
    assert any(e.customer_id == "b" for _, _, e in engine.buffered)


def test_the_task_clock_moves_only_to_when_the_record_was_received() -> None:
    task = Task(
        0,
        ["a"],
        AUDIENCES,
        allowed_lateness_ms=5 * MINUTE,
        dedup_horizon_ms=86_400_000,
        wall_clock=False,
        idle_grace_ms=500,
    )
    events = _log()
    for event in events[:2]:
        task.process(event)
    assert task.newest["a"] == T + 1_000 + 5 * MINUTE  # not T + 8 h
    got = []
    for event in events[2:]:
        got += task.process(event)
        got += task.advance(0)
    got += task.finish(T + 100 * MINUTE)
    assert [(d.customer_id, d.op) for d in got if d.audience == CART] == [("c", "enter")]


def test_without_a_received_time_the_record_time_is_all_there_is() -> None:
    engine = Engine(AUDIENCES)
    ahead = Event("b", "track", "Page Viewed", T + 8 * HOUR, "b1")
    engine.process(Event("a", "track", "Product Added", T, "a1"))
    deltas = engine.process(ahead)
    assert [(d.customer_id, d.op) for d in deltas if d.audience == CART] == [("a", "enter")]
    assert engine.stats.ahead == 0
