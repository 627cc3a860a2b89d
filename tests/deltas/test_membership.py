"""The membership table's record format: keys any audience and customer id survive,
values that are the enter's details, and the partition writers and readers agree on."""

from __future__ import annotations

import zlib
from pathlib import Path

import orjson
import pytest

from streamsync.deltas.config import DeltasConfig
from streamsync.deltas.membership import (
    Member,
    decode_member,
    encode_member,
    member_key,
    member_partitioner,
    parse_member_key,
)
from streamsync.deltas.record import MembershipDelta
from streamsync.kafka.partitioner import murmur2, partition_for
from tests.runtime.driver import driver_config
from tests.runtime.evaluate_support import EXAMPLE_AUDIENCES

ODD_IDS = ["c1", 'a"b', "a\\b", 'x","y', "ünï", "tab\there", "", "a\x00b", "]"]


def _enter(**overrides: object) -> MembershipDelta:
    fields: dict[str, object] = {
        "audience": "ACT__CartAbandon__90m",
        "version": 3,
        "customer_id": "c1",
        "op": "enter",
        "at_ms": 1_795_600_800_123,
        "seq": 5,
        "record_ids": ["r1"],
        "identifiers": {"email": "a@example.com"},
        "holdout": True,
        "id_kind": "email",
    }
    fields.update(overrides)
    return MembershipDelta(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize("customer", ODD_IDS)
def test_a_key_names_its_audience_and_customer_whatever_they_hold(customer: str) -> None:
    for audience in ("ACT__X__1d", customer):
        key = member_key(audience, customer)
        assert parse_member_key(key) == (audience, customer)
        assert orjson.loads(key) == [audience, customer]
        # Readers of one customer test the key's end before parsing it.
        assert key.endswith(b"," + orjson.dumps(customer) + b"]")
    others = [c for c in ODD_IDS if c != customer]
    suffix = b"," + orjson.dumps(customer) + b"]"
    assert not any(member_key(customer, other).endswith(suffix) for other in others)


def test_what_is_not_a_key_is_refused() -> None:
    for bad in (b"c1", b'["only-one"]', b'["a", 2]', b'{"a": "b"}', b"\xff"):
        with pytest.raises(ValueError):
            parse_member_key(bad)


def test_the_value_is_the_enters_details() -> None:
    delta = _enter()
    value = encode_member(delta)
    assert orjson.loads(value) == {
        "audience": "ACT__CartAbandon__90m",
        "version": 3,
        "customer_id": "c1",
        "id_kind": "email",
        "identifiers": {"email": "a@example.com"},
        "since": "2026-11-25T10:00:00.123Z",
        "since_ms": 1_795_600_800_123,
        "seq": 5,
        "holdout": True,
    }
    member = decode_member(value)
    assert member == Member.from_enter(delta)
    assert Member.from_json(member.to_json()) == member
    assert orjson.loads(value) == member.to_json()
    # A value written by hand with only the RFC 3339 time reads the same.
    by_hand = {k: v for k, v in member.to_json().items() if k != "since_ms"}
    assert Member.from_json(by_hand) == member


def test_the_partition_is_the_customers_as_the_deltas_producer_chooses(tmp_path: Path) -> None:
    config = driver_config(tmp_path, EXAMPLE_AUDIENCES)
    customers = [f"cus_{n:07d}".encode() for n in range(200)]
    default = member_partitioner(config, 6)
    assert [default(c) for c in customers] == [partition_for(c, 6) for c in customers]
    for partitioner, expected in (
        ("murmur2_random", lambda c: (murmur2(c) & 0x7FFFFFFF) % 6),
        ("random", lambda c: zlib.crc32(c) % 6),  # no key hash: CRC-32, still stable
    ):
        kafka = config.kafka.model_copy(update={"extra": {"partitioner": partitioner}})
        chosen = member_partitioner(config.model_copy(update={"kafka": kafka}), 6)
        assert [chosen(c) for c in customers] == [expected(c) for c in customers]


def test_the_table_is_named_after_the_deltas_topic_unless_named() -> None:
    assert DeltasConfig().members == "streamsync.deltas.members"
    assert DeltasConfig(topic="d").members == "d.members"
    assert DeltasConfig(topic="d", members_topic="who").members == "who"
