"""The evaluate runtime without a broker (tests/runtime/driver.py): routing, dead
letters, consumer errors, the watermark, and commit/abort with their counts."""

from __future__ import annotations

import logging
import time
import uuid
import zlib
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import KafkaError

from streamsync.audiences.engine import Engine
from streamsync.errors import NeedsRestart
from streamsync.ingest.jsonl import is_webhook_record
from streamsync.kafka.health import KafkaUnavailable
from streamsync.runtime.errors import RestartRequired
from streamsync.runtime.router import ENGINE_ERROR
from tests.runtime.driver import EvaluateDriver, driver_config
from tests.runtime.evaluate_support import (
    EXAMPLE_AUDIENCES,
    check_seq,
    customer_of,
    keys,
    replay_deltas,
    synthetic,
)

CART_WAIT = """
name: ACT__CartWait__3s
version: 1
owner: retention@example.com
description: Added to cart, nothing else for three seconds.
entry:
  since_last: {event: Product Added, at_least: 3s, less_than: 1h}
exit:
  occurred_since_last: {event: Order Completed, since: {event: Product Added}}
"""

T0 = 1_767_225_600_000


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
def cart_wait(tmp_path: Path) -> Path:
    path = tmp_path / "audiences"
    path.mkdir()
    (path / "cart.yaml").write_text(CART_WAIT)
    return path


@pytest.fixture
def drivers() -> Iterator[list[EvaluateDriver]]:
    made: list[EvaluateDriver] = []
    yield made
    for driver in made:
        driver.close()


def _driver(made: list[EvaluateDriver], *args: Any, **kwargs: Any) -> EvaluateDriver:
    driver = EvaluateDriver(*args, **kwargs)
    made.append(driver)
    return driver


def test_records_go_to_the_task_of_their_partition_and_deadlines_follow_the_wall_clock(
    tmp_path: Path, cart_wait: Path, drivers: list[EvaluateDriver]
) -> None:
    now = int(time.time() * 1000)
    driver = _driver(drivers, driver_config(tmp_path, cart_wait), partitions=2, now_ms=now)
    assert sorted(driver.tasks) == [0, 1]
    driver.pipe("pipelines", _track("a", "Product Added", now, sku="A"), key=b"a", partition=0)
    driver.pipe("pipelines", _track("b", "Product Added", now, sku="B"), key=b"b", partition=1)
    assert driver.process() == 2
    assert all(task.caught_up["pipelines"] for task in driver.tasks.values())
    assert [driver.tasks[p].newest["pipelines"] for p in (0, 1)] == [now, now]
    assert driver.commit()
    assert driver.committed_offsets() == {("pipelines", 0): 1, ("pipelines", 1): 1}
    assert driver.deltas() == []  # nobody has waited three seconds yet
    driver.tick(4_000)  # caught up: the wall clock (less idle_grace) moves the watermark
    driver.process()
    assert driver.deltas() == []  # not committed yet
    assert driver.commit()
    entered = sorted((d.customer_id, d.op, d.at_ms) for d in driver.deltas())
    assert entered == [("a", "enter", now + 3000), ("b", "enter", now + 3000)]
    assert driver.stats.deltas == 2 and driver.stats.commits == 2


def test_malformed_records_are_dead_lettered_with_their_reason_and_counted(
    tmp_path: Path, cart_wait: Path, drivers: list[EvaluateDriver]
) -> None:
    driver = _driver(drivers, driver_config(tmp_path, cart_wait), now_ms=T0)
    driver.pipe("pipelines", b"{not json", key=b"k", timestamp_ms=T0)
    driver.pipe("pipelines", _track("c", "Product Added", T0, sku="A"), key=b"c")
    driver.pipe("pipelines", b'{"type": "track"}', key=b"k2")
    assert driver.process() == 3
    assert driver.dead_letters() == []  # inside the open transaction
    assert driver.commit()
    letters = driver.dead_letters()
    assert [m.value() for m in letters] == [b"{not json", b'{"type": "track"}']
    assert [m.key() for m in letters] == [b"k", b"k2"]
    reasons = driver.dead_letter_reasons()
    assert reasons[0] == "malformed_json"
    topic = driver.stats.topics["pipelines"]
    assert topic.decoded == 1 and sum(topic.dead_lettered.values()) == 2
    assert topic.dead_lettered["malformed_json"] == 1


def test_a_record_without_a_time_field_takes_the_kafka_record_time(
    tmp_path: Path, cart_wait: Path, drivers: list[EvaluateDriver]
) -> None:
    now = int(time.time() * 1000)
    driver = _driver(drivers, driver_config(tmp_path, cart_wait), now_ms=now)
    timeless = orjson.loads(_track("a", "Product Added", now, sku="A"))
    del timeless["timestamp"]
    driver.pipe("pipelines", orjson.dumps(timeless), key=b"a", timestamp_ms=now - 1_000)
    driver.pipe("pipelines", orjson.dumps({**timeless, "userId": "b"}), key=b"b")
    assert driver.process() == 2
    assert driver.commit()
    assert driver.dead_letter_reasons() == ["bad_timestamp"]  # no time at all
    driver.tick(4_000)
    driver.process()
    assert driver.commit()
    assert [(d.customer_id, d.op, d.at_ms) for d in driver.deltas()] == [
        ("a", "enter", now - 1_000 + 3_000)
    ]


def test_a_consumer_error_of_no_partition_is_logged_and_a_fatal_one_stops(
    tmp_path: Path,
    cart_wait: Path,
    drivers: list[EvaluateDriver],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A consumer returns errors that belong to no partition while a broker restarts."""
    driver = _driver(drivers, driver_config(tmp_path, cart_wait), now_ms=T0)
    driver.pipe_error(KafkaError(KafkaError._TRANSPORT, "broker restarting"))
    driver.pipe_error(KafkaError(KafkaError._ALL_BROKERS_DOWN), topic="pipelines", partition=0)
    driver.pipe("pipelines", _track("d", "Product Added", T0, sku="A"), key=b"d")
    with caplog.at_level(logging.WARNING, logger="streamsync.runtime.router"):
        assert driver.process() == 1
    warned = [r.getMessage() for r in caplog.records]
    assert any("broker restarting" in line for line in warned), warned
    assert any("pipelines[0]" in line for line in warned), warned
    assert driver.commit() and driver.stats.records == 1
    driver.pipe_error(KafkaError(KafkaError._FATAL, "fenced", fatal=True))
    with pytest.raises(KafkaUnavailable, match="fatal consumer error"):
        driver.process()


def test_an_aborted_commit_rolls_back_counts_and_output_and_the_records_are_read_again(
    tmp_path: Path, cart_wait: Path, drivers: list[EvaluateDriver]
) -> None:
    now = int(time.time() * 1000)
    driver = _driver(drivers, driver_config(tmp_path, cart_wait), now_ms=now)
    driver.pipe("pipelines", _track("e", "Product Added", now, sku="A"), key=b"e")
    driver.pipe("pipelines", b"{bad", key=b"x")
    driver.process()
    driver.tick(4_000)
    driver.process()
    assert driver.commit()
    committed_task = driver.tasks[0]
    assert driver.stats.records == 2 and driver.stats.deltas == 1
    driver.pipe("pipelines", _track("f", "Product Added", now + 4_000, sku="B"), key=b"f")
    driver.pipe("pipelines", b"{worse", key=b"y")
    driver.process()
    driver.tick(4_000)
    driver.process()
    assert driver.stats.records == 4 and driver.stats.deltas == 2
    driver.fail_next_commit()
    assert not driver.commit()
    # Counts, output and offsets are those of the last commit; the task was restored.
    assert (driver.stats.records, driver.stats.deltas, driver.stats.commits) == (2, 1, 1)
    assert driver.stats.aborts == 1
    assert driver.stats.topics["pipelines"].dead_lettered["malformed_json"] == 1
    assert [d.customer_id for d in driver.deltas()] == ["e"]
    assert len(driver.dead_letters()) == 1
    assert driver.committed_offsets() == {("pipelines", 0): 2}
    assert driver.tasks[0] is not committed_task
    # The consumer was sought back: the same records, counted once more, then committed.
    assert driver.process() == 2
    assert driver.commit()
    assert (driver.stats.records, driver.stats.deltas, driver.stats.aborts) == (4, 2, 1)
    assert sorted(d.customer_id for d in driver.deltas()) == ["e", "f"]
    check_seq(driver.deltas())
    assert len(driver.dead_letters()) == 2
    assert driver.committed_offsets() == {("pipelines", 0): 4}


def test_a_record_the_engine_raises_on_is_dead_lettered_after_a_rewind(
    tmp_path: Path, drivers: list[EvaluateDriver], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The engine raises applying one record (released from its buffer later, in
    advance): the cycle is rewound, that record dead-lettered when it is read again, and
    every other record evaluated as replay does."""
    load = Engine._load

    def failing_load(self: Engine, cid: str) -> Any:
        if cid == "poison-1":
            raise ZeroDivisionError("an audience the engine cannot evaluate")
        return load(self, cid)

    monkeypatch.setattr(Engine, "_load", failing_load)
    config = driver_config(tmp_path, EXAMPLE_AUDIENCES, wall_clock=False)
    driver = _driver(drivers, config, now_ms=T0)
    records = [r for r in synthetic(20, 400, seed=5) if not is_webhook_record(r)]
    lines = [orjson.dumps(r) for r in records]
    poison = _track("poison-1", "Order Completed", T0 + 86_400_000, order_id="o", total=5.0)
    for line in lines[:150]:
        driver.pipe("pipelines", line)
    driver.pipe("pipelines", poison, key=b"poison-1")
    for line in lines[150:]:
        driver.pipe("pipelines", line)
    driver.process()
    assert driver.stats.engine_errors == 1 and driver.stats.aborts == 1
    assert driver.stats.records == 0  # rewound: nothing was committed yet
    driver.process()
    assert driver.commit()
    driver.finish()
    assert driver.commit()
    assert driver.dead_letter_reasons() == [ENGINE_ERROR]
    [letter] = driver.dead_letters()
    assert letter.value() == poison
    assert driver.stats.records == len(lines) + 1
    assert keys(driver.deltas()) == keys(replay_deltas(lines))


def _two_topic_driver(
    tmp_path: Path, drivers: list[EvaluateDriver], partitions: int, **evaluate: Any
) -> EvaluateDriver:
    """A driver over two co-partitioned topics, pipelines and webhooks."""
    config = driver_config(
        tmp_path,
        EXAMPLE_AUDIENCES,
        topics=[("pipelines", "pipelines_json"), ("webhooks", "webhook_json")],
        **evaluate,
    )
    return _driver(drivers, config, partitions=partitions, now_ms=T0)


def _pipe_synthetic(
    driver: EvaluateDriver, customers: int, events: int, seed: int, partitions: int
) -> list[bytes]:
    """Pipe a seeded synthetic stream, keyed and partitioned by customer; its lines."""
    lines = []
    for record in synthetic(customers, events, seed=seed):
        customer = customer_of(record)
        topic = "webhooks" if is_webhook_record(record) else "pipelines"
        line = orjson.dumps(record)
        lines.append(line)
        partition = zlib.crc32(customer.encode()) % partitions
        driver.pipe(topic, line, key=customer.encode(), partition=partition)
    return lines


def test_three_partitions_of_two_topics_equal_replay(
    tmp_path: Path, drivers: list[EvaluateDriver]
) -> None:
    """Two co-partitioned topics, records keyed by customer: the committed deltas of a
    bounded run are replay's."""
    driver = _two_topic_driver(tmp_path, drivers, 3, wall_clock=False)
    lines = _pipe_synthetic(driver, 60, 3000, seed=11, partitions=3)
    for _ in range(3):
        driver.process()
        assert driver.commit()
    driver.finish()
    assert driver.commit()
    assert driver.stats.records == len(lines)
    live = driver.deltas()
    check_seq(live)
    expected = replay_deltas(lines)
    assert len(expected) > 100
    assert keys(live) == keys(expected)


def _two_topic_backlog(
    tmp_path: Path, drivers: list[EvaluateDriver], **evaluate: Any
) -> tuple[EvaluateDriver, list[bytes]]:
    """A driver over two co-partitioned topics holding a backlog when it is assigned."""
    driver = _two_topic_driver(tmp_path, drivers, 2, **evaluate)
    lines = _pipe_synthetic(driver, 40, 2000, seed=5, partitions=2)
    driver.revoke()  # taken up again with the backlog in place: its end offsets are known
    driver.assign()
    return driver, lines


@pytest.mark.parametrize("wall_clock", [False, True])
def test_a_topic_whose_first_fetch_comes_back_seconds_later_holds_the_clock(
    tmp_path: Path, drivers: list[EvaluateDriver], wall_clock: bool
) -> None:
    """Catch-up is decided by offsets: while the webhooks' fetches are held (seconds of
    wall clock), every task waits for them, and the finished backlog equals replay."""
    driver, lines = _two_topic_backlog(tmp_path, drivers, wall_clock=wall_clock)
    driver.consumer.hold("webhooks")
    for _ in range(5):
        driver.process()
        driver.tick(2_000)
        assert driver.commit()
    assert driver.stats.topics["webhooks"].records == 0
    assert all(not task.caught_up["webhooks"] for task in driver.tasks.values())
    assert driver.deltas() == []  # nothing is final while the webhooks may be older
    driver.consumer.release("webhooks")
    for _ in range(3):
        driver.process()
        assert driver.commit()
    driver.finish()
    assert driver.commit()
    assert driver.stats.records == len(lines)
    assert (driver.stats.late, driver.stats.too_late) == (0, 0)
    live = driver.deltas()
    check_seq(live)
    assert keys(live) == keys(replay_deltas(lines))


CART_10S = CART_WAIT.replace("3s", "10s").replace("CartWait__10s", "Cart__10s")
CART_60S = CART_WAIT.replace("3s", "60s").replace("CartWait__60s", "Cart__60s")


@pytest.fixture
def carts(tmp_path: Path) -> Path:
    path = tmp_path / "carts"
    path.mkdir()
    (path / "cart10.yaml").write_text(CART_10S)
    (path / "cart60.yaml").write_text(CART_60S)
    return path


def test_live_late_records_are_applied_at_their_own_time_and_corrections_marked(
    tmp_path: Path, carts: Path, drivers: list[EvaluateDriver]
) -> None:
    """Caught up, the clock follows the wall clock: a cart 30 s late enters the 60 s
    audience at cart + 60 s as if on time, and the 10 s audience at once, marked as a
    correction; an order after that enter exits it at once, also a correction."""
    now = int(time.time() * 1000)
    driver = _driver(drivers, driver_config(tmp_path, carts), now_ms=now)
    driver.process()
    cart = now - 30_000
    driver.pipe("pipelines", _track("a", "Product Added", cart, sku="A"), key=b"a")
    driver.tick(100)  # the next cycle
    driver.process()
    assert driver.commit()
    first = [(d.audience, d.op, d.at_ms, d.correction) for d in driver.deltas()]
    clock = driver.tasks[0].engine.watermark
    assert first == [("ACT__Cart__10s", "enter", first[0][2], True)]
    assert cart + 10_000 < first[0][2] < clock  # at the clock's instant, not cart + 10 s
    driver.tick(31_000)
    driver.process()
    assert driver.commit()
    second = [(d.audience, d.op, d.at_ms, d.correction) for d in driver.deltas()][1:]
    assert second == [("ACT__Cart__60s", "enter", cart + 60_000, False)]
    order = now - 5_000  # before cart + 60 s, whose enter already went out
    driver.pipe("pipelines", _track("a", "Order Completed", order, order_id="o"), key=b"a")
    driver.tick(100)
    driver.process()
    assert driver.commit()
    third = sorted((d.audience, d.op, d.correction) for d in driver.deltas()[2:])
    assert third == [("ACT__Cart__10s", "exit", True), ("ACT__Cart__60s", "exit", True)]
    assert (driver.stats.late, driver.stats.too_late) == (2, 0)


def test_a_record_later_than_the_lateness_is_applied_at_the_clock_and_counted(
    tmp_path: Path, carts: Path, drivers: list[EvaluateDriver]
) -> None:
    now = int(time.time() * 1000)
    driver = _driver(drivers, driver_config(tmp_path, carts), now_ms=now)
    driver.process()
    driver.pipe("pipelines", _track("a", "Product Added", now - 600_000, sku="A"), key=b"a")
    driver.tick(100)
    driver.process()
    assert driver.commit()
    assert driver.deltas() == []  # applied at the clock: its 10 s have not passed yet
    driver.tick(11_000)
    driver.process()
    assert driver.commit()
    assert [(d.audience, d.correction) for d in driver.deltas()] == [("ACT__Cart__10s", False)]
    assert (driver.stats.late, driver.stats.too_late) == (0, 1)


def test_a_raw_record_appended_after_later_keyed_ones_is_not_passed_by_the_clock(
    tmp_path: Path, drivers: list[EvaluateDriver]
) -> None:
    """Without the wall clock. A producer sends each partition's batch on its own, so a
    cart added at T0+1h to a raw (re-keyed) partition can be appended after a keyed
    record of T0+10h produced after it, and after the broker confirmed the raw
    partition's end to a task that had just read the keyed one. The raw partition at
    its end still holds the clock at its newest (T0), as a keyed input does, so the
    cart is applied at its own time: replay's result, no record too late. (A confirmed
    end used to release it: the cart was applied nine hours late, at the clock.)"""
    config = driver_config(
        tmp_path,
        EXAMPLE_AUDIENCES,
        topics=(("pipelines", "pipelines_json"), ("raw", "pipelines_json")),
        rekeyed=["raw"],
        wall_clock=False,
    )
    driver = _driver(drivers, config, partitions=1, now_ms=T0)
    hour = 3_600_000
    first = [
        ("raw", _track("anna", "Application Opened", T0)),
        ("pipelines", _track("bob", "Application Opened", T0 + 60_000)),
    ]
    produced = [
        ("raw", _track("anna", "Product Added", T0 + hour, sku="A", cart_id="c1")),
        ("pipelines", _track("bob", "Application Opened", T0 + 10 * hour)),
    ]
    for topic, line in first:
        driver.pipe(topic, line, key=b"bob" if topic == "pipelines" else None)
    for _ in range(3):
        driver.process()
        assert driver.commit()
    task = driver.tasks[0]
    assert task.caught_up[next(iter(task.merged))]  # the raw partition is at its end
    # Appended in the other order than produced: the keyed record first, read and
    # committed (the raw partition's end confirmed meanwhile), then the raw one.
    driver.pipe("pipelines", produced[1][1], key=b"bob")
    for _ in range(3):
        driver.process()
        assert driver.commit()
    driver.pipe("raw", produced[0][1])
    for _ in range(3):
        driver.process()
        assert driver.commit()
    assert task.engine.stats.too_late == 0
    driver.finish()
    assert driver.commit()
    lines = [line for _, line in first + produced]
    expected = keys(replay_deltas(lines))
    assert any(k[0] == "ACT__CartAbandon__90m" and k[1] == "anna" for k in expected)
    assert keys(driver.deltas()) == expected


def test_without_the_wall_clock_a_topic_empty_at_assignment_is_asked_again(
    tmp_path: Path, drivers: list[EvaluateDriver]
) -> None:
    """Both topics are empty when the partitions are assigned; records are then
    produced to both, and the webhooks' first fetch comes back seconds after the
    pipelines have been read to their end. The webhooks' end offset is asked of the
    broker again, so none of their records finds the clock past it: replay's result."""
    driver = _two_topic_driver(tmp_path, drivers, 2, wall_clock=False)
    assert all(all(task.caught_up.values()) for task in driver.tasks.values())  # empty
    driver.consumer.hold("webhooks")
    lines = _pipe_synthetic(driver, 40, 2000, seed=6, partitions=2)
    for _ in range(4):
        driver.process()
        driver.tick(2_000)
        assert driver.commit()
    assert all(not task.caught_up["webhooks"] for task in driver.tasks.values())
    assert driver.deltas() == []
    driver.consumer.release("webhooks")
    for _ in range(3):
        driver.process()
        assert driver.commit()
    driver.finish()
    assert driver.commit()
    assert (driver.stats.late, driver.stats.too_late) == (0, 0)
    assert keys(driver.deltas()) == keys(replay_deltas(lines))


def test_a_fatal_producer_error_asks_for_a_restart_instead_of_a_traceback(
    tmp_path: Path, cart_wait: Path, drivers: list[EvaluateDriver]
) -> None:
    """Fenced, or the epoch bumped by a coordinator that aborted a timed-out transaction
    (after a broker restart): a new incarnation fences this one and goes on, so the
    process exits with the restart status (3), not a traceback."""
    driver = _driver(drivers, driver_config(tmp_path, cart_wait), now_ms=T0)
    driver.pipe("pipelines", _track("a", "Product Added", T0, sku="A"), key=b"a")
    driver.process()
    driver.fail_next_commit(KafkaError._FENCED, fatal=True)
    with pytest.raises(RestartRequired, match="cannot go on"):
        driver.commit()
    fatal = KafkaError(KafkaError._FENCED, "fenced", fatal=True)
    driver.runtime.health.on_error(fatal)  # reported by the error callback instead
    with pytest.raises(NeedsRestart):
        driver.runtime.health.check()
    assert RestartRequired("x").exit_status == 3


def test_a_rewind_while_the_coordinator_loads_waits_for_the_committed_offsets(
    tmp_path: Path, cart_wait: Path, drivers: list[EvaluateDriver]
) -> None:
    """After a broker restart the coordinator answers ``committed()`` with partitions
    marked ``COORDINATOR_LOAD_IN_PROGRESS`` and no offset. A rewind that took that for
    "nothing committed" sought the consumer back to offset 0 and placed the restored
    task at the start of its input."""
    now = int(time.time() * 1000)
    driver = _driver(drivers, driver_config(tmp_path, cart_wait), now_ms=now)
    for n in range(3):
        driver.pipe("pipelines", _track(f"c{n}", "Product Added", now, sku="A"), key=b"c")
    driver.process()
    assert driver.commit()
    driver.pipe("pipelines", _track("d", "Product Added", now, sku="A"), key=b"d")
    driver.process()
    driver.consumer.coordinator_loading = 2  # the restarted coordinator reads its topic
    driver.fail_next_commit()
    assert not driver.commit()  # aborted: rewound to the last commit
    assert driver.consumer.coordinator_loading == 0  # asked until it answered
    assert driver.consumer.positions[("pipelines", 0)] == 3  # not 0
    assert driver.process() == 1  # only the record after the commit, read again
    assert driver.commit()
    assert driver.committed_offsets() == {("pipelines", 0): 4}
    assert driver.stats.records == 4


def test_partitions_lost_while_no_coordinator_answers_are_left_to_their_next_assignment(
    tmp_path: Path, cart_wait: Path, drivers: list[EvaluateDriver]
) -> None:
    """Lost partitions (the member dropped from the group during a broker restart) are
    not this member's any more: the rewind does not ask for their offsets, which would
    wait for the same absent coordinator and end the process after ``broker_timeout``;
    their next assignment reads them."""
    now = int(time.time() * 1000)
    config = driver_config(tmp_path, cart_wait, broker_timeout="1s")
    driver = _driver(drivers, config, partitions=2, now_ms=now)
    driver.pipe("pipelines", _track("a", "Product Added", now, sku="A"), key=b"a")
    driver.process()
    assert driver.commit()
    driver.pipe("pipelines", _track("b", "Product Added", now, sku="B"), key=b"b", partition=1)
    driver.process()
    driver.consumer.coordinator_away = True
    asked = len(driver.consumer.committed_asked)
    driver.lose()  # raised KafkaUnavailable after broker_timeout, asking for both
    assert driver.consumer.committed_asked[asked:] == []
    assert driver.tasks == {}
    driver.consumer.coordinator_away = False
    driver.assign()  # given back: from the committed offsets, the task restored
    assert driver.consumer.positions == {("pipelines", 0): 1, ("pipelines", 1): 0}
    assert driver.process() == 1
    assert driver.commit()
    assert driver.committed_offsets() == {("pipelines", 0): 1, ("pipelines", 1): 1}
