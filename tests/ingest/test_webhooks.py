"""Customer.io reporting webhooks -> Event."""

from __future__ import annotations

import pytest

from streamsync.ingest.errors import DecodeError, DecodeReason
from streamsync.ingest.event import NO_CUSTOMER, Event, Skipped
from streamsync.ingest.webhooks import webhook_event
from tests.ingest.samples import WEBHOOK_SENT, sample


def reason_of(record: object) -> DecodeReason:
    with pytest.raises(DecodeError) as info:
        webhook_event(record)
    return info.value.reason


def test_sent_webhook() -> None:
    assert webhook_event(WEBHOOK_SENT) == Event(
        customer_id="cust-42",
        kind="webhook",
        name="sent",
        timestamp_ms=1714566896000,
        record_id="01HXYZ",
        properties={
            "object_type": "email",
            "delivery_id": "dlv-1",
            "campaign_id": 7,
            "recipient": "ada@example.com",
            "content": {"subject": "not a scalar"},
        },
        identifiers={"email": "ada@example.com", "cio_id": "cio_abc"},
        id_kind="id",
    )


def test_no_identifier_at_all_is_skipped() -> None:
    record = sample(WEBHOOK_SENT)
    del record["data"]["customer_id"]
    del record["data"]["identifiers"]
    assert webhook_event(record) == Skipped(NO_CUSTOMER)


def test_minimal_webhook() -> None:
    event = webhook_event(
        {"event_id": "e", "metric": "opened", "timestamp": 1, "data": {"customer_id": "c"}}
    )
    assert event is not None
    assert (event.properties, event.identifiers, event.timestamp_ms) == ({}, {}, 1000)


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"event_id": 5}, DecodeReason.WRONG_TYPE),
        ({"metric": None}, DecodeReason.MISSING_FIELD),
        ({"metric": ["sent"]}, DecodeReason.WRONG_TYPE),
        ({"timestamp": None}, DecodeReason.BAD_TIMESTAMP),
        ({"timestamp": "1714566896"}, DecodeReason.WRONG_TYPE),
        ({"timestamp": True}, DecodeReason.WRONG_TYPE),
        ({"timestamp": 1714566896000000}, DecodeReason.BAD_TIMESTAMP),
        ({"timestamp": -5}, DecodeReason.BAD_TIMESTAMP),
        ({"object_type": 1}, DecodeReason.WRONG_TYPE),
        ({"data": None}, DecodeReason.MISSING_FIELD),
        ({"data": "cust-42"}, DecodeReason.WRONG_TYPE),
        ({"data": {"customer_id": {"id": 1}}}, DecodeReason.WRONG_TYPE),
        ({"data": {"customer_id": "c", "identifiers": ["x"]}}, DecodeReason.WRONG_TYPE),
        ({"data": {"customer_id": "c", "identifiers": {"email": 1}}}, DecodeReason.WRONG_TYPE),
    ],
)
def test_bad_webhooks(changes: dict[str, object], reason: DecodeReason) -> None:
    assert reason_of(sample(WEBHOOK_SENT, **changes)) == reason
