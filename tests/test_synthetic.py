"""The synthetic stream is deterministic, well-formed, and exercises what it claims to.

The demo, the benchmarks and the audience acceptance tests all trust this generator, so
its promises (exact counts, every event name, late and duplicate records at the stated
rates, each kind of bad record) are checked here rather than assumed.
"""

from __future__ import annotations

import io
import itertools
import re
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from streamsync.dev.synthetic import (
    BAD_RECORD_LABELS,
    DEFAULT_DURATION_MS,
    DEFAULT_START_MS,
    bad_records,
    format_timestamp,
    generate_records,
    mix_bad_records,
    write_jsonl,
)

_ISO = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
_TRACK_EVENTS = {
    "Application Opened",
    "Product Viewed",
    "Product Added",
    "Checkout Started",
    "Order Completed",
    "Order Refunded",
    "Support Ticket Opened",
    "Support Ticket Closed",
}


@pytest.fixture(scope="module")
def stream() -> list[dict[str, Any]]:
    return list(generate_records(400, 60_000, seed=7))


def _event_ms(record: dict[str, Any]) -> int:
    if "event_id" in record:
        return int(record["timestamp"]) * 1000
    moment = datetime.fromisoformat(record["timestamp"])
    return int(moment.timestamp() * 1000)


def _record_id(record: dict[str, Any]) -> str:
    return str(record.get("messageId") or record["event_id"])


def test_same_seed_same_output_other_seed_differs() -> None:
    first = [orjson.dumps(r) for r in generate_records(50, 3_000, seed=3)]
    again = [orjson.dumps(r) for r in generate_records(50, 3_000, seed=3)]
    other = [orjson.dumps(r) for r in generate_records(50, 3_000, seed=4)]
    assert first == again
    assert first != other


def test_exact_count(stream: list[dict[str, Any]]) -> None:
    assert len(stream) == 60_000
    assert list(generate_records(10, 0)) == []
    assert len(list(generate_records(1, 17))) == 17


def test_records_have_documented_fields(stream: list[dict[str, Any]]) -> None:
    start, end = DEFAULT_START_MS, DEFAULT_START_MS + DEFAULT_DURATION_MS
    for record in stream:
        orjson.loads(orjson.dumps(record))  # plain JSON types only
        if "event_id" in record:
            assert record["metric"] in {"sent", "delivered", "opened"}
            assert record["object_type"] in {"email", "push", "sms"}
            assert isinstance(record["timestamp"], int)
            data = record["data"]
            assert data["customer_id"] == data["identifiers"]["id"]
            assert set(data["identifiers"]) == {"id", "email", "cio_id"}
            assert data["delivery_id"]
        else:
            assert record["type"] in {"track", "identify", "page", "screen"}
            assert _ISO.match(record["timestamp"]), record["timestamp"]
            assert isinstance(record["messageId"], str)
            assert isinstance(record["context"], dict)
            assert "userId" in record or "anonymousId" in record
            if record["type"] == "track":
                assert isinstance(record["event"], str)
                assert isinstance(record["properties"], dict)
            if record["type"] == "identify":
                assert "@" in record["traits"]["email"]
        assert start <= _event_ms(record) < end


def test_event_properties_match_the_vocabulary(stream: list[dict[str, Any]]) -> None:
    by_event: dict[str, list[dict[str, Any]]] = {}
    for record in stream:
        if record.get("type") == "track":
            by_event.setdefault(record["event"], []).append(record["properties"])
    assert set(by_event) == _TRACK_EVENTS
    assert all("product_id" in p for p in by_event["Product Viewed"])
    assert all({"product_id", "cart_id"} <= set(p) for p in by_event["Product Added"])
    assert all(isinstance(p["value"], float) for p in by_event["Checkout Started"])
    orders = by_event["Order Completed"]
    assert all(isinstance(p["total"], float) and p["order_id"] for p in orders)
    products = [item for p in orders for item in p["products"]]
    assert all({"sku", "category"} <= set(item) for item in products)
    assert any(isinstance(item.get("days_supply"), int) for item in products)
    assert any(item["sku"] == "starter-kit" for item in products)
    assert all({"order_id", "total"} <= set(p) for p in by_event["Order Refunded"])
    assert all("ticket_id" in p for p in by_event["Support Ticket Closed"])


def test_audience_inputs_are_all_exercised(stream: list[dict[str, Any]]) -> None:
    statuses = {
        r["traits"].get("subscription_status") for r in stream if r.get("type") == "identify"
    }
    assert {"active", "cancelled", "paused"} <= statuses
    assert any("phone" in r["traits"] for r in stream if r.get("type") == "identify")
    webhooks = {(r["metric"], r["object_type"]) for r in stream if "event_id" in r}
    assert {("sent", "email"), ("sent", "push"), ("sent", "sms"), ("opened", "email")} <= webhooks

    # Reopened tickets: an Opened after a Closed for the same ticket_id.
    closed: set[str] = set()
    reopened = 0
    # Customers whose orders stop for 60+ days after a second order: winback candidates.
    orders: dict[str, list[int]] = {}
    # A product viewed twice by a customer within 7 days.
    views: dict[tuple[str, str], list[int]] = {}
    for record in sorted(stream, key=_event_ms):
        event = record.get("event")
        if event == "Support Ticket Closed":
            closed.add(record["properties"]["ticket_id"])
        elif event == "Support Ticket Opened" and record["properties"]["ticket_id"] in closed:
            reopened += 1
        elif event == "Order Completed":
            orders.setdefault(record["userId"], []).append(_event_ms(record))
        elif event == "Product Viewed":
            key = (record["userId"], record["properties"]["product_id"])
            views.setdefault(key, []).append(_event_ms(record))
    assert reopened > 0
    end = DEFAULT_START_MS + DEFAULT_DURATION_MS
    day = 86_400_000
    winback = [u for u, ts in orders.items() if len(ts) >= 2 and end - max(ts) > 60 * day]
    assert len(winback) >= 5
    assert any(len(ts) >= 5 for ts in orders.values())  # repeat buyers
    assert any(
        later - earlier < 7 * day
        for ts in views.values()
        for earlier, later in itertools.pairwise(ts)
    )
    assert sum(r.get("anonymousId") is not None and "userId" not in r for r in stream) > 0


def test_activity_is_heterogeneous(stream: list[dict[str, Any]]) -> None:
    per_customer = Counter(
        r["data"]["customer_id"] if "event_id" in r else r.get("userId")
        for r in stream
        if "event_id" in r or "userId" in r
    )
    counts = sorted(per_customer.values())
    median = counts[len(counts) // 2]
    assert counts[-1] > 5 * median


def test_duplicates_and_late_records_at_stated_rates(stream: list[dict[str, Any]]) -> None:
    seen: set[str] = set()
    duplicates = late = 0
    max_seen = 0
    originals: dict[str, bytes] = {}
    for record in stream:
        rid = _record_id(record)
        ts = _event_ms(record)
        if rid in seen:
            duplicates += 1
            assert orjson.dumps(record) == originals[rid]  # an exact re-send
            continue
        seen.add(rid)
        originals[rid] = orjson.dumps(record)
        if ts < max_seen:
            late += 1
            assert max_seen - ts <= 120_000 + 1000  # webhook seconds round down
        max_seen = max(max_seen, ts)
    n = len(stream)
    assert duplicates == round(n * 0.005)
    # 1% are delayed; a delayed record only shows as out of order when something newer
    # arrived in between, so the observed rate is somewhat lower.
    assert 0.002 * n <= late <= 0.012 * n


def test_format_timestamp_matches_datetime() -> None:
    for ms in (0, DEFAULT_START_MS, DEFAULT_START_MS + 123_456_789, 4_102_444_799_999):
        expected = datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")
        assert format_timestamp(ms) == expected.replace("+00:00", "Z")


def test_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError):
        generate_records(0, 10)
    with pytest.raises(ValueError):
        generate_records(1, -1)
    with pytest.raises(ValueError):
        generate_records(1, 1, duplicate_fraction=1.5)


def test_bad_records_cover_every_label() -> None:
    items = bad_records(5, 14)
    assert [label for label, _ in items[:7]] == list(BAD_RECORD_LABELS)
    assert bad_records(5, 14) == items
    for label, raw in items:
        assert b"\n" not in raw
        if label == "malformed_json":
            with pytest.raises(orjson.JSONDecodeError):
                orjson.loads(raw)
            continue
        record = orjson.loads(raw)
        if label == "wrong_type_user_id":
            assert isinstance(record["userId"], dict)
        elif label == "wrong_type_timestamp":
            assert isinstance(record["timestamp"], int)
        elif label == "out_of_range_amount":
            assert record["properties"]["price"] == 1e308
        elif label == "unknown_type":
            assert record["type"] not in {"track", "identify", "page", "screen", "group", "alias"}
        elif label == "oversized":
            assert len(raw) > 1024 * 1024
        elif label == "missing_customer_id":
            assert "userId" not in record and record["anonymousId"]


def test_write_jsonl_round_trips(tmp_path: Path) -> None:
    records = list(generate_records(20, 500, seed=1))
    mixed = list(mix_bad_records(records, 0.05, seed=1))
    bad = [item for item in mixed if isinstance(item, bytes)]
    assert bad
    target = tmp_path / "out.jsonl"
    reported: list[int] = []
    assert write_jsonl(mixed, target, progress=reported.append, progress_every=100) == len(mixed)
    lines = target.read_bytes().split(b"\n")
    assert lines[-1] == b""
    assert len(lines) - 1 == len(mixed)
    good = [orjson.loads(line) for line in lines[:-1] if line not in bad]
    assert good == records
    assert reported[-1] == len(mixed)

    buffer = io.BytesIO()
    write_jsonl(records[:3], buffer)
    assert buffer.getvalue().count(b"\n") == 3
