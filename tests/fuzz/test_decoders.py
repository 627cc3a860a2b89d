"""Arbitrary bytes and structured-but-hostile JSON into every decoder: the only outcomes
are events, skips and ``DecodeError`` values - nothing raises - and every event that
comes out respects the documented bounds (README "Bad input")."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamsync.audiences.definition import Audience
from streamsync.audiences.engine import Engine
from streamsync.audiences.loader import load_audiences
from streamsync.ingest.avro import (
    PIPELINES_SCHEMA_PATH,
    WEBHOOK_SCHEMA_PATH,
    FileSchemaRegistry,
    confluent_frame,
    encode_avro,
)
from streamsync.ingest.bounds import MAX_ABS_NUMBER
from streamsync.ingest.config import TopicConfig
from streamsync.ingest.decoder import Decoder, Outcome
from streamsync.ingest.errors import DecodeError
from streamsync.ingest.event import ID_KINDS, Event, Skipped, SourcePosition
from streamsync.ingest.jsonl import LineError, read_events
from streamsync.ingest.jsonl import Skipped as LineSkipped
from tests.fuzz.conftest import EXAMPLES
from tests.ingest.samples import IDENTIFY, ORDER_COMPLETED, PAGE, WEBHOOK_SENT

NOW_MS = 1_764_158_400_000  # 2025-11-26T12:00:00Z
SKEW_MS = 86_400_000
SOURCE = SourcePosition("fuzz", 0, 0)
FIXTURES = Path(__file__).resolve().parents[1] / "ingest" / "fixtures"
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _registry(root: Path) -> FileSchemaRegistry:
    root.mkdir(parents=True, exist_ok=True)
    shutil.copy(PIPELINES_SCHEMA_PATH, root / "1.avsc")
    shutil.copy(WEBHOOK_SCHEMA_PATH, root / "2.avsc")
    return FileSchemaRegistry.from_path(root)


@pytest.fixture(scope="module")
def decoders(tmp_path_factory: pytest.TempPathFactory) -> list[Decoder]:
    registry = _registry(tmp_path_factory.mktemp("registry"))
    topics = [
        {"format": "pipelines_json"},
        {"format": "webhook_json"},
        {"format": "pipelines_avro"},
        {"format": "webhook_avro"},
        {"format": "pipelines_avro", "framing": "confluent"},
        {"format": "webhook_avro", "framing": "confluent"},
    ]
    return [
        Decoder(TopicConfig(name="t", **t), registry, clock_ms=lambda: NOW_MS)  # type: ignore[arg-type]
        for t in topics
    ]


def _numbers(value: Any) -> list[float | int]:
    if isinstance(value, dict):
        return [n for v in value.values() for n in _numbers(v)]
    if isinstance(value, list):
        return [n for v in value for n in _numbers(v)]
    if isinstance(value, int | float) and not isinstance(value, bool):
        return [value]
    return []


def check_outcomes(outcomes: list[Outcome]) -> None:
    """Only documented outcomes, and events the engine can always handle."""
    assert isinstance(outcomes, list) and outcomes
    for outcome in outcomes:
        if isinstance(outcome, DecodeError):
            assert outcome.detail
            assert outcome.index is None or outcome.index >= 0
            continue
        if isinstance(outcome, Skipped):
            assert outcome.reason
            continue
        assert isinstance(outcome, Event)
        assert isinstance(outcome.customer_id, str) and outcome.customer_id
        assert outcome.id_kind in ID_KINDS
        assert isinstance(outcome.record_id, str) and outcome.record_id
        assert isinstance(outcome.timestamp_ms, int)
        assert outcome.timestamp_ms <= NOW_MS + SKEW_MS
        for n in _numbers(outcome.properties) + _numbers(outcome.traits):
            assert -MAX_ABS_NUMBER <= n <= MAX_ABS_NUMBER  # also false for NaN


@cache
def audiences() -> list[Audience]:
    return load_audiences(Path(__file__).resolve().parents[2] / "examples" / "audiences")


def decode_everywhere(decoders: list[Decoder], value: bytes) -> None:
    """Through every decoder and the file reader; whatever decodes goes through the
    engine with the example audiences (which must not raise either)."""
    for decoder in decoders:
        check_outcomes(decoder.decode_all(value, value[:8] or None, SOURCE))
    engine = Engine(audiences())
    for base in BASES:  # state for the hostile record to act on (an open ticket, ...)
        for event in read_events([json.dumps(base).encode()], "bases", now_ms=NOW_MS):
            if isinstance(event, Event):
                engine.process(event)
    for item in read_events([value, value], "fuzz", now_ms=NOW_MS):
        assert isinstance(item, Event | LineError | LineSkipped)
        if isinstance(item, Event):
            engine.process(item)
            engine.process(replace(item, record_id=None, timestamp_ms=item.timestamp_ms + 1))
    engine.finish()


@FUZZ
@given(value=st.binary(max_size=1024))
def test_arbitrary_bytes(decoders: list[Decoder], value: bytes) -> None:
    decode_everywhere(decoders, value)


# -- structured but hostile ----------------------------------------------------------------

HOSTILE_SCALARS = st.one_of(
    st.sampled_from(
        [
            1e308,
            -1e308,
            5e-324,
            float(2**53),
            2**53,
            -(2**63),
            2**64 - 1,
            0,
            -0.0,
            True,
            None,
            "",
            "\x00",
            "9999-12-31T23:59:59.999Z",
            "0001-01-01T00:00:00Z",
            "2026-02-30T00:00:00Z",
            "1e400",
            "track",
            "group",
            "alias",
        ]
    ),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=12),
)
#: Tokens JSON has no value for, spliced in as text: NaN, infinities, huge numbers.
HOSTILE_TOKENS = ["NaN", "Infinity", "-Infinity", "1e400", "-1e999", "1" * 400, "[" * 2000]

json_values = st.recursive(
    HOSTILE_SCALARS,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


def _track(event: str, **properties: Any) -> dict[str, Any]:
    return {
        "type": "track",
        "userId": "c1",
        "messageId": f"m-{event}",
        "event": event,
        "timestamp": "2025-11-01T00:00:00Z",
        "properties": properties,
    }


#: Records every example audience reads (open items, per-product counts, offsets, sums,
#: traits, webhooks), so mutations reach every fact updater in the engine.
BASES = [
    ORDER_COMPLETED,
    IDENTIFY,
    PAGE,
    WEBHOOK_SENT,
    _track("Support Ticket Closed", ticket_id="t-0"),
    _track("Support Ticket Opened", ticket_id="t-1"),  # left open for the hostile records
    _track("Product Viewed", product_id="p-1"),
    _track("Product Added", product_id="p-1"),
    _track("Order Refunded", total=10),
    _track("Order Completed", total=10, products=[{"sku": "starter-kit", "days_supply": 30}]),
    _track("Application Opened"),
    {**IDENTIFY, "traits": {"subscription_status": "active"}},
    *(
        json.loads(line)
        for line in (FIXTURES / "pipelines_policies.jsonl").read_text().splitlines()
    ),
    *(
        json.loads(line)
        for line in (FIXTURES / "customerio_webhook_identity.jsonl").read_text().splitlines()
    ),
]


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(value, dict):
        for k, v in value.items():
            found.extend(_paths(v, (*prefix, k)))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            found.extend(_paths(v, (*prefix, i)))
    return found


def _replace(value: Any, path: tuple[Any, ...], new: Any) -> Any:
    if not path:
        return new
    head, rest = path[0], path[1:]
    if isinstance(value, dict):
        return {**value, head: _replace(value[head], rest, new)}
    out = list(value)
    out[head] = _replace(out[head], rest, new)
    return out


@st.composite
def hostile_records(draw: st.DrawFn) -> tuple[Any, bytes]:
    """A real record with a few values (anywhere) replaced by hostile ones, as JSON text;
    sometimes with a token JSON cannot represent spliced in, or cut short."""
    record: Any = draw(st.sampled_from(BASES))
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(_paths(record)))
        record = _replace(record, path, draw(json_values))
    text = json.dumps(record, allow_nan=True)
    action = draw(st.sampled_from(["plain", "token", "truncate", "batch"]))
    if action == "token" and ":" in text:
        cut = draw(st.sampled_from([i for i, c in enumerate(text) if c == ":"]))
        end = text.find(",", cut)
        end = len(text) - 1 if end < 0 else end
        text = text[: cut + 1] + draw(st.sampled_from(HOSTILE_TOKENS)) + text[end:]
    elif action == "truncate":
        text = text[: draw(st.integers(0, max(0, len(text) - 1)))]
    elif action == "batch":
        text = json.dumps({"batch": [record, draw(json_values), record]}, allow_nan=True)
    return record, text.encode("utf-8", "surrogatepass")


@FUZZ
@given(hostile=hostile_records())
def test_hostile_json(decoders: list[Decoder], hostile: tuple[Any, bytes]) -> None:
    record, value = hostile
    decode_everywhere(decoders, value)
    # The same record as an Avro body, when our schema can carry it at all.
    for kind, plain, framed, schema_id in (
        ("pipelines", decoders[2], decoders[4], 1),
        ("webhook", decoders[3], decoders[5], 2),
    ):
        if not isinstance(record, dict):
            continue
        try:
            body = encode_avro(kind, record)  # type: ignore[arg-type]
        except Exception:  # fastavro refuses values our schema cannot hold
            continue
        check_outcomes(plain.decode_all(body, None, SOURCE))
        check_outcomes(framed.decode_all(confluent_frame(schema_id, body), None, SOURCE))


@FUZZ
@given(
    base=st.sampled_from([("pipelines", ORDER_COMPLETED), ("webhook", WEBHOOK_SENT)]),
    edits=st.lists(st.tuples(st.integers(0, 400), st.integers(0, 255), st.booleans()), max_size=6),
    cut=st.integers(0, 400),
)
def test_mutated_avro_bodies(
    decoders: list[Decoder],
    base: tuple[str, dict[str, Any]],
    edits: list[tuple[int, int, bool]],
    cut: int,
) -> None:
    kind, record = base
    body = bytearray(encode_avro(kind, record))  # type: ignore[arg-type]
    for position, byte, insert in edits:
        position %= len(body) + 1
        if insert:
            body.insert(position, byte)
        elif position < len(body):
            body[position] = byte
    data = bytes(body[: max(1, len(body) - cut % 8)])
    plain, framed = (
        (decoders[2], decoders[4]) if kind == "pipelines" else (decoders[3], decoders[5])
    )
    check_outcomes(plain.decode_all(data, None, SOURCE))
    check_outcomes(
        framed.decode_all(confluent_frame(1 if kind == "pipelines" else 2, data), None, SOURCE)
    )


SHAPES: list[Any] = [[1], {"a": 1}, [[]], [None], [{"sku": [1]}], "", True, None, 2**53 - 1, -0.5]


def test_every_evaluated_value_in_every_shape(decoders: list[Decoder]) -> None:
    """Exhaustive rather than random: each property, trait and webhook data value of every
    base record, replaced by each shape a where path, key, amount or offset may meet."""
    for base in BASES:
        for path in _paths(base):
            if not path or path[0] not in ("properties", "traits", "data") or len(path) < 2:
                continue
            for shape in SHAPES:
                decode_everywhere(decoders, json.dumps(_replace(base, path, shape)).encode())
