"""Changed definitions applied to engine state: the net difference, checked against
replay of each definition set (:mod:`streamsync.audiences.migration`).

The example audiences are evaluated over a generated log; then one window is
shortened, a threshold lowered, a count cap and a per-product window cut, one audience
removed, two added (one over facts already kept, one needing history) and a description
edited. Converting every stored customer must give exactly the final membership that
replay of the new definitions gives, emit exactly the difference from the old
definitions' final membership (``seq`` continuing), and go on from there as if the
new definitions had been evaluated from the start.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings

from streamsync.audiences.compiler import MEMBERS, Customer, compile_audiences
from streamsync.audiences.definition import STORED, Audience
from streamsync.audiences.engine import Engine
from streamsync.audiences.loader import load_audiences
from streamsync.audiences.migration import (
    Migration,
    audience_fingerprints,
    definitions_record,
    stored_definitions,
)
from streamsync.deltas.record import ENTER, EXIT
from streamsync.ingest.event import Event
from tests.audiences.oracle import DAY, HOUR, MINUTE
from tests.audiences.strategies import event_logs

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "audiences"
OLD = load_audiences(EXAMPLES)


def _edit(name: str, version: int | None = None, **changes: Any) -> Audience:
    (audience,) = [a for a in OLD if a.name == name]
    data = audience.model_dump(by_alias=True, exclude_unset=True)
    data.update(changes)
    if version is not None:
        data["version"] = version
    return Audience.model_validate(data, context=STORED)


def _entry(name: str) -> dict[str, Any]:
    (audience,) = [a for a in OLD if a.name == name]
    entry: dict[str, Any] = audience.entry.model_dump(by_alias=True, exclude_unset=True)
    return entry


def _new_definitions() -> list[Audience]:
    cart = _entry("ACT__CartAbandon__90m")
    cart["since_last"]["at_least"] = 60 * MINUTE
    winback = _entry("ACT__Winback__60to120d")
    winback["all"][1]["count"]["at_least"] = 1
    viewed = _entry("ACT__ViewedTwiceNoPurchase__7d")
    viewed["all"][0]["count"]["within"] = 3 * DAY
    ltv = _entry("SUP__VIP__LTV500")
    ltv["sum"]["greater_than"] = 300
    edited = {
        "ACT__CartAbandon__90m": _edit("ACT__CartAbandon__90m", 2, entry=cart),
        "ACT__Winback__60to120d": _edit("ACT__Winback__60to120d", 2, entry=winback),
        "ACT__ViewedTwiceNoPurchase__7d": _edit("ACT__ViewedTwiceNoPurchase__7d", entry=viewed),
        "SUP__VIP__LTV500": _edit("SUP__VIP__LTV500", 3, entry=ltv),
        "SUP__SubscriptionActive": _edit("SUP__SubscriptionActive", description="Edited."),
    }
    kept = [edited.get(a.name, a) for a in OLD if a.name != "ACT__ActiveApp__10m"]
    added = [
        Audience.model_validate(
            {
                "name": "ACT__Carted__1h",
                "version": 1,
                "owner": "o",
                "description": "Added to cart in the last hour.",
                "entry": {"since_last": {"event": "Product Added", "less_than": HOUR}},
            },
            context=STORED,
        ),
        Audience.model_validate(
            {
                "name": "ACT__ViewedOnce__1d",
                "version": 1,
                "owner": "o",
                "description": "Viewed a product in the last day: cut from the 7-day table.",
                "entry": {
                    "count": {
                        "event": "Product Viewed",
                        "at_least": 1,
                        "within": DAY,
                        "per": "product_id",
                    }
                },
            },
            context=STORED,
        ),
        Audience.model_validate(
            {
                "name": "ACT__ThreeCarts__1d",
                "version": 1,
                "owner": "o",
                "description": "Three carts in a day: a fact no old audience kept.",
                "entry": {"count": {"event": "Product Added", "at_least": 2, "within": DAY}},
            },
            context=STORED,
        ),
    ]
    return kept + added


NEW = _new_definitions()
NEW_PROGRAM = compile_audiences(NEW)


def _members(engine: Engine) -> set[tuple[str, str]]:
    return {(name, cid) for cid in engine.customers for name in engine.members(cid)}


def _members_of(
    customers: dict[str, Customer], audiences: Sequence[Audience]
) -> set[tuple[str, str]]:
    names = [a.name for a in compile_audiences(audiences).audiences]
    return {
        (name, cid)
        for cid, c in customers.items()
        for i, name in enumerate(names)
        if c[MEMBERS] >> i & 1
    }


def _run(audiences: Sequence[Audience], events: list[Event], until: int) -> Engine:
    engine = Engine(audiences)
    for event in events:
        engine.process(copy.deepcopy(event))
    engine.finish(until)
    return engine


def _history(migration: Migration, events: list[Event]) -> dict[str, Customer]:
    """The facts a migration cannot take from state, rebuilt from the records."""
    updates = migration.history_updates()
    out: dict[str, Customer] = {}
    seen: set[str] = set()
    for event in events:
        if event.record_id is not None:
            if event.record_id in seen:
                continue
            seen.add(event.record_id)
        for kind, pred, update in updates.get(event.name, ()):
            if kind == event.kind and (pred is None or pred(event)):
                c = out.get(event.customer_id)
                if c is None:
                    c = out[event.customer_id] = migration.new.new_customer(event.customer_id)
                update(c, event)
    return out


def test_the_plan_names_what_changed() -> None:
    old = compile_audiences(OLD)
    migration = Migration(old, NEW_PROGRAM)
    kinds = {name: change.kind for name, change in migration.changes.items()}
    assert kinds["ACT__CartAbandon__90m"] == "changed"
    assert kinds["ACT__ActiveApp__10m"] == "removed"
    assert kinds["ACT__Carted__1h"] == "added"
    assert kinds["SUP__SubscriptionActive"] == "unchanged"  # a description edit
    assert kinds["SUP__RecentPurchasers__7d"] == "unchanged"
    # ViewedTwice references Winback, which changed: it is rebuilt too.
    assert kinds["ACT__ViewedTwiceNoPurchase__7d"] == "changed"
    exact = {name for name, change in migration.changes.items() if change.exact_from_state}
    assert "ACT__CartAbandon__90m" in exact
    assert "SUP__VIP__LTV500" in exact
    assert "ACT__Winback__60to120d" in exact
    assert "ACT__ViewedOnce__1d" in exact
    assert "ACT__ThreeCarts__1d" not in exact
    assert migration.changes["ACT__ThreeCarts__1d"].history


def test_fingerprints_ignore_owner_description_destinations_and_version() -> None:
    edited = [a.model_copy(update={"owner": "x", "description": "y", "version": 9}) for a in OLD]
    assert audience_fingerprints(edited) == audience_fingerprints(OLD)


def test_stored_definitions_compile_to_the_same_layout() -> None:
    layout, again = stored_definitions(definitions_record(OLD, 7))
    assert layout == 7
    assert compile_audiences(again).facts.keys() == compile_audiences(OLD).facts.keys()
    assert audience_fingerprints(again) == audience_fingerprints(OLD)


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(log=event_logs(max_customers=3, max_events=14))
def test_migration_gives_the_new_definitions_membership(log: tuple[list[Event], int]) -> None:
    events, until = log
    old = _run(OLD, events, until)
    expected = _members(_run(NEW, events, until))
    migration = Migration(old.program, NEW_PROGRAM)
    history = _history(migration, events)
    before = _members(old)
    old_seq = {
        (a.name, cid): c[old.program.seq0 + i]
        for cid, c in old.customers.items()
        for i, a in enumerate(old.program.audiences)
    }
    converted: dict[str, Customer] = {}
    emitted: set[tuple[str, str, str]] = set()
    for cid, c in old.customers.items():
        new_c, deltas = migration.convert(copy.deepcopy(c), until, history.get(cid))
        converted[cid] = new_c
        for delta in deltas:
            assert delta.definition_change and delta.at_ms == until
            assert delta.seq == old_seq.get((delta.audience, cid), 0) + 1
            emitted.add((delta.audience, cid, delta.op))
    assert _members_of(converted, NEW) == expected
    removed = {"ACT__ActiveApp__10m"}
    kept_before = {m for m in before if m[0] not in removed}
    want = {(a, c, ENTER) for a, c in expected - kept_before}
    want |= {(a, c, EXIT) for a, c in kept_before - expected}
    want |= {(a, c, EXIT) for a, c in before if a in removed}
    assert emitted == want
    unchanged = {n for n, ch in migration.changes.items() if ch.kind == "unchanged"}
    assert not {d for d in emitted if d[0] in unchanged}


@settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
@given(log=event_logs(max_customers=3, max_events=14))
def test_after_the_migration_evaluation_goes_on_as_if_new_from_the_start(
    log: tuple[list[Event], int],
) -> None:
    events, until = log
    times = sorted(e.timestamp_ms for e in events)
    cut = times[len(times) // 2]
    first = [e for e in events if e.timestamp_ms <= cut]
    second = [e for e in events if e.timestamp_ms > cut]
    old = _run(OLD, first, cut)
    migration = Migration(old.program, NEW_PROGRAM)
    history = _history(migration, first)
    customers = {
        cid: migration.convert(copy.deepcopy(c), cut, history.get(cid))[0]
        for cid, c in old.customers.items()
    }
    engine = Engine(NEW)
    engine.restore(old.clock(), customers, [], set(old._seen) | set(old._seen_old))
    for event in second:
        engine.process(copy.deepcopy(event))
    engine.finish(until)
    assert _members(engine) == _members(_run(NEW, first + second, until))
