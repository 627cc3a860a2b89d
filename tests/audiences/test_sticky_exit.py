"""``sticky_for`` together with an ``exit``: the two readings of ``exit_during_sticky``.

``leave``: an exit that holds ends the membership even within the sticky period, and the
period is over (it does not resume when the exit stops holding). ``stay``: the member stays
for the whole period; the exit only keeps a customer from entering (what ``sticky_for``
with an exit always did). Hand-worked cases first, then the engine against the oracle's
brute-force reading of the same two audiences on generated logs.
"""

from __future__ import annotations

import copy
import textwrap
from collections import defaultdict
from pathlib import Path

import pytest
from hypothesis import given, settings

from streamsync.audiences.compiler import compile_audiences
from streamsync.audiences.definition import Audience
from streamsync.audiences.engine import Engine
from streamsync.audiences.loader import load_audiences
from streamsync.audiences.migration import definitions_record, stored_definitions
from streamsync.deltas.record import MembershipDelta
from streamsync.ingest.event import Event
from streamsync.state.codec import fingerprint
from tests.audiences.cases import T0, D, H, M, ev
from tests.audiences.oracle import (
    STICKY_WITH_EXIT,
    oracle_sticky_with_exit,
)
from tests.audiences.strategies import event_logs

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples" / "audiences"
LATENESS = 5 * M

LEAVES = "ACT__Bought__ExitLeaves__3d"
STAYS = "ACT__Bought__ExitStays__3d"


def _audience(name: str, choice: str, exit_yaml: str) -> str:
    return f"""
  - name: {name}
    version: 1
    owner: qa@example.com
    description: Bought something; sticky for 3 days, exit {choice}.
    entry: {{happened: {{event: Order Completed}}}}
    exit: {exit_yaml}
    sticky_for: 3d
    exit_during_sticky: {choice}
"""


def _load(tmp_path: Path, exit_yaml: str) -> list[Audience]:
    text = (
        "audiences:" + _audience(LEAVES, "leave", exit_yaml) + _audience(STAYS, "stay", exit_yaml)
    )
    path = tmp_path / "sticky.yaml"
    path.write_text(textwrap.dedent(text), "utf-8")
    return load_audiences(path)


def _timeline(audiences: list[Audience], events: list[Event]) -> dict[str, list[tuple[int, str]]]:
    """audience -> [(offset from T0, op), ...] of customer ``c`` after ``finish``."""
    engine = Engine(audiences, allowed_lateness_ms=LATENESS)
    deltas: list[MembershipDelta] = []
    for event in events:
        deltas.extend(engine.process(event))
    deltas.extend(engine.finish(T0 + 30 * D))
    out: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for d in deltas:
        out[d.audience].append((d.at_ms - T0, d.op))
    return dict(out)


REFUND = "{occurred_since_last: {event: Order Refunded, since: {event: Order Completed}}}"
APP_OPEN = "{since_last: {event: Application Opened, less_than: 10m}}"
ABANDONED = "{since_last: {event: Product Added, at_least: 90m, less_than: 7d}}"


def test_an_exit_by_record_ends_the_period_only_when_the_exit_leaves(tmp_path: Path) -> None:
    got = _timeline(
        _load(tmp_path, REFUND),
        [ev("c", "Order Completed", 0), ev("c", "Order Refunded", 1 * D)],
    )
    assert got == {LEAVES: [(0, "enter"), (1 * D, "exit")], STAYS: [(0, "enter"), (3 * D, "exit")]}


def test_an_ended_period_does_not_resume_when_the_exit_stops_holding(tmp_path: Path) -> None:
    # The app open holds the exit for 10 minutes; after them the period stays ended.
    got = _timeline(
        _load(tmp_path, APP_OPEN),
        [ev("c", "Order Completed", 0), ev("c", "Application Opened", 1 * H)],
    )
    assert got == {LEAVES: [(0, "enter"), (1 * H, "exit")], STAYS: [(0, "enter"), (3 * D, "exit")]}


def test_an_exit_that_starts_at_a_deadline_ends_the_period_then(tmp_path: Path) -> None:
    # The cart becomes abandoned at 1h + 90m with no record at that instant.
    got = _timeline(
        _load(tmp_path, ABANDONED),
        [ev("c", "Order Completed", 0), ev("c", "Product Added", 1 * H)],
    )
    assert got == {
        LEAVES: [(0, "enter"), (1 * H + 90 * M, "exit")],
        STAYS: [(0, "enter"), (3 * D, "exit")],
    }


def test_nobody_enters_while_the_exit_holds(tmp_path: Path) -> None:
    got = _timeline(
        _load(tmp_path, APP_OPEN),
        [
            ev("c", "Application Opened", 0),
            ev("c", "Order Completed", 5 * M),  # the exit holds: no entry
            ev("c", "Order Completed", 1 * H),  # it no longer does
        ],
    )
    expected = [(1 * H, "enter"), (1 * H + 3 * D, "exit")]
    assert got == {LEAVES: expected, STAYS: expected}


def test_after_an_exit_the_next_entry_starts_a_new_period(tmp_path: Path) -> None:
    got = _timeline(
        _load(tmp_path, REFUND),
        [
            ev("c", "Order Completed", 0),
            ev("c", "Order Refunded", 1 * H),
            ev("c", "Order Completed", 2 * H),  # the refund is before it: the exit is over
        ],
    )
    assert got == {
        LEAVES: [(0, "enter"), (1 * H, "exit"), (2 * H, "enter"), (2 * H + 3 * D, "exit")],
        # Staying, the second order falls inside the first period and does not extend it.
        STAYS: [(0, "enter"), (3 * D, "exit")],
    }


def test_a_period_ending_while_the_exit_holds_ends_the_membership(tmp_path: Path) -> None:
    got = _timeline(
        _load(tmp_path, REFUND),
        [
            ev("c", "Order Completed", 0),
            ev("c", "Order Refunded", 1 * D),
            ev("c", "Order Completed", 3 * D),  # at the period's end, and no refund since
        ],
    )
    assert got == {
        LEAVES: [(0, "enter"), (1 * D, "exit"), (3 * D, "enter"), (6 * D, "exit")],
        # Staying, the period ends at 3d where a new order starts the next one at once.
        STAYS: [(0, "enter"), (6 * D, "exit")],
    }


def test_sticky_with_an_exit_and_no_choice_does_not_compile(tmp_path: Path) -> None:
    # The loader refuses it (tests/audiences/test_loader.py); an audience built in code
    # without the choice is refused by the compiler too, rather than given one.
    (leaves, _) = _load(tmp_path, REFUND)
    undecided = leaves.model_copy(update={"exit_during_sticky": None})
    with pytest.raises(ValueError, match="exit_during_sticky"):
        compile_audiences([undecided])


def test_the_state_fingerprint_changes_only_with_what_is_evaluated(tmp_path: Path) -> None:
    leaves, stays = _load(tmp_path, REFUND)
    same = stays.model_copy(update={"name": leaves.name})
    assert fingerprint(compile_audiences([leaves])) != fingerprint(compile_audiences([same]))
    # The choice survives being stored with the state and read back (a definition
    # change compiles the stored definitions again).
    for audience in (leaves, stays):
        _, (again,) = stored_definitions(definitions_record([audience], 1))
        assert again.exit_during_sticky == audience.exit_during_sticky
    # Audiences that do not use it dump as they did before it existed.
    for audience in load_audiences(EXAMPLES):
        assert "exit_during_sticky" not in audience.model_dump_json()


# --------------------------------------------------------------------------- vs the oracle

ORACLE_YAML = """
audiences:
  - name: ACT__StarterKit__ExitLeaves__30d
    version: 1
    owner: qa@example.com
    description: Starter kit, 30 days, unless the customer opens the app or abandons a cart.
    entry:
      happened: {event: Order Completed, where: {"products[].sku": starter-kit}}
    exit:
      any: [{in_audience: ACT__ActiveApp__10m}, {in_audience: ACT__CartAbandon__90m}]
    sticky_for: 30d
    exit_during_sticky: leave
  - name: ACT__StarterKit__ExitStays__30d
    version: 1
    owner: qa@example.com
    description: Starter kit, 30 days; engaged customers do not enter.
    entry:
      happened: {event: Order Completed, where: {"products[].sku": starter-kit}}
    exit:
      any: [{in_audience: ACT__ActiveApp__10m}, {in_audience: ACT__CartAbandon__90m}]
    sticky_for: 30d
    exit_during_sticky: stay
"""


@pytest.fixture(scope="module")
def oracle_audiences(tmp_path_factory: pytest.TempPathFactory) -> list[Audience]:
    # One directory, so that the references to the canonical audiences resolve.
    folder = tmp_path_factory.mktemp("sticky")
    for example in EXAMPLES.glob("*.yaml"):
        (folder / example.name).write_bytes(example.read_bytes())
    (folder / "sticky.yaml").write_text(ORACLE_YAML, "utf-8")
    audiences = load_audiences(folder)
    assert set(STICKY_WITH_EXIT) <= {a.name for a in audiences}
    return audiences


def _grouped(
    audiences: list[Audience], events: list[Event], until_ms: int
) -> dict[tuple[str, str], list[tuple[int, str]]]:
    engine = Engine(audiences, allowed_lateness_ms=LATENESS)
    deltas: list[MembershipDelta] = []
    for event in events:
        deltas.extend(engine.process(copy.deepcopy(event)))
    deltas.extend(engine.finish(until_ms))
    grouped: dict[tuple[str, str], list[tuple[int, str]]] = defaultdict(list)
    for d in deltas:
        if d.audience in STICKY_WITH_EXIT:
            grouped[(d.audience, d.customer_id)].append((d.at_ms, d.op))
    return dict(grouped)


def test_the_oracle_cases_are_not_vacuous(oracle_audiences: list[Audience]) -> None:
    kit = {"products": [{"sku": "starter-kit", "category": "c"}], "order_id": "o", "total": 1}
    events = [
        ev("a", "Order Completed", 0, **kit),
        ev("b", "Order Completed", 0, **kit),
        ev("a", "Application Opened", 2 * D),
    ]
    until = T0 + 60 * D
    expected = oracle_sticky_with_exit(events, until)
    assert expected == {
        ("ACT__StarterKit__ExitLeaves__30d", "a"): [(T0, "enter"), (T0 + 2 * D, "exit")],
        ("ACT__StarterKit__ExitStays__30d", "a"): [(T0, "enter"), (T0 + 30 * D, "exit")],
        ("ACT__StarterKit__ExitLeaves__30d", "b"): [(T0, "enter"), (T0 + 30 * D, "exit")],
        ("ACT__StarterKit__ExitStays__30d", "b"): [(T0, "enter"), (T0 + 30 * D, "exit")],
    }
    assert _grouped(oracle_audiences, events, until) == expected


@settings(max_examples=200, deadline=None)
@given(event_logs(lateness_ms=LATENESS))
def test_engine_matches_oracle_on_generated_logs(
    oracle_audiences: list[Audience], generated: tuple[list[Event], int]
) -> None:
    events, until_ms = generated
    assert _grouped(oracle_audiences, events, until_ms) == oracle_sticky_with_exit(events, until_ms)


@settings(max_examples=40, deadline=None)
@given(event_logs(max_customers=1, max_events=40, lateness_ms=LATENESS))
def test_engine_matches_oracle_on_long_histories(
    oracle_audiences: list[Audience], generated: tuple[list[Event], int]
) -> None:
    events, until_ms = generated
    assert _grouped(oracle_audiences, events, until_ms) == oracle_sticky_with_exit(events, until_ms)
