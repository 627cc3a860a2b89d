"""The oracle against the hand-written cases, plus self-checks of the oracle itself."""

from __future__ import annotations

import bisect
import copy
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamsync.ingest.event import Event
from tests.audiences.cases import CASES, Case
from tests.audiences.oracle import (
    AUDIENCES,
    DAY,
    candidate_instants,
    decode_record,
    dedup_and_sort,
    encode_record,
    member,
    oracle_transitions,
    split_by_customer,
)
from tests.audiences.strategies import event_logs


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_oracle_matches_hand_written_case(case: Case) -> None:
    got = oracle_transitions(case.events, case.until_ms)
    for (audience, customer), expected in case.expected.items():
        assert audience in AUDIENCES
        assert got.get((audience, customer), []) == expected, (audience, customer)


def test_cases_cover_every_audience() -> None:
    covered = {audience for case in CASES for audience, _ in case.expected}
    assert covered == set(AUDIENCES)


def test_first_arrival_of_a_record_id_wins_and_ties_keep_arrival_order() -> None:
    a = Event("c1", "track", "Support Ticket Opened", 5, "r1", {"ticket_id": "t"})
    b = Event("c1", "track", "Support Ticket Closed", 5, "r2", {"ticket_id": "t"})
    resent = Event("c1", "track", "Support Ticket Opened", 9, "r1", {"ticket_id": "t"})
    early = Event("c1", "track", "Application Opened", 1, None)
    log = dedup_and_sort([a, b, resent, early, copy.deepcopy(early)])
    assert [(e.record_id, e.timestamp_ms) for e in log] == [
        (None, 1),
        (None, 1),
        ("r1", 5),
        ("r2", 5),
    ]
    assert not member("SUP__SupportTicketOpen", log, 10)


@settings(max_examples=200, deadline=None)
@given(event_logs(), st.data())
def test_membership_is_constant_between_candidate_instants(
    generated: tuple[list[Event], int], data: st.DataObject
) -> None:
    """Self-check of the candidate set: probe random instants between candidates."""
    events, _until = generated
    for log in split_by_customer(dedup_and_sort(events)).values():
        candidates = candidate_instants(log)
        lo, hi = candidates[0] - DAY, candidates[-1] + DAY
        probes = data.draw(st.lists(st.integers(lo, hi), min_size=1, max_size=8))
        probes += [c - 1 for c in candidates[:20]] + [c + 1 for c in candidates[:20]]
        for t in probes:
            i = bisect.bisect_right(candidates, t) - 1
            for audience in AUDIENCES:
                expected = member(audience, log, candidates[i]) if i >= 0 else False
                assert member(audience, log, t) == expected, (audience, t)


@settings(max_examples=100, deadline=None)
@given(event_logs(whole_second_webhooks=True, allow_missing_ids=False))
def test_decode_record_round_trips_encode_record(generated: tuple[list[Event], int]) -> None:
    events, until = generated
    raws = [json.loads(json.dumps(encode_record(e))) for e in events]
    decoded = [decode_record(raw) for raw in raws]
    assert all(d is not None for d in decoded)
    for original, back in zip(events, decoded, strict=True):
        assert back is not None
        assert (back.customer_id, back.kind, back.name, back.timestamp_ms, back.record_id) == (
            original.customer_id,
            original.kind,
            original.name,
            original.timestamp_ms,
            original.record_id,
        )
        if original.kind == "identify":
            assert back.traits == original.traits
        elif original.kind != "webhook":
            assert back.properties == original.properties
    assert oracle_transitions([d for d in decoded if d is not None], until) == oracle_transitions(
        events, until
    )


def test_decode_record_skips_records_without_a_customer() -> None:
    assert (
        decode_record({"type": "track", "event": "x", "timestamp": "2026-01-01T00:00:00Z"}) is None
    )
    assert decode_record({"event_id": "e", "metric": "sent", "timestamp": 1, "data": {}}) is None
    hook = decode_record(
        {
            "event_id": "e",
            "metric": "sent",
            "object_type": "sms",
            "timestamp": 1767225600,
            "data": {"customer_id": "c9", "identifiers": {"id": "c9", "email": "a@b.c"}},
        }
    )
    assert hook is not None
    assert (hook.kind, hook.name, hook.timestamp_ms, hook.customer_id) == (
        "webhook",
        "sent",
        1767225600000,
        "c9",
    )
