"""Consumer lag per partition, read from a confluent-kafka consumer for the Telemetry gauge.

Lag is the partition's end offset minus the consumer's position. Both come from the
client's own state (``position`` and the watermarks cached from fetch responses), so a
report costs no broker round trip and may run on every commit cycle. For a
``read_committed`` consumer librdkafka's cached end offset is the last stable offset, so
open transactions do not count as lag. A partition not fetched from yet has no cached end
and is left out rather than guessed.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from streamsync.observability.metrics import Telemetry

#: librdkafka's "no offset" sentinels are negative (OFFSET_INVALID -1001, ...).
_NO_OFFSET = 0


class _TopicPartition(Protocol):
    topic: str
    partition: int
    offset: int


class LagSource(Protocol):
    """The part of ``confluent_kafka.Consumer`` this module uses."""

    def assignment(self) -> list[_TopicPartition]: ...

    def position(self, partitions: list[_TopicPartition]) -> list[_TopicPartition]: ...

    def get_watermark_offsets(
        self, partition: _TopicPartition, timeout: float | None = ..., cached: bool = ...
    ) -> tuple[int, int] | None: ...


def report_consumer_lag(
    telemetry: Telemetry, consumer: LagSource, group: str
) -> dict[tuple[str, int], int]:
    """Set ``streamsync_consumer_lag`` for every assigned partition whose end is known;
    returns the lags reported, by (topic, partition)."""
    reported: dict[tuple[str, int], int] = {}
    assignment = consumer.assignment()
    if not assignment:
        return reported
    for tp in consumer.position(assignment):
        watermarks = consumer.get_watermark_offsets(tp, cached=True)
        if watermarks is None:
            continue
        low, high = watermarks
        if high < _NO_OFFSET:
            continue
        # Before the first fetch the position is unknown: the consumer starts from its
        # committed offset or, with auto.offset.reset=earliest, the partition's start.
        position = tp.offset if tp.offset >= _NO_OFFSET else max(low, _NO_OFFSET)
        lag = max(0, high - position)
        telemetry.set_consumer_lag(group, tp.topic, tp.partition, lag)
        reported[(tp.topic, tp.partition)] = lag
    return reported


def forget_partitions(telemetry: Telemetry, partitions: Iterable[_TopicPartition]) -> None:
    """Drop the lag of revoked partitions (call from the consumer's ``on_revoke``/``on_lost``)."""
    for tp in partitions:
        telemetry.forget_partition(tp.partition, topic=tp.topic)
