"""The edge's rules for numbers, event time and depth (README "Bad input"), each with
the reproduction that broke streamsync before them."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import orjson
import pytest

from streamsync.audiences.engine import Engine
from streamsync.audiences.loader import load_audiences
from streamsync.audiences.replay import ReplaySummary, replay
from streamsync.cli import main as cli_main
from streamsync.deltas.record import MembershipDelta, parse_rfc3339_ms
from streamsync.dev.synthetic import generate_records
from streamsync.ingest.avro import encode_avro
from streamsync.ingest.bounds import MAX_ABS_NUMBER, MAX_DEPTH
from streamsync.ingest.config import TopicConfig
from streamsync.ingest.decoder import Decoder
from streamsync.ingest.errors import DecodeError, DecodeReason
from streamsync.ingest.event import Event, SourcePosition
from streamsync.ingest.jsonl import LineError, read_events

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples" / "audiences"
SOURCE = SourcePosition("t", 0, 1)
NOW_MS = parse_rfc3339_ms("2026-11-26T12:00:00Z")


def order(user: str, ts: str, rid: str, total: Any) -> dict[str, Any]:
    return {
        "type": "track",
        "userId": user,
        "messageId": rid,
        "event": "Order Completed",
        "timestamp": ts,
        "properties": {"order_id": rid, "total": total, "products": []},
    }


def decode(record: Any, fmt: str = "pipelines_json", **options: Any) -> Event | DecodeError:
    topic = TopicConfig(name="t", format=fmt, **options)  # type: ignore[arg-type]
    value = record if isinstance(record, bytes) else json.dumps(record).encode()
    [outcome] = Decoder(topic, clock_ms=lambda: NOW_MS).decode_all(value, None, SOURCE)
    assert not isinstance(outcome, tuple)
    return outcome  # type: ignore[return-value]


def reason(record: Any, fmt: str = "pipelines_json") -> DecodeReason:
    outcome = decode(record, fmt)
    assert isinstance(outcome, DecodeError), outcome
    return outcome.reason


# -- numbers ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [1e308, -1e308, float(MAX_ABS_NUMBER) * 2, MAX_ABS_NUMBER + 1, -(2**63), 2**64 - 1],
)
def test_numbers_out_of_range_are_dead_lettered(value: Any) -> None:
    outcome = decode(order("c", "2026-01-01T00:00:00Z", "m", value))
    assert isinstance(outcome, DecodeError)
    assert outcome.reason == DecodeReason.OUT_OF_RANGE
    assert "properties.total" in outcome.detail and str(MAX_ABS_NUMBER) in outcome.detail


def test_numbers_at_the_bound_and_nested_paths() -> None:
    ok = decode(order("c", "2026-01-01T00:00:00Z", "m", MAX_ABS_NUMBER))
    assert isinstance(ok, Event) and ok.properties["total"] == MAX_ABS_NUMBER
    record = order("c", "2026-01-01T00:00:00Z", "m", 1)
    record["properties"]["products"] = [{"price": 1}, {"price": 1e300}]
    outcome = decode(record)
    assert isinstance(outcome, DecodeError)
    assert "properties.products[1].price" in outcome.detail
    assert "1e300" not in outcome.detail and "1e+300" not in outcome.detail
    # traits, context.traits and webhook data are checked alike; JSON numbers beyond a
    # double, written as text, are out of range when parsed.
    identify = {
        "type": "identify",
        "userId": "c",
        "messageId": "i",
        "timestamp": "2026-01-01T00:00:00Z",
    }
    assert reason({**identify, "traits": {"ltv": -1e200}}) == DecodeReason.OUT_OF_RANGE
    assert reason({**identify, "context": {"traits": {"n": 1e100}}}) == DecodeReason.OUT_OF_RANGE
    text = orjson.dumps(order("c", "2026-01-01T00:00:00Z", "m", 1)).replace(
        b'"total":1', b'"total":1e400'
    )
    assert reason(text) == DecodeReason.OUT_OF_RANGE
    hook = {
        "event_id": "e",
        "metric": "sent",
        "timestamp": 1767225600,
        "data": {"customer_id": "c", "n": [1e20]},
    }
    assert reason(hook, "webhook_json") == DecodeReason.OUT_OF_RANGE
    # Avro records go through the same rule (their objects are JSON strings).
    body = encode_avro("pipelines", order("c", "2026-01-01T00:00:00Z", "m", 1e308))
    assert reason(body, "pipelines_avro") == DecodeReason.OUT_OF_RANGE
    # The context is never evaluated: numbers there are the producer's business.
    fine = {**order("c", "2026-01-01T00:00:00Z", "m", 1), "context": {"screen": {"width": 1e300}}}
    assert isinstance(decode(fine), Event)


def _replay_cli(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], raws: list[Any]
) -> tuple[int, list[dict[str, Any]], str]:
    path = tmp_path / "events.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in raws), encoding="utf-8")
    capsys.readouterr()
    rc = cli_main(["replay", "--audiences", str(EXAMPLES), "--events", str(path)])
    captured = capsys.readouterr()
    return rc, [json.loads(line) for line in captured.out.splitlines()], captured.err


def test_the_1e308_order_no_longer_crashes_replay(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = [
        order("big", "2026-01-01T00:00:00.000Z", "o1", 400),
        order("big", "2026-01-02T00:00:00.000Z", "o2", 200),
    ]
    poison = order("big", "2026-01-01T12:00:00.000Z", "o-poison", 1e308)
    rc, deltas, err = _replay_cli(tmp_path, capsys, [good[0], poison, good[1]])
    assert rc == 0, err
    assert "out_of_range" in err
    rc_clean, clean, _ = _replay_cli(tmp_path, capsys, good)
    assert rc_clean == 0 and deltas == clean
    assert any(d["audience"] == "SUP__VIP__LTV500" for d in deltas)


def test_the_engine_cannot_overflow_even_on_hand_built_events() -> None:
    audiences = load_audiences(EXAMPLES)
    engine = Engine(audiences)
    for n, total in enumerate([1e308, math.inf, -math.inf, math.nan, 10**400, 600]):
        event = Event(
            customer_id="c",
            kind="track",
            name="Order Completed",
            timestamp_ms=1_767_225_600_000 + n,
            record_id=f"o{n}",
            properties={"total": total, "products": [{"days_supply": total}]},
        )
        engine.process(event)
    deltas = engine.finish()
    # Only the 600 counts: the high-value audience is entered exactly once.
    high = [d for d in deltas if d.audience == "SUP__VIP__LTV500"]
    assert [(d.op, d.at_ms) for d in high] == [("enter", 1_767_225_600_005)]


# -- event time ---------------------------------------------------------------------------


def test_event_time_beyond_the_skew_is_dead_lettered_with_the_bound() -> None:
    outcome = decode(order("c", "9999-12-31T23:59:59.999Z", "m", 1))
    assert isinstance(outcome, DecodeError) and outcome.reason == DecodeReason.BAD_TIMESTAMP
    assert "2026-11-27T12:00:00Z" in outcome.detail and "max_clock_skew_s" in outcome.detail
    # Up to the skew is fine; one millisecond more is not.
    assert isinstance(decode(order("c", "2026-11-27T12:00:00.000Z", "m", 1)), Event)
    late = decode(order("c", "2026-11-27T12:00:00.001Z", "m", 1))
    assert isinstance(late, DecodeError) and late.reason == DecodeReason.BAD_TIMESTAMP
    tight = decode(order("c", "2026-11-26T13:00:00Z", "m", 1), max_clock_skew_s=60)
    assert isinstance(tight, DecodeError) and "2026-11-26T12:01:00Z" in tight.detail
    hook = {
        "event_id": "e",
        "metric": "sent",
        "timestamp": 253402300799,
        "data": {"customer_id": "c"},
    }
    assert reason(hook, "webhook_json") == DecodeReason.BAD_TIMESTAMP


def test_the_live_path_bounds_time_by_the_wall_clock() -> None:
    decoder = Decoder(TopicConfig(name="t", format="pipelines_json"))
    value = orjson.dumps(order("c", "9999-12-31T23:59:59.999Z", "m", 1))
    [outcome] = decoder.decode_all(value, None, SOURCE)
    assert isinstance(outcome, DecodeError) and outcome.reason == DecodeReason.BAD_TIMESTAMP
    [fine] = decoder.decode_all(
        orjson.dumps(order("c", "2026-01-01T00:00:00Z", "m", 1)), None, SOURCE
    )
    assert isinstance(fine, Event)


def _replay_lines(lines: list[bytes]) -> tuple[list[MembershipDelta], ReplaySummary]:
    summary = ReplaySummary()
    items = read_events(lines, "log.jsonl", now_ms=NOW_MS)
    deltas = list(replay(load_audiences(EXAMPLES), items, progress=None, summary=summary))
    return deltas, summary


def test_a_year_9999_record_in_the_middle_of_a_log_moves_nobody() -> None:
    records = list(generate_records(60, 3000, seed=11))
    lines = [orjson.dumps(r) for r in records]
    poison = order("cus_0000001", "9999-12-31T23:59:59.999Z", "poison-1", 10)
    middle = len(lines) // 2
    poisoned = [*lines[:middle], orjson.dumps(poison), *lines[middle:]]
    clean_deltas, clean = _replay_lines(lines)
    deltas, summary = _replay_lines(poisoned)
    assert summary.errors == {"bad_timestamp": 1}
    assert deltas == clean_deltas
    assert (summary.late, summary.too_late) == (clean.late, clean.too_late)
    assert max(d.at_ms for d in deltas) < parse_rfc3339_ms("2027-01-01T00:00:00Z")
    # Replay is deterministic for a historical file: the same on every run.
    assert _replay_lines(poisoned)[0] == deltas


# -- depth --------------------------------------------------------------------------------


def test_json_nested_ten_thousand_deep_is_too_deep() -> None:
    deep = b'{"type":"track","properties":' + b"[" * 10_000 + b"]" * 10_000 + b"}"
    outcome = decode(deep)
    assert isinstance(outcome, DecodeError) and outcome.reason == DecodeReason.TOO_DEEP
    assert "deeper than 1024 levels" in outcome.detail
    line = list(read_events([deep]))
    assert isinstance(line[0], LineError) and line[0].error.reason == DecodeReason.TOO_DEEP


def test_depth_limit_of_what_the_engine_reads() -> None:
    nested: Any = 1
    for _ in range(MAX_DEPTH):
        nested = [nested]
    outcome = decode(order("c", "2026-01-01T00:00:00Z", "m", nested))
    assert isinstance(outcome, DecodeError) and outcome.reason == DecodeReason.TOO_DEEP
    assert f"deeper than {MAX_DEPTH} levels" in outcome.detail
    assert isinstance(decode(order("c", "2026-01-01T00:00:00Z", "m", nested[0])), Event)
    # A record without an id must stay shallow enough to derive one.
    record = order("c", "2026-01-01T00:00:00Z", "m", 1)
    del record["messageId"]
    context: Any = {}
    for _ in range(300):
        context = {"c": context}
    outcome = decode({**record, "context": context})
    assert isinstance(outcome, DecodeError) and outcome.reason == DecodeReason.TOO_DEEP
    shallow: Any = {}
    for _ in range(200):
        shallow = {"c": shallow}
    assert isinstance(decode({**record, "context": shallow}), Event)


def test_the_time_bound_follows_a_moving_clock() -> None:
    now = [NOW_MS]
    decoder = Decoder(
        TopicConfig(name="t", format="pipelines_json", max_clock_skew_s=60),
        clock_ms=lambda: now[0],
    )

    def outcome(ts: str) -> Event | DecodeError:
        [result] = decoder.decode_all(orjson.dumps(order("c", ts, ts, 1)), None, SOURCE)
        return result  # type: ignore[return-value]

    assert isinstance(outcome("2026-11-26T12:01:00Z"), Event)
    assert isinstance(outcome("2026-11-26T12:30:00Z"), DecodeError)
    now[0] += 30 * 60_000  # half an hour later, the same instant is acceptable
    assert isinstance(outcome("2026-11-26T12:30:00Z"), Event)
    assert isinstance(
        decoder.decode(orjson.dumps(order("c", "2026-11-26T12:31:00Z", "x", 1)), None, SOURCE),
        Event,
    )
    late = outcome("2026-11-26T12:31:00.001Z")
    assert isinstance(late, DecodeError) and "2026-11-26T12:31:00Z" in late.detail
