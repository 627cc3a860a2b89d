"""A poison record for one customer changes nobody's deltas in replay: not another
customer's, and not its own (it is dead-lettered before the engine sees it). Poisons are
real records of a customer made hostile in the ways the README's bad-input rules name."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from streamsync.audiences.definition import Audience
from streamsync.audiences.loader import load_audiences
from streamsync.audiences.replay import ReplaySummary, replay
from streamsync.deltas.record import MembershipDelta
from streamsync.dev.synthetic import generate_records
from streamsync.ingest.bounds import MAX_ABS_NUMBER, MAX_DEPTH
from streamsync.ingest.jsonl import read_events
from tests.fuzz.conftest import EXAMPLES

REPO = Path(__file__).resolve().parents[2]
NOW_MS = 1_795_000_000_000  # 2026-11-18, after the synthetic stream
LOG = list(generate_records(12, 1500, seed=3))
LINES = [json.dumps(r).encode() for r in LOG]
CUSTOMERS = sorted({r.get("userId") or r.get("data", {}).get("customer_id") for r in LOG} - {None})


@cache
def audiences() -> list[Audience]:
    return load_audiences(REPO / "examples" / "audiences")


def run(lines: list[bytes]) -> tuple[list[MembershipDelta], ReplaySummary]:
    summary = ReplaySummary()
    items = read_events(lines, "log.jsonl", now_ms=NOW_MS)
    return list(replay(audiences(), items, progress=None, summary=summary)), summary


@cache
def clean_run() -> tuple[list[MembershipDelta], ReplaySummary]:
    return run(LINES)


def _deep(levels: int) -> Any:
    value: Any = 1
    for _ in range(levels):
        value = [value]
    return value


def poison(record: dict[str, Any], how: str, n: int) -> bytes:
    """``record`` (the victim's) turned into a record every decoder must refuse."""
    hostile = json.loads(json.dumps(record))
    if "messageId" in hostile:
        hostile["messageId"] = f"poison-{n}"
        where = hostile.setdefault("properties", {})
        when = "timestamp"
    else:
        hostile["event_id"] = f"poison-{n}"
        where = hostile.setdefault("data", {})
        when = "timestamp"
    if how == "huge":
        where["total"] = 1e308
    elif how == "beyond":
        where["total"] = MAX_ABS_NUMBER + 1
    elif how == "deep":
        where["nested"] = _deep(MAX_DEPTH + 1)
    elif how == "future":
        hostile[when] = "9999-12-31T23:59:59.999Z" if "messageId" in hostile else 253402300799
    elif how == "wrong_key":
        if "userId" in hostile:
            hostile["userId"] = {"id": hostile["userId"]}
        else:
            hostile["data"]["identifiers"] = ["not", "an", "object"]
    elif how == "batch":
        huge = {**hostile, "properties": {**where, "total": -1e308}}
        return json.dumps({"batch": [huge, {**huge, "messageId": f"poison-{n}b"}]}).encode()
    text = json.dumps(hostile)
    if how == "nan":
        return (
            text.replace("{", '{"nan": NaN, ', 1).encode()
            if "messageId" in hostile
            else (text.replace('"data": {', '"data": {"x": NaN, ', 1).encode())
        )
    if how == "infinity":
        return text[:-1].encode() + b', "properties": {"total": 1e999}}'
    if how == "truncated":
        return text[: len(text) // 2].encode()
    return text.encode()


KINDS = ["huge", "beyond", "deep", "future", "wrong_key", "batch", "nan", "infinity", "truncated"]


@settings(max_examples=max(10, EXAMPLES // 6), deadline=None)
@given(
    victim=st.sampled_from(CUSTOMERS),
    poisons=st.lists(
        st.tuples(st.sampled_from(KINDS), st.integers(0, len(LOG))), min_size=1, max_size=4
    ),
)
def test_a_poison_record_changes_nobodys_deltas(
    victim: str, poisons: list[tuple[str, int]]
) -> None:
    theirs = [r for r in LOG if victim in (r.get("userId"), r.get("data", {}).get("customer_id"))]
    lines = list(LINES)
    expected_errors = 0
    for n, (how, position) in enumerate(sorted(poisons, key=lambda p: -p[1])):
        record = theirs[position % len(theirs)]
        if how == "batch" and "messageId" not in record:
            how = "huge"  # webhooks have no batch call
        lines.insert(position, poison(record, how, n))
        expected_errors += 2 if how == "batch" else 1
    deltas, summary = run(lines)
    clean, clean_summary = clean_run()
    assert not clean_summary.errors
    assert sum(summary.errors.values()) == expected_errors, summary.errors
    assert (summary.late, summary.too_late) == (clean_summary.late, clean_summary.too_late)
    assert deltas == clean
    assert any(d.customer_id != victim for d in clean)  # others have deltas to change


SHAPES: list[Any] = [[1], {"a": 1}, [[]], [None], "", True, None, -(2**53 - 1), 0.1]


@settings(max_examples=max(10, EXAMPLES // 6), deadline=None)
@given(
    victim=st.sampled_from(CUSTOMERS),
    picks=st.lists(
        st.tuples(st.integers(0, 10_000), st.sampled_from(SHAPES)), min_size=1, max_size=4
    ),
)
def test_oddly_shaped_valid_records_change_only_their_customer(
    victim: str, picks: list[tuple[int, Any]]
) -> None:
    """Valid records whose evaluated values have unexpected shapes (a list where a key is
    expected, an object for an amount...) may change their own customer's deltas, never
    another's. Each copy sits right after its original, so it moves no clock."""
    positions = [
        i
        for i, r in enumerate(LOG)
        if victim in (r.get("userId"), r.get("data", {}).get("customer_id"))
    ]
    lines = list(LINES)
    chosen = sorted(
        ((positions[pick % len(positions)], shape) for pick, shape in picks), key=lambda p: -p[0]
    )
    for n, (at, shape) in enumerate(chosen):  # from the end, so positions stay valid
        record = json.loads(json.dumps(LOG[at]))
        values = record.get("properties") or record.get("traits") or record.get("data") or {}
        for key in values:
            # Identity fields must be strings (else the record is a poison, see above).
            if key not in ("customer_id", "identifiers", "email", "phone", "cio_id"):
                values[key] = shape
        if "messageId" in record:
            record["messageId"] = f"odd-{n}"
        else:
            record["event_id"] = f"odd-{n}"
        lines.insert(at + 1, json.dumps(record).encode())
    deltas, summary = run(lines)
    clean, _ = clean_run()
    assert not summary.errors
    assert [d for d in deltas if d.customer_id != victim] == [
        d for d in clean if d.customer_id != victim
    ]
