"""MembershipDelta encodings: JSON (``to_json``/``from_json``, ``encode_json``/``decode_json``),
the RFC 3339 ``at`` field, and Avro against ``schemas/membership_delta.avsc``."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import fastavro
import orjson
import pytest

from streamsync.deltas.codec import (
    SCHEMA_PATH,
    decode_avro,
    decode_json,
    encode_avro,
    encode_json,
)
from streamsync.deltas.record import (
    ENTER,
    EXIT,
    MembershipDelta,
    format_rfc3339_ms,
    parse_rfc3339_ms,
)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_RFC3339_MS = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")

#: 2026-01-03T11:52:10.000Z, the README's example instant.
AT = 1_767_441_130_000


def _ms(text: str) -> int:
    """Epoch ms computed independently of the code under test (exact integer arithmetic)."""
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return (moment - _EPOCH) // timedelta(milliseconds=1)


def _delta(**changes: object) -> MembershipDelta:
    fields: dict[str, object] = {
        "audience": "ACT__CartAbandon__90m",
        "version": 3,
        "customer_id": "cus_0000042",
        "op": ENTER,
        "at_ms": AT + 123,
        "seq": 7,
        "record_ids": ["5c2e-add", "9f00-view"],
        "identifiers": {"email": "a@example.com", "cio_id": "cio_1"},
        "holdout": True,
    }
    fields.update(changes)
    return MembershipDelta(**fields)  # type: ignore[arg-type]


SAMPLES = [
    _delta(),
    _delta(op=EXIT, seq=1, record_ids=[], identifiers={}, holdout=False),
    _delta(at_ms=0, customer_id="ünïcødé ✓", identifiers={"phone": "+15550100"}),
    _delta(at_ms=2**41, seq=2**40, version=2**31 - 1),
    _delta(correction=True),
    _delta(op=EXIT, definition_change=True),
]


# ---------------------------------------------------------------------------- JSON


@pytest.mark.parametrize("delta", SAMPLES)
def test_json_dict_round_trip(delta: MembershipDelta) -> None:
    data = delta.to_json()
    assert MembershipDelta.from_json(data) == delta
    # The dict survives serialisation to text and back (it is what replay prints).
    assert MembershipDelta.from_json(orjson.loads(orjson.dumps(data))) == delta


@pytest.mark.parametrize("delta", SAMPLES)
def test_json_bytes_round_trip(delta: MembershipDelta) -> None:
    raw = encode_json(delta)
    assert isinstance(raw, bytes)
    assert decode_json(raw) == delta


def test_json_shape_matches_readme() -> None:
    data = orjson.loads(encode_json(_delta(at_ms=AT)))
    assert data == {
        "audience": "ACT__CartAbandon__90m",
        "version": 3,
        "customer_id": "cus_0000042",
        "op": "enter",
        "at": "2026-01-03T11:52:10.000Z",
        "at_ms": AT,
        "seq": 7,
        "record_ids": ["5c2e-add", "9f00-view"],
        "identifiers": {"email": "a@example.com", "cio_id": "cio_1"},
        "holdout": True,
        "id_kind": "id",
        "correction": False,
        "definition_change": False,
        "stitched": False,
    }


def test_to_json_does_not_share_mutable_state() -> None:
    delta = _delta()
    data = delta.to_json()
    data["record_ids"].append("other")
    data["identifiers"]["email"] = "changed@example.com"
    assert delta.record_ids == ["5c2e-add", "9f00-view"]
    assert delta.identifiers["email"] == "a@example.com"


def test_from_json_without_at_ms_reads_at() -> None:
    data = _delta(at_ms=AT + 5).to_json()
    del data["at_ms"]
    assert MembershipDelta.from_json(data).at_ms == AT + 5


def test_from_json_defaults_optional_fields() -> None:
    data = {
        "audience": "A",
        "version": 1,
        "customer_id": "c",
        "op": "exit",
        "at_ms": AT,
        "seq": 2,
    }
    delta = MembershipDelta.from_json(data)
    assert (delta.record_ids, delta.identifiers, delta.holdout) == ([], {}, False)


def test_from_json_rejects_unknown_op() -> None:
    data = _delta().to_json()
    data["op"] = "update"
    with pytest.raises(ValueError, match="op"):
        MembershipDelta.from_json(data)


# ------------------------------------------------------------------- RFC 3339 "at"


@pytest.mark.parametrize(
    ("epoch_ms", "text"),
    [
        (0, "1970-01-01T00:00:00.000Z"),
        (1, "1970-01-01T00:00:00.001Z"),
        (AT, "2026-01-03T11:52:10.000Z"),
        (AT + 7, "2026-01-03T11:52:10.007Z"),
        (AT + 999, "2026-01-03T11:52:10.999Z"),
        (_ms("2026-12-31T23:59:59.999Z"), "2026-12-31T23:59:59.999Z"),
        (_ms("2028-02-29T12:00:00.050Z"), "2028-02-29T12:00:00.050Z"),
    ],
)
def test_format_rfc3339_ms(epoch_ms: int, text: str) -> None:
    assert format_rfc3339_ms(epoch_ms) == text
    assert _delta(at_ms=epoch_ms).to_json()["at"] == text


@pytest.mark.parametrize(
    ("epoch_ms", "text"),
    [
        (-1, "1969-12-31T23:59:59.999Z"),
        (-1000, "1969-12-31T23:59:59.000Z"),
        (-86_400_001, "1969-12-30T23:59:59.999Z"),
    ],
)
def test_format_rfc3339_ms_before_the_epoch(epoch_ms: int, text: str) -> None:
    assert format_rfc3339_ms(epoch_ms) == text


def test_at_is_always_utc_with_three_fraction_digits() -> None:
    for epoch_ms in range(AT - 2_000, AT + 2_000, 37):
        text = format_rfc3339_ms(epoch_ms)
        assert _RFC3339_MS.match(text), text
        assert _ms(text) == epoch_ms


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-01-03T11:52:10.000Z", AT),
        ("2026-01-03T11:52:10Z", AT),
        ("2026-01-03T11:52:10.123z", AT + 123),
        ("2026-01-03T11:52:10.123+00:00", AT + 123),
        ("2026-01-03T13:52:10.123+02:00", AT + 123),
        ("2026-01-03T06:22:10.123-05:30", AT + 123),
        ("2026-01-03T11:52:10.123", AT + 123),  # naive means UTC
        ("  2026-01-03T11:52:10.123Z\n", AT + 123),
        ("2026-01-03T11:52:10.1239Z", AT + 123),  # sub-millisecond digits truncate
        ("1969-12-31T23:59:59.999Z", -1),
    ],
)
def test_parse_rfc3339_ms(text: str, expected: int) -> None:
    assert parse_rfc3339_ms(text) == expected


_FLOAT_TRAPS = [
    "1987-05-10T10:40:21.915Z",
    "2038-07-25T07:07:32.924Z",
    "2039-01-12T23:59:04.595Z",
    "2039-06-08T14:09:16.950Z",
]


@pytest.mark.parametrize("text", _FLOAT_TRAPS)
def test_parse_rfc3339_ms_is_exact(text: str) -> None:
    assert parse_rfc3339_ms(text) == _ms(text)


def test_parse_inverts_format_for_current_instants() -> None:
    for epoch_ms in range(AT, AT + 86_400_000, 86_400_000 // 997):
        assert parse_rfc3339_ms(format_rfc3339_ms(epoch_ms)) == epoch_ms


# -------------------------------------------------------------------------- Avro


def _schema_json() -> dict[str, object]:
    data = orjson.loads(SCHEMA_PATH.read_bytes())
    assert isinstance(data, dict)
    return data


def test_avro_schema_parses_and_has_the_delta_fields() -> None:
    schema = _schema_json()
    fastavro.parse_schema(schema)
    fields = schema["fields"]
    assert isinstance(fields, list)
    names = [f["name"] for f in fields]
    assert names == [
        "audience",
        "version",
        "customer_id",
        "op",
        "at_ms",
        "seq",
        "record_ids",
        "identifiers",
        "holdout",
        "id_kind",
        "correction",
        "definition_change",
        "stitched",
    ]
    by_name = {f["name"]: f for f in fields}
    assert by_name["op"]["type"]["symbols"] == ["enter", "exit"]
    assert by_name["at_ms"]["type"]["logicalType"] == "timestamp-millis"


def test_avro_schema_covers_every_json_field_but_at() -> None:
    names = {f["name"] for f in _schema_json()["fields"]}  # type: ignore[attr-defined]
    assert names == set(_delta().to_json()) - {"at"}


@pytest.mark.parametrize("delta", SAMPLES)
def test_avro_round_trip(delta: MembershipDelta) -> None:
    raw = encode_avro(delta)
    assert isinstance(raw, bytes)
    assert decode_avro(raw) == delta


def test_avro_is_readable_with_the_schema_file_alone() -> None:
    """A consumer with only the .avsc (no streamsync) reads the same values."""
    import io

    delta = _delta()
    schema = fastavro.parse_schema(_schema_json())
    record = fastavro.schemaless_reader(io.BytesIO(encode_avro(delta)), schema, None)
    assert isinstance(record, dict)
    assert record["customer_id"] == delta.customer_id
    assert record["op"] == "enter"
    assert record["record_ids"] == delta.record_ids
    assert record["identifiers"] == delta.identifiers
    assert record["holdout"] is True


def test_avro_round_trip_many_current_instants() -> None:
    for epoch_ms in range(AT, AT + 86_400_000, 86_400_000 // 499):
        delta = _delta(at_ms=epoch_ms)
        assert decode_avro(encode_avro(delta)).at_ms == epoch_ms


@pytest.mark.parametrize("text", _FLOAT_TRAPS)
def test_avro_round_trip_is_exact(text: str) -> None:
    delta = _delta(at_ms=_ms(text))
    assert decode_avro(encode_avro(delta)) == delta
