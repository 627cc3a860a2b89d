"""The audience engine (and the ``replay`` CLI) against the independent oracle.

The engine is fed records in arrival order, then ``finish(until_ms)``; its deltas grouped
by (audience, customer) must be exactly the oracle's transitions, with ``seq`` 1, 2, 3, ...
"""

from __future__ import annotations

import copy
import json
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings

from streamsync.audiences.engine import Engine
from streamsync.audiences.loader import load_audiences
from streamsync.cli import main as cli_main
from streamsync.deltas.record import MembershipDelta
from streamsync.ingest.event import Event
from tests.audiences.cases import CASES, Case
from tests.audiences.oracle import (
    AUDIENCES,
    decode_record,
    encode_record,
    iso_to_ms,
    ms_to_iso,
    oracle_transitions,
)
from tests.audiences.strategies import event_logs

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples" / "audiences"
LATENESS_MS = 300_000

Grouped = dict[tuple[str, str], list[tuple[int, str]]]


def run_engine(events: Iterable[Event], until_ms: int) -> list[MembershipDelta]:
    audiences = load_audiences(EXAMPLES)
    assert set(AUDIENCES) <= {a.name for a in audiences}
    engine = Engine(audiences, allowed_lateness_ms=LATENESS_MS)
    deltas: list[MembershipDelta] = []
    for event in events:
        # The engine must not depend on (or mutate) the caller's objects.
        deltas.extend(engine.process(copy.deepcopy(event)))
    deltas.extend(engine.finish(until_ms))
    return deltas


def group(deltas: Sequence[MembershipDelta]) -> Grouped:
    """Canonical audiences' deltas by (audience, customer), in emission order; checks seq
    and that no delta cites a record twice."""
    grouped: Grouped = defaultdict(list)
    seqs: dict[tuple[str, str], list[int]] = defaultdict(list)
    for delta in deltas:
        if delta.audience not in AUDIENCES:
            continue
        key = (delta.audience, delta.customer_id)
        grouped[key].append((delta.at_ms, delta.op))
        # Every qualifying record is cited once.
        assert len(set(delta.record_ids)) == len(delta.record_ids), delta
        seqs[key].append(delta.seq)
    for key, numbers in seqs.items():
        assert numbers == list(range(1, len(numbers) + 1)), (key, numbers)
    return dict(grouped)


def assert_engine_matches_oracle(events: Sequence[Event], until_ms: int) -> Grouped:
    got = group(run_engine(events, until_ms))
    assert got == oracle_transitions(events, until_ms)
    return got


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_engine_matches_oracle_on_case(case: Case) -> None:
    got = assert_engine_matches_oracle(case.events, case.until_ms)
    for key, expected in case.expected.items():
        assert got.get(key, []) == expected, key


@settings(max_examples=300, deadline=None)
@given(event_logs(lateness_ms=LATENESS_MS))
def test_engine_matches_oracle_on_generated_logs(generated: tuple[list[Event], int]) -> None:
    events, until_ms = generated
    assert_engine_matches_oracle(events, until_ms)


def _delta_keys(deltas: Iterable[MembershipDelta]) -> list[tuple[str, str, int, str, int]]:
    return sorted((d.audience, d.customer_id, d.seq, d.op, d.at_ms) for d in deltas)


@settings(max_examples=60, deadline=None)
@given(event_logs(max_customers=1, max_events=40, lateness_ms=LATENESS_MS))
def test_engine_matches_oracle_on_long_histories(generated: tuple[list[Event], int]) -> None:
    """One customer, long logs: several products in one window, windows that empty and
    refill, repeated orders and tickets, so compact state is pruned and reused."""
    events, until_ms = generated
    assert_engine_matches_oracle(events, until_ms)


@settings(max_examples=100, deadline=None)
@given(event_logs(lateness_ms=LATENESS_MS))
def test_sorted_and_late_arrival_give_identical_deltas(
    generated: tuple[list[Event], int],
) -> None:
    events, until_ms = generated
    # Stable sort: records with equal timestamps keep their arrival order (= log order),
    # and a re-send still arrives after its original.
    in_order = sorted(events, key=lambda e: e.timestamp_ms)
    assert _delta_keys(run_engine(in_order, until_ms)) == _delta_keys(run_engine(events, until_ms))


def _no_customer_records() -> list[dict[str, Any]]:
    return [
        {
            "type": "track",
            "anonymousId": "anon-1",
            "event": "Order Completed",
            "properties": {"order_id": "o-anon", "total": 900},
            "timestamp": "2026-01-01T00:00:00.000Z",
            "messageId": "anon-m1",
        },
        {
            "event_id": "anon-w1",
            "object_type": "email",
            "metric": "sent",
            "timestamp": 1767225600,
            "data": {"customer_id": "", "identifiers": {"id": None}},
        },
    ]


def _policy_records() -> list[dict[str, Any]]:
    """Records the identity, id and time policies key or complete (README "Bad input")."""
    return [
        {  # a deleted person: blank customer_id, keyed by identifiers.id
            "event_id": "del-w1",
            "object_type": "email",
            "metric": "sent",
            "timestamp": 1767225600,
            "data": {"customer_id": "", "identifiers": {"id": "deleted-1"}},
        },
        {  # an email workspace: identifiers.id null, keyed by email
            "event_id": "email-w1",
            "object_type": "email",
            "metric": "sent",
            "timestamp": 1767225600,
            "data": {"identifiers": {"id": None, "email": "someone@example.com"}},
        },
        {  # no messageId: an id derived from its content
            "type": "track",
            "userId": "no-id",
            "event": "Order Completed",
            "properties": {"order_id": "o-x", "total": 900},
            "timestamp": "2026-01-01T00:00:00.000Z",
        },
    ]


def _replay(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], raws: Sequence[dict[str, Any]], until: int
) -> Grouped:
    path = tmp_path / "events.jsonl"
    path.write_text("".join(json.dumps(raw) + "\n" for raw in raws), encoding="utf-8")
    capsys.readouterr()
    rc = cli_main(
        ["replay", "--audiences", str(EXAMPLES), "--events", str(path), "--until", ms_to_iso(until)]
    )
    out = capsys.readouterr().out
    assert rc == 0
    grouped: Grouped = defaultdict(list)
    for line in out.splitlines():
        if not line.lstrip().startswith("{"):
            continue  # tolerate a human summary; deltas are the JSON object lines
        record = json.loads(line)
        if not isinstance(record, dict) or "audience" not in record:
            continue
        if record["audience"] not in AUDIENCES:
            continue
        assert str(record["at"]).endswith("Z")
        key = (str(record["audience"]), str(record["customer_id"]))
        grouped[key].append((iso_to_ms(str(record["at"])), str(record["op"])))
    return dict(grouped)


def _oracle_of_raws(raws: Sequence[dict[str, Any]], until: int) -> Grouped:
    decoded = [decode_record(raw) for raw in raws]
    return oracle_transitions([e for e in decoded if e is not None], until)


def test_replay_cli_matches_oracle(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """All hand-written cases in one file (customers renamed per case), in time order.

    Hand-written id-less events are left out (the engine-level tests cover them); the
    records the ingest policies key or complete are in, decoded by the oracle's own
    implementation of those policies.
    """
    events: list[Event] = []
    for index, case in enumerate(CASES):
        for event in case.events:
            if event.record_id is None:
                continue
            renamed = copy.deepcopy(event)
            renamed.customer_id = f"case{index:02d}-{event.customer_id}"
            events.append(renamed)
    events.sort(key=lambda e: e.timestamp_ms)  # stable: ties keep each case's order
    raws = _no_customer_records() + _policy_records() + [encode_record(e) for e in events]
    until = max(case.until_ms for case in CASES)

    expected = _oracle_of_raws(raws, until)
    assert expected  # the comparison is not vacuous
    customers = {customer for _, customer in expected}
    assert {"deleted-1", "someone@example.com", "no-id"} <= customers
    assert _replay(tmp_path, capsys, raws, until) == expected


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(event_logs(lateness_ms=0, whole_second_webhooks=True, allow_missing_ids=False))
def test_replay_cli_matches_oracle_on_generated_logs(
    tmp_path_factory: pytest.TempPathFactory,
    capsys: pytest.CaptureFixture[str],
    generated: tuple[list[Event], int],
) -> None:
    events, until = generated
    raws = [encode_record(e) for e in events]
    assert _replay(tmp_path_factory.mktemp("replay"), capsys, raws, until) == _oracle_of_raws(
        raws, until
    )


def test_synthetic_stream_matches_oracle(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The realistic stream the demo and benchmark use (sessions, carts, refunds, tickets,
    late and duplicated records), through the replay CLI, against the oracle."""
    from streamsync.dev.synthetic import generate_records

    raws = list(generate_records(12, 1_500, seed=3))
    decoded = [decode_record(raw) for raw in raws]
    until = max(e.timestamp_ms for e in decoded if e is not None) + 200 * 86_400_000
    expected = _oracle_of_raws(raws, until)
    assert len({audience for audience, _ in expected}) >= 10  # a stream that exercises most
    assert _replay(tmp_path, capsys, raws, until) == expected
