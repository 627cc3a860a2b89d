"""The membership table as the runtime writes it, without a broker (the in-process
driver): every delta's table record goes into the cycle's transaction, in the partition
readers look for, and what the table converges to is who replay says is a member."""

from __future__ import annotations

import time
import uuid
import zlib
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from streamsync.deltas.membership import member_partitioner, parse_member_key
from tests.runtime.driver import EvaluateDriver, driver_config
from tests.runtime.evaluate_support import (
    EXAMPLE_AUDIENCES,
    customer_of,
    final_members,
    replay_deltas,
    synthetic,
    table_of,
)

AUDIENCES = """
name: ACT__CartWait__3s
version: 1
owner: retention@example.com
description: Added to cart, nothing else for three seconds.
entry:
  since_last: {event: Product Added, at_least: 3s, less_than: 1h}
exit:
  occurred_since_last: {event: Order Completed, since: {event: Product Added}}
---
name: ACT__Ordered__7d
version: 2
owner: retention@example.com
description: Ordered in the last seven days; half held out.
entry:
  count: {event: Order Completed, at_least: 1, within: 7d}
holdout: {percent: 50}
"""


def _rfc3339(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _track(customer: str, event: str, ms: int, **properties: Any) -> bytes:
    return orjson.dumps(
        {
            "type": "track",
            "messageId": str(uuid.uuid4()),
            "userId": customer,
            "event": event,
            "timestamp": _rfc3339(ms),
            "properties": properties,
        }
    )


@pytest.fixture
def drivers() -> Iterator[list[EvaluateDriver]]:
    made: list[EvaluateDriver] = []
    yield made
    for driver in made:
        driver.close()


@pytest.fixture
def audiences(tmp_path: Path) -> Path:
    path = tmp_path / "audiences"
    path.mkdir()
    for number, text in enumerate(AUDIENCES.split("---\n")):
        (path / f"{number}.yaml").write_text(text)
    return path


def test_the_table_converges_to_replays_final_membership(
    tmp_path: Path, drivers: list[EvaluateDriver]
) -> None:
    config = driver_config(tmp_path, EXAMPLE_AUDIENCES, wall_clock=False)
    driver = EvaluateDriver(config, partitions=3)
    drivers.append(driver)
    records = [r for r in synthetic(60, 3000, seed=4) if "data" not in r]
    lines = [orjson.dumps(r) for r in records]
    for record, line in zip(records, lines, strict=True):
        customer = customer_of(record)
        driver.pipe(
            "pipelines", line, key=customer.encode(), partition=zlib.crc32(customer.encode()) % 3
        )
    while driver.process():  # one batch at a time
        pass
    assert driver.commit()
    driver.finish()
    assert driver.commit()
    expected = final_members(replay_deltas(lines))
    assert len(expected) > 30
    records_written = driver.cluster.read(driver.names.members)
    assert table_of(records_written) == expected
    # Every record sits in the partition its customer id hashes to, as readers look.
    partition_of = member_partitioner(config, driver.plan.members_partitions)
    for message in records_written:
        _, customer = parse_member_key(message.key() or b"")
        assert message.partition() == partition_of(customer.encode())
    # One record per delta: an enter is a value, an exit a tombstone.
    deltas = driver.deltas()
    assert len(records_written) == len(deltas)
    exits = sum(d.op == "exit" for d in deltas)
    assert exits and sum(m.value() is None for m in records_written) == exits


def test_an_aborted_cycle_leaves_no_table_record_and_an_exit_is_a_tombstone(
    tmp_path: Path, audiences: Path, drivers: list[EvaluateDriver]
) -> None:
    now = int(time.time() * 1000)
    driver = EvaluateDriver(driver_config(tmp_path, audiences), now_ms=now)
    drivers.append(driver)
    members = driver.names.members

    def table() -> dict[tuple[str, str], Any]:
        return table_of(driver.cluster.read(members))

    driver.pipe("pipelines", _track("e", "Product Added", now, sku="A"), key=b"e")
    driver.process()
    driver.tick(4_000)
    driver.process()
    assert driver.commit()
    [entered] = table().values()
    assert (entered.audience, entered.customer_id, entered.since_ms) == (
        "ACT__CartWait__3s",
        "e",
        now + 3_000,
    )
    assert (entered.version, entered.seq, entered.holdout) == (1, 1, False)

    driver.pipe("pipelines", _track("f", "Product Added", now + 4_000, sku="B"), key=b"f")
    driver.process()
    driver.tick(4_000)
    driver.process()
    driver.fail_next_commit()
    assert not driver.commit()
    assert set(table()) == {("ACT__CartWait__3s", "e")}  # f's enter was rolled back

    assert driver.process() == 1  # read again after the rewind
    assert driver.commit()
    assert set(table()) == {("ACT__CartWait__3s", "e"), ("ACT__CartWait__3s", "f")}

    # Orders: e and f leave the cart audience (tombstones) and, with others, enter the
    # ordered one, held out or not as the engine decided for each: members either way.
    buyers = ["e", "f", *(f"b{n}" for n in range(10))]
    for customer in buyers:
        order = _track(customer, "Order Completed", now + 9_000, order_id="o", total=5.0)
        driver.pipe("pipelines", order, key=customer.encode())
    driver.process()
    driver.tick(2_000)
    driver.process()
    assert driver.commit()
    got = table()
    ordered = {d.customer_id: d for d in driver.deltas() if d.audience == "ACT__Ordered__7d"}
    assert set(got) == {("ACT__Ordered__7d", c) for c in buyers}
    for customer, delta in ordered.items():
        member = got[("ACT__Ordered__7d", customer)]
        assert (member.version, member.holdout, member.since_ms) == (2, delta.holdout, delta.at_ms)
    assert {m.holdout for m in got.values()} == {True, False}
    tombstones = [m for m in driver.cluster.read(members) if m.value() is None]
    assert {parse_member_key(m.key() or b"") for m in tombstones} == {
        ("ACT__CartWait__3s", "e"),
        ("ACT__CartWait__3s", "f"),
    }
