"""Rebuilding facts from a task's input history, for changed audience definitions.

When a new definition reads a fact the stored state does not keep (see
:mod:`streamsync.audiences.migration`), the records that fact summarises are read again
from the task's input partitions, from the oldest offset the broker still holds up to
the committed position, and only the new fact updates are applied to them, at their
own event times (facts do not depend on arrival order). Records still in the reorder
buffer are skipped (they are applied when released), and records whose id was seen
before are skipped like the engine skips them.

What the topics no longer hold cannot be rebuilt: :class:`Coverage` says, per input,
from which offset and event time the history was read, so the caller can tell which
rebuilt audiences are exact.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass

from confluent_kafka import Consumer, KafkaError, TopicPartition

from streamsync.audiences.compiler import Customer
from streamsync.audiences.durations import format_duration
from streamsync.audiences.migration import AudienceChange, Migration
from streamsync.deltas.record import format_rfc3339_ms
from streamsync.ingest.decoder import Decoder, record_time_ms
from streamsync.ingest.event import Event, SourcePosition
from streamsync.kafka.health import KafkaUnavailable

log = logging.getLogger(__name__)

_PROGRESS_EVERY_S = 5.0


@dataclass(frozen=True)
class Coverage:
    """How much of one input partition's history a rebuild read."""

    topic: str
    partition: int
    #: the oldest offset the broker held (0: nothing was ever deleted)
    low: int
    #: the committed position the history was read up to
    end: int
    #: event time of the oldest record read (``None``: none was read)
    first_ms: int | None

    @property
    def complete(self) -> bool:
        return self.low == 0


def read_history(
    consumer: Consumer,
    inputs: Mapping[str, tuple[int, int]],
    partition: int,
    decoders: Mapping[str, Decoder],
    migration: Migration,
    *,
    skip: Collection[tuple[str, int]],
    timeout_s: float,
    progress: Callable[[str], None] | None = None,
) -> tuple[dict[str, Customer], list[Coverage]]:
    """Facts of ``migration`` rebuilt from the history of ``partition`` of every
    topic in ``inputs`` (topic -> ``(low, end)`` offsets, read ``[low, end)``),
    per customer; and what was covered. ``skip`` holds ``(topic, offset)`` of records
    not to apply (still buffered). ``consumer`` is the group-less ``read_committed``
    restore consumer."""
    say = progress or log.info
    updates = migration.history_updates()
    new_customer = migration.new.new_customer
    customers: dict[str, Customer] = {}
    coverage: list[Coverage] = []
    seen: set[str] = set()
    started = last_report = time.monotonic()
    read = 0
    for topic, (low, end) in inputs.items():
        first_ms: int | None = None
        if end <= low:
            coverage.append(Coverage(topic, partition, low, end, None))
            continue
        say(f"{topic}[{partition}]: reading offsets {low}..{end - 1} to rebuild changed audiences")
        decoder = decoders[topic]
        consumer.assign([TopicPartition(topic, partition, low)])
        try:
            position = low
            while position < end:
                now = time.monotonic()
                if now - started > timeout_s:
                    raise KafkaUnavailable(
                        f"{topic}[{partition}]: history not read within {timeout_s:.0f}s "
                        f"(at offset {position} of {end})"
                    )
                if now - last_report >= _PROGRESS_EVERY_S:
                    last_report = now
                    say(f"{topic}[{partition}]: read {read:,} records, offset {position}/{end}")
                messages = consumer.consume(10_000, 0.2)
                if not messages:
                    # A transaction marker or an aborted batch ends the partition.
                    tp = consumer.position([TopicPartition(topic, partition)])[0]
                    position = max(position, tp.offset)
                    continue
                for message in messages:
                    error = message.error()
                    if error is not None:
                        if error.code() == KafkaError._PARTITION_EOF:
                            position = end
                            break
                        raise KafkaUnavailable(f"{topic}[{partition}]: {error}")
                    offset = message.offset()
                    assert offset is not None
                    position = offset + 1
                    if offset >= end:
                        position = end
                        break
                    read += 1
                    if (topic, offset) in skip:
                        continue
                    source = SourcePosition(topic, partition, offset)
                    decoded = decoder.decode_all(
                        message.value(), message.key(), source, record_time_ms(message)
                    )
                    for outcome in decoded:
                        if not isinstance(outcome, Event):
                            continue
                        rid = outcome.record_id
                        if rid is not None:
                            if rid in seen:
                                continue
                            seen.add(rid)
                        if first_ms is None or outcome.timestamp_ms < first_ms:
                            first_ms = outcome.timestamp_ms
                        entries = updates.get(outcome.name)
                        if not entries:
                            continue
                        for kind, pred, update in entries:
                            if kind == outcome.kind and (pred is None or pred(outcome)):
                                c = customers.get(outcome.customer_id)
                                if c is None:
                                    c = customers[outcome.customer_id] = new_customer(
                                        outcome.customer_id
                                    )
                                update(c, outcome)
        finally:
            consumer.unassign()
        coverage.append(Coverage(topic, partition, low, end, first_ms))
    if read:
        say(
            f"partition {partition}: {read:,} input records read to rebuild changed "
            f"audiences in {time.monotonic() - started:.1f}s"
        )
    return customers, coverage


def uncovered(
    change: AudienceChange, coverage: Sequence[Coverage], rekeyed: Sequence[str], clock: int
) -> list[str]:
    """Why history rebuilt for ``change`` at instant ``clock`` may be incomplete (empty:
    it is complete): what evaluate reports, and what ``audiences diff`` predicts it will."""
    out = [f"the history of re-keyed input {topic} is not kept" for topic in rekeyed]
    window = change.window_ms
    for cover in coverage:
        if cover.complete:
            continue
        since = "nothing" if cover.first_ms is None else format_rfc3339_ms(cover.first_ms)
        if window is None:
            out.append(
                f"{cover.topic}[{cover.partition}] holds records since {since} only and "
                "the definition looks at the whole history"
            )
        elif cover.first_ms is None or clock - cover.first_ms < window:
            out.append(
                f"{cover.topic}[{cover.partition}] holds records since {since} only, "
                f"less than the definition's {format_duration(window)}"
            )
    return out
