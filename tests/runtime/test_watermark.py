"""The common watermark: the slowest busy partition decides what is final."""

from __future__ import annotations

from streamsync.ingest.event import Event, SourcePosition
from streamsync.runtime.watermark import UNKNOWN, PartitionWatermarks


def _event(topic: str, partition: int, ts: int) -> Event:
    return Event("c", "track", "x", ts, source=SourcePosition(topic, partition, 0))


def test_slowest_partition_holds_the_watermark() -> None:
    marks = PartitionWatermarks(lateness_ms=10)
    marks.assigned([("a", 0), ("b", 0)])
    marks.observe(_event("a", 0, 1_000))
    assert marks.watermark == UNKNOWN  # b may still deliver old records
    marks.observe(_event("b", 0, 400))
    assert marks.watermark == 390
    marks.observe(_event("b", 0, 2_000))
    assert marks.watermark == 990


def test_caught_up_partition_does_not_hold_back_until_it_delivers_again() -> None:
    marks = PartitionWatermarks(lateness_ms=0)
    marks.assigned([("a", 0), ("b", 0)])
    marks.observe(_event("a", 0, 1_000))
    marks.caught_up("b", 0)
    assert marks.watermark == 1_000
    marks.observe(_event("b", 0, 500))
    assert marks.watermark == 500
    marks.caught_up("a", 0)
    marks.caught_up("b", 0)
    assert marks.watermark == 1_000  # all caught up: the newest stands for the clock


def test_revoked_partition_is_forgotten() -> None:
    marks = PartitionWatermarks(lateness_ms=0)
    marks.assigned([("a", 0), ("a", 1)])
    marks.observe(_event("a", 0, 100))
    marks.revoked([("a", 1)])
    assert marks.watermark == 100
