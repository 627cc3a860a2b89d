"""Data Pipelines (Segment spec) records -> Event."""

from __future__ import annotations

import pytest

from streamsync.ingest.errors import DecodeError, DecodeReason
from streamsync.ingest.event import NO_CUSTOMER, Event, Skipped, SourcePosition
from streamsync.ingest.pipelines import CustomerKeyRule, parse_timestamp_ms, pipelines_event
from tests.ingest.samples import IDENTIFY, ORDER_COMPLETED, PAGE, sample

SOURCE = SourcePosition("cio.pipelines", 0, 17)


def reason_of(record: object, **kwargs: object) -> DecodeReason:
    with pytest.raises(DecodeError) as info:
        pipelines_event(record, **kwargs)  # type: ignore[arg-type]
    return info.value.reason


def test_track_event_fields() -> None:
    event = pipelines_event(ORDER_COMPLETED, None, SOURCE)
    assert event == Event(
        customer_id="cust-42",
        kind="track",
        name="Order Completed",
        timestamp_ms=1714566896789,
        record_id="msg-0001",
        properties=ORDER_COMPLETED["properties"],
        traits={"email": "ada@example.com", "cio_id": "cio_abc"},
        identifiers={"email": "ada@example.com", "cio_id": "cio_abc"},
        source=SOURCE,
    )


def test_identify_uses_traits_and_offset_timestamp() -> None:
    event = pipelines_event(IDENTIFY)
    assert event is not None
    assert (event.kind, event.name) == ("identify", "identify")
    assert event.timestamp_ms == 1714557600000  # 10:00Z
    assert event.identifiers == {"email": "ada@example.com", "phone": "+15550100"}
    assert event.traits["subscription_status"] == "active"


def test_top_level_traits_win_over_context_traits() -> None:
    record = sample(IDENTIFY, context={"traits": {"email": "old@example.com", "plan": "pro"}})
    event = pipelines_event(record)
    assert event is not None
    assert event.identifiers["email"] == "ada@example.com"
    assert event.traits["plan"] == "pro"
    assert event.traits["email"] == "ada@example.com"


def test_page_and_screen_names() -> None:
    page = pipelines_event(PAGE)
    assert page is not None and (page.kind, page.name) == ("page", "Pricing")
    unnamed = pipelines_event(sample(PAGE, type="screen", name=None))
    assert unnamed is not None and (unnamed.kind, unnamed.name) == ("screen", "")


def test_no_customer_key_is_skipped_not_an_error() -> None:
    assert pipelines_event(sample(ORDER_COMPLETED, userId=None)) == Skipped(NO_CUSTOMER)
    assert pipelines_event(sample(ORDER_COMPLETED, userId="")) == Skipped(NO_CUSTOMER)


def test_numeric_user_id_is_a_key() -> None:
    event = pipelines_event(sample(ORDER_COMPLETED, userId=1234))
    assert event is not None and event.customer_id == "1234"


def test_customer_key_path_and_kafka_key_fallback() -> None:
    record = sample(ORDER_COMPLETED, userId=None)
    record["properties"]["customer_id"] = "from-props"
    rule = CustomerKeyRule.parse("properties.customer_id")
    event = pipelines_event(record, rule=rule)
    assert event is not None and event.customer_id == "from-props"

    keyed = CustomerKeyRule.parse("userId", from_kafka_key=True)
    event = pipelines_event(sample(ORDER_COMPLETED, userId=None), b"kafka-key", rule=keyed)
    assert event is not None and event.customer_id == "kafka-key"
    # The payload wins over the Kafka key when it has one.
    event = pipelines_event(ORDER_COMPLETED, b"kafka-key", rule=keyed)
    assert event is not None and event.customer_id == "cust-42"
    assert pipelines_event(sample(ORDER_COMPLETED, userId=None), b"", rule=keyed) == Skipped(
        NO_CUSTOMER
    )
    assert reason_of(sample(ORDER_COMPLETED, userId=None), kafka_key=b"\xff", rule=keyed) == (
        DecodeReason.WRONG_TYPE
    )


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"type": None}, DecodeReason.MISSING_FIELD),
        ({"type": "merge"}, DecodeReason.UNKNOWN_TYPE),
        ({"type": 3}, DecodeReason.WRONG_TYPE),
        ({"messageId": 12}, DecodeReason.WRONG_TYPE),
        ({"event": None}, DecodeReason.MISSING_FIELD),
        ({"event": ""}, DecodeReason.MISSING_FIELD),
        ({"timestamp": None}, DecodeReason.BAD_TIMESTAMP),
        ({"timestamp": 1714566896789}, DecodeReason.WRONG_TYPE),
        ({"timestamp": "yesterday"}, DecodeReason.BAD_TIMESTAMP),
        ({"timestamp": "2024-02-30T00:00:00Z"}, DecodeReason.BAD_TIMESTAMP),
        ({"userId": {"id": "cust-42"}}, DecodeReason.WRONG_TYPE),
        ({"anonymousId": ["x"]}, DecodeReason.WRONG_TYPE),
        ({"properties": "order_id=o-1"}, DecodeReason.WRONG_TYPE),
        ({"traits": [1, 2]}, DecodeReason.WRONG_TYPE),
        ({"context": {"traits": "x"}}, DecodeReason.WRONG_TYPE),
        ({"context": {"traits": {"email": 5}}}, DecodeReason.WRONG_TYPE),
    ],
)
def test_bad_records(changes: dict[str, object], reason: DecodeReason) -> None:
    assert reason_of(sample(ORDER_COMPLETED, **changes)) == reason


def test_record_that_is_not_an_object() -> None:
    assert reason_of([ORDER_COMPLETED]) == DecodeReason.WRONG_TYPE


def test_details_name_fields_never_values() -> None:
    record = sample(ORDER_COMPLETED, userId={"email": "secret@example.com"})
    with pytest.raises(DecodeError) as info:
        pipelines_event(record)
    assert "userId" in info.value.detail and "object" in info.value.detail
    assert "secret" not in str(info.value)


def test_broken_record_without_customer_is_still_an_error() -> None:
    assert reason_of(sample(ORDER_COMPLETED, userId=None, event=None)) == (
        DecodeReason.MISSING_FIELD
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1970-01-01T00:00:00Z", 0),
        ("2024-05-01T12:34:56Z", 1714566896000),
        ("2024-05-01T12:34:56.789Z", 1714566896789),
        ("2024-05-01T12:34:56.789999Z", 1714566896789),  # truncated, not rounded
        ("2024-05-01T12:34:56.7+00:00", 1714566896700),
        ("2024-05-01T14:34:56.789+02:00", 1714566896789),
        ("2024-05-01T12:34:56.789", 1714566896789),  # no offset: UTC
        ("1969-12-31T23:59:59.999Z", -1),
    ],
)
def test_timestamps(text: str, expected: int) -> None:
    assert parse_timestamp_ms(text) == expected
