"""The re-keying stage and a task's repartition inputs without Kafka: routing, the
progress marks of raw partitions, the watermark they allow, and their round trip
through the task's state."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from streamsync.audiences.loader import load_audiences
from streamsync.config import AppConfig, ConfigError, parse_config
from streamsync.ingest.event import Event, SourcePosition
from streamsync.resources import project_path
from streamsync.runtime.repartition import (
    MARK_TAG,
    Repartitioner,
    decode_event,
    encode_mark,
    partition_for,
    source_key,
)
from streamsync.runtime.task import UNKNOWN, Task
from streamsync.state.store import PartitionStore

AUDIENCES = load_audiences(project_path("examples", "audiences"))
RAW = "raw"
INTERNAL = "g.repartition.raw"
SOURCES = frozenset(source_key(RAW, p) for p in range(2))


def _task(*, wall_clock: bool = False) -> Task:
    return Task(
        0,
        ["keyed", INTERNAL],
        AUDIENCES,
        allowed_lateness_ms=10,
        dedup_horizon_ms=86_400_000,
        wall_clock=wall_clock,
        idle_grace_ms=500,
        merged={INTERNAL: SOURCES},
    )


def _event(topic: str, ts: int, customer: str = "c") -> Event:
    return Event(customer, "track", "x", ts, source=SourcePosition(topic, 0, 0))


def test_an_event_is_routed_to_its_customers_partition_and_decodes_the_same() -> None:
    stage = Repartitioner({RAW: INTERNAL}, 3, {RAW: 2}, "consistent")
    event = Event(
        "cust-7",
        "track",
        "Order Completed",
        1_000,
        "m-1",
        {"total": 12.5, "items": [{"sku": "A"}]},
        {"plan": "pro"},
        {"email": "a@example.com"},
        SourcePosition(RAW, 1, 4),
        "email",
    )
    key, partition, value = stage.route(event)
    assert key == b"cust-7" and partition == partition_for(b"cust-7", 3, "consistent")
    assert value[0] != MARK_TAG
    back = decode_event(value, SourcePosition(INTERNAL, partition, 9))
    assert back == replace(event, source=SourcePosition(INTERNAL, partition, 9))


def test_marks_are_written_to_every_partition_once_per_change() -> None:
    stage = Repartitioner({RAW: INTERNAL}, 3, {RAW: 2}, "consistent")
    stage.seen(RAW, 0, 500)
    marks = list(stage.marks())
    assert [(t, p) for t, p, _ in marks] == [(INTERNAL, 0), (INTERNAL, 1), (INTERNAL, 2)]
    stage.committed()
    assert list(stage.marks()) == []
    stage.at_end(RAW, 0, 10)
    assert len(list(stage.marks())) == 3
    stage.reset()  # an abort: nothing counts as sent, progress is read again
    assert list(stage.marks()) == []


def test_the_repartition_input_waits_for_every_raw_partition() -> None:
    task = _task()
    task.process(_event("keyed", 1_000))
    task.process(_event(INTERNAL, 5_000))  # its own records do not move it
    assert task.newest[INTERNAL] == UNKNOWN
    assert task.watermark(now_ms=10**13) == UNKNOWN
    task.mark(INTERNAL, encode_mark(RAW, 0, 5_000, False))
    assert task.watermark(now_ms=10**13) == UNKNOWN  # raw[1] has not reported
    task.mark(INTERNAL, encode_mark(RAW, 1, 700, False))
    assert task.watermark(now_ms=10**13) == 690
    task.mark(INTERNAL, encode_mark(RAW, 1, 600, False))  # re-read after a restart
    assert task.watermark(now_ms=10**13) == 690


def test_an_empty_raw_partition_at_its_end_holds_nothing_back_once_its_end_is_confirmed() -> None:
    """Without the wall clock, as an empty keyed input: only once the broker confirmed
    its end after the task's latest records were read."""
    task = _task()
    task.process(_event("keyed", 1_000))
    task.mark(INTERNAL, encode_mark(RAW, 0, 2_000, False))
    task.mark(INTERNAL, encode_mark(RAW, 1, UNKNOWN, True, 0))
    assert task.watermark(now_ms=10**13) == UNKNOWN
    task.confirm_sources(INTERNAL, {source_key(RAW, 1): 0})
    assert task.watermark(now_ms=10**13) == 990


def test_live_a_raw_partition_at_its_end_holds_nothing_back() -> None:
    """With the wall clock, a raw partition that finished early (its newest record
    months behind the other) does not pin the merged input: the one still being read
    decides."""
    task = _task(wall_clock=True)
    task.mark(INTERNAL, encode_mark(RAW, 0, 100, True, 7))
    task.mark(INTERNAL, encode_mark(RAW, 1, 5_000, False))
    task.process(_event("keyed", 9_000))
    assert task.watermark(now_ms=10**13) == 4_990
    task.mark(INTERNAL, encode_mark(RAW, 1, 8_000, True, 40))  # both at their end
    assert task.newest[INTERNAL] == 8_000
    assert task.watermark(now_ms=10**13) == 7_990  # the merged input is now at 8000


def test_without_the_wall_clock_a_raw_partition_at_its_end_counts_with_its_newest() -> None:
    """As a keyed input at its end does: a producer's batch for it may be appended after
    records of other partitions produced later, so even an end the broker confirmed
    after the task's latest records were read does not release the clock past it."""
    task = _task()
    task.mark(INTERNAL, encode_mark(RAW, 0, 100, True, 7))
    task.mark(INTERNAL, encode_mark(RAW, 1, 5_000, False))
    task.process(_event("keyed", 9_000))
    assert task.watermark(now_ms=10**13) == 90
    task.confirm_sources(INTERNAL, {source_key(RAW, 0): 7})
    assert task.watermark(now_ms=10**13) == 90
    task.mark(INTERNAL, encode_mark(RAW, 0, 6_000, True, 9))  # it gave more records
    assert task.watermark(now_ms=10**13) == 4_990  # raw[1] decides now
    task.mark(INTERNAL, encode_mark(RAW, 1, 8_000, True, 40))  # both at their end
    assert task.newest[INTERNAL] == 6_000
    assert task.watermark(now_ms=10**13) == 5_990


def test_caught_up_only_when_every_raw_partition_was_at_its_end() -> None:
    task = _task(wall_clock=True)
    task.at_end("keyed", 0)
    task.at_end(INTERNAL, 0)
    assert not task.caught_up[INTERNAL]
    task.mark(INTERNAL, encode_mark(RAW, 0, UNKNOWN, True))
    assert not task.caught_up[INTERNAL]
    task.mark(INTERNAL, encode_mark(RAW, 1, 100, True))
    assert task.caught_up[INTERNAL]
    assert task.watermark(now_ms=10_000) == 9_500  # follows the wall clock


def test_marks_read_are_part_of_the_tasks_state(tmp_path: Path) -> None:
    task = _task()
    task.mark(INTERNAL, encode_mark(RAW, 0, 2_000, True))
    task.mark(INTERNAL, encode_mark(RAW, 1, 3_000, False))
    changes = task.changes()
    assert changes  # marks alone are written
    store = PartitionStore(tmp_path / "store")
    try:
        store.apply(changes, 0)
        restored = _task()
        restored.load(store, "test")
    finally:
        store.close()
    assert restored.merged[INTERNAL].marks == task.merged[INTERNAL].marks
    # without the wall clock raw[0] counts with its newest although at its end
    assert restored.newest[INTERNAL] == 2_000
    assert task.changes() == {}  # nothing new since


def _config(topic: dict[str, object], **evaluate: object) -> AppConfig:
    return parse_config(
        {
            "ingest": {"topics": [topic]},
            "evaluate": {"audiences": "a", **evaluate},
        },
        env={},
    )


def test_repartition_is_chosen_per_topic_in_the_configuration() -> None:
    config = _config({"name": "t", "format": "pipelines_json", "repartition": True})
    assert config.ingest.topics[0].repartition
    assert config.evaluate is not None
    assert config.evaluate.repartition_partitioner == "consistent"
    assert config.evaluate.repartition_partitions is None
    plain = _config({"name": "t", "format": "webhook_json"})
    assert not plain.ingest.topics[0].repartition


@pytest.mark.parametrize(
    ("evaluate", "where"),
    [
        ({"repartition_partitions": 0}, "evaluate.repartition_partitions"),
        ({"repartition_partitioner": "random"}, "evaluate.repartition_partitioner"),
    ],
)
def test_bad_repartition_settings_are_named(evaluate: dict[str, object], where: str) -> None:
    with pytest.raises(ConfigError, match=where):
        _config({"name": "t", "format": "pipelines_json", "repartition": True}, **evaluate)
